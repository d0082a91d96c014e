package tasks_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/tasks"
)

// The rule that a worker writes nothing before a call's first attempt, as
// the worker (FirstRun, FirstAttemptLost) and the API (CurrentStatus) read
// it.
func TestFirstRunRule(t *testing.T) {
	t.Parallel()
	created := &tasks.Payload{Tenant: "acme", CreatedAt: time.Now().UTC()}
	old := &tasks.Payload{Tenant: "acme"} // queued before payloads carried CreatedAt

	t.Run("FirstRun", func(t *testing.T) {
		t.Parallel()
		require.True(t, created.FirstRun(0))
		require.False(t, created.FirstRun(1), "a task that ran before")
		require.False(t, old.FirstRun(0), "a payload without CreatedAt cannot rebuild the record")
	})

	t.Run("CurrentStatus", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			status tasks.Status
			active bool
			want   tasks.Status
		}{
			{tasks.StatusQueued, true, tasks.StatusRunning},
			{tasks.StatusQueued, false, tasks.StatusQueued},
			{tasks.StatusRunning, false, tasks.StatusRunning},
			{tasks.StatusRetrying, true, tasks.StatusRetrying},
			{tasks.StatusSucceeded, true, tasks.StatusSucceeded},
			{tasks.StatusCanceled, true, tasks.StatusCanceled},
		} {
			asked := false
			got := tasks.CurrentStatus(&tasks.Record{Status: tc.status}, func(*tasks.Record) bool {
				asked = true
				return tc.active
			})
			require.Equal(t, tc.want, got, "%s, task active %v", tc.status, tc.active)
			require.Equal(t, tc.status == tasks.StatusQueued, asked, "%s: asynq is asked only about a queued record", tc.status)
		}
	})

	t.Run("FirstAttemptLost", func(t *testing.T) {
		t.Parallel()
		queued := &tasks.Record{Status: tasks.StatusQueued}
		require.True(t, tasks.FirstAttemptLost(queued, 1))
		require.False(t, tasks.FirstAttemptLost(queued, 0), "the task never ran: nothing was lost")
		recorded := &tasks.Record{Status: tasks.StatusQueued, History: []tasks.Attempt{{Attempt: 1}}}
		require.False(t, tasks.FirstAttemptLost(recorded, 1), "an attempt was recorded")
		retrying := &tasks.Record{Status: tasks.StatusRetrying}
		require.False(t, tasks.FirstAttemptLost(retrying, 1), "the record was written since it was created")
		// A gate held the first run back: that run wrote the record, and
		// the next run, a first run too, did not before its attempt.
		held := &tasks.Record{Status: tasks.StatusRetrying, Note: "waiting for a free slot"}
		require.True(t, tasks.FirstAttemptLost(held, 1), "held, then the first attempt lost its run")
		require.False(t, tasks.FirstAttemptLost(held, 0))
		heldAfter := &tasks.Record{Status: tasks.StatusRetrying, Note: "waiting for a free slot", Attempts: 1, History: []tasks.Attempt{{Attempt: 1}}}
		require.False(t, tasks.FirstAttemptLost(heldAfter, 1), "held after an attempt: later runs mark the record (Begin)")
	})
}
