package dashboard_test

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/html"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/flow"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
)

func TestCallsPage(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var ids []string // newest first
	for i := range 55 {
		ids = append([]string{e.enqueue(t, "acme", fmt.Sprintf("/anything/%d", i))}, ids...)
	}
	for _, id := range ids[:3] {
		e.fail(t, "acme", id)
	}
	b := e.browser(t)
	b.signIn(e.acmeProducer)

	p := b.get("/ui/calls")
	require.Equal(t, http.StatusOK, p.Status)
	require.Equal(t, ids[:50], p.ids("Calls"), "newest first, a page of 50")
	row := p.table("Calls")[0]
	require.Equal(t, []string{ids[0], "failed", "httpbin", "GET", "/anything/54", "1/1", "500"}, row[:7])
	require.Contains(t, row[7], "http_status: upstream answered 500")
	require.Contains(t, p.links(ids[0]), "/ui/calls/"+ids[0])
	next := p.links("Next page")
	require.Len(t, next, 1)
	p = b.get(next[0])
	require.Equal(t, ids[50:], p.ids("Calls"))
	require.Empty(t, p.links("Next page"))

	// The filters, in the URL.
	p = b.get("/ui/calls?status=failed&integration=httpbin&since=1h")
	require.Equal(t, http.StatusOK, p.Status)
	require.Equal(t, ids[:3], p.ids("Calls"))
	for _, sel := range p.elements("select") {
		id, _ := attr(sel, "id")
		for _, opt := range find(sel, func(n *htmlNode) bool { return n.Data == "option" }) {
			if _, ok := attr(opt, "selected"); ok {
				v, _ := attr(opt, "value")
				require.Equal(t, map[string]string{"status": "failed", "since": "1h"}[id], v, id)
			}
		}
	}
	p = b.get("/ui/calls?status=queued&integration=bearer")
	require.Empty(t, p.ids("Calls"))
	require.Equal(t, [][]string{{"No calls match."}}, p.table("Calls"))

	for _, bad := range []string{"status=lost", "since=2d", "integration=a%20b", "cursor=nope"} {
		p = b.get("/ui/calls?" + bad)
		require.Equal(t, http.StatusBadRequest, p.Status, bad)
		require.NotEmpty(t, p.alert(), bad)
	}

	// The rows alone, for the refresh.
	p = b.get("/ui/calls?status=failed&fragment=rows")
	require.Equal(t, http.StatusOK, p.Status)
	require.Empty(t, p.elements("nav"))
	tbodies := p.elements("tbody")
	require.Len(t, tbodies, 1)
	refresh, _ := attr(tbodies[0], "data-refresh")
	require.Contains(t, refresh, "fragment=rows")
	require.Contains(t, refresh, "status=failed")
	require.Len(t, p.elements("tr"), 3)
}

