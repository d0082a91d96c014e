package tasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/internal/redistest"
	"github.com/callq/callq/tasks"
)

// storeEnv is what a store test works with: a real redis-server, a client
// on it and a Store.
type storeEnv struct {
	srv   *redistest.Server
	rdb   *redis.Client
	store *tasks.Store
	cfg   tasks.StoreConfig
	ctx   context.Context
}

// parallelRedis marks t parallel unless the suite shares one external Redis
// (CALLQ_TEST_REDIS_URL), which each redistest.Start flushes.
func parallelRedis(t *testing.T) {
	if os.Getenv(redistest.EnvURL) == "" {
		t.Parallel()
	}
}

func setup(t *testing.T) *storeEnv {
	t.Helper()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	cfg := tasks.StoreConfig{ResultTTL: time.Hour, PendingTTL: 2 * time.Hour}
	store, err := tasks.NewStore(rdb, &cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return &storeEnv{srv: srv, rdb: rdb, store: store, cfg: cfg, ctx: ctx}
}

var testNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// newRecord is a queued record of tenant and id.
func newRecord(tenant, id string) *tasks.Record {
	return &tasks.Record{
		CorrelationID: id,
		Tenant:        tenant,
		Status:        tasks.StatusQueued,
		Integration:   "gh",
		Method:        "GET",
		Path:          "/repos",
		Queue:         "default",
		MaxAttempts:   3,
		History:       []tasks.Attempt{},
		CreatedAt:     testNow,
	}
}

// create stores a new queued record and returns it.
func (e *storeEnv) create(t *testing.T, tenant, id string) *tasks.Record {
	t.Helper()
	rec := newRecord(tenant, id)
	require.NoError(t, e.store.Create(e.ctx, rec, "fp-"+id, 0, nil))
	return rec
}

// finish writes rec as succeeded with the given upstream status.
func (e *storeEnv) finish(t *testing.T, rec *tasks.Record, status int) {
	t.Helper()
	done := *rec
	done.Status = tasks.StatusSucceeded
	done.Attempts = 1
	done.Response = &tasks.Response{Status: status, Headers: map[string]string{}}
	completed := testNow.Add(time.Second)
	done.CompletedAt = &completed
	require.NoError(t, e.store.Write(e.ctx, &done, 0))
}

// pttl is the remaining TTL of the record's key.
func (e *storeEnv) pttl(t *testing.T, tenant, id string) time.Duration {
	t.Helper()
	d, err := e.rdb.PTTL(e.ctx, rediskeys.Record(tenant, id)).Result()
	require.NoError(t, err)
	return d
}

func TestNewStoreConfig(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = rdb.Close() })

	s, err := tasks.NewStore(rdb, nil)
	require.NoError(t, err)
	require.Equal(t, tasks.DefaultResultTTL, s.ResultTTL())
	require.Equal(t, 24*time.Hour, s.ResultTTL())
	require.NoError(t, s.Close(), "closing a store that never subscribed")

	s, err = tasks.NewStore(rdb, &tasks.StoreConfig{ResultTTL: time.Minute})
	require.NoError(t, err)
	require.Equal(t, time.Minute, s.ResultTTL())

	_, err = tasks.NewStore(rdb, &tasks.StoreConfig{ResultTTL: -time.Second})
	require.Error(t, err)
	_, err = tasks.NewStore(rdb, &tasks.StoreConfig{PendingTTL: -time.Second})
	require.Error(t, err)
}

