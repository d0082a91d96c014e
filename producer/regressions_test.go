package producer_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/tasks"
)

// Defects found by review, each fixed and kept as the test that caught it.
// Each name and comment says what the API does now.

// A ?wait= that runs out before or during the store's first round trip
// answers the record as it stands (200), and an unknown ID 404: never 503
// "callq cannot reach its store", which it once was (tasks.Store.Wait
// returns a nil record with the context's error). Bad or merely short input
// must never be a 5xx.
func TestTinyWaitAnswersTheRecord(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.post(t, call(map[string]any{"correlation_id": "tiny"}))
	require.Equal(t, http.StatusAccepted, r.Status)

	waits := []string{"1ns", "1us", "100us"}
	// Waits that run out while talking to Redis: a read times out at the
	// deadline a moment before the context says so, and that is the wait
	// running out, not Redis failing.
	for d := 10 * time.Microsecond; d < 2*time.Millisecond; d += 20 * time.Microsecond {
		waits = append(waits, d.String())
	}
	for _, wait := range waits {
		r = e.get(t, "tiny?wait="+wait)
		require.Equal(t, http.StatusOK, r.Status, "wait=%s: %s", wait, r.Body)
		requireError(t, e.get(t, "unknown?wait="+wait), http.StatusNotFound, "not_found", "")
	}
}

// Unknown keys are refused inside retry as at the top level of a call: a
// typo such as "max_attempt" is a 400 naming the field, where it was once
// dropped and the call queued with the integration's policy.
func TestNestedUnknownKeysAreRefused(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.post(t, `{"integration": "httpbin", "method": "GET", "path": "/get", "retry": {"max_attempt": 10}}`)
	require.Equal(t, http.StatusBadRequest, r.Status, "body: %s", r.Body)
	require.Contains(t, []string{"retry", "retry.max_attempt"}, errorField(t, r))
}

// A call with correlation_id "batch" can be read over HTTP: GET
// /v1/calls/batch is the call, not a 405 from the POST /v1/calls/batch route
// (refusing the ID at enqueue would do too).
func TestCorrelationIDBatchIsReachable(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.post(t, call(map[string]any{"correlation_id": "batch"}))
	if r.Status == http.StatusBadRequest {
		require.Equal(t, "correlation_id", errorField(t, r)) // refusing the ID is a fix too
		return
	}
	require.Equal(t, http.StatusAccepted, r.Status, "body: %s", r.Body)
	r = e.get(t, "batch")
	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)
}

// A body of JSON null is a non-object body like [], "x", 42 and true (400
// invalid_json), not a call with every field missing (400 invalid_field,
// field integration) as it once was.
func TestNullBodyIsInvalidJSON(t *testing.T) {
	t.Parallel()
	e := setup(t)
	requireError(t, e.post(t, `null`), http.StatusBadRequest, "invalid_json", "")
}

// POST /v1/calls/batch refuses unknown keys at its top level and a
// mis-cased "Calls" (400), as POST /v1/calls does; it once ignored the one
// and matched the other case-insensitively.
func TestBatchRefusesUnknownKeys(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, body := range []string{
		`{"calls": [{"integration": "httpbin", "method": "GET", "path": "/get"}], "bogus": 1}`,
		`{"Calls": [{"integration": "httpbin", "method": "GET", "path": "/get"}]}`,
	} {
		r := e.do(t, req{Method: http.MethodPost, Path: "/v1/calls/batch", Key: e.producerKey, Body: body})
		require.Equal(t, http.StatusBadRequest, r.Status, "%s: %s", body, r.Body)
	}
}

// GET /v1/webhook-secret answers a tenant's admin its own webhook secret.
func TestWebhookSecretEndpoint(t *testing.T) {
	t.Parallel()
	master, err := auth.ParseWebhookSecrets("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	require.NoError(t, err)
	e := setup(t, func(c *setupConfig) { c.handler.WebhookSecrets = master })
	r := e.do(t, req{Method: http.MethodGet, Path: "/v1/webhook-secret", Key: e.adminKey})
	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)
	m := r.JSON(t)
	require.Equal(t, "acme", m["tenant"])
	require.Equal(t, []any{master.ForTenant("acme").Secrets()[0]}, m["secrets"])
	r = e.do(t, req{Method: http.MethodGet, Path: "/v1/webhook-secret", Key: e.otherAdminKey})
	require.NotContains(t, string(r.Body), master.ForTenant("acme").Secrets()[0])
	requireError(t, e.do(t, req{Method: http.MethodGet, Path: "/v1/webhook-secret", Key: e.producerKey}), http.StatusForbidden, "forbidden", "")

	plain := setup(t)
	requireError(t, plain.do(t, req{Method: http.MethodGet, Path: "/v1/webhook-secret", Key: plain.adminKey}), http.StatusNotFound, "not_found", "")
}

// The task a retried enqueue queues again for a record still queued (its
// producer died before queueing it) carries no created_at, so that its
// worker reads the record before the request instead of taking the run for
// the call's first (tasks.Payload.FirstRun): the first run may have
// finished between the producer's read of the record and its enqueue, and
// a worker that read the record then refuses to run the call again.
func TestRequeuedTaskMakesItsWorkerReadTheRecord(t *testing.T) {
	t.Parallel()
	e := setup(t)
	body := call(map[string]any{"correlation_id": "requeued"})
	require.Equal(t, http.StatusAccepted, e.post(t, body).Status)
	info, err := e.taskInfo("acme", "default", "requeued")
	require.NoError(t, err)
	first, err := tasks.DecodePayload(info.Payload)
	require.NoError(t, err)
	require.True(t, first.FirstRun(0), "the first enqueue's task is a first run")

	require.NoError(t, e.inspector.DeleteTask("default", tasks.TaskID("acme", "requeued")))
	r := e.post(t, body)
	require.Equal(t, http.StatusOK, r.Status, "the same call again: %s", r.Body)
	info, err = e.taskInfo("acme", "default", "requeued")
	require.NoError(t, err, "queued again")
	again, err := tasks.DecodePayload(info.Payload)
	require.NoError(t, err)
	require.False(t, again.FirstRun(0), "a task queued again is never taken for a first run")
	require.Equal(t, first.Call, again.Call)
}
