package producer_test

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
)

// Literal webhook addresses that carry or tunnel to a private IPv4 address
// are refused at enqueue (400 naming webhook.url); the same forms of a
// public address are accepted.
func TestWebhookWrappedPrivateAddressesRefusedAtEnqueue(t *testing.T) {
	t.Parallel()
	e := setup(t, withWebhooks())
	for _, host := range []string{
		"[::127.0.0.1]", "[::10.0.0.1]", "[::169.254.169.254]", // IPv4-compatible
		"[::ffff:0:127.0.0.1]", "[::ffff:0:192.168.0.1]", // SIIT
		"[64:ff9b:1::a9fe:a9fe]", "[64:ff9b:1:7f00:0:100::]", // local-use NAT64
		"[2001:0:4136:e378:8000:63bf:f5ff:fffe]",  // Teredo to 10.0.0.1
		"[2002:7f00:1::1]", "[2002:a9fe:a9fe::1]", // 6to4
		"[64:ff9b::a9fe:a9fe]", "[::ffff:127.0.0.1]", "127.0.0.1", "localhost",
	} {
		r := e.post(t, call(map[string]any{"webhook": map[string]any{"url": "https://" + host + "/hook"}}))
		requireError(t, r, http.StatusBadRequest, "invalid_field", "webhook.url")
		require.Contains(t, string(r.Body), "CALLQ_WEBHOOK_ALLOW_PRIVATE", host)
	}
	for _, host := range []string{"[::8.8.8.8]", "[::ffff:0:8.8.8.8]", "[64:ff9b::808:808]", "[2002:808:808::1]", "hooks.example"} {
		r := e.post(t, call(map[string]any{"webhook": map[string]any{"url": "https://" + host + "/hook"}}))
		require.Equal(t, http.StatusAccepted, r.Status, "%s: %s", host, r.Body)
	}
}

// redeliver asks for a redelivery of id's webhook as the acme producer.
func (e *env) redeliver(tb testing.TB, id string) *resp {
	tb.Helper()
	return e.do(tb, req{Method: http.MethodPost, Path: "/v1/calls/" + id + "/webhook/redeliver", Key: e.producerKey})
}

// finishedWithWebhook enqueues a call with a webhook and finishes it as a
// worker would (no worker runs here, so no delivery happens).
func (e *env) finishedWithWebhook(tb testing.TB, id string) {
	tb.Helper()
	r := e.post(tb, call(map[string]any{"correlation_id": id, "webhook": map[string]any{"url": "https://hooks.example/h"}}))
	require.Equal(tb, http.StatusAccepted, r.Status, "%s", r.Body)
	e.finish(tb, "acme", id, tasks.StatusSucceeded)
}

// Concurrent redelivery requests queue exactly one redelivery: one 202, the
// rest 409, and a later request is 409 too while that one is pending.
func TestRedeliverWhilePendingIs409(t *testing.T) {
	t.Parallel()
	e := setup(t, withWebhooks())
	e.finishedWithWebhook(t, "hook-twice")

	const n = 8
	answers := make([]*resp, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			answers[i] = e.redeliver(t, "hook-twice")
		}()
	}
	close(start)
	wg.Wait()
	accepted := 0
	for _, r := range answers {
		if r.Status == http.StatusAccepted {
			accepted++
			require.Equal(t, tasks.WebhookPending, r.Record(t).Webhook.Status)
			continue
		}
		requireError(t, r, http.StatusConflict, "conflict", "")
		require.Contains(t, string(r.Body), "already pending")
	}
	require.Equal(t, 1, accepted, "exactly one of %d concurrent requests queues a redelivery", n)
	require.Equal(t, 1, e.queueSize(t, tasks.WebhookQueue), "one redelivery task")

	r := e.redeliver(t, "hook-twice")
	requireError(t, r, http.StatusConflict, "conflict", "")
	require.Equal(t, tasks.WebhookPending, e.get(t, "hook-twice").Record(t).Webhook.Status)
}

// A redelivery is refused with 409 for a call without a webhook and for one
// that has not finished; the Go client says which, the second as a
// *NotFinishedError holding the record.
func TestRedeliverRefusedWithoutWebhookOrBeforeFinish(t *testing.T) {
	t.Parallel()
	e := setup(t, withWebhooks())
	r := e.post(t, call(map[string]any{"correlation_id": "no-hook"}))
	require.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)
	r = e.post(t, call(map[string]any{"correlation_id": "queued-hook", "webhook": map[string]any{"url": "https://hooks.example/h"}}))
	require.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)

	r = e.redeliver(t, "no-hook")
	requireError(t, r, http.StatusConflict, "conflict", "")
	require.JSONEq(t, `{"error":{"code":"conflict","message":"call \"no-hook\" was enqueued without a webhook"}}`, string(r.Body))
	r = e.redeliver(t, "queued-hook")
	requireError(t, r, http.StatusConflict, "conflict", "")
	require.JSONEq(t, `{"error":{"code":"conflict","message":"call \"queued-hook\" has not finished (queued); its webhook is sent when it does"}}`, string(r.Body))

	c := e.tenantClient(t, "acme")
	rec, err := c.RedeliverWebhook(context.Background(), "no-hook")
	require.ErrorIs(t, err, producer.ErrNoWebhook)
	require.Nil(t, rec)
	rec, err = c.RedeliverWebhook(context.Background(), "queued-hook")
	require.ErrorIs(t, err, producer.ErrNotFinished)
	require.Nil(t, rec)
	var notFinished *producer.NotFinishedError
	require.ErrorAs(t, err, &notFinished)
	require.Equal(t, tasks.StatusQueued, notFinished.Record.Status)
	require.Equal(t, "queued-hook", notFinished.Record.CorrelationID)
}

// A redelivery asynq gave up on (archived) is not pending: a new one
// replaces it.
func TestRedeliverReplacesAnArchivedRedelivery(t *testing.T) {
	t.Parallel()
	e := setup(t, withWebhooks())
	e.finishedWithWebhook(t, "hook-archived")
	require.Equal(t, http.StatusAccepted, e.redeliver(t, "hook-archived").Status)
	pending, err := e.inspector.ListPendingTasks(tasks.WebhookQueue)
	require.NoError(t, err)
	require.Len(t, pending, 1)
	require.NoError(t, e.inspector.ArchiveTask(tasks.WebhookQueue, pending[0].ID))

	r := e.redeliver(t, "hook-archived")
	require.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)
	again, err := e.inspector.ListPendingTasks(tasks.WebhookQueue)
	require.NoError(t, err)
	require.Len(t, again, 1)
	require.Equal(t, pending[0].ID, again[0].ID, "one task ID per call's redelivery")
	require.Equal(t, http.StatusConflict, e.redeliver(t, "hook-archived").Status)
}