func TestStoreCreateGet(t *testing.T) {
	parallelRedis(t)
	e := setup(t)

	rec := newRecord("acme", "order-1")
	require.NoError(t, e.store.Create(e.ctx, rec, "fp-a", 0, nil))
	require.InDelta(t, e.cfg.PendingTTL, e.pttl(t, "acme", "order-1"), float64(5*time.Second))

	got, err := e.store.Get(e.ctx, "acme", "order-1")
	require.NoError(t, err)
	require.Equal(t, rec, got)

	// The same ID again reports the existing record and its fingerprint.
	again := newRecord("acme", "order-1")
	again.Path = "/other"
	err = e.store.Create(e.ctx, again, "fp-b", 0, nil)
	require.ErrorIs(t, err, tasks.ErrExists)
	var exists *tasks.ExistsError
	require.ErrorAs(t, err, &exists)
	require.Equal(t, "fp-a", exists.Fingerprint)
	require.Equal(t, rec, exists.Record)
	got, err = e.store.Get(e.ctx, "acme", "order-1")
	require.NoError(t, err)
	require.Equal(t, "/repos", got.Path, "a second Create does not overwrite")

	// Another tenant's ID is its own record.
	other := newRecord("globex", "order-1")
	require.NoError(t, e.store.Create(e.ctx, other, "fp-c", 0, nil))
	got, err = e.store.Get(e.ctx, "globex", "order-1")
	require.NoError(t, err)
	require.Equal(t, "globex", got.Tenant)

	// A delayed call's record lives the delay longer.
	err = e.store.Create(e.ctx, newRecord("acme", "later"), "fp", 3*time.Hour, nil)
	require.NoError(t, err)
	require.InDelta(t, e.cfg.PendingTTL+3*time.Hour, e.pttl(t, "acme", "later"), float64(5*time.Second))

	got, err = e.store.Get(e.ctx, "acme", "missing")
	require.ErrorIs(t, err, tasks.ErrNotFound)
	require.Nil(t, got)
	_, err = e.store.Get(e.ctx, "initech", "order-1")
	require.ErrorIs(t, err, tasks.ErrNotFound)
}

func TestStoreBegin(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	e.create(t, "acme", "order-1")

	first := tasks.RunMarker{Attempt: 1, StartedAt: testNow.Add(time.Second), Worker: "w1"}
	b, err := e.store.Begin(e.ctx, "acme", "order-1", first)
	require.NoError(t, err)
	require.Equal(t, tasks.StatusQueued, b.Record.Status, "the record as it was before the attempt")
	require.Nil(t, b.Lost)
	require.Equal(t, int64(2), b.Version)

	got, err := e.store.Get(e.ctx, "acme", "order-1")
	require.NoError(t, err)
	require.Equal(t, tasks.StatusRunning, got.Status)
	require.NotNil(t, got.StartedAt)
	require.True(t, got.StartedAt.Equal(first.StartedAt), "started_at comes from the run marker")

	// A second Begin while running: the first worker was lost.
	second := tasks.RunMarker{Attempt: 2, StartedAt: testNow.Add(time.Minute), Worker: "w2"}
	b2, err := e.store.Begin(e.ctx, "acme", "order-1", second)
	require.NoError(t, err)
	require.Equal(t, tasks.StatusRunning, b2.Record.Status)
	require.Equal(t, int64(3), b2.Version)
	require.NotNil(t, b2.Lost)
	require.Equal(t, 1, b2.Lost.Attempt)
	require.Equal(t, "w1", b2.Lost.Worker)
	require.True(t, b2.Lost.StartedAt.Equal(first.StartedAt))

	// A write clears the marker: the next Begin finds no lost attempt.
	retrying := *b2.Record
	retrying.Status = tasks.StatusRetrying
	retrying.Attempts = 2
	require.NoError(t, e.store.Write(e.ctx, &retrying, b2.Version))
	b3, err := e.store.Begin(e.ctx, "acme", "order-1", tasks.RunMarker{Attempt: 3, StartedAt: testNow})
	require.NoError(t, err)
	require.Equal(t, tasks.StatusRetrying, b3.Record.Status)
	require.Equal(t, 2, b3.Record.Attempts)
	require.Nil(t, b3.Lost)

	// Begin on a terminal record reports it and changes nothing.
	canceled := *b3.Record
	canceled.Status = tasks.StatusCanceled
	require.NoError(t, e.store.Write(e.ctx, &canceled, 0))
	b4, err := e.store.Begin(e.ctx, "acme", "order-1", tasks.RunMarker{Attempt: 4, StartedAt: testNow})
	require.ErrorIs(t, err, tasks.ErrFinished)
	require.Nil(t, b4)
	var finished *tasks.FinishedError
	require.ErrorAs(t, err, &finished)
	require.Equal(t, tasks.StatusCanceled, finished.Record.Status)
	got, err = e.store.Get(e.ctx, "acme", "order-1")
	require.NoError(t, err)
	require.Equal(t, tasks.StatusCanceled, got.Status)

	b5, err := e.store.Begin(e.ctx, "acme", "missing", first)
	require.ErrorIs(t, err, tasks.ErrNotFound)
	require.Nil(t, b5)
	exists, err := e.rdb.Exists(e.ctx, rediskeys.Record("acme", "missing")).Result()
	require.NoError(t, err)
	require.Zero(t, exists, "Begin does not create a record")
}

