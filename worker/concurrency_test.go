package worker_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/flow"
	"github.com/callq/callq/internal/redistest"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

// flights answers /inflight?ms=N after N milliseconds, or when the client
// goes away, and keeps for each X-Test-ID the requests in flight, the most
// at once, and when each began and ended.
type flights struct {
	mu sync.Mutex
	by map[string]*flight
}

type flight struct {
	now, most int
	spans     []span
}

type span struct{ start, end time.Time }

func newFlights() *flights { return &flights{by: map[string]*flight{}} }

func (f *flights) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("X-Test-ID")
	ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
	f.mu.Lock()
	fl := f.by[id]
	if fl == nil {
		fl = &flight{}
		f.by[id] = fl
	}
	fl.now++
	fl.most = max(fl.most, fl.now)
	i := len(fl.spans)
	fl.spans = append(fl.spans, span{start: time.Now()})
	f.mu.Unlock()
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
	f.mu.Lock()
	fl.now--
	fl.spans[i].end = time.Now()
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprint(w, `{"ok":true}`)
}

// of is a copy of id's flight, its spans in the order they began.
func (f *flights) of(id string) flight {
	f.mu.Lock()
	defer f.mu.Unlock()
	fl := f.by[id]
	if fl == nil {
		return flight{}
	}
	c := *fl
	c.spans = slices.Clone(fl.spans)
	slices.SortFunc(c.spans, func(a, b span) int { return a.start.Compare(b.start) })
	return c
}

// inFlight calls /inflight?ms= with the X-Test-ID group.
func inFlight(integration, group string, ms int) *tasks.Call {
	return &tasks.Call{Integration: integration, Method: "GET", Path: "/inflight", CorrelationID: group + "-" + uid(),
		Query: tasks.Query{"ms": {strconv.Itoa(ms)}}, Headers: map[string]string{"X-Test-ID": group}}
}

func enqueue(t *testing.T, c *producer.Client, call *tasks.Call) string {
	t.Helper()
	_, err := c.Enqueue(context.Background(), call)
	require.NoError(t, err)
	return call.CorrelationID
}

func waitDone(t *testing.T, c *producer.Client, id string) *tasks.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rec, err := c.Wait(ctx, id)
	require.NoError(t, err, "call %s did not finish", id)
	return rec
}

func inUse(t *testing.T, rdb redis.UniversalClient, integration string) int {
	t.Helper()
	s, err := flow.NewSlots(rdb, nil)
	require.NoError(t, err)
	n, err := s.InUse(context.Background(), "acme", integration)
	require.NoError(t, err)
	return n
}

// awaitHeld waits until one of ids shows retrying, with no attempt spent,
// a next_attempt_at and note.
func awaitHeld(t *testing.T, c *producer.Client, note string, ids ...string) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, id := range ids {
			rec, err := c.Get(context.Background(), id)
			if err == nil && rec.Status == tasks.StatusRetrying && rec.Attempts == 0 && rec.NextAttemptAt != nil && rec.Note == note {
				return true
			}
		}
		return false
	}, 20*time.Second, 5*time.Millisecond, "no call showed retrying with the note %q", note)
}

// Six calls under a cap of 2: never more than 2 at the upstream, 2 at
// times, and each succeeds on its first attempt; a call waiting for a slot
// says so in its record.
func TestConcurrencyCapHoldsCallsWithoutSpendingAttempts(t *testing.T) {
	t.Parallel()
	e := setup(t)
	group := "cap-" + uid()
	var ids []string
	for range 6 {
		ids = append(ids, enqueue(t, e.client, inFlight("capped", group, 600)))
	}
	awaitHeld(t, e.client, `waiting for a free slot: 2 of 2 requests to "capped" are in flight`, ids...)
	for _, id := range ids {
		rec := waitDone(t, e.client, id)
		require.Equal(t, tasks.StatusSucceeded, rec.Status, "call %s: %+v", id, rec.History)
		require.Equal(t, 1, rec.Attempts, "waiting for a slot spends no attempt")
		require.Empty(t, rec.Note, "the attempt clears the note")
		require.Nil(t, rec.NextAttemptAt)
	}
	fl := e.up.flights.of(group)
	require.Len(t, fl.spans, 6, "each call reached the upstream once")
	require.Equal(t, 2, fl.most, "at most 2 in flight, and 2 at times")
	require.Zero(t, inUse(t, e.rdb, "capped"), "every slot released")
}

