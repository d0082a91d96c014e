package worker_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

// TestTerminalWriteEndsTask: a call with no webhook to queue ends its
// asynq task in the script of its terminal write, and asynq's Done costs
// no round trip; asynq's queue then reads as after its own Done (no task
// active or leased, the task gone, counted processed for the day and in
// total). A call with a webhook keeps its task until the webhook is
// queued, and asynq ends it.
func TestTerminalWriteEndsTask(t *testing.T) {
	t.Parallel()
	e := setupPools(t)
	rdb := redis.NewClient(&redis.Options{Addr: e.srv.Addr})
	scripts := worker.RecordScripts(rdb)
	// asynq's Dones of calls (those of deliveries are another queue's)
	dones := func() int { return scripts(worker.AsynqDoneSHA, "asynq:{"+tasks.DefaultQueue+"}:active") }
	e.startOn(t, rdb, io.Discard)
	inspector := asynq.NewInspectorFromRedisClient(e.rdb)
	ctx := context.Background()

	const n = 5
	var ids []string
	for range n {
		ids = append(ids, e.call(t, "fast", false, 1))
	}
	for _, id := range ids {
		rec, err := e.client.Wait(ctx, id)
		require.NoError(t, err)
		require.Equal(t, tasks.StatusSucceeded, rec.Status)
	}
	queueReads := func(processed int) {
		t.Helper()
		var info *asynq.QueueInfo
		require.Eventually(t, func() bool {
			var err error
			info, err = inspector.GetQueueInfo(tasks.DefaultQueue)
			return err == nil && info.ProcessedTotal == processed && info.Active == 0
		}, 10*time.Second, 5*time.Millisecond, "asynq's queue: %+v", info)
		require.Equal(t, processed, info.Processed, "the day's processed count")
		require.Zero(t, info.Size, "tasks left in the queue")
		day := "asynq:{" + tasks.DefaultQueue + "}:processed:" + time.Now().UTC().Format("2006-01-02")
		ttl, err := e.rdb.TTL(ctx, day).Result()
		require.NoError(t, err)
		require.Greater(t, ttl, 89*24*time.Hour, "the day's count expires as asynq's does (90 days)")
		leased, err := e.rdb.ZCard(ctx, "asynq:{"+tasks.DefaultQueue+"}:lease").Result()
		require.NoError(t, err)
		require.Zero(t, leased, "leases left")
	}
	queueReads(n)
	for _, id := range ids {
		_, err := inspector.GetTaskInfo(tasks.DefaultQueue, tasks.TaskID("acme", id))
		require.ErrorIs(t, err, asynq.ErrTaskNotFound)
	}
	require.Zero(t, dones(), "asynq's Done reached Redis for a task the terminal write ended")

	// With a webhook: the write leaves the task to asynq, which ends it
	// once the handler (and the queueing of the webhook) is done.
	e.recv.release()
	id := e.call(t, "fast", true, 1)
	e.waitWebhook(t, id, tasks.WebhookDelivered)
	queueReads(n + 1)
	require.Equal(t, 1, dones(), "asynq's Done of the call with a webhook")
}