func TestStoreWrite(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	rec := e.create(t, "acme", "order-1")

	b, err := e.store.Begin(e.ctx, "acme", "order-1", tasks.RunMarker{Attempt: 1, StartedAt: testNow})
	require.NoError(t, err)

	// A stale version is refused.
	stale := *b.Record
	stale.Attempts = 99
	require.ErrorIs(t, e.store.Write(e.ctx, &stale, b.Version-1), tasks.ErrChanged)
	got, err := e.store.Get(e.ctx, "acme", "order-1")
	require.NoError(t, err)
	require.Zero(t, got.Attempts)

	// The right version is taken, and bumps the version.
	retrying := *b.Record
	retrying.Status = tasks.StatusRetrying
	retrying.Attempts = 1
	next := time.Now().Add(time.Hour)
	retrying.NextAttemptAt = &next
	require.NoError(t, e.store.Write(e.ctx, &retrying, b.Version))
	require.ErrorIs(t, e.store.Write(e.ctx, &retrying, b.Version), tasks.ErrChanged, "the version moved on")
	got, err = e.store.Get(e.ctx, "acme", "order-1")
	require.NoError(t, err)
	require.Equal(t, tasks.StatusRetrying, got.Status)
	require.Equal(t, 1, got.Attempts)
	require.InDelta(t, e.cfg.PendingTTL+time.Hour, e.pttl(t, "acme", "order-1"), float64(5*time.Second),
		"a pending record lives past its next attempt")

	// A terminal write of a call someone waits for publishes, sets the
	// result TTL and freezes the record; one nobody waits for publishes
	// nothing.
	sub := e.rdb.Subscribe(e.ctx, "callq:done")
	t.Cleanup(func() { _ = sub.Close() })
	_, err = sub.Receive(e.ctx)
	require.NoError(t, err)

	e.finish(t, e.create(t, "acme", "order-unwaited"), 200)

	waited := make(chan *tasks.Record, 1)
	go func() {
		rec, _ := e.store.Wait(e.ctx, "acme", "order-1")
		waited <- rec
	}()
	require.Eventually(t, func() bool {
		return e.rdb.HGet(e.ctx, rediskeys.Record("acme", "order-1"), "w").Val() == "1"
	}, 5*time.Second, time.Millisecond, "Wait marks the call it waits for")
	done := *got
	done.Status = tasks.StatusFailed
	done.Error = &tasks.CallError{Kind: tasks.KindHTTPStatus, Message: "404 Not Found"}
	require.NoError(t, e.store.Write(e.ctx, &done, 0))

	msg, err := sub.ReceiveMessage(e.ctx)
	require.NoError(t, err)
	require.Equal(t, "callq:done", msg.Channel)
	require.Equal(t, "acme:order-1", msg.Payload, "the first message is the waited call's: the unwaited one published nothing")
	require.Equal(t, tasks.StatusFailed, (<-waited).Status)
	ttl := e.pttl(t, "acme", "order-1")
	require.InDelta(t, e.cfg.ResultTTL, ttl, float64(5*time.Second))
	require.LessOrEqual(t, ttl, e.cfg.ResultTTL)

	again := done
	again.Status = tasks.StatusSucceeded
	require.ErrorIs(t, e.store.Write(e.ctx, &again, 0), tasks.ErrFinished)
	nonTerminal := done
	nonTerminal.Status = tasks.StatusRunning
	require.ErrorIs(t, e.store.Write(e.ctx, &nonTerminal, 0), tasks.ErrFinished)
	got, err = e.store.Get(e.ctx, "acme", "order-1")
	require.NoError(t, err)
	require.Equal(t, tasks.StatusFailed, got.Status)
	require.Equal(t, done.Error, got.Error)

	// No record, no write.
	ghost := newRecord("acme", "ghost")
	require.ErrorIs(t, e.store.Write(e.ctx, ghost, 0), tasks.ErrNotFound)
	_, err = e.store.Get(e.ctx, "acme", "ghost")
	require.ErrorIs(t, err, tasks.ErrNotFound)
	_ = rec
}