// How long a held call waits once a slot frees: with one call waiting, the
// time from the end of the request holding the only slot to the start of
// the held one. Logged for the README. The request holding the slot lasts
// 200ms to 1.2s, so that it ends at any point of asynq's whole seconds.
func TestConcurrencyHeldCallLatency(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var gaps []time.Duration
	for range 10 {
		group := "latency-" + uid()
		first := enqueue(t, e.client, inFlight("capped-seq", group, 200+rand.IntN(1000)))
		require.Eventually(t, func() bool { return e.up.flights.of(group).now == 1 }, 10*time.Second, time.Millisecond)
		second := enqueue(t, e.client, inFlight("capped-seq", group, 0))
		for _, id := range []string{first, second} {
			rec := waitDone(t, e.client, id)
			require.Equal(t, tasks.StatusSucceeded, rec.Status)
			require.Equal(t, 1, rec.Attempts)
		}
		fl := e.up.flights.of(group)
		require.Len(t, fl.spans, 2)
		require.Equal(t, 1, fl.most)
		gaps = append(gaps, fl.spans[1].start.Sub(fl.spans[0].end))
	}
	slices.Sort(gaps)
	var sum time.Duration
	for _, g := range gaps {
		sum += g
	}
	t.Logf("a held call's extra latency once the slot frees: min %s, median %s, mean %s, max %s (%d rounds)",
		gaps[0].Round(time.Millisecond), gaps[len(gaps)/2].Round(time.Millisecond),
		(sum / time.Duration(len(gaps))).Round(time.Millisecond), gaps[len(gaps)-1].Round(time.Millisecond), len(gaps))
	// A wait of 1 to 2s, rounded to asynq's whole seconds, then up to
	// 250ms for the forwarder; a second more for a busy machine.
	require.Less(t, gaps[len(gaps)-1], 3250*time.Millisecond)
}

// A cap per credential counts each credential apart; a cap per integration
// counts them together.
func TestConcurrencyPerCredentialOrIntegration(t *testing.T) {
	t.Parallel()
	e := setup(t)
	// Each group has credentials of its own: they run at once.
	for _, ref := range []string{"cap-a", "cap-b", "cap-c"} {
		e.putCred(t, ref, "capped-cred", map[string]string{"token": "t-" + ref})
		e.putCred(t, ref+"-whole", "capped-whole", map[string]string{"token": "t-" + ref})
	}
	run := func(integration, group string, creds ...string) flight {
		var ids []string
		for _, cred := range creds {
			call := inFlight(integration, group, 700)
			call.Credential = cred
			ids = append(ids, enqueue(t, e.client, call))
		}
		for _, id := range ids {
			rec := waitDone(t, e.client, id)
			require.Equal(t, tasks.StatusSucceeded, rec.Status, "%s: %+v", id, rec.History)
			require.Equal(t, 1, rec.Attempts)
		}
		return e.up.flights.of(group)
	}
	var wg sync.WaitGroup
	var apart, same, whole flight
	wg.Go(func() { apart = run("capped-cred", "percred-apart-"+uid(), "cap-b", "cap-c") })
	wg.Go(func() {
		group := "percred-same-" + uid()
		var ids []string
		for range 2 {
			call := inFlight("capped-cred", group, 700)
			call.Credential = "cap-a"
			ids = append(ids, enqueue(t, e.client, call))
		}
		awaitHeld(t, e.client, `waiting for a free slot: 1 of 1 requests to "capped-cred" with credential "cap-a" are in flight`, ids...)
		for _, id := range ids {
			require.Equal(t, tasks.StatusSucceeded, waitDone(t, e.client, id).Status)
		}
		same = e.up.flights.of(group)
	})
	wg.Go(func() {
		group := "perint-" + uid()
		var ids []string
		for _, cred := range []string{"cap-a-whole", "cap-b-whole"} {
			call := inFlight("capped-whole", group, 700)
			call.Credential = cred
			ids = append(ids, enqueue(t, e.client, call))
		}
		awaitHeld(t, e.client, `waiting for a free slot: 1 of 1 requests to "capped-whole" are in flight`, ids...)
		for _, id := range ids {
			require.Equal(t, tasks.StatusSucceeded, waitDone(t, e.client, id).Status)
		}
		whole = e.up.flights.of(group)
	})
	wg.Wait()
	require.Equal(t, 2, apart.most, "two credentials, a slot each: both at once")
	require.Equal(t, 1, same.most, "one credential, one slot")
	require.Len(t, same.spans, 2)
	require.Equal(t, 1, whole.most, "per integration: one slot for both credentials")
	require.Len(t, whole.spans, 2)
}