func TestCallPageAndButtons(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := e.enqueue(t, "acme", "/anything/x", producer.WithCorrelationID("order-1"))
	b := e.browser(t)
	b.signIn(e.acmeProducer)

	p := b.get("/ui/calls/" + id)
	require.Equal(t, http.StatusOK, p.Status)
	require.Equal(t, "Call order-1", p.h1())
	dl := text(p.elements("dl")[0])
	for _, want := range []string{"Status", "queued", "Integration", "httpbin", "Path", "/anything/x", "Queue", "default",
		"Attempts", "0 of 1", "Created", "Next attempt", "Error kind", "Replay of", "Replayed by"} {
		require.Contains(t, dl, want)
	}
	require.Equal(t, [][]string{{"No attempt yet."}}, p.table("Attempts"))
	require.True(t, p.hasButton("Cancel"))
	require.False(t, p.hasButton("Replay"), "an unfinished call cannot be replayed")

	// A call held back by a gate says why it waits; one a schedule made
	// names it. Both are upstream-free text, escaped like any other.
	_, err := e.records.Update(t.Context(), "acme", id, func(r *tasks.Record) error {
		next := time.Now().Add(time.Second).UTC()
		r.Status, r.NextAttemptAt = tasks.StatusRetrying, &next
		r.Note = `waiting for a free slot: 2 of 2 requests to "httpbin" are in flight`
		r.Schedule = "nightly-<sync>"
		return nil
	})
	require.NoError(t, err)
	p = b.get("/ui/calls/" + id)
	dl = text(p.elements("dl")[0])
	require.Contains(t, dl, `Waiting`+`waiting for a free slot: 2 of 2 requests to "httpbin" are in flight`)
	require.Contains(t, dl, "Schedulenightly-<sync>")
	require.NotContains(t, p.Body, "<sync>", "escaped")
	require.False(t, p.hasButton("Redeliver webhook"))

	// Replay of an unfinished call, posted anyway: refused, nothing made.
	csrf := p.input("csrf")
	p = b.post("/ui/calls/"+id+"/replay", url.Values{"csrf": {csrf}})
	require.Equal(t, http.StatusConflict, p.Status)
	require.Contains(t, p.alert(), "has not finished")

	action, form := p.form("Cancel")
	require.Equal(t, "/ui/calls/order-1/cancel", action)
	p = b.post(action, form)
	require.Equal(t, http.StatusSeeOther, p.Status)
	require.Equal(t, "/ui/calls/order-1?done=canceled", p.Header.Get("Location"))
	p = b.get(p.Header.Get("Location"))
	require.Equal(t, "The call is canceled.", strings.TrimSpace(text(find(p.Doc, func(n *htmlNode) bool { v, _ := attr(n, "role"); return v == "status" })[0])))
	require.Contains(t, text(p.elements("dl")[0]), "canceled")
	require.False(t, p.hasButton("Cancel"))
	p = b.post(action, form)
	require.Equal(t, http.StatusConflict, p.Status, "canceling twice")
	require.Contains(t, p.alert(), "already finished")

	// Replay: a new call that links back, and the original links to it.
	action, form = p.form("Replay")
	p = b.post(action, form)
	require.Equal(t, http.StatusSeeOther, p.Status)
	loc := p.Header.Get("Location")
	require.True(t, strings.HasPrefix(loc, "/ui/calls/"), loc)
	newID := strings.TrimSuffix(strings.TrimPrefix(loc, "/ui/calls/"), "?done=replayed")
	rec, err := e.tenant(t, "acme").Get(t.Context(), newID)
	require.NoError(t, err)
	require.Equal(t, "order-1", rec.ReplayOf)
	require.Equal(t, "/anything/x", rec.Path)
	p = b.get(loc)
	require.Equal(t, "Call "+newID, p.h1())
	require.Equal(t, []string{"/ui/calls/order-1"}, p.links("order-1"), "the replay links to the original")
	p = b.get("/ui/calls/order-1")
	require.Equal(t, []string{"/ui/calls/" + newID}, p.links(newID), "the original links to its replay")

	// Redeliver webhook: only a finished call's with a webhook.
	require.False(t, p.hasButton("Redeliver webhook"))
	p = b.post("/ui/calls/order-1/webhook/redeliver", url.Values{"csrf": {csrf}})
	require.Equal(t, http.StatusConflict, p.Status)
	require.Equal(t, "This call has no webhook.", p.alert())
	hooked := e.enqueue(t, "acme", "/anything/h", producer.WithCorrelationID("hooked"))
	_, err = e.records.Update(t.Context(), "acme", hooked, func(r *tasks.Record) error {
		r.Webhook = &tasks.WebhookState{URL: "http://127.0.0.1:9/hook", Status: "failed", Attempts: 3}
		return nil
	})
	require.NoError(t, err)
	e.fail(t, "acme", hooked)
	p = b.get("/ui/calls/hooked")
	require.Contains(t, text(p.elements("section")[3]), "http://127.0.0.1:9/hook")
	action, form = p.form("Redeliver webhook")
	p = b.post(action, form)
	require.Equal(t, http.StatusSeeOther, p.Status)
	require.Equal(t, "/ui/calls/hooked?done=redelivered", p.Header.Get("Location"))
	rec, err = e.tenant(t, "acme").Get(t.Context(), "hooked")
	require.NoError(t, err)
	require.Equal(t, tasks.WebhookPending, rec.Webhook.Status)

	p = b.get("/ui/calls/nope")
	require.Equal(t, http.StatusNotFound, p.Status)
	p = b.get("/ui/calls/" + url.PathEscape("a b"))
	require.Equal(t, http.StatusNotFound, p.Status)
}

