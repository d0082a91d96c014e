package worker_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/redistest"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

// holdingUpstream holds the first request of each X-Test-ID until the
// client gives up, and answers later ones at once; it counts arrivals.
type holdingUpstream struct {
	*httptest.Server
	mu       sync.Mutex
	arrivals map[string]int
}

func newHoldingUpstream(t *testing.T) *holdingUpstream {
	u := &holdingUpstream{arrivals: map[string]int{}}
	release := make(chan struct{})
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Test-ID")
		u.mu.Lock()
		u.arrivals[id]++
		n := u.arrivals[id]
		u.mu.Unlock()
		if n == 1 {
			select {
			case <-r.Context().Done():
				return
			case <-release:
			}
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ok":true}`)
	}))
	t.Cleanup(u.Close)
	t.Cleanup(func() { close(release) }) // runs first: lets Close return
	return u
}

func (u *holdingUpstream) count(id string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.arrivals[id]
}

func (u *holdingUpstream) total() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, c := range u.arrivals {
		n += c
	}
	return n
}

// drainEnv is a Redis of its own, a holding upstream, and workers made on
// demand, each with its own Redis client, like processes of a fleet.
type drainEnv struct {
	t       *testing.T
	srv     *redistest.Server
	rdb     *redis.Client
	up      *holdingUpstream
	cat     *tasks.Catalog
	ring    *auth.Keyring
	client  *producer.Client
	records *tasks.Store
}

// drainLimit is the workers' ShutdownTimeout.
const drainLimit = 200 * time.Millisecond

func setupDrain(t *testing.T) *drainEnv {
	e := &drainEnv{t: t, srv: redistest.Start(t), up: newHoldingUpstream(t)}
	var err error
	e.cat, err = tasks.ParseCatalog([]byte("integrations:\n  hold:\n    base_url: " + e.up.URL + "\n    timeout: 20s\n    max_timeout: 20s\n"))
	require.NoError(t, err)
	key, _ := auth.GenerateKey()
	e.ring, err = auth.ParseKeyring(key)
	require.NoError(t, err)
	e.rdb = e.srv.Client(t)
	e.records, err = tasks.NewStore(e.rdb, nil)
	require.NoError(t, err)
	t.Cleanup(func() { e.records.Close() })
	e.client, err = producer.NewClient(e.rdb, "acme", &producer.Config{Catalog: e.cat, Records: e.records})
	require.NoError(t, err)
	return e
}