// A call canceled through the API while in flight releases its slot at
// once, not when its request would have ended.
func TestConcurrencySlotReleasedOnCancel(t *testing.T) {
	t.Parallel()
	e := setup(t)
	group := "cap-cancel-" + uid()
	long := enqueue(t, e.client, inFlight("capped-cancel", group, 8000))
	require.Eventually(t, func() bool { return e.up.flights.of(group).now == 1 }, 10*time.Second, time.Millisecond)
	require.Equal(t, 1, inUse(t, e.rdb, "capped-cancel"))
	canceled := time.Now()
	rec, err := e.client.Cancel(context.Background(), long)
	require.NoError(t, err)
	require.Equal(t, tasks.StatusCanceled, rec.Status)
	require.Eventually(t, func() bool { return inUse(t, e.rdb, "capped-cancel") == 0 }, 5*time.Second, 5*time.Millisecond,
		"the canceled call's slot should be released")
	next := waitDone(t, e.client, enqueue(t, e.client, inFlight("capped-cancel", group, 0)))
	require.Equal(t, tasks.StatusSucceeded, next.Status)
	require.Equal(t, 1, next.Attempts)
	require.Less(t, time.Since(canceled), 6*time.Second, "the next call went before the canceled request would have ended")
	require.Equal(t, 1, e.up.flights.of(group).most)
}

// A call cut off by its timeout releases its slot.
func TestConcurrencySlotReleasedOnTimeout(t *testing.T) {
	t.Parallel()
	e := setup(t)
	group := "cap-timeout-" + uid()
	call := inFlight("capped-timeout", group, 3000)
	call.Timeout = tasks.Duration(300 * time.Millisecond)
	rec := waitDone(t, e.client, enqueue(t, e.client, call))
	require.Equal(t, tasks.StatusFailed, rec.Status)
	require.Equal(t, tasks.KindTimeout, rec.Error.Kind)
	require.Zero(t, inUse(t, e.rdb, "capped-timeout"), "released before the record was written")
	next := waitDone(t, e.client, enqueue(t, e.client, inFlight("capped-timeout", group, 0)))
	require.Equal(t, tasks.StatusSucceeded, next.Status)
}

// A call that took a slot and is then held by the rate limit gives the
// slot back while it waits.
func TestConcurrencySlotReleasedWhenTheRateLimitHolds(t *testing.T) {
	t.Parallel()
	e := setup(t)
	group := "cap-rl-" + uid()
	first := waitDone(t, e.client, enqueue(t, e.client, inFlight("capped-limited", group, 0)))
	require.Equal(t, tasks.StatusSucceeded, first.Status)
	held := enqueue(t, e.client, inFlight("capped-limited", group, 0))
	awaitHeld(t, e.client, "waiting for the fleet-wide rate limit of 1 per 1m0s", held)
	require.Zero(t, inUse(t, e.rdb, "capped-limited"), "the slot was given back before the hold was written")
	_, err := e.client.Cancel(context.Background(), held)
	require.NoError(t, err)
}

