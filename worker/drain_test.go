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

// A worker's drain limit interrupts the calls still running: each attempt
// is recorded as interrupted and counts. A call allowed one attempt fails
// and its task is gone, so it never reaches the upstream again; a call
// allowed two is taken up by the other worker and sent once more.
func TestDrainLimitInterruptsAndCountsTheAttempt(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	up := newHoldingUpstream(t)
	cat, err := tasks.ParseCatalog([]byte("integrations:\n  hold:\n    base_url: " + up.URL + "\n    timeout: 20s\n    max_timeout: 20s\n"))
	require.NoError(t, err)
	key, _ := auth.GenerateKey()
	ring, err := auth.ParseKeyring(key)
	require.NoError(t, err)
	rdb := srv.Client(t)
	records, err := tasks.NewStore(rdb, nil)
	require.NoError(t, err)
	t.Cleanup(func() { records.Close() })
	client, err := producer.NewClient(rdb, "acme", &producer.Config{Catalog: cat, Records: records})
	require.NoError(t, err)

	const drainLimit = 200 * time.Millisecond
	newWorker := func(name string) *worker.Worker {
		// Its own Redis connection pool, like its own process.
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
		t.Cleanup(func() { rdb.Close() })
		records, err := tasks.NewStore(rdb, nil)
		require.NoError(t, err)
		creds, err := auth.NewStore(rdb, &auth.StoreConfig{Keyring: ring})
		require.NoError(t, err)
		log := zerolog.Nop()
		w, err := worker.New(rdb, &worker.Config{Catalog: cat, Records: records, Credentials: creds, Keyring: ring,
			Concurrency: 10, Logger: &log, Name: name, ShutdownTimeout: drainLimit})
		require.NoError(t, err)
		require.NoError(t, w.Start())
		t.Cleanup(w.Shutdown)
		return w
	}

	ctx := context.Background()
	w1 := newWorker("drain-w1")
	var once, twice []string
	for i := range 4 {
		for _, c := range []struct {
			ids *[]string
			max int
		}{{&once, 1}, {&twice, 2}} {
			id := fmt.Sprintf("drain-%d-%d-%s", c.max, i, uid())
			*c.ids = append(*c.ids, id)
			_, err := client.Enqueue(ctx, &tasks.Call{Integration: "hold", Method: "GET", Path: "/hold", CorrelationID: id,
				Headers: map[string]string{"X-Test-ID": id}, Retry: &tasks.RetryPolicy{MaxAttempts: c.max}})
			require.NoError(t, err)
		}
	}
	require.Eventually(t, func() bool { return up.total() == len(once)+len(twice) }, 20*time.Second, 10*time.Millisecond,
		"every call should be at the upstream, held, through worker1")
	newWorker("drain-w2")
	w1.Shutdown()

	inspector := asynq.NewInspectorFromRedisClient(rdb)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, id := range append(append([]string{}, once...), twice...) {
		rec, err := client.Wait(wctx, id)
		require.NoError(t, err, "call %s", id)
		require.NotEmpty(t, rec.History, "call %s", id)
		require.Equal(t, len(rec.History), rec.Attempts, "call %s", id)
		require.LessOrEqual(t, rec.Attempts, rec.MaxAttempts, "call %s: %+v", id, rec.History)
		require.Contains(t, rec.History[0].Error, "attempt interrupted: worker drain-w1 was shutting down and its drain limit of 200ms ran out",
			"call %s: %+v", id, rec.History)
	}
	for _, id := range once {
		rec, err := client.Get(ctx, id)
		require.NoError(t, err)
		require.Equal(t, tasks.StatusFailed, rec.Status, "call %s: %+v", id, rec.History)
		require.Equal(t, 1, rec.Attempts)
		require.Equal(t, tasks.KindInternal, rec.Error.Kind)
		require.Contains(t, rec.Error.Message, "all 1 attempts were used; the last was interrupted")
		_, err = inspector.GetTaskInfo(rec.Queue, tasks.TaskID("acme", id))
		require.ErrorIs(t, err, asynq.ErrTaskNotFound, "call %s: its task is done, so it never runs again", id)
		require.Equal(t, 1, up.count(id), "call %s", id)
	}
	for _, id := range twice {
		rec, err := client.Get(ctx, id)
		require.NoError(t, err)
		require.Equal(t, tasks.StatusSucceeded, rec.Status, "call %s: %+v", id, rec.History)
		require.Equal(t, 2, rec.Attempts)
		require.Equal(t, http.StatusOK, rec.History[1].Status)
		require.Equal(t, 2, up.count(id), "call %s", id)
	}
}
