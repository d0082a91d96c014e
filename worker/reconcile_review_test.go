package worker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

// A call failed as lost because an operator archived its task must stay
// failed: running the archived task afterwards (asynqmon's "run") would
// otherwise make the call, on a first attempt that does not read the
// record before its request, while the record says it was never made.
func TestLostCallsArchivedTaskCannotRunAfterwards(t *testing.T) {
	t.Parallel()
	e := setupReconcile(t, true)
	ctx := context.Background()
	e.enqueue(t, e.acme, "archived", "/archived", producer.WithDelay(time.Hour))
	taskID := tasks.TaskID("acme", "archived")
	require.NoError(t, e.inspector.ArchiveTask(tasks.DefaultQueue, taskID))

	r := e.reconciler(t, worker.ReconcilerConfig{Interval: time.Minute}, nil, nil)
	worker.SetReconcilerClock(r, func() time.Time { return time.Now().Add(2 * time.Minute) })
	rep, err := r.RunOnce(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, rep.Lost)
	rec, err := e.records.Get(ctx, "acme", "archived")
	require.NoError(t, err)
	require.Equal(t, tasks.StatusFailed, rec.Status)
	require.Equal(t, tasks.KindLost, rec.Error.Kind)

	if err := e.inspector.RunTask(tasks.DefaultQueue, taskID); err == nil {
		require.Eventually(t, func() bool {
			_, err := e.inspector.GetTaskInfo(tasks.DefaultQueue, taskID)
			return errors.Is(err, asynq.ErrTaskNotFound)
		}, 20*time.Second, 10*time.Millisecond, "the worker never finished the task run again")
	}
	require.Zero(t, e.hit("/archived"), "a call its record says failed as lost was made")
	rec, err = e.records.Get(ctx, "acme", "archived")
	require.NoError(t, err)
	require.Equal(t, tasks.StatusFailed, rec.Status)
}
