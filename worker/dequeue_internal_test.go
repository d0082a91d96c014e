package worker

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/rediskeys"
)

var probeQueues = map[string]int{"critical": 6, "default": 3, "low": 1}

// TestQueueProbesOneRoundTrip: asynq's server on queueProbes takes every
// task, from whichever queue holds it, with one script per task, never
// asynq's own probe; and skips a paused queue as asynq does.
func TestQueueProbesOneRoundTrip(t *testing.T) {
	t.Parallel()
	rdb, rec := recordedRedis(t)
	inspector := asynq.NewInspectorFromRedisClient(rdb)
	client := asynq.NewClientFromRedisClient(rdb)
	t.Cleanup(func() { _ = client.Close() })
	require.NoError(t, inspector.PauseQueue("critical"))

	const perQueue = 20
	for _, q := range []string{"critical", "default", "low"} {
		for range perQueue {
			_, err := client.Enqueue(asynq.NewTask("t", []byte(q)), asynq.Queue(q))
			require.NoError(t, err)
		}
	}
	var mu sync.Mutex
	var taken []string
	done := make(chan struct{})
	mux := asynq.NewServeMux()
	mux.HandleFunc("t", func(_ context.Context, task *asynq.Task) error {
		mu.Lock()
		defer mu.Unlock()
		taken = append(taken, string(task.Payload()))
		if len(taken) == 2*perQueue {
			close(done)
		}
		return nil
	})
	nop := zerolog.Nop()
	srv := asynq.NewServerFromRedisClient(newQueueProbes(rdb, probeQueues), asynq.Config{
		Concurrency: 1, Queues: probeQueues, TaskCheckInterval: 10 * time.Millisecond,
		Logger: NewAsynqLogger(&nop), LogLevel: asynq.FatalLevel})
	require.NoError(t, srv.Start(mux))
	t.Cleanup(srv.Shutdown)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("asynq took %d of %d tasks", len(taken), 2*perQueue)
	}
	probes := rec.count(dequeueAnyScript.Hash())
	require.Zero(t, rec.count(asynqDequeueSHA), "asynq's own probe reached Redis")
	// One script per task, and perhaps one empty round after the last
	// (the server went on polling) with one in flight.
	require.GreaterOrEqual(t, probes, 2*perQueue)
	require.LessOrEqual(t, probes, 2*perQueue+2, "scripts for %d tasks", 2*perQueue)

	mu.Lock()
	defer mu.Unlock()
	counts := map[string]int{}
	for _, q := range taken {
		counts[q]++
	}
	require.Equal(t, map[string]int{"default": perQueue, "low": perQueue}, counts, "the paused queue was skipped, the others emptied")
	info, err := inspector.GetQueueInfo("critical")
	require.NoError(t, err)
	require.Equal(t, perQueue, info.Pending, "the paused queue's tasks are still pending")
}

// TestQueueProbesEmptyRound: a round whose first probe found every queue
// empty answers the round's other probes without Redis, once each; the
// next round asks Redis again and finds a task queued meanwhile.
func TestQueueProbesEmptyRound(t *testing.T) {
	t.Parallel()
	rdb, rec := recordedRedis(t)
	p := newQueueProbes(rdb, probeQueues)
	ctx := context.Background()
	probe := func(q string) *redis.Cmd {
		return p.EvalSha(ctx, asynqDequeueSHA, rediskeys.AsynqDequeueKeys(q), time.Now().Add(30*time.Second).Unix(), rediskeys.AsynqTaskPrefix(q))
	}
	require.ErrorIs(t, probe("default").Err(), redis.Nil)
	require.Equal(t, 1, rec.count(dequeueAnyScript.Hash()))
	require.ErrorIs(t, probe("critical").Err(), redis.Nil)
	require.ErrorIs(t, probe("low").Err(), redis.Nil)
	require.Equal(t, 1, rec.count(dequeueAnyScript.Hash()), "the round's other probes reached Redis")

	client := asynq.NewClientFromRedisClient(rdb)
	t.Cleanup(func() { _ = client.Close() })
	_, err := client.Enqueue(asynq.NewTask("t", nil, asynq.TaskID("x")), asynq.Queue("low"))
	require.NoError(t, err)
	res, err := probe("critical").Text()
	require.NoError(t, err, "a new round asks Redis again")
	require.NotEmpty(t, res)
	require.Equal(t, 2, rec.count(dequeueAnyScript.Hash()))
	active, err := rdb.LRange(ctx, "asynq:{low}:active", 0, -1).Result()
	require.NoError(t, err)
	require.Equal(t, []string{"x"}, active, "the task is active in its own queue")
	lease, err := rdb.ZScore(ctx, "asynq:{low}:lease", "x").Result()
	require.NoError(t, err)
	require.Greater(t, lease, float64(time.Now().Unix()))
	state, err := rdb.HGet(ctx, "asynq:{low}:t:x", "state").Result()
	require.NoError(t, err)
	require.Equal(t, "active", state)
}

// TestQueueProbesOrder: the queues after the first come in asynq's
// weighted random order: of default (3) and low (1) after critical,
// default first three times in four.
func TestQueueProbesOrder(t *testing.T) {
	t.Parallel()
	p := newQueueProbes(nil, probeQueues)
	const n = 20000
	defaultFirst := 0
	for range n {
		rest := p.rest("critical")
		require.ElementsMatch(t, []string{"default", "low"}, rest)
		if rest[0] == "default" {
			defaultFirst++
		}
	}
	require.InDelta(t, 0.75, float64(defaultFirst)/n, 0.03)
}
