package dashboard

import (
	"cmp"
	"fmt"
	"net/http"
	"strings"

	"github.com/callq/callq/auth"
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
}

func (d *dashboard) integrations(w http.ResponseWriter, r *http.Request, s *session) {
	var rows []integrationRow
	for _, in := range d.cfg.Catalog.All() {
		rows = append(rows, integrationRow{Integration: in, Auth: authText(in.Auth), RateLimit: rateText(in.RateLimit),
			Timeout: fmt.Sprintf("%s (a call may ask up to %s)", shortDur(in.Timeout.D()), shortDur(in.MaxTimeout.D())),
			Retry:   retryText(in.Retry)})
	}
	d.render(w, r, http.StatusOK, "integrations", &view{Title: "Integrations", Nav: "integrations", S: s, Data: rows})
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
