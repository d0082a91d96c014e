package tasks_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/tasks"
)

var allStatuses = []tasks.Status{
	tasks.StatusQueued, tasks.StatusRunning, tasks.StatusRetrying,
	tasks.StatusSucceeded, tasks.StatusFailed, tasks.StatusCanceled,
}

func TestStatusTerminal(t *testing.T) {
	t.Parallel()
	want := map[tasks.Status]bool{
		tasks.StatusQueued: false, tasks.StatusRunning: false, tasks.StatusRetrying: false,
		tasks.StatusSucceeded: true, tasks.StatusFailed: true, tasks.StatusCanceled: true,
		"": false, "bogus": false,
	}
	for s, terminal := range want {
		require.Equal(t, terminal, s.Terminal(), "status %q", s)
	}
}

func TestCanMove(t *testing.T) {
	t.Parallel()
	type move struct{ from, to tasks.Status }
	allowed := map[move]bool{
		{tasks.StatusQueued, tasks.StatusRunning}:    true,
		{tasks.StatusQueued, tasks.StatusFailed}:     true,
		{tasks.StatusQueued, tasks.StatusCanceled}:   true,
		{tasks.StatusRunning, tasks.StatusRunning}:   true, // a lost attempt
		{tasks.StatusRunning, tasks.StatusRetrying}:  true,
		{tasks.StatusRunning, tasks.StatusSucceeded}: true,
		{tasks.StatusRunning, tasks.StatusFailed}:    true,
		{tasks.StatusRunning, tasks.StatusCanceled}:  true,
		{tasks.StatusRetrying, tasks.StatusRunning}:  true,
		{tasks.StatusRetrying, tasks.StatusFailed}:   true,
		{tasks.StatusRetrying, tasks.StatusCanceled}: true,
	}
	for _, from := range allStatuses {
		for _, to := range allStatuses {
			require.Equal(t, allowed[move{from, to}], tasks.CanMove(from, to), "%s -> %s", from, to)
		}
	}
	require.False(t, tasks.CanMove(tasks.StatusRunning, "bogus"))
	require.False(t, tasks.CanMove(tasks.StatusQueued, tasks.StatusQueued))
	require.False(t, tasks.CanMove(tasks.StatusQueued, tasks.StatusSucceeded), "success needs an attempt")
}

func TestNewRecord(t *testing.T) {
	t.Parallel()
	cat := testCatalog(t)
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.FixedZone("CET", 3600))

	c := tasks.Call{Integration: "gh", Method: "get", Path: "/repos", CorrelationID: "order-981",
		Webhook: &tasks.Webhook{URL: "https://svc.example/hook"}, Delay: tasks.Duration(30 * time.Second),
		Retry: &tasks.RetryPolicy{MaxAttempts: 7}}
	in, err := c.Normalize(cat, nil)
	require.NoError(t, err)
	rec := tasks.NewRecord("acme", &c, in, now)
	require.Equal(t, "order-981", rec.CorrelationID)
	require.Equal(t, "acme", rec.Tenant)
	require.Equal(t, tasks.StatusQueued, rec.Status)
	require.Equal(t, "gh", rec.Integration)
	require.Equal(t, "GET", rec.Method)
	require.Equal(t, "/repos", rec.Path)
	require.Equal(t, "gh-default", rec.Credential)
	require.Equal(t, "default", rec.Queue)
	require.Equal(t, 7, rec.MaxAttempts, "the call's retry overrides the integration's")
	require.Zero(t, rec.Attempts)
	require.NotNil(t, rec.History)
	require.Empty(t, rec.History)
	require.Equal(t, time.UTC, rec.CreatedAt.Location())
	require.True(t, rec.CreatedAt.Equal(now))
	require.NotNil(t, rec.NextAttemptAt)
	require.True(t, rec.NextAttemptAt.Equal(now.Add(30*time.Second)))
	require.Equal(t, &tasks.WebhookState{URL: "https://svc.example/hook", Status: "pending"}, rec.Webhook)
	require.Nil(t, rec.StartedAt)
	require.Nil(t, rec.CompletedAt)

	plain := tasks.Call{Integration: "gh", Method: "GET", Path: "/repos"}
	in, err = plain.Normalize(cat, nil)
	require.NoError(t, err)
	rec = tasks.NewRecord("acme", &plain, in, now)
	require.Equal(t, 4, rec.MaxAttempts, "the integration's max_attempts")
	require.Nil(t, rec.NextAttemptAt)
	require.Nil(t, rec.Webhook)
}

func TestCallErrorText(t *testing.T) {
	t.Parallel()
	e := &tasks.CallError{Kind: tasks.KindTimeout, Message: "no answer in 5s"}
	require.Equal(t, "timeout: no answer in 5s", e.Error())
}