func TestBulkReplay(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var failed []string
	for i := range 3 {
		id := e.enqueue(t, "acme", fmt.Sprintf("/status/%d", 500+i))
		e.fail(t, "acme", id)
		failed = append([]string{id}, failed...)
	}
	e.enqueue(t, "acme", "/anything/queued") // not failed: not replayed
	other := e.enqueue(t, "other", "/status/500")
	e.fail(t, "other", other)
	b := e.browser(t)
	b.signIn(e.acmeProducer)

	p := b.get("/ui/failed")
	require.Equal(t, http.StatusOK, p.Status)
	require.Equal(t, "Failed calls", p.h1())
	require.Equal(t, failed, p.ids("Failed calls"))
	action, form := p.form("Count replays")
	require.Equal(t, "/ui/failed", action)
	require.Equal(t, "1h", form.Get("since"))
	p = b.get(action + "?" + form.Encode())
	require.Equal(t, http.StatusOK, p.Status)
	require.Contains(t, p.Body, "3 calls would be replayed")
	for _, id := range failed {
		rec, err := e.tenant(t, "acme").Get(t.Context(), id)
		require.NoError(t, err)
		require.Empty(t, rec.ReplayedBy, "the dry run replayed nothing")
	}

	action, form = p.form("Replay 3 calls")
	require.Equal(t, "/ui/failed/replay", action)
	require.Equal(t, "3", form.Get("limit"))
	require.Equal(t, http.StatusForbidden, b.post(action, url.Values{"since": form["since"], "until": form["until"], "limit": {"3"}}).Status,
		"no CSRF token")
	p = b.post(action, form)
	require.Equal(t, http.StatusOK, p.Status, "%s", p.Body)
	require.Equal(t, "Replayed 3 calls", strings.TrimSpace(text(p.elements("h2")[0])))
	rows := p.table("Replays")
	require.Len(t, rows, 3)
	for i, id := range failed {
		rec, err := e.tenant(t, "acme").Get(t.Context(), id)
		require.NoError(t, err)
		require.Equal(t, []string{id, rec.ReplayedBy}, rows[i])
		require.Contains(t, p.links(rec.ReplayedBy), "/ui/calls/"+rec.ReplayedBy)
	}
	rec, err := e.tenant(t, "other").Get(t.Context(), other)
	require.NoError(t, err)
	require.Empty(t, rec.ReplayedBy, "another tenant's failed call is not replayed")

	// Again: nothing new.
	p = b.get("/ui/failed?since=1h&dry_run=1")
	require.Contains(t, p.Body, "0 calls would be replayed")
	require.False(t, slices.ContainsFunc(p.elements("button"), func(n *htmlNode) bool { return strings.HasPrefix(text(n), "Replay ") }))
	p = b.post(action, form)
	require.Equal(t, "Replayed 0 calls", strings.TrimSpace(text(p.elements("h2")[0])))

	require.Equal(t, http.StatusBadRequest, b.post(action, url.Values{"csrf": form["csrf"], "until": {"yesterday"}, "limit": {"3"}}).Status)
	require.Equal(t, http.StatusBadRequest, b.post(action, url.Values{"csrf": form["csrf"], "until": form["until"], "limit": {"0"}}).Status)
}

