package producer_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/auth"
)

// Regressions: defects found by review, each fixed and kept as the test
// that caught it.

// A ?wait= that runs out before the store's first round trip answers 503
// "callq cannot reach its store" (tasks.Store.Wait returns a nil record with
// the context's error, which getCall only forgives with a record). Bad or
// merely short input must never be a 5xx.
func TestRegressionTinyWaitIs503(t *testing.T) {
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

// Unknown keys are refused at the top level of a call but silently dropped
// inside retry (and webhook): a typo such as "max_attempt" queues the call
// with the integration's policy instead of the one asked for.
func TestRegressionNestedUnknownKeysAreIgnored(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.post(t, `{"integration": "httpbin", "method": "GET", "path": "/get", "retry": {"max_attempt": 10}}`)
	require.Equal(t, http.StatusBadRequest, r.Status, "body: %s", r.Body)
	require.Contains(t, []string{"retry", "retry.max_attempt"}, errorField(t, r))
}

// "batch" is a valid correlation_id and is enqueued, but the route
// POST /v1/calls/batch shadows /v1/calls/{id}: GET and DELETE on
// /v1/calls/batch answer 405, so the call can be neither read nor canceled
// over HTTP.
func TestRegressionCorrelationIDBatchIsUnreachable(t *testing.T) {
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

// A body of JSON null is answered as a call with every field missing (400
// invalid_field, field integration) rather than as a non-object body (400
// invalid_json) like [], "x", 42 and true.
func TestRegressionNullBodyIsNotInvalidJSON(t *testing.T) {
	t.Parallel()
	e := setup(t)
	requireError(t, e.post(t, `null`), http.StatusBadRequest, "invalid_json", "")
}

// POST /v1/calls refuses unknown keys; POST /v1/calls/batch ignores them at
// its top level and matches "calls" case-insensitively.
func TestRegressionBatchIgnoresUnknownKeys(t *testing.T) {
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
