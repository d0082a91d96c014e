package dashboard

import (
	"cmp"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
)

func (d *dashboard) credentials(w http.ResponseWriter, r *http.Request, s *session) {
	creds, err := d.cfg.Credentials.List(r.Context(), s.Tenant)
	if err != nil {
		d.unavailable(w, r, s, err)
		return
	}
	d.render(w, r, http.StatusOK, "credentials", &view{Title: "Credentials", Nav: "credentials", S: s, Data: creds})
}

// integrationRow is one integration as the integrations page shows it.
type integrationRow struct {
	*tasks.Integration
	Auth, RateLimit, Timeout, Retry string
	// Circuit is the tenant's circuit state and the breaker's settings;
	// CircuitState its state, for the cell's class ("" without a breaker).
	Circuit      []string
	CircuitState producer.CircuitState
}

func (d *dashboard) integrations(w http.ResponseWriter, r *http.Request, s *session) {
	states, err := d.client(s).Integrations(r.Context())
	if err != nil {
		d.unavailable(w, r, s, err)
		return
	}
	circuits := map[string]*producer.Circuit{}
	for _, st := range states {
		circuits[st.Name] = st.Circuit
	}
	var rows []integrationRow
	for _, in := range d.cfg.Catalog.All() {
		row := integrationRow{Integration: in, Auth: authText(in.Auth), RateLimit: rateText(in.RateLimit),
			Timeout: fmt.Sprintf("%s (a call may ask up to %s)", shortDur(in.Timeout.D()), shortDur(in.MaxTimeout.D())),
			Retry:   retryText(in.Retry)}
		if c := circuits[in.Name]; in.CircuitBreaker != nil && c != nil {
			row.Circuit, row.CircuitState = circuitText(in.CircuitBreaker, c), c.State
		}
		rows = append(rows, row)
	}
	d.render(w, r, http.StatusOK, "integrations", &view{Title: "Integrations", Nav: "integrations", S: s, Data: rows})
}

// circuitText is an integration's circuits in the signed-in tenant, a line
// each, then what its breaker does.
func circuitText(b *tasks.CircuitBreaker, c *producer.Circuit) []string {
	var lines []string
	if b.PerCredential() {
		if len(c.Credentials) == 0 {
			lines = append(lines, "closed for every credential")
		}
		for _, st := range c.Credentials {
			lines = append(lines, fmt.Sprintf("credential %s: %s", cmp.Or(st.Credential, "(none)"), circuitStatus(st)))
		}
	} else {
		lines = append(lines, circuitStatus(c.Status))
	}
	per := ""
	if b.PerCredential() {
		per = ", per credential"
	}
	return append(lines, fmt.Sprintf("opens after %s within %s; probes after %s%s",
		count(b.Failures, "failure"), shortDur(b.Window.D()), shortDur(b.Cooldown.D()), per))
}

// circuitStatus is one circuit's state, in words.
func circuitStatus(st producer.CircuitStatus) string {
	at := func(t *time.Time) string {
		if w := stamp(t); w != nil {
			return w.Text
		}
		return "?"
	}
	switch st.State {
	case producer.CircuitOpen:
		return fmt.Sprintf("open since %s after %s; next probe at %s", at(st.OpenedAt),
			count(st.Failures, "consecutive failure"), at(st.NextProbeAt))
	case producer.CircuitHalfOpen:
		return fmt.Sprintf("half-open: a probe call is under way (opened %s after %s)", at(st.OpenedAt),
			count(st.Failures, "consecutive failure"))
	}
	if st.Failures > 0 {
		return fmt.Sprintf("closed, %s counted", count(st.Failures, "failure"))
	}
	return "closed"
}

// authText names an integration's auth type, and where an API key goes.
func authText(a auth.Spec) string {
	switch a.Type {
	case auth.TypeAPIKey:
		in, name := cmp.Or(a.In, auth.InHeader), cmp.Or(a.Name, auth.DefaultAPIKeyName)
		return fmt.Sprintf("%s (%s %s)", a.Type, in, name)
	case auth.TypeHeaders:
		names := make([]string, 0, len(a.Headers))
		for h := range a.Headers {
			names = append(names, h)
		}
		return fmt.Sprintf("%s (%s)", a.Type, strings.Join(sortedStrings(names), ", "))
	}
	return string(a.Type)
}

func rateText(rl *tasks.RateLimit) string {
	if rl == nil {
		return "none"
	}
	s := fmt.Sprintf("%d per %s", rl.Requests, shortDur(rl.Per.D()))
	if rl.Burst > 0 {
		s += fmt.Sprintf(", burst %d", rl.Burst)
	}
	return s
}

func retryText(p tasks.RetryPolicy) string {
	return fmt.Sprintf("%s; backoff from %s to %s (×%g); within %s", count(p.MaxAttempts, "attempt"),
		shortDur(p.InitialInterval.D()), shortDur(p.MaxInterval.D()), p.Multiplier, shortDur(p.MaxElapsed.D()))
}