func TestOverview(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for i := range 4 {
		id := e.enqueue(t, "acme", fmt.Sprintf("/status/%d", i))
		if i < 3 {
			e.fail(t, "acme", id)
		}
	}
	canceled := e.enqueue(t, "acme", "/x")
	_, err := e.tenant(t, "acme").Cancel(t.Context(), canceled)
	require.NoError(t, err)
	b := e.browser(t)
	b.signIn(e.acmeProducer)
	p := b.get("/ui/overview")
	require.Equal(t, http.StatusOK, p.Status)
	require.Equal(t, "Overview", p.h1())
	require.Equal(t, [][]string{{"queued", "1"}, {"running", "0"}, {"retrying", "0"}, {"succeeded", "0"}, {"failed", "3"}, {"canceled", "1"}},
		p.table("By status"))
	require.Equal(t, [][]string{{"httpbin", "5"}}, p.table("By integration"))
	queues := p.table("Queues")
	require.NotEmpty(t, queues)
	require.Equal(t, "default", queues[0][0])

	svgs := p.elements("svg")
	require.Len(t, svgs, 1)
	role, _ := attr(svgs[0], "role")
	label, _ := attr(svgs[0], "aria-label")
	require.Equal(t, "img", role)
	require.Equal(t, "Finished calls per minute by status", label)
	bars := map[string]int{}
	for _, r := range find(svgs[0], func(n *htmlNode) bool { return n.Data == "rect" }) {
		class, _ := attr(r, "class")
		if titles := find(r, func(n *htmlNode) bool { return n.Data == "title" }); len(titles) > 0 {
			bars[class]++
			require.Regexp(t, `^\d\d:\d\d UTC: \d+ calls? (failed|canceled)$`, text(titles[0]))
		}
	}
	require.Equal(t, map[string]int{"bar bar-failed": 1, "bar bar-canceled": 1}, bars, "one minute, two statuses stacked")
	require.Contains(t, p.Body, "3 failed, 1 canceled")
	require.Contains(t, p.Body, "the minute it was created")

	require.Equal(t, http.StatusBadRequest, b.get("/ui/overview?since=").Status, "a window without a bound is not counted")
	require.Equal(t, http.StatusOK, b.get("/ui/overview?since=7d").Status)
}

func TestCredentialsAndIntegrations(t *testing.T) {
	t.Parallel()
	e := setup(t)
	_, err := e.creds.Put(t.Context(), "acme", "bearer-main", "bearer", map[string]string{"token": "s3cr3t-value-123"})
	require.NoError(t, err)
	at := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	_, err = e.creds.PutConnected(t.Context(), "acme", "bearer-user", "bearer", map[string]string{"token": "s3cr3t-value-456"},
		&auth.Connection{Method: auth.ConnectForm, At: at, Session: "cs_1"})
	require.NoError(t, err)
	// OAuth2: one the provider sent no refresh token for, which dies at
	// its expiry, and one it did.
	no, yes, expires := false, true, at.Add(time.Hour)
	_, err = e.creds.PutConnected(t.Context(), "acme", "oauth-dies", "bearer", map[string]string{"token": "s3cr3t-value-789"},
		&auth.Connection{Method: auth.ConnectOAuth2, At: at, Session: "cs_2", Refreshable: &no, ExpiresAt: &expires})
	require.NoError(t, err)
	_, err = e.creds.PutConnected(t.Context(), "acme", "oauth-lives", "bearer", map[string]string{"token": "s3cr3t-value-790"},
		&auth.Connection{Method: auth.ConnectOAuth2, At: at, Session: "cs_3", Refreshable: &yes})
	require.NoError(t, err)

	producerB := e.browser(t)
	producerB.signIn(e.acmeProducer)
	p := producerB.get("/ui/credentials")
	require.Equal(t, http.StatusForbidden, p.Status)
	require.Contains(t, p.alert(), "admin")
	p = producerB.get("/ui/calls")
	require.Empty(t, p.links("Credentials"), "a producer's nav has no credentials")

	admin := e.browser(t)
	admin.signIn(e.acmeAdmin)
	p = admin.get("/ui/calls")
	require.Equal(t, []string{"/ui/credentials"}, p.links("Credentials"))
	p = admin.get("/ui/credentials")
	require.Equal(t, http.StatusOK, p.Status)
	rows := p.table("Credentials")
	require.Len(t, rows, 4)
	require.Equal(t, []string{"bearer-main", "bearer", "token", "put through the API"}, rows[0][:4])
	require.Equal(t, []string{"bearer-user", "bearer", "token"}, rows[1][:3])
	require.True(t, strings.HasPrefix(rows[1][3], "hosted form, 2026-11-26"), rows[1][3])
	require.Equal(t, "OAuth2, 2026-11-26 12:00:00Z; no refresh token, expires 2026-11-26 13:00:00Z", rows[2][3])
	require.Equal(t, "OAuth2, 2026-11-26 12:00:00Z", rows[3][3])
	require.NotContains(t, p.Body, "s3cr3t-value-123")
	require.NotContains(t, p.Body, "s3cr3t-value-456")

	otherAdmin := e.browser(t)
	otherAdmin.signIn(e.otherAdmin)
	require.Equal(t, [][]string{{"No credentials."}}, otherAdmin.get("/ui/credentials").table("Credentials"))

	p = producerB.get("/ui/integrations")
	require.Equal(t, http.StatusOK, p.Status)
	rows = p.table("Integrations")
	require.Len(t, rows, 4)
	require.Equal(t, "bearer", rows[0][0])
	require.Equal(t, "bearer", rows[0][2])
	require.Equal(t, "10 per 1s, burst 10", rows[0][4])
	require.Equal(t, "—", rows[0][7], "the circuit column of an integration without a breaker")
	require.Equal(t, "httpbin", rows[3][0])
	require.Equal(t, "none", rows[3][4])
	require.Contains(t, rows[3][6], "1 attempt;")
	require.Equal(t, "crm", rows[2][0])
	require.Equal(t, "closedopens after 2 failures within 30s; probes after 1m", rows[2][7])
	require.Equal(t, "billing", rows[1][0])
	require.Equal(t, "closed for every credentialopens after 1 failure within 10s; probes after 30s, per credential", rows[1][7])
}

