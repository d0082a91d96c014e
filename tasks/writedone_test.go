package tasks_test

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/tasks"
)

// succeeded is rec finished as succeeded.
func succeeded(rec *tasks.Record) *tasks.Record {
	done := *rec
	done.Status, done.Attempts = tasks.StatusSucceeded, 1
	done.Response = &tasks.Response{Status: 200, Headers: map[string]string{}}
	at := testNow.Add(time.Second)
	done.CompletedAt = &at
	return &done
}

// TestWriteDone ends the run's asynq task with the terminal write, and
// only then: a write refused (the record changed) leaves the task active,
// and a task no longer active is left alone, the record written all the
// same. A record that is not terminal is refused.
func TestWriteDone(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	const tenant, id = "acme", "c1"
	rec := e.create(t, tenant, id)
	queue := tasks.DefaultQueue
	activeKey := "asynq:{" + queue + "}:active"

	retrying := *rec
	retrying.Status = tasks.StatusRetrying
	_, err := e.store.WriteDone(e.ctx, &retrying, tasks.CreatedVersion, tasks.AsynqTask{Queue: queue, ID: "x"})
	require.ErrorContains(t, err, "not terminal")

	// A real asynq task, run by a real asynq server: the handler writes
	// the record as the worker would.
	type result struct {
		changedErr  error
		stillActive []string
		done        bool
		err         error
	}
	results := make(chan result, 1)
	mux := asynq.NewServeMux()
	mux.HandleFunc("call", func(ctx context.Context, _ *asynq.Task) error {
		taskID, _ := asynq.GetTaskID(ctx)
		q, _ := asynq.GetQueueName(ctx)
		task := tasks.AsynqTask{Queue: q, ID: taskID}
		var r result
		_, r.changedErr = e.store.WriteDone(ctx, succeeded(rec), tasks.CreatedVersion+1, task)
		r.stillActive, _ = e.rdb.LRange(ctx, activeKey, 0, -1).Result()
		r.done, r.err = e.store.WriteDone(ctx, succeeded(rec), tasks.CreatedVersion, task)
		results <- r
		return nil
	})
	srv := asynq.NewServerFromRedisClient(e.rdb, asynq.Config{Concurrency: 1, TaskCheckInterval: 10 * time.Millisecond,
		LogLevel: asynq.FatalLevel})
	require.NoError(t, srv.Start(mux))
	t.Cleanup(srv.Shutdown)
	client := asynq.NewClientFromRedisClient(e.rdb)
	t.Cleanup(func() { _ = client.Close() })
	taskID := tasks.TaskID(tenant, id)
	_, err = client.Enqueue(asynq.NewTask("call", nil, asynq.TaskID(taskID), asynq.Queue(queue)))
	require.NoError(t, err)

	r := <-results
	require.ErrorIs(t, r.changedErr, tasks.ErrChanged)
	require.Equal(t, []string{taskID}, r.stillActive, "a refused write ended the task")
	require.NoError(t, r.err)
	require.True(t, r.done)
	got, err := e.store.Get(e.ctx, tenant, id)
	require.NoError(t, err)
	require.Equal(t, tasks.StatusSucceeded, got.Status)
	inspector := asynq.NewInspectorFromRedisClient(e.rdb)
	info, err := inspector.GetQueueInfo(queue)
	require.NoError(t, err)
	require.Equal(t, 1, info.ProcessedTotal)
	require.Equal(t, 1, info.Processed)
	_, err = inspector.GetTaskInfo(queue, taskID)
	require.ErrorIs(t, err, asynq.ErrTaskNotFound)

	// A task that is not active (asynq's recoverer took it back): the
	// record is written, asynq's keys are not touched.
	rec2 := e.create(t, tenant, "c2")
	done, err := e.store.WriteDone(e.ctx, succeeded(rec2), tasks.CreatedVersion, tasks.AsynqTask{Queue: "other", ID: tasks.TaskID(tenant, "c2")})
	require.NoError(t, err)
	require.False(t, done)
	got, err = e.store.Get(e.ctx, tenant, "c2")
	require.NoError(t, err)
	require.Equal(t, tasks.StatusSucceeded, got.Status)
	n, err := e.rdb.Exists(e.ctx, rediskeys.AsynqDoneKeys("other", "x", time.Now())...).Result()
	require.NoError(t, err)
	require.Zero(t, n, "asynq keys made for a task that was not active")
}
