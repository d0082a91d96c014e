package dashboard_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/tasks"
)

const (
	hostileScript = `<script>alert(1)</script>`
	hostileImg    = `<img src=x onerror=alert(1)>`
	wantCSP       = "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

// hostileRecord writes a finished call of acme whose every upstream- or
// error-borne field holds markup, as if a worker had recorded it.
func (e *env) hostileRecord(t *testing.T, id string) {
	t.Helper()
	now := time.Now().UTC()
	body := "before " + hostileScript + " " + hostileImg + " after"
	lastErr := "webhook receiver said " + hostileScript
	rec := &tasks.Record{CorrelationID: id, Tenant: "acme", Status: tasks.StatusFailed, Integration: "httpbin",
		Method: "GET", Path: "/anything", Queue: "default", Attempts: 1, MaxAttempts: 1, CreatedAt: now,
		StartedAt: &now, CompletedAt: &now,
		Response: &tasks.Response{Status: 500, Size: int64(len(body)), BodyText: &body,
			Headers: map[string]string{"X-Evil": hostileScript, "X-Img": hostileImg}},
		Error:   &tasks.CallError{Kind: tasks.KindHTTPStatus, Message: "upstream said " + hostileScript + hostileImg},
		History: []tasks.Attempt{{Attempt: 1, StartedAt: now, DurationMS: 12, Status: 500, Error: hostileImg, Note: hostileScript}},
		Webhook: &tasks.WebhookState{URL: "https://hooks.example/x", Status: "failed", Attempts: 1, LastError: &lastErr},
	}
	require.NoError(t, e.records.Create(t.Context(), rec, "fp", 0, nil))
}

// requireSafe checks a page against the content rules: the script is
// the one module file, and no inline script, style or event handler.
func requireSafe(t *testing.T, name string, p *page) {
	t.Helper()
	for _, n := range find(p.Doc, func(*htmlNode) bool { return true }) {
		switch n.Data {
		case "script":
			src, ok := attr(n, "src")
			require.True(t, ok, "%s: a <script> without src", name)
			require.True(t, strings.HasPrefix(src, "/ui/static/app.js"), "%s: script %s", name, src)
			require.Empty(t, strings.TrimSpace(text(n)), "%s: a script with content", name)
		case "style":
			require.Fail(t, name+": a <style> element")
		case "img", "iframe", "object", "embed":
			require.Fail(t, name+": an <"+n.Data+"> element")
		}
		for _, a := range n.Attr {
			require.NotEqual(t, "style", a.Key, "%s: a style attribute on <%s>", name, n.Data)
			require.False(t, strings.HasPrefix(a.Key, "on"), "%s: an event handler %s on <%s>", name, a.Key, n.Data)
			if a.Key == "href" || a.Key == "src" || a.Key == "action" {
				require.NotContains(t, strings.ToLower(a.Val), "javascript:", name)
			}
		}
	}
}

// requireLabelled checks every control has a label, and every button a
// name.
func requireLabelled(t *testing.T, name string, p *page) {
	t.Helper()
	labels := map[string]bool{}
	for _, l := range p.elements("label") {
		if v, ok := attr(l, "for"); ok {
			labels[v] = true
		}
	}
	for _, n := range find(p.Doc, func(n *htmlNode) bool { return n.Data == "input" || n.Data == "select" || n.Data == "textarea" }) {
		if typ, _ := attr(n, "type"); typ == "hidden" {
			continue
		}
		id, _ := attr(n, "id")
		_, aria := attr(n, "aria-label")
		require.True(t, aria || id != "" && labels[id], "%s: an unlabelled <%s id=%q>", name, n.Data, id)
	}
	for _, btn := range p.elements("button") {
		require.NotEmpty(t, strings.TrimSpace(text(btn)), "%s: a button without a name", name)
	}
}

func requireHeaders(t *testing.T, name string, p *page, page bool) {
	t.Helper()
	require.Equal(t, wantCSP, p.Header.Get("Content-Security-Policy"), name)
	require.Equal(t, "nosniff", p.Header.Get("X-Content-Type-Options"), name)
	require.Equal(t, "no-referrer", p.Header.Get("Referrer-Policy"), name)
	if page {
		require.Equal(t, "no-store", p.Header.Get("Cache-Control"), name)
		require.Equal(t, "text/html; charset=utf-8", p.Header.Get("Content-Type"), name)
	}
}

// Every page, signed in or not, carries the security headers, holds no
// inline script, style or event handler, and labels its controls.
func TestEveryPageSafe(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.hostileRecord(t, "hostile")
	queued := e.enqueue(t, "acme", "/anything")
	failed := e.enqueue(t, "acme", "/status/500")
	e.fail(t, "acme", failed)
	_, err := e.creds.Put(t.Context(), "acme", "b", "bearer", map[string]string{"token": "tok-123456"})
	require.NoError(t, err)

	anon := e.browser(t)
	pages := map[string]*page{
		"login":        anon.get("/ui/login"),
		"login 401":    anon.tryKey("cq_wrong"),
		"login 403":    anon.post("/ui/login", url.Values{"key": {"x"}}),
		"no session":   anon.get("/ui/calls"),
		"root":         anon.get("/ui/"),
		"anon 404":     anon.get("/ui/nope"),
		"anon refresh": anon.get("/ui/calls?fragment=rows"),
	}
	b := e.browser(t)
	b.signIn(e.acmeAdmin)
	csrf := b.csrf()
	dry := b.get("/ui/failed?since=1h&dry_run=1")
	action, form := dry.form("Replay 2 calls")
	for name, path := range map[string]string{
		"calls":        "/ui/calls",
		"calls rows":   "/ui/calls?fragment=rows",
		"calls 400":    "/ui/calls?since=forever",
		"call":         "/ui/calls/hostile",
		"call queued":  "/ui/calls/" + queued,
		"call 404":     "/ui/calls/nope",
		"failed":       "/ui/failed",
		"overview":     "/ui/overview",
		"credentials":  "/ui/credentials",
		"integrations": "/ui/integrations",
		"404":          "/ui/calls/x/y",
	} {
		pages[name] = b.get(path)
	}
	pages["failed dry run"] = dry
	pages["bulk replay"] = b.post(action, form)
	pages["replay 409"] = b.post("/ui/calls/"+queued+"/replay", url.Values{"csrf": {csrf}})
	pages["csrf 403"] = b.post("/ui/calls/"+queued+"/cancel", url.Values{})
	producerB := e.browser(t)
	producerB.signIn(e.acmeProducer)
	pages["credentials 403"] = producerB.get("/ui/credentials")

	for name, p := range pages {
		requireHeaders(t, name, p, true)
		requireSafe(t, name, p)
		requireLabelled(t, name, p)
	}
	require.Equal(t, http.StatusOK, pages["call"].Status)
	require.Equal(t, http.StatusForbidden, pages["credentials 403"].Status)

	// The static files: the same headers, cached by version.
	for _, f := range []struct{ path, ctype string }{{"app.js", "text/javascript; charset=utf-8"}, {"app.css", "text/css; charset=utf-8"}} {
		p := anon.get("/ui/static/" + f.path)
		require.Equal(t, http.StatusOK, p.Status)
		requireHeaders(t, f.path, p, false)
		require.Equal(t, f.ctype, p.Header.Get("Content-Type"))
		require.Equal(t, "no-cache", p.Header.Get("Cache-Control"), "no version: revalidate")
	}
	var js string
	for _, n := range pages["login"].elements("script") {
		js, _ = attr(n, "src")
	}
	require.Contains(t, js, "?v=")
	p := anon.get(js)
	require.Equal(t, "public, max-age=31536000, immutable", p.Header.Get("Cache-Control"))
	require.Contains(t, p.Body, "data-refresh")
	require.NotContains(t, p.Body, "innerHTML", "the script inserts no markup as HTML strings")
	p = anon.get("/ui/static/other.js")
	require.Equal(t, http.StatusNotFound, p.Status)
	requireHeaders(t, "static 404", p, true)
}

// Hostile upstream content, in a real call's response and in a record's
// error text, appears on the call page as text.
func TestHostileContentIsText(t *testing.T) {
	t.Parallel()
	e := setup(t, withUpstream())
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	acme := e.tenant(t, "acme")
	res, err := acme.Enqueue(ctx, &tasks.Call{Integration: "httpbin", Method: "GET", Path: "/response-headers",
		Query: tasks.Query{"X-Evil": {hostileScript}, "X-Img": {hostileImg}}})
	require.NoError(t, err)
	rec, err := acme.Wait(ctx, res.Record.CorrelationID)
	require.NoError(t, err)
	require.Equal(t, tasks.StatusSucceeded, rec.Status, "%+v", rec.Error)
	e.hostileRecord(t, "hostile")

	b := e.browser(t)
	b.signIn(e.acmeProducer)
	for _, id := range []string{rec.CorrelationID, "hostile"} {
		p := b.get("/ui/calls/" + id)
		require.Equal(t, http.StatusOK, p.Status)
		requireSafe(t, id, p)
		headers := map[string]string{}
		for _, row := range p.table("Response headers") {
			headers[row[0]] = row[1]
		}
		require.Equal(t, hostileScript, headers["X-Evil"], "the header, as text")
		require.Equal(t, hostileImg, headers["X-Img"])
		bodies := find(p.Doc, func(n *htmlNode) bool { return n.Data == "pre" })
		require.Len(t, bodies, 1)
		require.Contains(t, text(bodies[0]), hostileScript, "the body, as text")
		require.Contains(t, text(bodies[0]), hostileImg)
		require.Contains(t, p.Body, "&lt;script&gt;alert(1)&lt;/script&gt;")
		require.Contains(t, p.Body, "&lt;img src=x onerror=alert(1)&gt;")
		require.NotContains(t, p.Body, hostileScript)
		require.NotContains(t, p.Body, hostileImg)
	}

	p := b.get("/ui/calls/hostile")
	dl := text(p.elements("dl")[0])
	require.Contains(t, dl, "upstream said "+hostileScript+hostileImg, "the error message, as text")
	attempts := p.table("Attempts")
	require.Equal(t, hostileImg, attempts[0][4])
	require.Equal(t, hostileScript, attempts[0][5])
	require.Contains(t, text(p.elements("section")[3]), "webhook receiver said "+hostileScript)

	p = b.get("/ui/calls?fragment=rows")
	requireSafe(t, "rows", p)
	require.NotContains(t, p.Body, hostileScript)
	require.Contains(t, p.Body, "upstream said &lt;script&gt;")
}