// startWorker starts a worker named name, logging to logs.
func (e *drainEnv) startWorker(name string, logs *syncBuffer) *worker.Worker {
	t := e.t
	rdb := redis.NewClient(&redis.Options{Addr: e.srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	records, err := tasks.NewStore(rdb, nil)
	require.NoError(t, err)
	creds, err := auth.NewStore(rdb, &auth.StoreConfig{Keyring: e.ring})
	require.NoError(t, err)
	log := zerolog.New(logs)
	w, err := worker.New(rdb, &worker.Config{Catalog: e.cat, Records: records, Credentials: creds, Keyring: e.ring,
		Concurrency: 10, Logger: &log, Name: name, ShutdownTimeout: drainLimit})
	require.NoError(t, err)
	require.NoError(t, w.Start())
	t.Cleanup(w.Shutdown)
	return w
}

// enqueue queues n calls allowed maxAttempts attempts each.
func (e *drainEnv) enqueue(n, maxAttempts int) []string {
	var ids []string
	for i := range n {
		id := fmt.Sprintf("drain-%d-%d-%s", maxAttempts, i, uid())
		ids = append(ids, id)
		_, err := e.client.Enqueue(context.Background(), &tasks.Call{Integration: "hold", Method: "GET", Path: "/hold", CorrelationID: id,
			Headers: map[string]string{"X-Test-ID": id}, Retry: &tasks.RetryPolicy{MaxAttempts: maxAttempts}})
		require.NoError(e.t, err)
	}
	return ids
}

// check waits for every call and checks the rule: the attempt cut off by
// the drain is the first in history and counts; a call allowed one
// attempt failed, its task is gone and it reached the upstream once; a
// call allowed two succeeded on its second, sent by another worker.
func (e *drainEnv) check(once, twice []string, interruption string) {
	t := e.t
	ctx := context.Background()
	inspector := asynq.NewInspectorFromRedisClient(e.rdb)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, id := range append(append([]string{}, once...), twice...) {
		rec, err := e.client.Wait(wctx, id)
		require.NoError(t, err, "call %s", id)
		require.NotEmpty(t, rec.History, "call %s", id)
		require.Equal(t, len(rec.History), rec.Attempts, "call %s", id)
		require.LessOrEqual(t, rec.Attempts, rec.MaxAttempts, "call %s: %+v", id, rec.History)
		require.Contains(t, rec.History[0].Error, interruption, "call %s: %+v", id, rec.History)
	}
	for _, id := range once {
		rec, err := e.client.Get(ctx, id)
		require.NoError(t, err)
		require.Equal(t, tasks.StatusFailed, rec.Status, "call %s: %+v", id, rec.History)
		require.Equal(t, 1, rec.Attempts)
		require.Equal(t, tasks.KindInternal, rec.Error.Kind)
		require.Contains(t, rec.Error.Message, "all 1 attempts were used; the last was interrupted")
		_, err = inspector.GetTaskInfo(rec.Queue, tasks.TaskID("acme", id))
		require.ErrorIs(t, err, asynq.ErrTaskNotFound, "call %s: its task is done, so it never runs again", id)
		require.Equal(t, 1, e.up.count(id), "call %s", id)
	}
	for _, id := range twice {
		rec, err := e.client.Get(ctx, id)
		require.NoError(t, err)
		require.Equal(t, tasks.StatusSucceeded, rec.Status, "call %s: %+v", id, rec.History)
		require.Equal(t, 2, rec.Attempts)
		require.Equal(t, http.StatusOK, rec.History[1].Status)
		require.Equal(t, 2, e.up.count(id), "call %s", id)
	}
}

// A worker's drain limit interrupts the calls still running: each attempt
// is recorded as interrupted and counts. A call allowed one attempt fails
// and its task is gone, so it never reaches the upstream again; a call
// allowed two is taken up by the other worker and sent once more.
func TestDrainLimitInterruptsAndCountsTheAttempt(t *testing.T) {
	t.Parallel()
	e := setupDrain(t)
	w1 := e.startWorker("drain-w1", &syncBuffer{})
	once, twice := e.enqueue(4, 1), e.enqueue(4, 2)
	require.Eventually(t, func() bool { return e.up.total() == len(once)+len(twice) }, 20*time.Second, 10*time.Millisecond,
		"every call should be at the upstream, held, through worker1")
	e.startWorker("drain-w2", &syncBuffer{})
	w1.Shutdown()
	e.check(once, twice, "attempt interrupted: worker drain-w1 was shutting down and its drain limit of 200ms ran out")
}

// When Redis is too slow for the interrupted handlers to record their
// attempts within the grace after the drain limit, Shutdown returns
// anyway, and asynq does not put the calls back uncounted: once Redis
// answers, the attempts count all the same.
func TestDrainLimitWithRedisPausedStillCounts(t *testing.T) {
	t.Parallel()
	e := setupDrain(t)
	logs := &syncBuffer{}
	w1 := e.startWorker("drain-w1", logs)
	once, twice := e.enqueue(2, 1), e.enqueue(2, 2)
	require.Eventually(t, func() bool { return e.up.total() == len(once)+len(twice) }, 20*time.Second, 10*time.Millisecond,
		"every call should be at the upstream, held, through worker1")
	// Longer than the drain limit and its 5s grace; shorter than the two
	// tries of go-redis's 5s read timeout that a handler's write gets.
	require.NoError(t, e.rdb.Do(context.Background(), "CLIENT", "PAUSE", 7000, "ALL").Err())
	w1.Shutdown()
	require.Contains(t, logs.String(), "handlers still running after the drain limit and grace",
		"Shutdown should have given up waiting while Redis was paused")
	e.startWorker("drain-w2", &syncBuffer{})
	// The handler's own write, or the next run's Begin, records it.
	e.check(once, twice, "attempt interrupted: ")
}
