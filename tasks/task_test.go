package tasks_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/tasks"
)

func TestTaskID(t *testing.T) {
	t.Parallel()
	require.Equal(t, "acme:order-981", tasks.TaskID("acme", "order-981"))
	require.NotEqual(t, tasks.TaskID("acme", "x"), tasks.TaskID("globex", "x"))
}

func TestNewCallTaskPayload(t *testing.T) {
	t.Parallel()
	cat := testCatalog(t)
	c := tasks.Call{Integration: "gh", Method: "post", Path: "/repos", CorrelationID: "order-981",
		Query: tasks.Query{"a": {"1", "2"}}, Headers: map[string]string{"X-Source": "billing"},
		Body: json.RawMessage(`{"name": "x"}`), Timeout: tasks.Duration(1500 * time.Millisecond),
		Retry: &tasks.RetryPolicy{MaxAttempts: 2}, Webhook: &tasks.Webhook{URL: "https://svc.example/h"}}
	in, err := c.Normalize(cat, nil)
	require.NoError(t, err)

	task, err := tasks.NewCallTask(&tasks.Record{Tenant: "acme", CreatedAt: time.Now()}, &c, in)
	require.NoError(t, err)
	require.Equal(t, tasks.TypeCall, task.Type())
	require.Equal(t, "call:execute", task.Type())

	p, err := tasks.DecodePayload(task.Payload())
	require.NoError(t, err)
	require.Equal(t, "acme", p.Tenant)
	require.Equal(t, c, p.Call)
	require.Equal(t, c.Fingerprint(), p.Call.Fingerprint(), "the worker sees the call the producer fingerprinted")

	_, err = tasks.DecodePayload([]byte(`{"tenant": `))
	require.Error(t, err)
	_, err = tasks.DecodePayload([]byte(`{"call": {"timeout": "soon"}}`))
	require.Error(t, err)
}

// TestNewCallTaskOptions enqueues call tasks on a real Redis and reads back
// the options asynq stored.
func TestNewCallTaskOptions(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	cat := testCatalog(t)
	client := asynq.NewClientFromRedisClient(e.rdb)
	insp := asynq.NewInspectorFromRedisClient(e.rdb)

	tests := []struct {
		name     string
		call     tasks.Call
		queue    string
		maxRetry int
		timeout  time.Duration
		delay    time.Duration
	}{
		{name: "integration defaults",
			call:  tasks.Call{Integration: "gh", Method: "GET", Path: "/r", CorrelationID: "t1"},
			queue: "default", maxRetry: 4 + 5, timeout: 2*3*time.Second + 30*time.Second},
		{name: "call timeout truncated to seconds",
			call: tasks.Call{Integration: "gh", Method: "GET", Path: "/r", CorrelationID: "t2", Queue: "critical",
				Timeout: tasks.Duration(1500 * time.Millisecond), Retry: &tasks.RetryPolicy{MaxAttempts: 9}},
			queue: "critical", maxRetry: 9 + 5, timeout: 2*time.Second + 30*time.Second},
		{name: "sub-second timeout keeps a whole-second bound",
			call: tasks.Call{Integration: "open", Method: "GET", Path: "/r", CorrelationID: "t3", Queue: "low",
				Timeout: tasks.Duration(200 * time.Millisecond)},
			queue: "low", maxRetry: 5 + 5, timeout: 30 * time.Second},
		{name: "delayed",
			call: tasks.Call{Integration: "open", Method: "GET", Path: "/r", CorrelationID: "t4",
				Delay: tasks.Duration(time.Hour)},
			queue: "default", maxRetry: 5 + 5, timeout: 2*5*time.Second + 30*time.Second, delay: time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.call
			in, err := c.Normalize(cat, nil)
			require.NoError(t, err)
			task, err := tasks.NewCallTask(&tasks.Record{Tenant: "acme", CreatedAt: time.Now()}, &c, in)
			require.NoError(t, err)

			enq := time.Now()
			info, err := client.EnqueueContext(e.ctx, task)
			require.NoError(t, err)
			require.Equal(t, tasks.TaskID("acme", c.CorrelationID), info.ID)
			require.Equal(t, tc.queue, info.Queue)
			require.Equal(t, tc.maxRetry, info.MaxRetry)
			require.Equal(t, tc.timeout, info.Timeout)
			require.Greater(t, info.Timeout, in.EffectiveTimeout(c.Timeout.D()), "asynq's bound is above the call's own")

			got, err := insp.GetTaskInfo(tc.queue, info.ID)
			require.NoError(t, err)
			require.Equal(t, tasks.TypeCall, got.Type)
			require.Equal(t, tc.maxRetry, got.MaxRetry)
			if tc.delay > 0 {
				require.Equal(t, asynq.TaskStateScheduled, got.State)
				require.WithinDuration(t, enq.Add(tc.delay), got.NextProcessAt, 5*time.Second)
			} else {
				require.Equal(t, asynq.TaskStatePending, got.State)
			}

			// asynq refuses a second task for the same call.
			_, err = client.EnqueueContext(e.ctx, task)
			require.ErrorIs(t, err, asynq.ErrTaskIDConflict)
		})
	}
}