func TestStoreUpdate(t *testing.T) {
	parallelRedis(t)
	e := setup(t)

	t.Run("applies", func(t *testing.T) {
		e.create(t, "acme", "u1")
		got, err := e.store.Update(e.ctx, "acme", "u1", func(r *tasks.Record) error {
			r.Webhook = &tasks.WebhookState{URL: "https://svc.example/h", Status: "delivered", Attempts: 1}
			return nil
		})
		require.NoError(t, err)
		require.Equal(t, "delivered", got.Webhook.Status)
		stored, err := e.store.Get(e.ctx, "acme", "u1")
		require.NoError(t, err)
		require.Equal(t, got, stored)
	})

	t.Run("fn error aborts", func(t *testing.T) {
		e.create(t, "acme", "u2")
		boom := errors.New("boom")
		got, err := e.store.Update(e.ctx, "acme", "u2", func(r *tasks.Record) error {
			r.Attempts = 42
			return boom
		})
		require.ErrorIs(t, err, boom)
		require.Nil(t, got)
		stored, err := e.store.Get(e.ctx, "acme", "u2")
		require.NoError(t, err)
		require.Zero(t, stored.Attempts)
	})

	t.Run("retries after a concurrent change", func(t *testing.T) {
		e.create(t, "acme", "u3")
		calls := 0
		got, err := e.store.Update(e.ctx, "acme", "u3", func(r *tasks.Record) error {
			calls++
			if calls == 1 {
				// Someone else writes between our read and our write.
				other := *r
				other.Path = "/changed"
				require.NoError(t, e.store.Write(e.ctx, &other, 0))
			}
			r.Attempts = calls
			return nil
		})
		require.NoError(t, err)
		require.Equal(t, 2, calls)
		require.Equal(t, 2, got.Attempts)
		require.Equal(t, "/changed", got.Path, "the second try saw the concurrent change")
		stored, err := e.store.Get(e.ctx, "acme", "u3")
		require.NoError(t, err)
		require.Equal(t, got, stored)
	})

	t.Run("gives up after repeated changes", func(t *testing.T) {
		e.create(t, "acme", "u4")
		calls := 0
		got, err := e.store.Update(e.ctx, "acme", "u4", func(r *tasks.Record) error {
			calls++
			other := *r
			require.NoError(t, e.store.Write(e.ctx, &other, 0))
			return nil
		})
		require.ErrorIs(t, err, tasks.ErrChanged)
		require.Nil(t, got)
		require.Equal(t, 10, calls)
	})

	t.Run("finished concurrently", func(t *testing.T) {
		rec := e.create(t, "acme", "u5")
		got, err := e.store.Update(e.ctx, "acme", "u5", func(r *tasks.Record) error {
			e.finish(t, rec, 204)
			r.Attempts = 7
			return nil
		})
		require.ErrorIs(t, err, tasks.ErrFinished)
		require.Nil(t, got)
		var finished *tasks.FinishedError
		require.ErrorAs(t, err, &finished)
		require.Equal(t, tasks.StatusSucceeded, finished.Record.Status)
		require.Equal(t, 204, finished.Record.Response.Status)
	})

	t.Run("terminal", func(t *testing.T) {
		rec := e.create(t, "acme", "u6")
		e.finish(t, rec, 200)
		called := false
		got, err := e.store.Update(e.ctx, "acme", "u6", func(r *tasks.Record) error { called = true; return nil })
		require.ErrorIs(t, err, tasks.ErrFinished)
		require.False(t, called)
		require.Nil(t, got)
		var finished *tasks.FinishedError
		require.ErrorAs(t, err, &finished)
		require.Equal(t, tasks.StatusSucceeded, finished.Record.Status)
	})

	t.Run("missing", func(t *testing.T) {
		got, err := e.store.Update(e.ctx, "acme", "nope", func(r *tasks.Record) error { return nil })
		require.ErrorIs(t, err, tasks.ErrNotFound)
		require.Nil(t, got)
	})
}

func TestStoreDelete(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	e.create(t, "acme", "d1")
	e.create(t, "acme", "d2")
	require.NoError(t, e.store.Delete(e.ctx, "acme", "d1"))
	_, err := e.store.Get(e.ctx, "acme", "d1")
	require.ErrorIs(t, err, tasks.ErrNotFound)
	_, err = e.store.Get(e.ctx, "acme", "d2")
	require.NoError(t, err, "only the named record goes")
	require.NoError(t, e.store.Delete(e.ctx, "acme", "d1"), "deleting twice is fine")

	// The ID is free again.
	require.NoError(t, e.store.Create(e.ctx, newRecord("acme", "d1"), "fp-new", 0, nil))
}