// Calls waiting for a slot hold no worker: with more of them waiting than
// the worker runs at once (20), other calls still go through.
func TestConcurrencyHeldCallsHoldNoWorker(t *testing.T) {
	t.Parallel()
	e := setup(t)
	group := "cap-many-" + uid()
	long := enqueue(t, e.client, inFlight("capped-many", group, 15000))
	require.Eventually(t, func() bool { return e.up.flights.of(group).now == 1 }, 10*time.Second, time.Millisecond)
	ids := []string{long}
	t.Cleanup(func() {
		for _, id := range ids {
			_, _ = e.client.Cancel(context.Background(), id)
		}
	})
	for range 25 {
		ids = append(ids, enqueue(t, e.client, inFlight("capped-many", group, 0)))
	}
	const note = `waiting for a free slot: 1 of 1 requests to "capped-many" are in flight`
	require.Eventually(t, func() bool {
		for _, id := range ids[1:] {
			rec, err := e.client.Get(context.Background(), id)
			if err != nil || rec.Status != tasks.StatusRetrying || rec.Note != note {
				return false
			}
		}
		return true
	}, 20*time.Second, 10*time.Millisecond, "all 25 should be waiting for the slot")
	start := time.Now()
	rec := e.run(t, &tasks.Call{Integration: "bin", Method: "GET", Path: "/get"})
	require.Equal(t, tasks.StatusSucceeded, rec.Status)
	require.Less(t, time.Since(start), 5*time.Second, "a call to another integration went through while 25 waited")
	require.Equal(t, 1, e.up.flights.of(group).most)
}

// concEnv is a Redis of its own, a /inflight upstream, and a worker with
// the shortest slot lease and drain limit, with its metrics.
type concEnv struct {
	rdb     *redis.Client
	fl      *flights
	client  *producer.Client
	w       *worker.Worker
	reg     *prometheus.Registry
	logs    *syncBuffer
	records *tasks.Store
}

