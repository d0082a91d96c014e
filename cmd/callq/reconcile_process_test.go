package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/tasks"
)

// `callq worker` runs the reconciler every CALLQ_RECONCILE_INTERVAL: a call
// whose task an operator deleted with asynq's tools fails as lost, and the
// worker logs it.
func TestProcessWorkerReconcilesLostCall(t *testing.T) {
	t.Parallel()
	d := deploy(t, 0, "CALLQ_RECONCILE_INTERVAL=200ms")
	w := d.startWorker()
	d.enqueueWith("lost-1", map[string]any{"delay": "1h"})
	d.enqueueWith("kept-1", map[string]any{"delay": "1h"})
	inspector := asynq.NewInspectorFromRedisClient(d.redis.Client(t))
	require.NoError(t, inspector.DeleteTask(tasks.DefaultQueue, tasks.TaskID("acme", "lost-1")))

	rec := d.waitAllTerminal([]string{"lost-1"}, time.Now().Add(30*time.Second))["lost-1"]
	require.Equal(t, tasks.StatusFailed, rec.Status)
	require.Equal(t, tasks.KindLost, rec.Error.Kind)
	require.Contains(t, rec.Error.Message, `the call's task is gone from asynq queue "default"`)
	require.Eventually(t, func() bool { return strings.Contains(w.logs(), `"message":"call failed as lost"`) },
		10*time.Second, 10*time.Millisecond, "the worker did not log the lost call")

	var kept tasks.Record
	require.Equal(t, http.StatusOK, d.do(http.MethodGet, "/v1/calls/kept-1", nil, &kept))
	require.Equal(t, tasks.StatusQueued, kept.Status, "a call whose task exists is left alone")
	requireNoErrorLogs(t, d.api, w)
}
