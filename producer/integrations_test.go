package producer_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/flow"
	"github.com/callq/callq/producer"
)

const flowCatalog = `
integrations:
  crm:
    base_url: https://crm.example/api
    auth: {type: oauth2, token_url: https://crm.example/oauth/token, grant: client_credentials,
           client_id: callq-client-id-77, client_secret: literal-client-secret-9f8e, scopes: [read]}
    headers: {X-Static: static-header-value-3c2b}
    timeout: 2s
    retry: {max_attempts: 4}
    rate_limit: {requests: 100, per: 1m}
    concurrency: 10
    circuit_breaker: {failures: 5, window: 30s, cooldown: 30s}
  billing:
    base_url: https://billing.example
    auth: {type: bearer}
    concurrency: {limit: 3, per: integration}
    circuit_breaker: {failures: 2, window: 1m, cooldown: 10s, per: credential}
  plain:
    base_url: https://plain.example
`

// The catalog as loaded, with the tenant's state of each integration's
// flow control: the shape, no secret, and no other tenant's state.
func TestGetIntegrations(t *testing.T) {
	t.Parallel()
	e := setup(t, withCatalog(flowCatalog))
	ctx := t.Context()
	opened, credOpened := openFlowState(t, e)

	r := e.do(t, req{Method: http.MethodGet, Path: "/v1/integrations", Key: e.producerKey})
	require.Equal(t, http.StatusOK, r.Status, "a producer key reads it: %s", r.Body)
	require.Equal(t, "application/json", r.Header.Get("Content-Type"))
	for _, secret := range []string{"literal-client-secret-9f8e", "callq-client-id-77", "static-header-value-3c2b",
		"client_secret", "token_url", "X-Static"} {
		require.NotContains(t, string(r.Body), secret, "no secret, nor reference to one, nor the catalog's headers")
	}
	ts := func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
	require.JSONEq(t, fmt.Sprintf(`{"integrations": [
	  {"name": "billing", "base_url": "https://billing.example", "auth": {"type": "bearer"},
	   "timeout": "5s", "max_timeout": "30s",
	   "retry": {"max_attempts": 5, "initial_interval": "1s", "max_interval": "1m0s", "multiplier": 2, "max_elapsed": "1h0m0s"},
	   "rate_limit": null,
	   "concurrency": {"limit": 3, "per": "integration", "in_use": 0},
	   "circuit_breaker": {"failures": 2, "window": "1m0s", "cooldown": "10s", "per": "credential"},
	   "circuit": {"state": "open", "failures": 0, "credentials": [
	     {"credential": "cust-42", "state": "open", "failures": 2, "opened_at": %[1]q, "next_probe_at": %[2]q}]}},
	  {"name": "crm", "base_url": "https://crm.example/api", "auth": {"type": "oauth2"},
	   "timeout": "2s", "max_timeout": "30s",
	   "retry": {"max_attempts": 4, "initial_interval": "1s", "max_interval": "1m0s", "multiplier": 2, "max_elapsed": "1h0m0s"},
	   "rate_limit": {"requests": 100, "per": "1m0s", "burst": 100},
	   "concurrency": {"limit": 10, "per": "credential", "in_use": 2},
	   "circuit_breaker": {"failures": 5, "window": "30s", "cooldown": "30s", "per": "integration"},
	   "circuit": {"state": "open", "failures": 5, "opened_at": %[3]q, "next_probe_at": %[4]q}},
	  {"name": "plain", "base_url": "https://plain.example", "auth": {"type": "none"},
	   "timeout": "5s", "max_timeout": "30s",
	   "retry": {"max_attempts": 5, "initial_interval": "1s", "max_interval": "1m0s", "multiplier": 2, "max_elapsed": "1h0m0s"},
	   "rate_limit": null, "concurrency": null, "circuit_breaker": null, "circuit": null}
	]}`, ts(credOpened.OpenedAt), ts(credOpened.NextProbeAt), ts(opened.OpenedAt), ts(opened.NextProbeAt)), string(r.Body))

	// Another tenant's key sees the same catalog and none of acme's state.
	r = e.do(t, req{Method: http.MethodGet, Path: "/v1/integrations", Key: e.otherAdminKey})
	require.Equal(t, http.StatusOK, r.Status)
	var other struct{ Integrations []producer.Integration }
	require.NoError(t, json.Unmarshal(r.Body, &other))
	require.Len(t, other.Integrations, 3)
	for _, in := range other.Integrations {
		if in.Circuit != nil {
			require.Equal(t, producer.CircuitClosed, in.Circuit.State, in.Name)
			require.Zero(t, in.Circuit.Failures, in.Name)
			require.Nil(t, in.Circuit.OpenedAt, in.Name)
			require.Empty(t, in.Circuit.Credentials, in.Name)
		}
		if in.Concurrency != nil {
			require.Zero(t, in.Concurrency.InUse, in.Name)
		}
	}

	// The Go client answers the same.
	list, err := e.tenantClient(t, "acme").Integrations(ctx)
	require.NoError(t, err)
	var api struct{ Integrations []producer.Integration }
	require.NoError(t, json.Unmarshal(e.do(t, req{Method: http.MethodGet, Path: "/v1/integrations", Key: e.producerKey}).Body, &api))
	require.Equal(t, api.Integrations, list)
	require.Equal(t, producer.CircuitOpen, list[1].Circuit.State)
}