// The integrations page shows the signed-in tenant's circuits, and no
// other tenant's.
func TestIntegrationsCircuits(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := t.Context()
	cat, err := tasks.ParseCatalog([]byte(testCatalog))
	require.NoError(t, err)
	crm, _ := cat.Lookup("crm")
	billing, _ := cat.Lookup("billing")
	circuits := flow.NewCircuits(e.rdb, nil)
	var opened *flow.Change
	for range 2 {
		opened, err = circuits.Report(ctx, &flow.Circuit{Tenant: "acme", Integration: "crm", Breaker: crm.CircuitBreaker}, "", flow.Failed)
		require.NoError(t, err)
	}
	require.NotNil(t, opened)
	_, err = circuits.Report(ctx, &flow.Circuit{Tenant: "acme", Integration: "billing", Credential: "cust-<b>42</b>",
		Breaker: billing.CircuitBreaker}, "", flow.Failed)
	require.NoError(t, err)

	acme := e.browser(t)
	acme.signIn(e.acmeProducer)
	p := acme.get("/ui/integrations")
	require.Equal(t, http.StatusOK, p.Status)
	rows := p.table("Integrations")
	require.Equal(t, "billing", rows[1][0])
	require.Regexp(t, `^credential cust-<b>42</b>: open since \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ after 1 consecutive failure; next probe at `, rows[1][7])
	require.NotContains(t, p.Body, "<b>42", "a credential's name is text")
	require.Equal(t, "crm", rows[2][0])
	require.Equal(t, fmt.Sprintf("open since %s after 2 consecutive failures; next probe at %sopens after 2 failures within 30s; probes after 1m",
		opened.OpenedAt.Format("2006-01-02 15:04:05Z"), opened.NextProbeAt.Format("2006-01-02 15:04:05Z")), rows[2][7])
	marked := find(p.Doc, func(n *html.Node) bool {
		class, _ := attr(n, "class")
		return n.Data == "td" && strings.Contains(class, "circuit-open")
	})
	require.Len(t, marked, 2, "open circuits are marked")

	other := e.browser(t)
	other.signIn(e.otherAdmin)
	rows = other.get("/ui/integrations").table("Integrations")
	require.Equal(t, "closed for every credentialopens after 1 failure within 10s; probes after 30s, per credential", rows[1][7])
	require.Equal(t, "closedopens after 2 failures within 30s; probes after 1m", rows[2][7], "another tenant's circuits are its own")
}

