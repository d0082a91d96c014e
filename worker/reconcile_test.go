package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/internal/redistest"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

// reconcileEnv is a Redis of its own with producers of tenants acme and
// beta, an upstream, and a worker that runs calls but does not reconcile:
// the tests drive their own Reconciler. The worker does not serve queue
// "low", so a call there stays pending.
type reconcileEnv struct {
	rdb       *redis.Client
	records   *tasks.Store
	catalog   *tasks.Catalog
	keyring   *auth.Keyring
	creds     *auth.Store
	acme      *producer.Client
	beta      *producer.Client
	inspector *asynq.Inspector
	hits      *sync.Map // upstream path → *atomic.Int64
}

// hit is how many requests the upstream had for path.
func (e *reconcileEnv) hit(path string) int64 {
	n, _ := e.hits.LoadOrStore(path, &atomic.Int64{})
	return n.(*atomic.Int64).Load()
}

func setupReconcile(t *testing.T, runWorker bool) *reconcileEnv {
	t.Helper()
	rdb := redistest.Start(t).Client(t)
	release := make(chan struct{})
	hits := &sync.Map{}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := hits.LoadOrStore(r.URL.Path, &atomic.Int64{})
		n.(*atomic.Int64).Add(1)
		switch r.URL.Path {
		case "/hold": // until the worker gives up or the test ends
			select {
			case <-r.Context().Done():
			case <-release:
			}
		case "/later":
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(up.Close)
	t.Cleanup(func() { close(release) }) // runs first: lets Close return
	e := &reconcileEnv{rdb: rdb, inspector: asynq.NewInspectorFromRedisClient(rdb), hits: hits}
	var err error
	e.catalog, err = tasks.ParseCatalog([]byte("integrations:\n  up:\n    base_url: " + up.URL +
		"\n    timeout: 30s\n    retry: {max_attempts: 3, max_elapsed: 3h}\n"))
	require.NoError(t, err)
	key, _ := auth.GenerateKey()
	e.keyring, err = auth.ParseKeyring(key)
	require.NoError(t, err)
	e.creds, err = auth.NewStore(rdb, &auth.StoreConfig{Keyring: e.keyring})
	require.NoError(t, err)
	e.records, err = tasks.NewStore(rdb, nil)
	require.NoError(t, err)
	t.Cleanup(func() { e.records.Close() })
	for tenant, c := range map[string]**producer.Client{"acme": &e.acme, "beta": &e.beta} {
		*c, err = producer.NewClient(rdb, tenant, &producer.Config{Catalog: e.catalog, Records: e.records})
		require.NoError(t, err)
	}
	if runWorker {
		log := zerolog.Nop()
		w, err := worker.New(rdb, &worker.Config{Catalog: e.catalog, Records: e.records, Credentials: e.creds,
			Keyring: e.keyring, Concurrency: 10, Logger: &log, ShutdownTimeout: time.Second,
			Queues: map[string]int{"critical": 6, "default": 3}, ReconcileInterval: worker.ReconcileOff})
		require.NoError(t, err)
		require.NoError(t, w.Start())
		t.Cleanup(w.Shutdown)
	}
	return e
}

// reconciler returns a Reconciler over e's Redis that logs to logs at
// debug level and counts into reg.
func (e *reconcileEnv) reconciler(t *testing.T, cfg worker.ReconcilerConfig, logs *syncBuffer, reg *prometheus.Registry) *worker.Reconciler {
	t.Helper()
	cfg.Records = e.records
	if logs != nil {
		log := zerolog.New(logs).Level(zerolog.DebugLevel)
		cfg.Logger = &log
	}
	if reg != nil {
		m, err := worker.NewMetrics(reg)
		require.NoError(t, err)
		cfg.Metrics = m
	}
	r, err := worker.NewReconciler(e.rdb, &cfg)
	require.NoError(t, err)
	return r
}

func (e *reconcileEnv) enqueue(t *testing.T, c *producer.Client, id, path string, opts ...producer.Option) {
	t.Helper()
	_, err := c.Enqueue(context.Background(), &tasks.Call{Integration: "up", Method: "GET", Path: path, CorrelationID: id}, opts...)
	require.NoError(t, err)
}

// waitTask waits until asynq holds acme's call id in state.
func (e *reconcileEnv) waitTask(t *testing.T, queue, id string, state asynq.TaskState) {
	t.Helper()
	require.Eventually(t, func() bool {
		info, err := e.inspector.GetTaskInfo(queue, tasks.TaskID("acme", id))
		return err == nil && info.State == state
	}, 20*time.Second, 10*time.Millisecond, "the task of %s never became %s", id, state)
}

// metricsText is reg's exposition, as /metrics serves it.
func metricsText(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return rec.Body.String()
}

func goneMessage(queue string) string {
	return fmt.Sprintf("the call's task is gone from asynq queue %q (deleted, or lost with Redis data); the call was not finished", queue)
}

// A call whose task an operator deleted or archived with asynq's own tools
// fails as lost, in every tenant; a call whose task exists (scheduled,
// pending, retry, or active under a first attempt, whose record says
// queued), a finished call, and a call younger than the interval are left
// alone.
func TestReconcilerFailsCallsWhoseTaskIsGone(t *testing.T) {
	t.Parallel()
	e := setupReconcile(t, true)
	ctx := context.Background()
	later := producer.WithDelay(time.Hour)

	deleted := map[string]*producer.Client{"del-1": e.acme, "del-2": e.acme, "del-3": e.acme, "del-beta": e.beta}
	for id, c := range deleted {
		e.enqueue(t, c, id, "/ok", later)
		require.NoError(t, e.inspector.DeleteTask(tasks.DefaultQueue, tasks.TaskID(c.Tenant(), id)))
	}
	e.enqueue(t, e.acme, "archived", "/ok", later)
	require.NoError(t, e.inspector.ArchiveTask(tasks.DefaultQueue, tasks.TaskID("acme", "archived")))

	e.enqueue(t, e.acme, "scheduled", "/ok", later)
	e.enqueue(t, e.acme, "pending", "/ok", producer.WithQueue("low"))
	e.enqueue(t, e.acme, "retry", "/later")
	e.enqueue(t, e.acme, "active", "/hold")
	e.enqueue(t, e.acme, "done", "/ok")
	e.waitTask(t, "low", "pending", asynq.TaskStatePending)
	e.waitTask(t, tasks.DefaultQueue, "retry", asynq.TaskStateRetry)
	e.waitTask(t, tasks.DefaultQueue, "active", asynq.TaskStateActive)
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	done, err := e.acme.Wait(wctx, "done")
	require.NoError(t, err)
	require.Equal(t, tasks.StatusSucceeded, done.Status)
	alive := map[string]tasks.Status{"scheduled": tasks.StatusQueued, "pending": tasks.StatusQueued,
		"retry": tasks.StatusRetrying, "active": tasks.StatusQueued, "done": tasks.StatusSucceeded}
	stored := func(c *producer.Client, id string) *tasks.Record {
		t.Helper()
		rec, err := e.records.Get(ctx, c.Tenant(), id)
		require.NoError(t, err)
		return rec
	}
	untouched := map[string]*tasks.Record{}
	for id, st := range alive {
		untouched[id] = stored(e.acme, id)
		require.Equal(t, st, untouched[id].Status, id)
	}

	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	// Two calls a page, so a tenant takes several.
	r := e.reconciler(t, worker.ReconcilerConfig{Interval: time.Minute, PageSize: 2}, logs, reg)
	var ahead atomic.Int64
	worker.SetReconcilerClock(r, func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) })

	// Every call is younger than the interval: none is looked at.
	rep, err := r.RunOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, worker.ReconcileReport{Tenants: 2}, *rep)
	for id, c := range deleted {
		require.Equal(t, tasks.StatusQueued, stored(c, id).Status, id)
	}

	ahead.Store(int64(2 * time.Minute))
	start := time.Now()
	rep, err = r.RunOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, worker.ReconcileReport{Tenants: 2, Checked: 9, Lost: 5}, *rep,
		"five lost; scheduled, pending, retry and active checked and left; done not checked")
	for id, c := range deleted {
		rec := stored(c, id)
		require.Equal(t, tasks.StatusFailed, rec.Status, id)
		require.Equal(t, &tasks.CallError{Kind: tasks.KindLost, Message: goneMessage(tasks.DefaultQueue)}, rec.Error, id)
		require.NotNil(t, rec.CompletedAt, id)
		require.WithinRange(t, *rec.CompletedAt, start.Add(-time.Second), time.Now().Add(time.Second), id)
		require.Nil(t, rec.NextAttemptAt, id)
	}
	rec := stored(e.acme, "archived")
	require.Equal(t, tasks.StatusFailed, rec.Status)
	require.Equal(t, tasks.KindLost, rec.Error.Kind)
	require.Equal(t, `the call's task was archived in asynq queue "default" (with asynq's tools, or its retries ran out); the call was not finished`, rec.Error.Message)
	for id, rec := range untouched {
		require.Equal(t, rec, stored(e.acme, id), id)
	}

	// The lost calls are finished now: another run checks the rest only.
	rep, err = r.RunOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, worker.ReconcileReport{Tenants: 2, Checked: 4}, *rep)

	// A warning per lost call, naming it and saying what was found; a
	// summary per run at debug level.
	var lostLines int
	for line := range strings.SplitSeq(logs.String(), "\n") {
		if strings.Contains(line, `"message":"call failed as lost"`) {
			lostLines++
			require.Contains(t, line, `"level":"warn"`)
			require.Contains(t, line, `"correlation_id":`)
			require.Contains(t, line, `"error":"the call's task`)
		}
	}
	require.Equal(t, 5, lostLines)
	require.Contains(t, logs.String(), `"correlation_id":"del-beta","tenant":"beta"`)
	require.Equal(t, 3, strings.Count(logs.String(), `"message":"reconcile run"`))

	// The README quotes the messages as they are.
	readme, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	quoted, err := json.Marshal(goneMessage(tasks.DefaultQueue))
	require.NoError(t, err)
	require.Contains(t, string(readme), string(quoted))
	archived, _, _ := strings.Cut(rec.Error.Message, ";")
	require.Contains(t, strings.Join(strings.Fields(string(readme)), " "), "`"+archived+"; ...`")

	m := metricsText(t, reg)
	require.Contains(t, m, `callq_calls_finished_total{error_kind="lost",integration="up",status="failed"} 5`)
	require.Contains(t, m, `callq_reconcile_runs_total{result="ok"} 3`)
}