func TestStoreRecordJSONInRedis(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	e.create(t, "acme", "j1")
	raw, err := e.rdb.HGet(e.ctx, rediskeys.Record("acme", "j1"), "rec").Result()
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(raw), &m))
	require.Equal(t, "queued", m["status"])
	require.Equal(t, "j1", m["correlation_id"])
	fp, err := e.rdb.HGet(e.ctx, rediskeys.Record("acme", "j1"), "fp").Result()
	require.NoError(t, err)
	require.Equal(t, "fp-j1", fp)
}

// A record's hash holds its summary, what a list reads, and apart from it
// the response and history, which every whole read lays over the summary.
func TestStoreSummaryAndDetail(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	rec := e.create(t, "acme", "split")
	key := rediskeys.Record("acme", "split")
	require.Zero(t, e.rdb.HExists(e.ctx, key, "full").Val(), "a new record has no detail")

	done := *rec
	done.Status = tasks.StatusSucceeded
	done.Attempts = 1
	text := "hello"
	done.Response = &tasks.Response{Status: 200, Headers: map[string]string{"Content-Type": "text/plain"},
		BodyText: &text, Size: 5}
	done.History = []tasks.Attempt{{Attempt: 1, StartedAt: testNow, DurationMS: 7, Status: 200}}
	completed := testNow.Add(time.Second)
	done.CompletedAt = &completed
	require.NoError(t, e.store.Write(e.ctx, &done, 0))

	var sum, full map[string]any
	require.NoError(t, json.Unmarshal([]byte(e.rdb.HGet(e.ctx, key, "rec").Val()), &sum))
	require.Nil(t, sum["history"])
	require.Equal(t, map[string]any{"status": 200.0, "size": 5.0, "truncated": false, "headers": nil}, sum["response"])
	require.NoError(t, json.Unmarshal([]byte(e.rdb.HGet(e.ctx, key, "full").Val()), &full))
	require.ElementsMatch(t, []string{"response", "history"}, slices.Collect(maps.Keys(full)))

	got, err := e.store.Get(e.ctx, "acme", "split")
	require.NoError(t, err)
	require.Equal(t, &done, got)
	page, err := e.store.List(e.ctx, "acme", tasks.Filter{}, "", 10)
	require.NoError(t, err)
	require.Equal(t, []*tasks.Record{done.Summary()}, page.Calls)
}

func TestStoreWaitTerminal(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	rec := e.create(t, "acme", "w1")
	e.finish(t, rec, 200)

	// No error: it did not wait for the deadline.
	ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
	defer cancel()
	got, err := e.store.Wait(ctx, "acme", "w1")
	require.NoError(t, err)
	require.Equal(t, tasks.StatusSucceeded, got.Status)

	got, err = e.store.Wait(ctx, "acme", "missing")
	require.ErrorIs(t, err, tasks.ErrNotFound)
	require.Nil(t, got)
}

func TestStoreWaitWokenByWrite(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	rec := e.create(t, "acme", "w2")

	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	type result struct {
		rec *tasks.Record
		err error
	}
	res := make(chan result, 1)
	go func() {
		r, err := e.store.Wait(ctx, "acme", "w2")
		res <- result{r, err}
	}()

	// Non-terminal writes do not end the wait; the terminal write below is
	// the positive control, observed by the same receive.
	time.Sleep(100 * time.Millisecond)
	running := *rec
	running.Status = tasks.StatusRunning
	require.NoError(t, e.store.Write(e.ctx, &running, 0))
	time.Sleep(100 * time.Millisecond)
	select {
	case r := <-res:
		t.Fatalf("Wait returned before the call finished: %+v, %v", r.rec, r.err)
	default:
	}

	e.finish(t, rec, 201)
	r := <-res
	require.NoError(t, r.err, "woken by the write, not by the deadline")
	require.Equal(t, tasks.StatusSucceeded, r.rec.Status)
	require.Equal(t, 201, r.rec.Response.Status)
}

func TestStoreWaitDeadline(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	e.create(t, "acme", "w3")

	ctx, cancel := context.WithTimeout(e.ctx, 200*time.Millisecond)
	defer cancel()
	got, err := e.store.Wait(ctx, "acme", "w3")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NotNil(t, got, "the record as it stands comes with the error")
	require.Equal(t, tasks.StatusQueued, got.Status)
	require.Equal(t, "w3", got.CorrelationID)

	canceled, cancel2 := context.WithCancel(e.ctx)
	cancel2()
	_, err = e.store.Wait(canceled, "acme", "w3")
	require.ErrorIs(t, err, context.Canceled)
}

