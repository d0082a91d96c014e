package worker_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
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

// blockingReceiver is a webhook receiver that holds every delivery until
// the test releases it (or the worker gives up), counting those it holds.
type blockingReceiver struct {
	*httptest.Server
	mu            sync.Mutex
	held, maxHeld int
	answered      int
	release       func()
}

func newBlockingReceiver(t *testing.T) *blockingReceiver {
	r := &blockingReceiver{}
	released := make(chan struct{})
	r.release = sync.OnceFunc(func() { close(released) })
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		r.mu.Lock()
		r.held++
		r.maxHeld = max(r.maxHeld, r.held)
		r.mu.Unlock()
		defer func() {
			r.mu.Lock()
			r.held--
			r.mu.Unlock()
		}()
		select {
		case <-req.Context().Done():
			return
		case <-released:
		}
		r.mu.Lock()
		r.answered++
		r.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.Close)
	t.Cleanup(r.release) // runs first: lets Close return
	return r
}

// counts are the deliveries held now, the most ever held at once, and
// those answered.
func (r *blockingReceiver) counts() (held, maxHeld, answered int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.held, r.maxHeld, r.answered
}

// poolEnv is a Redis of its own, an upstream that holds calls (hold), one
// that answers at once (fast), a receiver that holds deliveries, and
// workers made on demand, each with its own Redis client.
type poolEnv struct {
	srv     *redistest.Server
	rdb     *redis.Client
	hold    *holdingUpstream
	recv    *blockingReceiver
	cat     *tasks.Catalog
	ring    *auth.Keyring
	records *tasks.Store
	client  *producer.Client
}

func setupPools(t *testing.T) *poolEnv {
	e := &poolEnv{srv: redistest.Start(t), hold: newHoldingUpstream(t), recv: newBlockingReceiver(t)}
	fast := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(fast.Close)
	var err error
	e.cat, err = tasks.ParseCatalog([]byte("integrations:\n  hold:\n    base_url: " + e.hold.URL +
		"\n    timeout: 20s\n    max_timeout: 20s\n  fast:\n    base_url: " + fast.URL + "\n"))
	require.NoError(t, err)
	key, _ := auth.GenerateKey()
	e.ring, err = auth.ParseKeyring(key)
	require.NoError(t, err)
	e.rdb = e.srv.Client(t)
	e.records, err = tasks.NewStore(e.rdb, nil)
	require.NoError(t, err)
	t.Cleanup(func() { e.records.Close() })
	e.client, err = producer.NewClient(e.rdb, "acme", &producer.Config{Catalog: e.cat, Records: e.records,
		WebhooksEnabled: true, WebhookAllowPrivate: true})
	require.NoError(t, err)
	return e
}

// start starts a worker that may deliver to loopback, logging to logs;
// opts change its Config.
func (e *poolEnv) start(t *testing.T, logs io.Writer, opts ...func(*worker.Config)) *worker.Worker {
	return e.startOn(t, redis.NewClient(&redis.Options{Addr: e.srv.Addr}), logs, opts...)
}

// startOn is start on rdb, which it closes when the test ends.
func (e *poolEnv) startOn(t *testing.T, rdb *redis.Client, logs io.Writer, opts ...func(*worker.Config)) *worker.Worker {
	t.Cleanup(func() { rdb.Close() })
	records, err := tasks.NewStore(rdb, nil)
	require.NoError(t, err)
	creds, err := auth.NewStore(rdb, &auth.StoreConfig{Keyring: e.ring})
	require.NoError(t, err)
	secrets, err := auth.ParseWebhookSecrets(webhookSecret)
	require.NoError(t, err)
	log := zerolog.New(logs)
	cfg := &worker.Config{Catalog: e.cat, Records: records, Credentials: creds, Keyring: e.ring,
		Logger: &log, ShutdownTimeout: time.Second, ReconcileInterval: worker.ReconcileOff,
		WebhookSecrets: secrets, WebhookAllowPrivate: true, WebhookTimeout: time.Minute}
	for _, o := range opts {
		o(cfg)
	}
	w, err := worker.New(rdb, cfg)
	require.NoError(t, err)
	require.NoError(t, w.Start())
	t.Cleanup(w.Shutdown)
	return w
}