// The worker runs the reconciler itself (Config.ReconcileInterval), and a
// lost call's webhook tells the receiver it failed, and why.
func TestWorkerReconcilesLostCallAndDeliversWebhook(t *testing.T) {
	t.Parallel()
	e := setupHooks(t, true, func(c *worker.Config) { c.ReconcileInterval = 50 * time.Millisecond })
	r := newReceiver(t, 204)
	_, err := e.client.Enqueue(context.Background(), &tasks.Call{Integration: "up", Method: "GET", Path: "/x",
		CorrelationID: "hook-lost", Webhook: &tasks.Webhook{URL: r.URL}}, producer.WithDelay(time.Hour))
	require.NoError(t, err)
	require.NoError(t, asynq.NewInspectorFromRedisClient(e.rdb).DeleteTask(tasks.DefaultQueue, tasks.TaskID("acme", "hook-lost")))

	rec := e.webhookState(t, "hook-lost", tasks.WebhookDelivered)
	require.Equal(t, tasks.StatusFailed, rec.Status)
	require.Equal(t, tasks.KindLost, rec.Error.Kind)
	got := r.deliveries()
	require.Len(t, got, 1)
	verifyIndependently(t, got[0])
	var ev producer.WebhookEvent
	require.NoError(t, json.Unmarshal(got[0].body, &ev))
	require.Equal(t, "call.failed", ev.Type)
	require.Equal(t, "hook-lost", ev.Data.CorrelationID)
	require.Equal(t, &tasks.CallError{Kind: tasks.KindLost, Message: goneMessage(tasks.DefaultQueue)}, ev.Data.Error)
}

