package producer

import (
	"context"
	"fmt"
	"net/http"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/flow"
	"github.com/callq/callq/tasks"
)

// Integration is one integration of the catalog as loaded, with the state
// of its flow control in the client's tenant: what GET /v1/integrations
// answers. It holds no secret and no reference to one: of the auth block,
// only its type; no headers (a catalog may put a static key in them).
type Integration struct {
	Name       string            `json:"name"`
	BaseURL    string            `json:"base_url"`
	Auth       IntegrationAuth   `json:"auth"`
	Timeout    tasks.Duration    `json:"timeout"`
	MaxTimeout tasks.Duration    `json:"max_timeout"`
	Retry      tasks.RetryPolicy `json:"retry"`
	// RateLimit is the fleet-wide rate limit; nil when none.
	RateLimit *tasks.RateLimit `json:"rate_limit"`
	// Concurrency is the fleet-wide concurrency cap and the slots in use;
	// nil when none.
	Concurrency *ConcurrencyState `json:"concurrency"`
	// CircuitBreaker is the circuit breaker's settings, and Circuit the
	// tenant's circuits; both nil when the integration has none.
	CircuitBreaker *tasks.CircuitBreaker `json:"circuit_breaker"`
	Circuit        *Circuit              `json:"circuit"`
}

// Circuit is an integration's circuits in one tenant: for a breaker per
// integration, its state, failures counted, when it opened and when its
// probe may go; for one per credential, the worst state of its circuits
// and, in Credentials, those that are not closed.
type Circuit = flow.Breakers

// CircuitStatus is one circuit's state.
type CircuitStatus = flow.Status

// CircuitState is closed, open or half_open.
type CircuitState = flow.State

// A circuit's states.
const (
	CircuitClosed   = flow.Closed
	CircuitOpen     = flow.Open
	CircuitHalfOpen = flow.HalfOpen
)

// IntegrationAuth is how an integration authenticates: its type only.
type IntegrationAuth struct {
	Type auth.Type `json:"type"`
}

// ConcurrencyState is an integration's concurrency cap, and how many of the
// tenant's requests to it are in flight (its slots in use, every
// credential's together).
type ConcurrencyState struct {
	Limit int                    `json:"limit"`
	Per   tasks.ConcurrencyScope `json:"per"`
	InUse int                    `json:"in_use"`
}

// Integrations lists the catalog's integrations in name order, with the
// tenant's state of their flow control: the concurrency slots in use and
// the circuits' states (another tenant's circuits and slots are its own,
// never shown here). Integrations without a cap or a breaker cost nothing
// to read; the circuits cost two round trips in all, and each cap one.
func (c *Client) Integrations(ctx context.Context) ([]Integration, error) {
	all := c.p.catalog().All()
	breakers := map[string]*tasks.CircuitBreaker{}
	for _, in := range all {
		if in.CircuitBreaker != nil {
			breakers[in.Name] = in.CircuitBreaker
		}
	}
	circuits, err := c.p.circuits.Read(ctx, c.tenant, breakers)
	if err != nil {
		return nil, err
	}
	out := make([]Integration, 0, len(all))
	for _, in := range all {
		it := Integration{Name: in.Name, BaseURL: in.BaseURL, Auth: IntegrationAuth{Type: in.Auth.Type},
			Timeout: in.Timeout, MaxTimeout: in.MaxTimeout, Retry: in.Retry, RateLimit: in.RateLimit,
			CircuitBreaker: in.CircuitBreaker, Circuit: circuits[in.Name]}
		if cc := in.Concurrency; cc != nil {
			n, err := c.p.slots.InUse(ctx, c.tenant, in.Name)
			if err != nil {
				return nil, err
			}
			it.Concurrency = &ConcurrencyState{Limit: cc.Limit, Per: cc.Per, InUse: n}
		}
		out = append(out, it)
	}
	return out, nil
}

// integrations serves GET /v1/integrations.
func (h *handler) integrations(w http.ResponseWriter, r *http.Request) {
	q, aerr := query(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	for k := range q {
		writeError(w, invalidField(k, "unknown query parameter %q; GET /v1/integrations takes none", k))
		return
	}
	list, err := h.client(r).Integrations(r.Context())
	if err != nil {
		h.unavailable(w, r, fmt.Errorf("reading the integrations' state: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"integrations": list})
}