func setupConc(t *testing.T, opts ...func(*worker.Config)) *concEnv {
	e := &concEnv{fl: newFlights(), reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	srv := redistest.Start(t)
	up := httptest.NewServer(e.fl)
	t.Cleanup(up.Close)
	cat, err := tasks.ParseCatalog([]byte("integrations:\n  one:\n    base_url: " + up.URL +
		"\n    timeout: 20s\n    max_timeout: 20s\n    concurrency: 1\n"))
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
	m, err := worker.NewMetrics(e.reg)
	require.NoError(t, err)
	log := zerolog.New(e.logs)
	cfg := &worker.Config{Catalog: cat, Records: e.records, Credentials: creds, Keyring: ring,
		Concurrency: 10, Logger: &log, ShutdownTimeout: drainLimit, SlotLease: worker.MinSlotLease, Metrics: m}
	for _, o := range opts {
		o(cfg)
	}
	e.w, err = worker.New(e.rdb, cfg)
	require.NoError(t, err)
	require.NoError(t, e.w.Start())
	t.Cleanup(e.w.Shutdown)
	return e
}

// slotsGauge is callq_concurrency_slots_in_use{integration="one"}.
func (e *concEnv) slotsGauge(t *testing.T) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "callq_concurrency_slots_in_use" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "integration" && l.GetValue() == "one" {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return 0
}

// A call longer than several leases keeps its slot (the worker renews it),
// and the call waiting for it does not go before it ends.
func TestConcurrencySlotRenewedWhileTheAttemptRuns(t *testing.T) {
	t.Parallel()
	e := setupConc(t)
	lease := worker.MinSlotLease
	long := enqueue(t, e.client, inFlight("one", "renew", int((3*lease+lease/2).Milliseconds())))
	require.Eventually(t, func() bool { return e.fl.of("renew").now == 1 }, 10*time.Second, time.Millisecond)
	waiting := enqueue(t, e.client, inFlight("one", "renew", 0))
	for e.fl.of("renew").now == 1 {
		require.Equal(t, 1, inUse(t, e.rdb, "one"), "the long call's slot is held until it ends")
		require.Len(t, e.fl.of("renew").spans, 1, "the waiting call must not go meanwhile")
		require.Equal(t, 1.0, e.slotsGauge(t), "the worker holds one slot")
		time.Sleep(50 * time.Millisecond) // pacing the checks, for 3.5 leases
	}
	for _, id := range []string{long, waiting} {
		rec := waitDone(t, e.client, id)
		require.Equal(t, tasks.StatusSucceeded, rec.Status)
		require.Equal(t, 1, rec.Attempts)
	}
	fl := e.fl.of("renew")
	require.Len(t, fl.spans, 2)
	require.Equal(t, 1, fl.most)
	require.False(t, fl.spans[1].start.Before(fl.spans[0].end))
	require.NotContains(t, e.logs.String(), "concurrency slot lost")
	require.Zero(t, e.slotsGauge(t), "and none once both are done")
}

// The drain limit cuts a call off: its slot is released before Shutdown
// returns.
func TestConcurrencySlotReleasedAtTheDrainLimit(t *testing.T) {
	t.Parallel()
	e := setupConc(t)
	enqueue(t, e.client, inFlight("one", "drain", 20000))
	require.Eventually(t, func() bool { return e.fl.of("drain").now == 1 }, 10*time.Second, time.Millisecond)
	require.Equal(t, 1, inUse(t, e.rdb, "one"))
	e.w.Shutdown()
	require.Zero(t, inUse(t, e.rdb, "one"))
}

// A panic in the attempt (here the worker's CheckRetry), which asynq
// recovers, does not keep the slot: it is released, not renewed for ever.
func TestConcurrencySlotReleasedOnPanic(t *testing.T) {
	t.Parallel()
	var panicked atomic.Bool
	e := setupConc(t, func(c *worker.Config) {
		c.CheckRetry = func(ctx context.Context, resp *http.Response, err error) (bool, tasks.ErrorKind) {
			if panicked.CompareAndSwap(false, true) {
				panic("a CheckRetry with a bug")
			}
			return worker.DefaultCheckRetry(ctx, resp, err)
		}
	})
	id := enqueue(t, e.client, inFlight("one", "panic", 0))
	require.Eventually(t, panicked.Load, 10*time.Second, time.Millisecond)
	require.Eventually(t, func() bool { return inUse(t, e.rdb, "one") == 0 }, 5*time.Second, 10*time.Millisecond,
		"the slot of the attempt that panicked should be released")
	rec := waitDone(t, e.client, id)
	require.Equal(t, tasks.StatusSucceeded, rec.Status, "asynq runs the task again: %+v", rec.History)
	// Once the call is done no attempt holds a slot, for well past a
	// lease: a slot still renewed would show here. (Checked before the
	// task's second run, this saw that run's own slot, now and then.)
	for start := time.Now(); time.Since(start) < 2*worker.MinSlotLease; time.Sleep(50 * time.Millisecond) {
		require.Zero(t, inUse(t, e.rdb, "one"))
	}
}

func TestSlotLeaseValidated(t *testing.T) {
	t.Parallel()
	e := setup(t)
	_, err := worker.New(e.rdb, &worker.Config{Catalog: e.catalog, Records: e.records, Credentials: e.creds, Keyring: e.keyring,
		SlotLease: 500 * time.Millisecond})
	require.ErrorContains(t, err, "Config.SlotLease must be 0 (the default, 15s) or at least 1s")
}