func TestStoreWaitMany(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	const n = 40
	recs := make([]*tasks.Record, n)
	for i := range n {
		recs[i] = e.create(t, "acme", fmt.Sprintf("m%d", i))
	}
	e.create(t, "acme", "never")

	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	type result struct {
		id  string
		rec *tasks.Record
		err error
	}
	results := make(chan result, 2*n)
	var wg sync.WaitGroup
	for i := range n {
		id := fmt.Sprintf("m%d", i)
		for range 2 { // two waiters per call
			wg.Go(func() {
				r, err := e.store.Wait(ctx, "acme", id)
				results <- result{id, r, err}
			})
		}
	}
	// A waiter on a call that never finishes is not woken by the others.
	neverCtx, neverCancel := context.WithTimeout(e.ctx, 1500*time.Millisecond)
	defer neverCancel()
	neverDone := make(chan result, 1)
	go func() {
		r, err := e.store.Wait(neverCtx, "acme", "never")
		neverDone <- result{"never", r, err}
	}()

	time.Sleep(100 * time.Millisecond)
	for i, rec := range recs {
		e.finish(t, rec, 200+i)
	}
	wg.Wait()
	close(results)
	seen := map[string]int{}
	for r := range results {
		require.NoError(t, r.err, r.id) // woken, not run out
		require.Equal(t, r.id, r.rec.CorrelationID)
		require.Equal(t, tasks.StatusSucceeded, r.rec.Status)
		var i int
		_, err := fmt.Sscanf(r.id, "m%d", &i)
		require.NoError(t, err)
		require.Equal(t, 200+i, r.rec.Response.Status, "each waiter gets its own call's record")
		seen[r.id]++
	}
	require.Len(t, seen, n)
	for id, c := range seen {
		require.Equal(t, 2, c, id)
	}

	r := <-neverDone
	require.ErrorIs(t, r.err, context.DeadlineExceeded)
	require.Equal(t, tasks.StatusQueued, r.rec.Status)
}

func TestStoreWaitAcrossRedisRestart(t *testing.T) {
	if os.Getenv(redistest.EnvURL) != "" {
		t.Skip("needs a redistest-owned redis-server to restart")
	}
	t.Parallel()
	e := setup(t)
	rec := e.create(t, "acme", "r1")
	// Only a saved dump survives the restart.
	require.NoError(t, e.rdb.Save(e.ctx).Err())

	ctx, cancel := context.WithTimeout(e.ctx, 15*time.Second)
	defer cancel()
	type result struct {
		rec *tasks.Record
		err error
	}
	res := make(chan result, 1)
	go func() {
		r, err := e.store.Wait(ctx, "acme", "r1")
		res <- result{r, err}
	}()
	time.Sleep(100 * time.Millisecond)

	e.srv.Restart(t)
	// Finish the call at once: the completion may be published before the
	// store's subscription is back, and the waiter must still learn of it.
	e.finish(t, rec, 200)

	r := <-res
	require.NoError(t, r.err)
	require.Equal(t, tasks.StatusSucceeded, r.rec.Status)
	require.NoError(t, ctx.Err(), "woken before the deadline")
}

// A wait whose deadline passes while it talks to Redis ends with the
// context's error, never with the Redis read's own timeout: a read times out
// at the deadline a moment before the context says so, and a caller told
// "i/o timeout" would take the store for unreachable.
func TestStoreWaitTinyDeadlineIsDeadlineExceeded(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	e.create(t, "acme", "tiny")
	for i := range 200 {
		d := time.Duration(5+i*10) * time.Microsecond
		ctx, cancel := context.WithTimeout(e.ctx, d)
		got, err := e.store.Wait(ctx, "acme", "tiny")
		cancel()
		if err == nil {
			continue // the wait ran out after the record was read: nothing to tell
		}
		require.ErrorIs(t, err, context.DeadlineExceeded, "wait=%s", d)
		if got != nil {
			require.Equal(t, "tiny", got.CorrelationID)
		}
	}
}

