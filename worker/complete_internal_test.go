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

	"github.com/callq/callq/internal/redistest"
)

// shaRecorder is a go-redis hook that counts the EVALSHAs sent, by SHA
// and by SHA and first key.
type shaRecorder struct {
	mu    sync.Mutex
	shas  map[string]int
	onKey map[[2]string]int
}

func newSHARecorder() *shaRecorder {
	return &shaRecorder{shas: map[string]int{}, onKey: map[[2]string]int{}}
}

func (r *shaRecorder) DialHook(next redis.DialHook) redis.DialHook { return next }
func (r *shaRecorder) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (r *shaRecorder) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if args := cmd.Args(); len(args) > 1 && cmd.Name() == "evalsha" {
			if sha, ok := args[1].(string); ok {
				r.mu.Lock()
				r.shas[sha]++
				if len(args) > 3 {
					if key, ok := args[3].(string); ok {
						r.onKey[[2]string{sha, key}]++
					}
				}
				r.mu.Unlock()
			}
		}
		return next(ctx, cmd)
	}
}

// recordedRedis is a client on a Redis of the test's own that records the
// scripts it runs.
func recordedRedis(t *testing.T) (*redis.Client, *shaRecorder) {
	rec := newSHARecorder()
	rdb := redistest.Start(t).Client(t)
	rdb.AddHook(rec)
	return rdb, rec
}

// countOn is how many EVALSHAs of sha had key as their first key.
func (r *shaRecorder) countOn(sha, key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.onKey[[2]string{sha, key}]
}

func (r *shaRecorder) count(sha string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.shas[sha]
}

// TestAsynqScripts: the scripts taskEnds and queueProbes recognize are the
// ones asynq runs to take a task and to end one that succeeded. If an
// asynq upgrade changes them, this fails (and every call's Done would
// reach Redis and find the task already ended; every probe would cost a
// round trip again).
func TestAsynqScripts(t *testing.T) {
	t.Parallel()
	rdb, rec := recordedRedis(t)

	ran := make(chan struct{}, 1)
	mux := asynq.NewServeMux()
	mux.HandleFunc("t", func(context.Context, *asynq.Task) error { ran <- struct{}{}; return nil })
	nop := zerolog.Nop()
	s := asynq.NewServerFromRedisClient(rdb, asynq.Config{Concurrency: 1, TaskCheckInterval: 10 * time.Millisecond,
		Logger: NewAsynqLogger(&nop), LogLevel: asynq.FatalLevel})
	require.NoError(t, s.Start(mux))
	t.Cleanup(s.Shutdown)
	client := asynq.NewClientFromRedisClient(rdb)
	_, err := client.Enqueue(asynq.NewTask("t", nil))
	require.NoError(t, err)
	<-ran
	inspector := asynq.NewInspectorFromRedisClient(rdb)
	require.Eventually(t, func() bool {
		info, err := inspector.GetQueueInfo("default")
		return err == nil && info.ProcessedTotal == 1
	}, 10*time.Second, 5*time.Millisecond, "asynq never ended the task")
	require.Equal(t, 1, rec.count(asynqDoneSHA), "asynq ended the task with another script than asynqDoneScript")
	require.Positive(t, rec.count(asynqDequeueSHA), "asynq took the task with another script than asynqDequeueScript")
}

// TestTaskEnds: a task the worker ended is answered once, without Redis;
// any other command, and a second Done of the same task, go to Redis; and
// what asynq never asks for (its lease lapsed) is swept.
func TestTaskEnds(t *testing.T) {
	t.Parallel()
	rdb, rec := recordedRedis(t)
	ends := newTaskEnds(rdb)
	ctx := context.Background()
	keys := []string{"asynq:{q}:active", "asynq:{q}:lease", "asynq:{q}:t:a", "asynq:{q}:processed:2026-11-26", "asynq:{q}:processed"}

	ends.end("a")
	require.Equal(t, "OK", ends.EvalSha(ctx, asynqDoneSHA, keys, "a", 0, 1).Val())
	require.Zero(t, rec.count(asynqDoneSHA), "an ended task's Done reached Redis")

	// Asked again (asynq retrying a Done it thinks failed): Redis answers,
	// as asynq's own script would.
	err := ends.EvalSha(ctx, asynqDoneSHA, keys, "a", 0, 1).Err()
	require.Error(t, err)
	require.Equal(t, 1, rec.count(asynqDoneSHA))
	// A task not ended by the worker goes to Redis too.
	ends.end("b")
	require.Error(t, ends.EvalSha(ctx, asynqDoneSHA, keys, "c", 0, 1).Err())
	require.Equal(t, 2, rec.count(asynqDoneSHA))

	// Swept: entries older than endedForget go at the next end once the
	// last sweep is that old.
	ends.mu.Lock()
	ends.ended["b"] = time.Now().Add(-2 * endedForget)
	ends.swept = time.Now().Add(-2 * endedForget)
	ends.mu.Unlock()
	ends.end("d")
	require.False(t, ends.take("b"), "an entry asynq never asked for was kept past endedForget")
	require.True(t, ends.take("d"))
}
