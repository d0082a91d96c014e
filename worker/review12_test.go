package worker_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/flow"
	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/internal/redistest"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

// gateEnv is a Redis of its own, an upstream the test writes, and a worker
// over a catalog the test writes (%[1]s is the upstream's URL).
type gateEnv struct {
	rdb     *redis.Client
	client  *producer.Client
	records *tasks.Store
	ins     *asynq.Inspector
	logs    *syncBuffer
}

func setupGates(t *testing.T, catalog string, up http.Handler, opts ...func(*worker.Config)) *gateEnv {
	t.Helper()
	e := &gateEnv{logs: &syncBuffer{}}
	srv := redistest.Start(t)
	hs := httptest.NewServer(up)
	t.Cleanup(hs.Close)
	cat, err := tasks.ParseCatalog(fmt.Appendf(nil, catalog, hs.URL))
	require.NoError(t, err)
	key, _ := auth.GenerateKey()
	ring, err := auth.ParseKeyring(key)
	require.NoError(t, err)
	e.rdb = srv.Client(t)
	e.records, err = tasks.NewStore(e.rdb, nil)
	require.NoError(t, err)
	t.Cleanup(func() { e.records.Close() })
	e.client, err = producer.NewClient(e.rdb, "acme", &producer.Config{Catalog: cat, Records: e.records})
	require.NoError(t, err)
	creds, err := auth.NewStore(e.rdb, &auth.StoreConfig{Keyring: ring})
	require.NoError(t, err)
	e.ins = asynq.NewInspectorFromRedisClient(e.rdb)
	log := zerolog.New(e.logs)
	cfg := &worker.Config{Catalog: cat, Records: e.records, Credentials: creds, Keyring: ring,
		Concurrency: 10, Logger: &log, ShutdownTimeout: drainLimit, ReconcileInterval: worker.ReconcileOff}
	for _, o := range opts {
		o(cfg)
	}
	w, err := worker.New(e.rdb, cfg)
	require.NoError(t, err)
	require.NoError(t, w.Start())
	t.Cleanup(w.Shutdown)
	return e
}

// lastErr is asynq's error of the call's task's latest run ("" while none
// failed or was held).
func (e *gateEnv) lastErr(t *testing.T, id string) string {
	t.Helper()
	info, err := e.ins.GetTaskInfo("default", tasks.TaskID("acme", id))
	if err != nil {
		return ""
	}
	return info.LastErr
}

// breakSlots makes the concurrency gate of an integration capped per
// integration fail with a Redis error (its sorted set is a string), as a
// Redis that times out or fails over mid-call would; mend undoes it.
func (e *gateEnv) breakSlots(t *testing.T, integration string) (mend func()) {
	t.Helper()
	key := rediskeys.Slots("acme", integration)
	require.NoError(t, e.rdb.Set(context.Background(), key, "not a sorted set", 0).Err())
	return func() { require.NoError(t, e.rdb.Del(context.Background(), key).Err()) }
}

// requireNoPhantom fails if rec's history holds an attempt recorded as
// interrupted: none was, in these tests.
func requireNoPhantom(t *testing.T, rec *tasks.Record) {
	t.Helper()
	for _, a := range rec.History {
		require.NotContains(t, a.Error, "interrupted", "attempt %d was never made, yet the record says it may have reached the upstream: %+v", a.Attempt, rec.History)
	}
}