// Tenant B's session sees none of tenant A's calls, and cannot act on them.
func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	e := setup(t)
	failedID := e.enqueue(t, "acme", "/status/500", producer.WithCorrelationID("acme-failed"))
	e.fail(t, "acme", failedID)
	queuedID := e.enqueue(t, "acme", "/anything", producer.WithCorrelationID("acme-queued"))

	b := e.browser(t)
	b.signIn(e.otherAdmin)
	p := b.get("/ui/calls")
	require.Empty(t, p.ids("Calls"))
	require.NotContains(t, p.Body, "acme-")
	p = b.get("/ui/failed?since=")
	require.Empty(t, p.ids("Failed calls"))
	p = b.get("/ui/failed?since=&dry_run=1")
	require.Contains(t, p.Body, "0 calls would be replayed")
	p = b.get("/ui/overview")
	for _, row := range p.table("By status") {
		require.Equal(t, "0", row[1], row[0])
	}
	require.Equal(t, [][]string{{"No calls."}}, p.table("By integration"))
	require.Empty(t, find(p.Doc, func(n *htmlNode) bool {
		return n.Data == "rect" && len(find(n, func(c *htmlNode) bool { return c.Data == "title" })) > 0
	}), "no bars")

	csrf := b.csrf()
	for _, id := range []string{failedID, queuedID} {
		p = b.get("/ui/calls/" + id)
		require.Equal(t, http.StatusNotFound, p.Status)
		require.NotContains(t, p.Body, "/status/500")
		for _, action := range []string{"replay", "cancel", "webhook/redeliver"} {
			p = b.post("/ui/calls/"+id+"/"+action, url.Values{"csrf": {csrf}})
			require.Equal(t, http.StatusNotFound, p.Status, action)
		}
	}
	p = b.post("/ui/failed/replay", url.Values{"csrf": {csrf}, "until": {"2100-01-01T00:00:00Z"}, "limit": {"10"}})
	require.Equal(t, "Replayed 0 calls", strings.TrimSpace(text(p.elements("h2")[0])))

	acme := e.tenant(t, "acme")
	rec, err := acme.Get(t.Context(), failedID)
	require.NoError(t, err)
	require.Empty(t, rec.ReplayedBy, "not replayed")
	rec, err = acme.Get(t.Context(), queuedID)
	require.NoError(t, err)
	require.Equal(t, tasks.StatusQueued, rec.Status, "not canceled")
	page, err := acme.List(t.Context(), tasks.Filter{}, "", 10)
	require.NoError(t, err)
	require.Len(t, page.Calls, 2, "nothing made in acme")
}

// Missing or wrong CSRF tokens: 403, and nothing changed.
func TestCSRF(t *testing.T) {
	t.Parallel()
	e := setup(t)
	queued := e.enqueue(t, "acme", "/anything")
	failed := e.enqueue(t, "acme", "/status/500")
	e.fail(t, "acme", failed)
	b := e.browser(t)
	b.signIn(e.acmeAdmin)
	csrf := b.csrf()
	other := e.browser(t)
	other.signIn(e.acmeAdmin)
	otherCSRF := other.csrf()
	require.NotEqual(t, csrf, otherCSRF, "each session has its own token")

	for _, bad := range []url.Values{{}, {"csrf": {""}}, {"csrf": {"x"}}, {"csrf": {otherCSRF}}, {"csrf": {csrf[:len(csrf)-1]}}} {
		for _, path := range []string{"/ui/calls/" + failed + "/replay", "/ui/calls/" + queued + "/cancel",
			"/ui/calls/" + failed + "/webhook/redeliver", "/ui/failed/replay", "/ui/logout"} {
			form := url.Values{"until": {"2100-01-01T00:00:00Z"}, "limit": {"10"}}
			for k, v := range bad {
				form[k] = v
			}
			p := b.post(path, form)
			require.Equal(t, http.StatusForbidden, p.Status, "%s %v", path, bad)
			require.Contains(t, p.alert(), "nothing was done")
		}
	}
	acme := e.tenant(t, "acme")
	rec, err := acme.Get(t.Context(), failed)
	require.NoError(t, err)
	require.Empty(t, rec.ReplayedBy)
	rec, err = acme.Get(t.Context(), queued)
	require.NoError(t, err)
	require.Equal(t, tasks.StatusQueued, rec.Status)
	page, err := acme.List(t.Context(), tasks.Filter{}, "", 10)
	require.NoError(t, err)
	require.Len(t, page.Calls, 2)
	require.Equal(t, http.StatusOK, b.get("/ui/calls").Status, "still signed in")

	// A GET changes nothing, whatever it asks.
	require.Equal(t, http.StatusNotFound, b.get("/ui/calls/"+failed+"/replay").Status)

	// A request the browser marks as cross-site is refused before anything.
	req, err := http.NewRequest(http.MethodPost, e.url+"/ui/calls/"+failed+"/replay", strings.NewReader(url.Values{"csrf": {csrf}}.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	require.Equal(t, http.StatusForbidden, b.do(req).Status)
	rec, err = acme.Get(t.Context(), failed)
	require.NoError(t, err)
	require.Empty(t, rec.ReplayedBy)
}
