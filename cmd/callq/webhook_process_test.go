package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
)

// Webhooks are delivered at least once across a worker SIGKILLed while
// deliveries are in flight: asynq's lease recovery gives them to the next
// worker, which sends them again under the same webhook-id.
func TestProcessWebhookSurvivesWorkerKill(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for asynq's lease recovery (about a minute)")
	}
	t.Parallel()
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

	var mu sync.Mutex
	var tenantSecret string                                       // acme's, from GET /v1/webhook-secret
	started, delivered := map[string]int{}, map[string][]string{} // correlation ID -> count, webhook-ids
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		id := r.URL.Query().Get("call")
		mu.Lock()
		started[id]++
		mu.Unlock()
		time.Sleep(2 * time.Second) // a slow receiver: deliveries are in flight at the kill
		mu.Lock()
		ts := tenantSecret
		mu.Unlock()
		if producer.VerifyWebhook(ts, r.Header, body) != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		mu.Lock()
		delivered[id] = append(delivered[id], r.Header.Get("webhook-id"))
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer receiver.Close()

	d := deploy(t, 0, "CALLQ_WEBHOOK_SECRET="+secret, "CALLQ_WEBHOOK_ALLOW_PRIVATE=true")
	var ans struct{ Secrets []string }
	require.Equal(t, http.StatusOK, d.do(http.MethodGet, "/v1/webhook-secret", nil, &ans))
	require.NotEmpty(t, ans.Secrets)
	require.NotEqual(t, secret, ans.Secrets[0], "a tenant's secret is derived, not the master")
	mu.Lock()
	tenantSecret = ans.Secrets[0]
	mu.Unlock()
	w1 := d.startWorker()
	const n = 10
	ids := make([]string, n)
	for i := range ids {
		ids[i] = "hookkill-" + string(rune('a'+i))
		var ans map[string]any
		code := d.do(http.MethodPost, "/v1/calls", map[string]any{
			"integration": "slow", "method": "GET", "path": "/slow", "correlation_id": ids[i],
			"webhook": map[string]string{"url": receiver.URL + "/hook?call=" + ids[i]},
		}, &ans)
		require.Equal(t, http.StatusAccepted, code)
	}
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(started) >= n/2
	}, 30*time.Second, 10*time.Millisecond, "deliveries never started")
	require.NoError(t, w1.signal(syscall.SIGKILL))
	<-w1.done
	killedAt := time.Now()
	mu.Lock()
	inFlight := 0
	for _, id := range ids {
		if started[id] > 0 && len(delivered[id]) == 0 {
			inFlight++
		}
	}
	mu.Unlock()
	require.Positive(t, inFlight, "some deliveries were in flight at the kill")
	d.startWorker()

	deadline := time.Now().Add(4 * time.Minute)
	for _, id := range ids {
		for {
			var rec tasks.Record
			require.Equal(t, http.StatusOK, d.do(http.MethodGet, "/v1/calls/"+id, nil, &rec))
			if rec.Webhook != nil && rec.Webhook.Status == tasks.WebhookDelivered {
				break
			}
			require.True(t, time.Now().Before(deadline), "webhook of %s not delivered: %+v (tails:\n%s)", id, rec.Webhook, d.procs.tails(30))
			time.Sleep(250 * time.Millisecond)
		}
	}
	t.Logf("every webhook delivered %s after the SIGKILL; %d were in flight", time.Since(killedAt).Round(100*time.Millisecond), inFlight)
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		require.NotEmpty(t, delivered[id], "call %s", id)
		for _, wid := range delivered[id] {
			require.Equal(t, delivered[id][0], wid, "call %s: one webhook-id for every delivery of its event", id)
		}
	}
}