// call queues a call to integration, with a webhook to the receiver when
// hooked, and answers its correlation ID.
func (e *poolEnv) call(t *testing.T, integration string, hooked bool, maxAttempts int) string {
	id := fmt.Sprintf("%s-%s", integration, uid())
	c := &tasks.Call{Integration: integration, Method: "GET", Path: "/x", CorrelationID: id,
		Headers: map[string]string{"X-Test-ID": id}, Retry: &tasks.RetryPolicy{MaxAttempts: maxAttempts}}
	if hooked {
		c.Webhook = &tasks.Webhook{URL: e.recv.URL + "/hooks"}
	}
	_, err := e.client.Enqueue(context.Background(), c)
	require.NoError(t, err)
	return id
}

// waitWebhook waits for the webhook of call id to reach status.
func (e *poolEnv) waitWebhook(t *testing.T, id, status string) *tasks.Record {
	t.Helper()
	var rec *tasks.Record
	require.Eventually(t, func() bool {
		var err error
		rec, err = e.client.Get(context.Background(), id)
		return err == nil && rec.Webhook != nil && rec.Webhook.Status == status
	}, 20*time.Second, 10*time.Millisecond, "the webhook of %s never became %s: %+v", id, status, rec)
	return rec
}

// servers waits until asynq lists n servers in the worker's Redis (each
// writes its own at start), and answers them: the calls' first, the
// deliveries' last.
func (e *poolEnv) servers(t *testing.T, n int) []*asynq.ServerInfo {
	t.Helper()
	inspector := asynq.NewInspectorFromRedisClient(e.rdb)
	var got []*asynq.ServerInfo
	require.Eventually(t, func() bool {
		var err error
		got, err = inspector.Servers()
		return err == nil && len(got) == n
	}, 10*time.Second, 10*time.Millisecond, "asynq should list %d servers", n)
	slices.SortFunc(got, func(a, b *asynq.ServerInfo) int {
		return compareBool(servesWebhooks(a), servesWebhooks(b))
	})
	return got
}

func servesWebhooks(s *asynq.ServerInfo) bool {
	for q := range s.Queues {
		if rediskeys.LogicalQueue(q) == tasks.WebhookQueue {
			return true
		}
	}
	return false
}

func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// A worker runs two asynq servers: the calls' serves every shard of the
// call queues, under the current count and the previous one, and never the
// webhooks queue; the deliveries' serves every shard of the webhooks queue
// and nothing else, each with its own slots.
func TestWebhookDeliveriesHaveAServerOfTheirOwn(t *testing.T) {
	t.Parallel()
	e := setupPools(t)
	e.start(t, io.Discard, func(c *worker.Config) {
		c.Concurrency, c.WebhookConcurrency = 3, 5
		c.QueueShards, c.PreviousQueueShards = 2, []int{1}
	})
	sharding, err := tasks.NewSharding(2, []int{1}, "shards")
	require.NoError(t, err)

	srvs := e.servers(t, 2)
	calls, hooks := srvs[0], srvs[1]
	require.Equal(t, 3, calls.Concurrency)
	require.Equal(t, sharding.Expand(worker.DefaultQueues()), calls.Queues, "every shard of the call queues, and only them")
	require.False(t, servesWebhooks(calls), "the calls' server does not poll the webhooks queue: %v", calls.Queues)
	require.Equal(t, 5, hooks.Concurrency)
	require.Equal(t, sharding.Expand(map[string]int{tasks.WebhookQueue: 1}), hooks.Queues, "every shard of the webhooks queue")
	require.Len(t, hooks.Queues, 3, "webhooks#0.2, webhooks#1.2, and webhooks of the previous count")

	// And the delivery, queued by the call's worker on its shard, is made.
	e.recv.release()
	id := e.call(t, "fast", true, 1)
	rec := e.waitWebhook(t, id, tasks.WebhookDelivered)
	require.Equal(t, 1, rec.Webhook.Attempts)
}

