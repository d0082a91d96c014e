package worker_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
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

// shardEnv is a Redis of its own, an upstream that keeps the order of the
// paths it is asked for, and what producers and workers of any shard count
// need over them.
type shardEnv struct {
	rdb       *redis.Client
	records   *tasks.Store
	catalog   *tasks.Catalog
	keyring   *auth.Keyring
	creds     *auth.Store
	inspector *asynq.Inspector

	mu    sync.Mutex
	order []string // request paths, in the order the upstream got them
}

// paths are the request paths the upstream got, in order.
func (e *shardEnv) paths() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.order)
}

func setupShards(t *testing.T) *shardEnv {
	t.Helper()
	e := &shardEnv{rdb: redistest.Start(t).Client(t)}
	e.inspector = asynq.NewInspectorFromRedisClient(e.rdb)
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.order = append(e.order, r.URL.Path)
		e.mu.Unlock()
		if strings.HasSuffix(r.URL.Path, "/hold") { // until canceled or the test ends
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(up.Close)
	t.Cleanup(func() { close(release) }) // runs first: lets Close return
	var err error
	e.catalog, err = tasks.ParseCatalog([]byte("integrations:\n  up:\n    base_url: " + up.URL + "\n"))
	require.NoError(t, err)
	key, _ := auth.GenerateKey()
	e.keyring, err = auth.ParseKeyring(key)
	require.NoError(t, err)
	e.creds, err = auth.NewStore(e.rdb, &auth.StoreConfig{Keyring: e.keyring})
	require.NoError(t, err)
	e.records, err = tasks.NewStore(e.rdb, nil)
	require.NoError(t, err)
	t.Cleanup(func() { e.records.Close() })
	return e
}

// client is a producer of tenant acme with shards asynq queues per queue
// and the previous counts.
func (e *shardEnv) client(t *testing.T, shards int, previous ...int) *producer.Client {
	t.Helper()
	c, err := producer.NewClient(e.rdb, "acme", &producer.Config{Catalog: e.catalog, Records: e.records,
		QueueShards: shards, PreviousQueueShards: previous})
	require.NoError(t, err)
	return c
}

// start runs a worker that serves queues, with the shard counts of cfg.
func (e *shardEnv) start(t *testing.T, queues map[string]int, concurrency int, shards int, previous ...int) *worker.Worker {
	t.Helper()
	return e.startLogged(t, nil, queues, concurrency, shards, previous...)
}

// startLogged is start with the worker's log, at info level, in logs.
func (e *shardEnv) startLogged(t *testing.T, logs *syncBuffer, queues map[string]int, concurrency int, shards int, previous ...int) *worker.Worker {
	t.Helper()
	log := zerolog.Nop()
	if logs != nil {
		log = zerolog.New(logs).Level(zerolog.InfoLevel)
	}
	w, err := worker.New(e.rdb, &worker.Config{Catalog: e.catalog, Records: e.records, Credentials: e.creds,
		Keyring: e.keyring, Concurrency: concurrency, Logger: &log, ShutdownTimeout: time.Second,
		Queues: queues, QueueShards: shards, PreviousQueueShards: previous, ReconcileInterval: worker.ReconcileOff})
	require.NoError(t, err)
	require.NoError(t, w.Start())
	t.Cleanup(w.Shutdown)
	return w
}

func (e *shardEnv) enqueue(t *testing.T, c *producer.Client, id, queue string, opts ...producer.Option) {
	t.Helper()
	_, err := c.Enqueue(context.Background(), &tasks.Call{Integration: "up", Method: "GET", Path: "/" + queue + "/" + id,
		CorrelationID: id}, append(opts, producer.WithQueue(queue))...)
	require.NoError(t, err)
}

// reconcileAhead runs a reconciler of the shard counts once, with its clock
// an hour ahead so that every call is old enough to be looked at.
func (e *shardEnv) reconcileAhead(t *testing.T, shards int, previous ...int) *worker.ReconcileReport {
	t.Helper()
	r, err := worker.NewReconciler(e.rdb, &worker.ReconcilerConfig{Records: e.records, Interval: time.Minute,
		QueueShards: shards, PreviousQueueShards: previous})
	require.NoError(t, err)
	worker.SetReconcilerClock(r, func() time.Time { return time.Now().Add(time.Hour) })
	rep, err := r.RunOnce(context.Background())
	require.NoError(t, err)
	require.NoError(t, r.Release(context.Background()))
	return rep
}

// CALLQ_QUEUE_SHARDS=4: a call's task is in the shard its ID names, the
// record keeps the logical queue, stats add the shards up, a cancel finds
// the task, and a worker of the same count runs every call.
func TestShardedQueuesRun(t *testing.T) {
	t.Parallel()
	e := setupShards(t)
	ctx := context.Background()
	c := e.client(t, 4)
	sharding, err := tasks.NewSharding(4, nil, "shards")
	require.NoError(t, err)
	var ids []string
	for i := range 40 {
		id := fmt.Sprintf("s-%02d", i)
		e.enqueue(t, c, id, "default")
		ids = append(ids, id)
		rec, err := c.Get(ctx, id)
		require.NoError(t, err)
		require.Equal(t, "default", rec.Queue, "the record keeps the logical queue")
		q := sharding.Queue("default", id)
		require.Equal(t, "default", rediskeys.LogicalQueue(q))
		require.NotEqual(t, "default", q)
		info, err := e.inspector.GetTaskInfo(q, tasks.TaskID("acme", id))
		require.NoError(t, err, "the task of %s is in %s", id, q)
		require.Equal(t, asynq.TaskStatePending, info.State)
	}
	e.enqueue(t, c, "later", "default", producer.WithDelay(time.Hour))
	names, err := e.inspector.Queues()
	require.NoError(t, err)
	require.Len(t, names, 4, "40 calls fill the 4 shards: %v", names)
	require.NotContains(t, names, "default", "nothing goes to the unsharded queue")

	st, err := c.Stats(ctx, time.Time{}, time.Time{})
	require.NoError(t, err)
	require.Equal(t, map[string]producer.QueueDepth{"default": {Pending: 40, Scheduled: 1}}, st.Queues,
		"the shards add up to their logical queue")

	rec, err := c.Cancel(ctx, "later")
	require.NoError(t, err)
	require.Equal(t, tasks.StatusCanceled, rec.Status)
	_, err = e.inspector.GetTaskInfo(sharding.Queue("default", "later"), tasks.TaskID("acme", "later"))
	require.ErrorIs(t, err, asynq.ErrTaskNotFound, "the cancel deleted the task from its shard")

	e.start(t, map[string]int{"default": 1}, 10, 4)
	for _, id := range ids {
		rec, err := c.Wait(ctx, id)
		require.NoError(t, err)
		require.Equal(t, tasks.StatusSucceeded, rec.Status, id)
	}
	require.Len(t, e.paths(), 40)

	// A call at the upstream shows running (its task found active in its
	// shard), and a cancel stops it.
	e.enqueue(t, c, "hold", "default")
	require.Eventually(t, func() bool { return slices.Contains(e.paths(), "/default/hold") }, 10*time.Second, 5*time.Millisecond)
	rec, err = c.Get(ctx, "hold")
	require.NoError(t, err)
	require.Equal(t, tasks.StatusRunning, rec.Status)
	rec, err = c.Cancel(ctx, "hold")
	require.NoError(t, err)
	require.Contains(t, rec.Error.Message, "while an attempt was running")
}

// From 1 shard to 4 on a running deployment: calls queued before the
// change (pending, delayed) are found where one shard put them, by the
// reconciler and a cancel, and a worker with CALLQ_PREVIOUS_QUEUE_SHARDS=1
// runs them beside the new ones. A worker that was not told the previous
// count warns of them, and its reconciler leaves them queued.
func TestShardCountChangeKeepsQueuedCalls(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, told := range []bool{true, false} {
		t.Run(map[bool]string{true: "told", false: "control"}[told], func(t *testing.T) {
			t.Parallel()
			e := setupShards(t)
			before := e.client(t, 1)
			var old []string
			for i := range 10 {
				id := fmt.Sprintf("old-%d", i)
				e.enqueue(t, before, id, "default")
				old = append(old, id)
			}
			e.enqueue(t, before, "old-delayed", "low", producer.WithDelay(time.Hour))
			e.enqueue(t, before, "old-cancel", "low", producer.WithDelay(time.Hour))
			if !told {
				// A worker of the new count alone says what it leaves behind.
				var logs syncBuffer
				w := e.startLogged(t, &logs, map[string]int{"default": 3, "low": 1}, 10, 4)
				require.Contains(t, logs.String(), `"asynq_queue":"default","tasks":10,"queue_shards":"4","message":"an asynq queue of another queue shard count holds calls this worker does not serve; add that count to CALLQ_PREVIOUS_QUEUE_SHARDS`)
				require.Contains(t, logs.String(), `"asynq_queue":"low","tasks":2,`)
				w.Shutdown()
				// A reconciler without the previous count does not fail them
				// as lost: their tasks are live in another asynq queue of
				// their queue, and would run once the count is added back
				// (a first attempt does not read the record first).
				rep := e.reconcileAhead(t, 4)
				require.Equal(t, 12, rep.Checked)
				require.Zero(t, rep.Lost, "a call whose task waits under another shard count is not lost")
				rec, err := before.Get(ctx, "old-0")
				require.NoError(t, err)
				require.Equal(t, tasks.StatusQueued, rec.Status)
				// Told, a worker runs them, and each record says so.
				e.start(t, map[string]int{"default": 3, "low": 1}, 10, 4, 1)
				for _, id := range old {
					rec, err := before.Wait(ctx, id)
					require.NoError(t, err)
					require.Equal(t, tasks.StatusSucceeded, rec.Status, id)
				}
				return
			}
			rep := e.reconcileAhead(t, 4, 1)
			require.Equal(t, 12, rep.Checked)
			require.Zero(t, rep.Lost, "the reconciler finds the tasks where one shard put them")

			after := e.client(t, 4, 1)
			var fresh []string
			for i := range 10 {
				id := fmt.Sprintf("new-%d", i)
				e.enqueue(t, after, id, "default")
				fresh = append(fresh, id)
			}
			// Enqueueing an old call again queues nothing: its task is
			// still where one shard put it.
			res, err := after.Enqueue(ctx, &tasks.Call{Integration: "up", Method: "GET", Path: "/default/old-0",
				CorrelationID: "old-0"}, producer.WithQueue("default"))
			require.NoError(t, err)
			require.True(t, res.Duplicate)
			st, err := after.Stats(ctx, time.Time{}, time.Time{})
			require.NoError(t, err)
			require.Equal(t, producer.QueueDepth{Pending: 20}, st.Queues["default"], "the old queue and the new shards")

			rec, err := after.Cancel(ctx, "old-cancel")
			require.NoError(t, err)
			require.Equal(t, tasks.StatusCanceled, rec.Status)
			_, err = e.inspector.GetTaskInfo("low", tasks.TaskID("acme", "old-cancel"))
			require.ErrorIs(t, err, asynq.ErrTaskNotFound, "the cancel found the task in the old queue")

			var logs syncBuffer
			e.startLogged(t, &logs, map[string]int{"default": 3, "low": 1}, 10, 4, 1)
			require.Contains(t, logs.String(), `"previous_queue_shards":1,"tasks":`)
			require.Contains(t, logs.String(), "still hold calls: keep it in CALLQ_PREVIOUS_QUEUE_SHARDS")
			require.NotContains(t, logs.String(), "does not serve")
			for _, id := range append(old, fresh...) {
				rec, err := after.Wait(ctx, id)
				require.NoError(t, err)
				require.Equal(t, tasks.StatusSucceeded, rec.Status, id)
			}
			info, err := e.inspector.GetTaskInfo("low", tasks.TaskID("acme", "old-delayed"))
			require.NoError(t, err)
			require.Equal(t, asynq.TaskStateScheduled, info.State, "a delayed call keeps its place in the old queue")
			require.Len(t, e.paths(), 20)
			require.Equal(t, 1, strings.Count(strings.Join(e.paths(), " "), "/default/old-0"), "the call enqueued again ran once")

			// Once the old queues are empty, a worker says the previous
			// count can go.
			_, err = after.Cancel(ctx, "old-delayed")
			require.NoError(t, err)
			var later syncBuffer
			e.startLogged(t, &later, map[string]int{"default": 3, "low": 1}, 10, 4, 1)
			require.Contains(t, later.String(), `"previous_queue_shards":1,"tasks":0,"message":"the asynq queues of a previous queue shard count are empty: CALLQ_PREVIOUS_QUEUE_SHARDS can drop it"`)
		})
	}
}

// Priorities hold between logical queues when each is split: with a
// backlog in critical (6) and low (1), each over 4 shards, a worker running
// one call at a time takes critical's calls about 6 times in 7, as it does
// unsplit (asynq weighs each shard by its queue's priority, and every
// queue has as many shards).
func TestShardedPrioritiesHold(t *testing.T) {
	t.Parallel()
	e := setupShards(t)
	c := e.client(t, 4)
	for i := range 150 {
		e.enqueue(t, c, fmt.Sprintf("c-%03d", i), "critical")
		e.enqueue(t, c, fmt.Sprintf("l-%03d", i), "low")
	}
	e.start(t, map[string]int{"critical": 6, "low": 1}, 1, 4)
	require.Eventually(t, func() bool { return len(e.paths()) >= 100 }, 30*time.Second, 10*time.Millisecond)
	first := e.paths()[:100]
	critical := 0
	for _, p := range first {
		if strings.HasPrefix(p, "/critical/") {
			critical++
		}
	}
	t.Logf("of the first 100 calls run, %d were critical's (6 in 7 expected: about 86)", critical)
	require.Greater(t, critical, 70, "critical's share fell: a shard's weight grew against the other queue's")
	require.Less(t, critical, 100, "low was starved")
}

// A webhook redelivery queued before a change of the queue shards, still
// waiting in the old webhook queue, makes a second request for one
// refused with ErrRedeliveryPending after the change, as it is before:
// the receiver must not get the redelivery twice.
func TestShardCountChangeKeepsOneRedelivery(t *testing.T) {
	t.Parallel()
	e := setupShards(t)
	ctx := context.Background()
	client := func(shards int, previous ...int) *producer.Client {
		c, err := producer.NewClient(e.rdb, "acme", &producer.Config{Catalog: e.catalog, Records: e.records,
			QueueShards: shards, PreviousQueueShards: previous, WebhooksEnabled: true})
		require.NoError(t, err)
		return c
	}
	before, after := client(1), client(4, 1)
	_, err := before.Enqueue(ctx, &tasks.Call{Integration: "up", Method: "GET", Path: "/x", CorrelationID: "hook",
		Webhook: &tasks.Webhook{URL: "https://hooks.example.com/in"}}, producer.WithDelay(time.Hour))
	require.NoError(t, err)
	_, err = before.Cancel(ctx, "hook") // finished; its first delivery queued
	require.NoError(t, err)
	_, err = before.RedeliverWebhook(ctx, "hook")
	require.NoError(t, err)
	_, err = before.RedeliverWebhook(ctx, "hook")
	require.ErrorIs(t, err, producer.ErrRedeliveryPending, "one shard: the redelivery is pending")

	_, err = after.RedeliverWebhook(ctx, "hook")
	require.ErrorIs(t, err, producer.ErrRedeliveryPending, "4 shards, previous 1: the redelivery queued on 1 is still pending")
	rec, err := after.Get(ctx, "hook")
	require.NoError(t, err)
	redeliveries := 0
	for _, q := range append([]string{tasks.WebhookQueue}, sharding4(t).Names(tasks.WebhookQueue)...) {
		if _, err := e.inspector.GetTaskInfo(q, tasks.WebhookTaskID(rec, true)); err == nil {
			redeliveries++
		}
	}
	require.Equal(t, 1, redeliveries, "one redelivery task in all the webhook queues")
}

func sharding4(t *testing.T) *tasks.Sharding {
	s, err := tasks.NewSharding(4, nil, "shards")
	require.NoError(t, err)
	return s
}

// A cancel by an API on a shard count other than the one that queued the
// call, not told of that one (CALLQ_PREVIOUS_QUEUE_SHARDS), still deletes
// the call's task: left, it would make its request once a worker serves
// its queue, after the API said canceled.
func TestCancelFindsTaskUnderAnotherCount(t *testing.T) {
	t.Parallel()
	e := setupShards(t)
	ctx := context.Background()
	e.enqueue(t, e.client(t, 1), "far", "low", producer.WithDelay(time.Hour))
	rec, err := e.client(t, 4).Cancel(ctx, "far")
	require.NoError(t, err)
	require.Equal(t, tasks.StatusCanceled, rec.Status)
	_, err = e.inspector.GetTaskInfo("low", tasks.TaskID("acme", "far"))
	require.ErrorIs(t, err, asynq.ErrTaskNotFound, "the cancel deleted the task where one shard put it")
}