// A Redis error in a gate before a call's first attempt is not an attempt:
// the call, allowed one attempt, still makes it and succeeds, and its
// record holds that one attempt. (It used to spend a retry of the task, so
// the next run took the untouched record for a first attempt that lost its
// worker: it recorded an interrupted attempt that never was, "the upstream
// may have received the request", and failed the call unsent.)
func TestGateErrorBeforeTheFirstAttemptIsNoAttempt(t *testing.T) {
	t.Parallel()
	e := setupGates(t, `
integrations:
  one:
    base_url: %[1]s
    retry: {max_attempts: 1}
    concurrency: {limit: 1, per: integration}
`, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{"ok":true}`) }))
	mend := e.breakSlots(t, "one")
	id := enqueue(t, e.client, &tasks.Call{Integration: "one", Method: "GET", Path: "/", CorrelationID: "gate-first-" + uid()})
	require.Eventually(t, func() bool { return e.lastErr(t, id) != "" }, 20*time.Second, 5*time.Millisecond,
		"the gate's error should have put the task back")
	rec, err := e.client.Get(context.Background(), id)
	require.NoError(t, err)
	require.Zero(t, rec.Attempts)
	mend()
	rec = waitDone(t, e.client, id)
	require.Equal(t, tasks.StatusSucceeded, rec.Status, "%+v %+v", rec.Error, rec.History)
	require.Equal(t, 1, rec.Attempts)
	requireNoPhantom(t, rec)
}

// A Redis error in a gate before a later attempt leaves the record saying
// what is true: retrying, with a note, not running; and the next run
// records no interrupted attempt for it.
func TestGateErrorBeforeALaterAttempt(t *testing.T) {
	t.Parallel()
	first, goOn := make(chan struct{}), make(chan struct{})
	var n atomic.Int32
	e := setupGates(t, `
integrations:
  one:
    base_url: %[1]s
    retry: {max_attempts: 3}
    concurrency: {limit: 1, per: integration}
`, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			close(first)
			<-goOn
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, `{"ok":true}`)
	}))
	id := enqueue(t, e.client, &tasks.Call{Integration: "one", Method: "GET", Path: "/", CorrelationID: "gate-later-" + uid()})
	<-first
	mend := e.breakSlots(t, "one") // the first attempt passed its gate; the second will not
	close(goOn)
	require.Eventually(t, func() bool {
		le := e.lastErr(t, id)
		return le != "" && !strings.Contains(le, "503")
	}, 20*time.Second, 5*time.Millisecond, "the second run should have met the gate's error")
	rec, err := e.client.Get(context.Background(), id)
	require.NoError(t, err)
	require.Equal(t, tasks.StatusRetrying, rec.Status, "the call is not running: it waits for its next try")
	require.Equal(t, 1, rec.Attempts)
	require.NotEmpty(t, rec.Note)
	mend()
	rec = waitDone(t, e.client, id)
	require.Equal(t, tasks.StatusSucceeded, rec.Status, "%+v %+v", rec.Error, rec.History)
	require.Equal(t, 2, rec.Attempts, "%+v", rec.History)
	requireNoPhantom(t, rec)
}

// A call held back before its first attempt, whose first attempt then
// loses its run (here a panic after the request, which asynq recovers; a
// SIGKILLed worker is the same to the next run), has that attempt recorded
// as interrupted: the upstream received it. (The held record said
// retrying, not queued, so the next run took the attempt for none: the
// record showed one attempt where the upstream had two requests, and the
// call had one attempt more than max_attempts allows.)
func TestHeldFirstRunWhoseAttemptIsLost(t *testing.T) {
	t.Parallel()
	var requests atomic.Int32
	var panicked atomic.Bool
	e := setupGates(t, `
integrations:
  one:
    base_url: %[1]s
    retry: {max_attempts: 3}
    concurrency: {limit: 1, per: integration}
`, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		fmt.Fprint(w, `{"ok":true}`)
	}), func(c *worker.Config) {
		c.CheckRetry = func(ctx context.Context, resp *http.Response, err error) (bool, tasks.ErrorKind) {
			if panicked.CompareAndSwap(false, true) {
				panic("a CheckRetry with a bug")
			}
			return worker.DefaultCheckRetry(ctx, resp, err)
		}
	})
	slots, err := flow.NewSlots(e.rdb, nil)
	require.NoError(t, err)
	taken, _, err := slots.Acquire(context.Background(), flow.Scope{Tenant: "acme", Integration: "one"}, 1)
	require.NoError(t, err)
	require.NotNil(t, taken)
	id := enqueue(t, e.client, &tasks.Call{Integration: "one", Method: "GET", Path: "/", CorrelationID: "held-lost-" + uid()})
	awaitHeld(t, e.client, `waiting for a free slot: 1 of 1 requests to "one" are in flight`, id)
	require.NoError(t, slots.Release(context.Background(), taken))
	rec := waitDone(t, e.client, id)
	require.Equal(t, tasks.StatusSucceeded, rec.Status, "%+v", rec.History)
	require.True(t, panicked.Load())
	require.EqualValues(t, 2, requests.Load(), "the upstream received both attempts")
	require.Equal(t, 2, rec.Attempts, "the record counts both: %+v", rec.History)
	require.Contains(t, rec.History[0].Error, "attempt interrupted")
}

// An answer between two failures ends the run of failures, even when the
// call that got it was let through while the circuit was quiet (closed, no
// failure counted), so it reports nothing to Redis: failure, answer,
// failure does not open a circuit of failures: 2. (It did: the answer of a
// call in flight when the first failure was counted was never told, so an
// upstream failing now and then opened the circuit of a busy integration,
// and every call of the tenant waited a cooldown.)
func TestCircuitAnswerInFlightEndsTheRunOfFailures(t *testing.T) {
	t.Parallel()
	slow := make(chan struct{})
	e := setupGates(t, `
integrations:
  flaky:
    base_url: %[1]s
    retry: {max_attempts: 1}
    circuit_breaker: {failures: 2, window: 1m, cooldown: 1m}
`, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/fail":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/slow":
			<-slow
			fmt.Fprint(w, `{"ok":true}`)
		}
	}))
	call := func(path string) string {
		return enqueue(t, e.client, &tasks.Call{Integration: "flaky", Method: "GET", Path: path, CorrelationID: "run-" + uid()})
	}
	state := func() *flow.Breakers {
		cs := flow.NewCircuits(e.rdb, nil)
		st, err := cs.Read(context.Background(), "acme", map[string]*tasks.CircuitBreaker{"flaky": {Failures: 2,
			Window: tasks.Duration(time.Minute), Cooldown: tasks.Duration(time.Minute), Per: tasks.CircuitPerIntegration}})
		require.NoError(t, err)
		return st["flaky"]
	}
	answered := call("/slow") // let through while the circuit is quiet
	require.Eventually(t, func() bool {
		rec, err := e.client.Get(context.Background(), answered)
		return err == nil && rec.Status == tasks.StatusRunning
	}, 20*time.Second, 5*time.Millisecond)
	require.Equal(t, tasks.StatusFailed, waitDone(t, e.client, call("/fail")).Status)
	require.Equal(t, 1, state().Failures)
	close(slow)
	require.Equal(t, tasks.StatusSucceeded, waitDone(t, e.client, answered).Status)
	require.Equal(t, tasks.StatusFailed, waitDone(t, e.client, call("/fail")).Status)
	st := state()
	require.Equal(t, flow.Closed, st.State, "failure, answer, failure: no two failures in a row")
	require.Equal(t, 1, st.Failures)
}

// Time a call spends held back before its first attempt is not spent from
// its retry budget (max_elapsed: from the first attempt to the last), and
// its started_at is when that attempt began, not when it was first held.
// (A call held longer than max_elapsed failed at its second retryable
// failure, "the retry budget of 2s is spent", with attempts and budget
// left; its started_at said it started while it waited.)
func TestHeldTimeIsNotSpentFromTheRetryBudget(t *testing.T) {
	t.Parallel()
	var requests atomic.Int32
	e := setupGates(t, `
integrations:
  one:
    base_url: %[1]s
    retry: {max_attempts: 3, initial_interval: 100ms, max_interval: 100ms, max_elapsed: 2s}
    concurrency: {limit: 1, per: integration}
`, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, `{"ok":true}`)
	}))
	slots, err := flow.NewSlots(e.rdb, nil)
	require.NoError(t, err)
	taken, _, err := slots.Acquire(context.Background(), flow.Scope{Tenant: "acme", Integration: "one"}, 1)
	require.NoError(t, err)
	require.NotNil(t, taken)
	id := enqueue(t, e.client, &tasks.Call{Integration: "one", Method: "GET", Path: "/", CorrelationID: "held-budget-" + uid()})
	awaitHeld(t, e.client, `waiting for a free slot: 1 of 1 requests to "one" are in flight`, id)
	held, err := e.client.Get(context.Background(), id)
	require.NoError(t, err)
	require.Nil(t, held.StartedAt, "no attempt has started")
	// Held for longer than the whole budget.
	for start := time.Now(); time.Since(start) < 2500*time.Millisecond; time.Sleep(100 * time.Millisecond) {
		// (the hold is the test's own slot: nothing to poll for)
		require.Zero(t, requests.Load())
	}
	released := time.Now()
	require.NoError(t, slots.Release(context.Background(), taken))
	rec := waitDone(t, e.client, id)
	require.Equal(t, tasks.StatusSucceeded, rec.Status, "%+v %+v", rec.Error, rec.History)
	require.Equal(t, 3, rec.Attempts)
	require.NotNil(t, rec.StartedAt)
	require.False(t, rec.StartedAt.Before(released.Add(-time.Second)), "started_at %s is the first attempt's, after the slot was released at %s", rec.StartedAt, released)
}

// While the attempt that follows a hold runs, the record says running and
// nothing of the wait that is over: no note, no next_attempt_at in the
// past; so does a later attempt's, after a retry's wait. (GET showed
// "running" with the hold's next_attempt_at, a time gone by.)
func TestRunningRecordHasNoNextAttempt(t *testing.T) {
	t.Parallel()
	var requests atomic.Int32
	release := make(chan struct{})
	e := setupGates(t, `
integrations:
  one:
    base_url: %[1]s
    retry: {max_attempts: 3}
    concurrency: {limit: 1, per: integration}
`, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := requests.Add(1)
		if r.URL.Path == "/retry" && n == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		<-release
		fmt.Fprint(w, `{"ok":true}`)
	}))
	var once sync.Once
	finish := func() { once.Do(func() { close(release) }) }
	t.Cleanup(finish) // before the upstream's Close, which waits for its requests
	running := func(id string) *tasks.Record {
		t.Helper()
		var rec *tasks.Record
		require.Eventually(t, func() bool {
			var err error
			rec, err = e.client.Get(context.Background(), id)
			return err == nil && rec.Status == tasks.StatusRunning
		}, 20*time.Second, 5*time.Millisecond)
		return rec
	}

	// Held first, then run.
	slots, err := flow.NewSlots(e.rdb, nil)
	require.NoError(t, err)
	taken, _, err := slots.Acquire(context.Background(), flow.Scope{Tenant: "acme", Integration: "one"}, 1)
	require.NoError(t, err)
	held := enqueue(t, e.client, &tasks.Call{Integration: "one", Method: "GET", Path: "/held", CorrelationID: "running-held-" + uid()})
	awaitHeld(t, e.client, `waiting for a free slot: 1 of 1 requests to "one" are in flight`, held)
	require.NoError(t, slots.Release(context.Background(), taken))
	rec := running(held)
	require.Empty(t, rec.Note)
	require.Nil(t, rec.NextAttemptAt, "the attempt runs: no next attempt is set")
	release <- struct{}{}
	require.Equal(t, tasks.StatusSucceeded, waitDone(t, e.client, held).Status)

	// Retried after a 503, then run.
	requests.Store(0)
	retried := enqueue(t, e.client, &tasks.Call{Integration: "one", Method: "GET", Path: "/retry", CorrelationID: "running-retried-" + uid()})
	rec = running(retried)
	for rec.Attempts == 0 { // the first attempt's running
		rec = running(retried)
	}
	require.Equal(t, 1, rec.Attempts)
	require.Nil(t, rec.NextAttemptAt, "the second attempt runs: no next attempt is set")
	finish()
	require.Equal(t, tasks.StatusSucceeded, waitDone(t, e.client, retried).Status)
}

// netIn is how many bytes Redis has read from its clients.
func netIn(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "stats").Result()
	require.NoError(t, err)
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "total_net_input_bytes:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatal("no total_net_input_bytes in INFO stats")
	return 0
}

// A hold writes what it changes (status, next attempt, note), not the
// record's response and history again: a call held after an attempt that
// kept a large response does not send that response to Redis at every
// hold, every second or two for as long as it waits. (Each hold rewrote
// the whole record: 512 KiB a hold here, up to CALLQ_MAX_RESPONSE_BYTES,
// times the calls held, into Redis and its AOF.)
func TestHoldDoesNotRewriteTheResponse(t *testing.T) {
	t.Parallel()
	page := strings.Repeat("<p>upstream overloaded</p>\n", 512<<10/27)
	var requests atomic.Int32
	e := setupGates(t, `
integrations:
  one:
    base_url: %[1]s
    retry: {max_attempts: 3}
    concurrency: {limit: 1, per: integration}
`, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, page)
			return
		}
		fmt.Fprint(w, `{"ok":true}`)
	}))
	id := enqueue(t, e.client, &tasks.Call{Integration: "one", Method: "GET", Path: "/", CorrelationID: "hold-size-" + uid()})
	require.Eventually(t, func() bool {
		rec, err := e.client.Get(context.Background(), id)
		return err == nil && rec.Status == tasks.StatusRetrying && rec.Attempts == 1
	}, 20*time.Second, 5*time.Millisecond)
	slots, err := flow.NewSlots(e.rdb, nil)
	require.NoError(t, err)
	taken, _, err := slots.Acquire(context.Background(), flow.Scope{Tenant: "acme", Integration: "one"}, 1)
	require.NoError(t, err)
	require.NotNil(t, taken)
	const held = "call held back without spending an attempt"
	require.Eventually(t, func() bool { return strings.Count(e.logs.String(), held) >= 1 }, 20*time.Second, 5*time.Millisecond)
	require.Regexp(t, `"retry_in_ms":\d+,"reason"`, e.logs.String(), "durations are logged in the unit their name says")
	before, holds := netIn(t, e.rdb), strings.Count(e.logs.String(), held)
	require.Eventually(t, func() bool { return strings.Count(e.logs.String(), held) >= holds+3 }, 30*time.Second, 10*time.Millisecond)
	written, n := netIn(t, e.rdb)-before, strings.Count(e.logs.String(), held)-holds
	t.Logf("Redis read %d bytes while the call was held %d times more", written, n)
	// Each rewrite would send the page at least (JSON-escaped, more); the
	// rest is asynq's and the worker's own traffic meanwhile.
	require.Less(t, written/int64(n), int64(len(page)/2), "the held call's response went to Redis again")
	require.NoError(t, slots.Release(context.Background(), taken))
	rec := waitDone(t, e.client, id)
	require.Equal(t, tasks.StatusSucceeded, rec.Status)
	require.Equal(t, 2, rec.Attempts)
	require.Len(t, rec.History, 2)
	require.Equal(t, 503, rec.History[0].Status)
}

// A held call whose record is gone (expired after its 7 days, or deleted)
// is dropped at its next hold, as at its next run: nothing is left to
// record its outcome in. It is not held again and again for ever.
func TestHeldCallWithoutRecordIsDropped(t *testing.T) {
	t.Parallel()
	e := setupGates(t, `
integrations:
  one:
    base_url: %[1]s
    concurrency: {limit: 1, per: integration}
`, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{"ok":true}`) }))
	slots, err := flow.NewSlots(e.rdb, nil)
	require.NoError(t, err)
	taken, _, err := slots.Acquire(context.Background(), flow.Scope{Tenant: "acme", Integration: "one"}, 1)
	require.NoError(t, err)
	require.NotNil(t, taken)
	id := enqueue(t, e.client, &tasks.Call{Integration: "one", Method: "GET", Path: "/", CorrelationID: "held-gone-" + uid()})
	awaitHeld(t, e.client, `waiting for a free slot: 1 of 1 requests to "one" are in flight`, id)
	require.NoError(t, e.rdb.Del(context.Background(), rediskeys.Record("acme", id)).Err())
	require.Eventually(t, func() bool {
		info, err := e.ins.GetTaskInfo("default", tasks.TaskID("acme", id))
		return err != nil || info.State == asynq.TaskStateCompleted
	}, 10*time.Second, 20*time.Millisecond, "the call's task should be done with at its next hold, before the slot's lease of 15s ends")
	require.Contains(t, e.logs.String(), "call has no record")
}