// Deliveries held by a slow receiver fill their own slots only: calls
// keep running beside them, and the deliveries beyond the slots wait in
// their queue until the receiver answers.
func TestSlowReceiverDoesNotTakeCallSlots(t *testing.T) {
	t.Parallel()
	e := setupPools(t)
	e.start(t, io.Discard, func(c *worker.Config) { c.Concurrency, c.WebhookConcurrency = 2, 2 })
	ctx := context.Background()
	var hooked []string
	for range 4 {
		hooked = append(hooked, e.call(t, "fast", true, 1))
	}
	require.Eventually(t, func() bool { held, _, _ := e.recv.counts(); return held == 2 }, 20*time.Second, 10*time.Millisecond,
		"both delivery slots should be held at the receiver")

	// With one pool of 2 slots for both, the held deliveries would starve
	// these.
	var more []string
	for range 6 {
		more = append(more, e.call(t, "fast", false, 1))
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for _, id := range append(slices.Clone(hooked), more...) {
		rec, err := e.client.Wait(wctx, id)
		require.NoError(t, err, "call %s", id)
		require.Equal(t, tasks.StatusSucceeded, rec.Status, "call %s", id)
	}
	held, maxHeld, answered := e.recv.counts()
	require.Equal(t, 2, held, "the delivery slots are still held")
	require.Equal(t, 2, maxHeld, "no more deliveries than WebhookConcurrency at once")
	require.Zero(t, answered)
	info, err := asynq.NewInspectorFromRedisClient(e.rdb).GetQueueInfo(tasks.WebhookQueue)
	require.NoError(t, err)
	require.Equal(t, 2, info.Active, "two deliveries running")
	require.Equal(t, 2, info.Pending, "two waiting for a delivery slot")

	e.recv.release()
	for _, id := range hooked {
		rec := e.waitWebhook(t, id, tasks.WebhookDelivered)
		require.Equal(t, 1, rec.Webhook.Attempts, "call %s", id)
	}
	_, maxHeld, answered = e.recv.counts()
	require.Equal(t, 4, answered)
	require.Equal(t, 2, maxHeld)
}

// deprecatedEntry is the warning a webhooks entry in Config.Queues gets.
const deprecatedEntry = "names the webhooks queue, which no longer sets anything"

// A webhooks entry in Config.Queues, which set the webhooks queue's
// priority among the calls' once, is accepted with one warning and sets
// nothing: the calls' server does not serve it, and deliveries go on.
func TestWebhooksQueueEntryIsIgnored(t *testing.T) {
	t.Parallel()
	e := setupPools(t)
	logs := &syncBuffer{}
	queues := map[string]int{tasks.DefaultQueue: 3, tasks.WebhookQueue: 7}
	e.start(t, logs, func(c *worker.Config) { c.Queues = queues })
	require.Equal(t, map[string]int{tasks.DefaultQueue: 3, tasks.WebhookQueue: 7}, queues, "the caller's map is left as it was")
	require.Equal(t, 1, strings.Count(logs.String(), deprecatedEntry), logs.String())
	require.Contains(t, logs.String(), "CALLQ_WEBHOOK_CONCURRENCY")

	srvs := e.servers(t, 2)
	require.Equal(t, map[string]int{tasks.DefaultQueue: 3}, srvs[0].Queues, "the calls' server leaves the webhooks queue out")
	require.Equal(t, map[string]int{tasks.WebhookQueue: 1}, srvs[1].Queues)
	require.Equal(t, worker.DefaultConcurrency, srvs[1].Concurrency, "WebhookConcurrency defaults to Concurrency")

	e.recv.release()
	id := e.call(t, "fast", true, 1)
	e.waitWebhook(t, id, tasks.WebhookDelivered)
}

// A Config.Queues naming only the webhooks queue made a worker that only
// delivered webhooks; it still does, rather than serve the default call
// queues.
func TestWebhooksQueueAloneStillDeliversOnly(t *testing.T) {
	t.Parallel()
	e := setupPools(t)
	logs := &syncBuffer{}
	e.start(t, logs, func(c *worker.Config) { c.Queues = map[string]int{tasks.WebhookQueue: 2} })
	require.Equal(t, 1, strings.Count(logs.String(), deprecatedEntry), logs.String())
	// asynq logs this as each server starts, before Start returns.
	require.Equal(t, 1, strings.Count(logs.String(), "Starting processing"), "one server: %s", logs.String())
	srvs := e.servers(t, 1)
	require.Equal(t, map[string]int{tasks.WebhookQueue: 1}, srvs[0].Queues)
}

// Shutdown drains a delivery in flight: it waits for it, as for a call,
// and the delivery is recorded once it returns.
func TestShutdownDrainsADeliveryInFlight(t *testing.T) {
	t.Parallel()
	e := setupPools(t)
	logs := &syncBuffer{}
	w := e.start(t, logs, func(c *worker.Config) { c.ShutdownTimeout = time.Minute })
	id := e.call(t, "fast", true, 1)
	require.Eventually(t, func() bool { held, _, _ := e.recv.counts(); return held == 1 }, 20*time.Second, 10*time.Millisecond,
		"the delivery should be held at the receiver")

	done := make(chan struct{})
	go func() { w.Shutdown(); close(done) }()
	// asynq logs this as the deliveries' server begins to shut down.
	require.Eventually(t, func() bool {
		for line := range strings.Lines(logs.String()) {
			if strings.Contains(line, "Starting graceful shutdown") && strings.Contains(line, `"asynq_server":"webhooks"`) {
				return true
			}
		}
		return false
	}, 20*time.Second, 10*time.Millisecond, "the deliveries' server should be shutting down")
	select {
	case <-done:
		t.Fatal("Shutdown returned while a delivery was in flight, well within the drain limit")
	default:
	}
	e.recv.release()
	<-done
	rec, err := e.client.Get(context.Background(), id)
	require.NoError(t, err)
	require.Equal(t, tasks.WebhookDelivered, rec.Webhook.Status, "recorded before Shutdown returned: %+v", rec.Webhook)
	require.Equal(t, 1, rec.Webhook.Attempts)
}

// The drain limit cuts off the calls and the deliveries still running,
// both pools at once under the one limit: the call's attempt is recorded
// as interrupted, and the delivery counts as one that failed, its
// redelivery scheduled as the webhook schedule says.
func TestDrainLimitInterruptsCallsAndDeliveries(t *testing.T) {
	t.Parallel()
	e := setupPools(t)
	w := e.start(t, io.Discard, func(c *worker.Config) {
		c.Name, c.ShutdownTimeout = "pools-w1", drainLimit
		c.WebhookSchedule = []time.Duration{time.Hour}
	})
	held := e.call(t, "hold", false, 1)
	hooked := e.call(t, "fast", true, 1)
	require.Eventually(t, func() bool {
		delivering, _, _ := e.recv.counts()
		return e.hold.count(held) == 1 && delivering == 1
	}, 20*time.Second, 10*time.Millisecond, "the call and the delivery should both be in flight")
	w.Shutdown()

	ctx := context.Background()
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	rec, err := e.client.Wait(wctx, held)
	require.NoError(t, err)
	require.Equal(t, tasks.StatusFailed, rec.Status)
	require.Contains(t, rec.History[0].Error, "attempt interrupted: worker pools-w1 was shutting down and its drain limit of 200ms ran out")

	rec, err = e.client.Get(ctx, hooked)
	require.NoError(t, err)
	require.Equal(t, tasks.WebhookPending, rec.Webhook.Status, "%+v", rec.Webhook)
	require.Equal(t, 1, rec.Webhook.Attempts)
	require.NotNil(t, rec.Webhook.LastError)
	info, err := asynq.NewInspectorFromRedisClient(e.rdb).GetTaskInfo(tasks.WebhookQueue, tasks.WebhookTaskID(rec, false))
	require.NoError(t, err)
	require.Equal(t, asynq.TaskStateRetry, info.State, "redelivered on the schedule")
	require.Equal(t, 1, info.Retried)
	require.WithinDuration(t, time.Now().Add(time.Hour), info.NextProcessAt, 10*time.Minute)
	_, _, answered := e.recv.counts()
	require.Zero(t, answered)
}

func TestWebhookConcurrencyValidated(t *testing.T) {
	t.Parallel()
	e := setupPools(t)
	creds, err := auth.NewStore(e.rdb, &auth.StoreConfig{Keyring: e.ring})
	require.NoError(t, err)
	_, err = worker.New(e.rdb, &worker.Config{Catalog: e.cat, Records: e.records, Credentials: creds, Keyring: e.ring,
		WebhookConcurrency: -1})
	require.EqualError(t, err, "worker: Config.WebhookConcurrency must be 0 (the default, as Concurrency) or at least 1")
}

// The pool holds a connection for each call and each delivery in flight,
// and the room asynq's loops need; the deliveries' slots default to the
// calls'.
func TestRedisPoolSizeCountsBothPools(t *testing.T) {
	t.Parallel()
	floor := 10 * runtime.GOMAXPROCS(0)
	require.Equal(t, max(floor, 50+50+20), worker.RedisPoolSize(0, 0), "the defaults")
	require.Equal(t, max(floor, 200+200+20), worker.RedisPoolSize(200, 0), "deliveries as many as calls")
	require.Equal(t, max(floor, 200+10+20), worker.RedisPoolSize(200, 10))
	require.Equal(t, max(floor, 50+300+20), worker.RedisPoolSize(0, 300))
}