func TestGetIntegrationsRefusals(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.do(t, req{Method: http.MethodGet, Path: "/v1/integrations"})
	requireError(t, r, http.StatusUnauthorized, "unauthorized", "")
	r = e.do(t, req{Method: http.MethodGet, Path: "/v1/integrations?state=open", Key: e.producerKey})
	requireError(t, r, http.StatusBadRequest, "invalid_field", "state")
	r = e.do(t, req{Method: http.MethodPost, Path: "/v1/integrations", Key: e.producerKey})
	requireError(t, r, http.StatusMethodNotAllowed, "method_not_allowed", "")

	// Without flow control, nothing to read but the catalog.
	r = e.do(t, req{Method: http.MethodGet, Path: "/v1/integrations", Key: e.producerKey})
	require.Equal(t, http.StatusOK, r.Status)
	var got struct{ Integrations []producer.Integration }
	require.NoError(t, json.Unmarshal(r.Body, &got))
	require.Len(t, got.Integrations, 3)
	require.Equal(t, "basic", got.Integrations[0].Name)
	for _, in := range got.Integrations {
		require.Nil(t, in.Circuit)
		require.Nil(t, in.Concurrency)
	}
}

// openFlowState puts tenant acme's flow control in the state the README
// shows: crm's circuit open, billing's open for credential cust-42 (and
// one failure counted for cust-43), and two requests to crm in flight. It
// returns the changes that opened crm's circuit and cust-42's.
func openFlowState(t *testing.T, e *env) (crmOpened, credOpened *flow.Change) {
	t.Helper()
	ctx := t.Context()
	crm, _ := e.cat.Lookup("crm")
	billing, _ := e.cat.Lookup("billing")
	circuits := flow.NewCircuits(e.rdb, nil)
	for range 5 {
		ch, err := circuits.Report(ctx, &flow.Circuit{Tenant: "acme", Integration: "crm", Breaker: crm.CircuitBreaker}, "", flow.Failed)
		require.NoError(t, err)
		crmOpened = ch
	}
	require.NotNil(t, crmOpened)
	for range 2 {
		ch, err := circuits.Report(ctx, &flow.Circuit{Tenant: "acme", Integration: "billing", Credential: "cust-42",
			Breaker: billing.CircuitBreaker}, "", flow.Failed)
		require.NoError(t, err)
		credOpened = ch
	}
	require.NotNil(t, credOpened)
	_, err := circuits.Report(ctx, &flow.Circuit{Tenant: "acme", Integration: "billing", Credential: "cust-43",
		Breaker: billing.CircuitBreaker}, "", flow.Failed)
	require.NoError(t, err)
	slots, err := flow.NewSlots(e.rdb, nil)
	require.NoError(t, err)
	for range 2 {
		slot, _, err := slots.Acquire(ctx, flow.Scope{Tenant: "acme", Integration: "crm", Credential: "c1", PerCredential: true}, 10)
		require.NoError(t, err)
		require.NotNil(t, slot)
	}
	return crmOpened, credOpened
}