// The completion subscription a store opens on its first wait does not
// belong to that wait: a first waiter whose deadline is tiny must not fail
// the subscription under the waiters that came with it.
func TestStoreWaitSubscriptionOutlivesFirstWaiter(t *testing.T) {
	parallelRedis(t)
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	for i := range 20 {
		// A store of its own each round (its first wait subscribes), and a
		// record of its own.
		store, err := tasks.NewStore(rdb, nil)
		require.NoError(t, err)
		id := fmt.Sprintf("s%d", i)
		rec := newRecord("acme", id)
		err = store.Create(context.Background(), rec, "fp", 0, nil)
		require.NoError(t, err)

		tiny, cancelTiny := context.WithTimeout(context.Background(), 100*time.Microsecond)
		long, cancelLong := context.WithTimeout(context.Background(), 20*time.Second)
		tinyDone, longDone := make(chan error, 1), make(chan error, 1)
		go func() {
			_, err := store.Wait(tiny, "acme", id)
			tinyDone <- err
		}()
		go func() {
			got, err := store.Wait(long, "acme", id)
			if err == nil && !got.Status.Terminal() {
				err = fmt.Errorf("woken with status %s", got.Status)
			}
			longDone <- err
		}()
		<-tiny.Done()
		done := *rec
		done.Status, done.Attempts = tasks.StatusSucceeded, 1
		require.NoError(t, store.Write(context.Background(), &done, 0))
		require.NoError(t, <-longDone, "round %d", i)
		if err := <-tinyDone; err != nil {
			require.ErrorIs(t, err, context.DeadlineExceeded, "round %d", i)
		}
		cancelTiny()
		cancelLong()
		require.NoError(t, store.Close())
	}
}

// WriteSummary writes a record's status and the rest, and leaves its
// response and history as stored, whatever the record given holds.
func TestStoreWriteSummary(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	e.create(t, "acme", "held")
	b, err := e.store.Begin(e.ctx, "acme", "held", tasks.RunMarker{Attempt: 1, StartedAt: testNow})
	require.NoError(t, err)
	attempted := *b.Record
	attempted.Status = tasks.StatusRetrying
	attempted.Response = &tasks.Response{Status: 503, BodyText: new("overloaded"), Size: 10}
	attempted.History = []tasks.Attempt{{Attempt: 1, Status: 503}}
	attempted.Attempts = 1
	require.NoError(t, e.store.Write(e.ctx, &attempted, b.Version))

	b, err = e.store.Begin(e.ctx, "acme", "held", tasks.RunMarker{Attempt: 2, StartedAt: testNow})
	require.NoError(t, err)
	held := *b.Record
	held.Status, held.Note = tasks.StatusRetrying, "waiting for a free slot"
	held.Response, held.History = nil, nil // not written
	require.NoError(t, e.store.WriteSummary(e.ctx, &held, b.Version))
	require.ErrorIs(t, e.store.WriteSummary(e.ctx, &held, b.Version), tasks.ErrChanged, "the version moved on")

	got, err := e.store.Get(e.ctx, "acme", "held")
	require.NoError(t, err)
	require.Equal(t, tasks.StatusRetrying, got.Status)
	require.Equal(t, "waiting for a free slot", got.Note)
	require.Equal(t, 1, got.Attempts)
	require.Len(t, got.History, 1, "the history stored stands")
	require.NotNil(t, got.Response)
	require.Equal(t, "overloaded", *got.Response.BodyText, "the response stored stands")
}

// The stored summary leaves out its empty fields, and reads back as the
// same record: the API's JSON (Record's) still shows them.
func TestStoredSummaryLeavesOutEmptyFields(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	rec := e.create(t, "acme", "compact-1")
	raw, err := e.rdb.HGet(e.ctx, rediskeys.Record("acme", "compact-1"), "rec").Result()
	require.NoError(t, err)
	require.NotContains(t, raw, "null")
	require.NotContains(t, raw, `"attempts"`)
	got, err := e.store.Get(e.ctx, "acme", "compact-1")
	require.NoError(t, err)
	require.Equal(t, rec.CorrelationID, got.CorrelationID)
	require.Equal(t, rec.MaxAttempts, got.MaxAttempts)
	require.True(t, rec.CreatedAt.Equal(got.CreatedAt))
	require.Nil(t, got.Response)
	require.Nil(t, got.CompletedAt)
	api, err := json.Marshal(got)
	require.NoError(t, err)
	require.Contains(t, string(api), `"attempts":0`)
	require.Contains(t, string(api), `"response":null`)
	require.Contains(t, string(api), `"completed_at":null`)
}