// One reconciler holds the fleet's lease at a time; it renews it by running
// again, gives it up with Release, and one that dies holding it loses it
// after three intervals.
func TestReconcilerLease(t *testing.T) {
	t.Parallel()
	e := setupReconcile(t, false)
	ctx := context.Background()
	holder := func() string { return e.rdb.Get(ctx, rediskeys.ReconcileLease).Val() }

	a := e.reconciler(t, worker.ReconcilerConfig{Interval: time.Hour, Name: "a"}, nil, nil)
	b := e.reconciler(t, worker.ReconcilerConfig{Interval: time.Hour, Name: "b"}, nil, nil)
	_, err := a.RunOnce(ctx)
	require.NoError(t, err)
	_, err = b.RunOnce(ctx)
	require.ErrorIs(t, err, worker.ErrLeaseHeld)
	_, err = a.RunOnce(ctx)
	require.NoError(t, err, "the holder runs again")
	require.True(t, strings.HasPrefix(holder(), "a/"), "the lease names its holder: %q", holder())
	ttl := e.rdb.PTTL(ctx, rediskeys.ReconcileLease).Val()
	require.True(t, ttl > 2*time.Hour && ttl <= 3*time.Hour, "the lease lasts three intervals: %s", ttl)

	require.NoError(t, b.Release(ctx))
	require.True(t, strings.HasPrefix(holder(), "a/"), "only the holder releases the lease")
	require.NoError(t, a.Release(ctx))
	_, err = b.RunOnce(ctx)
	require.NoError(t, err)
	_, err = a.RunOnce(ctx)
	require.ErrorIs(t, err, worker.ErrLeaseHeld)
	require.NoError(t, b.Release(ctx))

	// dead takes the lease and never renews nor releases it: it lapses.
	dead := e.reconciler(t, worker.ReconcilerConfig{Interval: 100 * time.Millisecond, Name: "dead"}, nil, nil)
	_, err = dead.RunOnce(ctx)
	require.NoError(t, err)
	require.LessOrEqual(t, e.rdb.PTTL(ctx, rediskeys.ReconcileLease).Val(), 300*time.Millisecond)
	_, err = a.RunOnce(ctx)
	require.ErrorIs(t, err, worker.ErrLeaseHeld)
	require.Eventually(t, func() bool {
		_, err := a.RunOnce(ctx)
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "the dead reconciler's lease never lapsed")
	require.True(t, strings.HasPrefix(holder(), "a/"))
	// Woken, dead neither releases a's lease nor runs.
	require.NoError(t, dead.Release(ctx))
	require.True(t, strings.HasPrefix(holder(), "a/"))
	_, err = dead.RunOnce(ctx)
	require.ErrorIs(t, err, worker.ErrLeaseHeld)
}

// Two reconcilers running on one Redis: one runs, interval after interval,
// the other never; when the first stops it releases the lease and the
// other takes over.
func TestReconcilersRunOneAtATime(t *testing.T) {
	t.Parallel()
	e := setupReconcile(t, false)
	type runner struct {
		r    *worker.Reconciler
		logs *syncBuffer
		stop context.CancelFunc
		done chan struct{}
	}
	start := func(name string) *runner {
		ru := &runner{logs: &syncBuffer{}, done: make(chan struct{})}
		ru.r = e.reconciler(t, worker.ReconcilerConfig{Interval: time.Second, Name: name}, ru.logs, nil)
		ctx, cancel := context.WithCancel(context.Background())
		ru.stop = func() { cancel(); <-ru.done }
		go func() { defer close(ru.done); ru.r.Run(ctx) }()
		t.Cleanup(ru.stop)
		return ru
	}
	runs := func(ru *runner) int { return strings.Count(ru.logs.String(), `"message":"reconcile run"`) }
	a, b := start("a"), start("b")
	require.Eventually(t, func() bool { return runs(a) >= 3 || runs(b) >= 3 }, 20*time.Second, 10*time.Millisecond)
	leader, other := a, b
	if runs(b) > runs(a) {
		leader, other = b, a
	}
	require.Zero(t, runs(other), "both reconcilers ran")

	leader.stop()
	require.Eventually(t, func() bool { return runs(other) >= 1 }, 20*time.Second, 10*time.Millisecond,
		"the other reconciler never took over")
	other.stop()
	require.Zero(t, e.rdb.Exists(context.Background(), rediskeys.ReconcileLease).Val(), "the lease was not released")
}

// A worker stops its reconciler when it shuts down: no goroutine of it is
// left, and the lease is released for another worker. Not parallel: it
// counts goroutines.
func TestWorkerShutdownStopsReconciler(t *testing.T) {
	e := setupReconcile(t, false)
	before := reconcilerGoroutines()
	log := zerolog.Nop()
	w, err := worker.New(e.rdb, &worker.Config{Catalog: e.catalog, Records: e.records, Credentials: e.creds,
		Keyring: e.keyring, Logger: &log, ShutdownTimeout: time.Second, ReconcileInterval: 50 * time.Millisecond})
	require.NoError(t, err)
	require.NoError(t, w.Start())
	require.Eventually(t, func() bool {
		return e.rdb.Exists(context.Background(), rediskeys.ReconcileLease).Val() == 1
	}, 10*time.Second, 5*time.Millisecond, "the worker's reconciler never took the lease")
	require.Equal(t, before+1, reconcilerGoroutines())
	w.Shutdown()
	require.Equal(t, before, reconcilerGoroutines())
	require.Zero(t, e.rdb.Exists(context.Background(), rediskeys.ReconcileLease).Val(), "the lease was not released")
}

// reconcilerGoroutines counts the goroutines running a Reconciler.
func reconcilerGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "worker.(*Reconciler).Run(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

func TestReconcilerConfigValidate(t *testing.T) {
	t.Parallel()
	e := setupReconcile(t, false)
	_, err := worker.NewReconciler(e.rdb, &worker.ReconcilerConfig{})
	require.ErrorContains(t, err, "ReconcilerConfig.Records is required")
	for _, d := range []time.Duration{-time.Second, time.Millisecond} {
		_, err = worker.NewReconciler(e.rdb, &worker.ReconcilerConfig{Records: e.records, Interval: d})
		require.ErrorContains(t, err, "ReconcilerConfig.Interval must be 0 (the default) or at least 10ms", d)
	}
	for _, d := range []time.Duration{-2 * time.Second, time.Millisecond} {
		_, err = worker.New(e.rdb, &worker.Config{Catalog: e.catalog, Records: e.records, Credentials: e.creds,
			Keyring: e.keyring, ReconcileInterval: d})
		require.ErrorContains(t, err, "Config.ReconcileInterval must be 0 (the default), at least 10ms, or ReconcileOff", d)
	}
}
