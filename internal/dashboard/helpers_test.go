package dashboard_test

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mccutchen/go-httpbin/v2/httpbin"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/html"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/dashboard"
	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/internal/redistest"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

// testCatalog: httpbin is a go-httpbin of the test's own when a test runs
// a worker (withUpstream); nothing calls it otherwise.
const testCatalog = `
integrations:
  httpbin:
    base_url: http://127.0.0.1:9
    auth: {type: none}
    retry: {max_attempts: 1}
  bearer:
    base_url: https://bearer.example
    auth: {type: bearer}
    rate_limit: {requests: 10, per: 1s}
  crm:
    base_url: https://crm.example
    circuit_breaker: {failures: 2, window: 30s, cooldown: 1m}
  billing:
    base_url: https://billing.example
    auth: {type: bearer}
    circuit_breaker: {failures: 1, window: 10s, cooldown: 30s, per: credential}
`

// env is a dashboard over its own redis-server, with API keys of tenants
// acme (admin and producer) and other (admin).
type env struct {
	rdb     *redis.Client
	records *tasks.Store
	creds   *auth.Store
	keys    *auth.KeyStore
	prod    *producer.Producer
	url     string
	client  *http.Client // the server's: trusts its certificate under TLS

	acmeAdmin, acmeProducer, otherAdmin string
	acmeProducerID                      string
}

type setupConfig struct {
	tls      bool
	idle     time.Duration
	upstream bool
}

type option func(*setupConfig)

// withTLS serves the dashboard over TLS (httptest.NewTLSServer).
func withTLS() option { return func(c *setupConfig) { c.tls = true } }

// withIdle sets Config.SessionIdle.
func withIdle(d time.Duration) option { return func(c *setupConfig) { c.idle = d } }

// withUpstream points httpbin at a go-httpbin and runs a worker.
func withUpstream() option { return func(c *setupConfig) { c.upstream = true } }

func setup(t *testing.T, opts ...option) *env {
	t.Helper()
	var sc setupConfig
	for _, o := range opts {
		o(&sc)
	}
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	catalog := testCatalog
	if sc.upstream {
		up := httptest.NewServer(httpbin.New())
		t.Cleanup(up.Close)
		catalog = strings.Replace(catalog, "http://127.0.0.1:9", up.URL, 1)
	}
	cat, err := tasks.ParseCatalog([]byte(catalog))
	require.NoError(t, err)
	records, err := tasks.NewStore(rdb, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = records.Close() })
	secret, err := auth.GenerateKey()
	require.NoError(t, err)
	ring, err := auth.ParseKeyring(secret)
	require.NoError(t, err)
	creds, err := auth.NewStore(rdb, &auth.StoreConfig{Keyring: ring})
	require.NoError(t, err)
	keys := auth.NewKeyStore(rdb)
	prod, err := producer.New(rdb, &producer.Config{Catalog: cat, Records: records, WebhooksEnabled: true, WebhookAllowPrivate: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = prod.Close() })
	if sc.upstream {
		w, err := worker.New(rdb, &worker.Config{Catalog: cat, Records: records, Credentials: creds, Keyring: ring, Concurrency: 4})
		require.NoError(t, err)
		require.NoError(t, w.Start())
		t.Cleanup(w.Shutdown)
	}

	h, err := dashboard.New(&dashboard.Config{Producer: prod, Keys: keys, Credentials: creds, Catalog: cat, Redis: rdb, SessionIdle: sc.idle})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/ui/", h)
	var ts *httptest.Server
	if sc.tls {
		ts = httptest.NewTLSServer(mux)
	} else {
		ts = httptest.NewServer(mux)
	}
	t.Cleanup(ts.Close)

	e := &env{rdb: rdb, records: records, creds: creds, keys: keys, prod: prod, url: ts.URL, client: ts.Client()}
	ctx := context.Background()
	_, e.acmeAdmin, err = keys.Create(ctx, "acme", auth.RoleAdmin)
	require.NoError(t, err)
	pk, acmeProducer, err := keys.Create(ctx, "acme", auth.RoleProducer)
	require.NoError(t, err)
	e.acmeProducer, e.acmeProducerID = acmeProducer, pk.ID
	_, e.otherAdmin, err = keys.Create(ctx, "other", auth.RoleAdmin)
	require.NoError(t, err)
	return e
}

// tenant is the Go client of tenant, over the producer the dashboard uses.
func (e *env) tenant(t *testing.T, tenant string) *producer.Client {
	t.Helper()
	c, err := e.prod.Tenant(tenant)
	require.NoError(t, err)
	return c
}

// enqueue makes a call of tenant to httpbin's path that waits an hour
// before its first attempt (so that it stays queued without a worker),
// and returns its ID.
func (e *env) enqueue(t *testing.T, tenant, path string, opts ...producer.Option) string {
	t.Helper()
	opts = append([]producer.Option{producer.WithDelay(time.Hour)}, opts...)
	res, err := e.tenant(t, tenant).Enqueue(t.Context(), &tasks.Call{Integration: "httpbin", Method: "GET", Path: path}, opts...)
	require.NoError(t, err)
	return res.Record.CorrelationID
}

// fail finishes tenant's call id as failed, as a worker would.
func (e *env) fail(t *testing.T, tenant, id string) {
	t.Helper()
	_, err := e.records.Update(t.Context(), tenant, id, func(r *tasks.Record) error {
		now := time.Now().UTC()
		r.Status, r.Attempts, r.CompletedAt, r.NextAttemptAt = tasks.StatusFailed, 1, &now, nil
		r.Error = &tasks.CallError{Kind: tasks.KindHTTPStatus, Message: "upstream answered 500 Internal Server Error"}
		r.Response = &tasks.Response{Status: 500, Headers: map[string]string{}}
		return nil
	})
	require.NoError(t, err)
}

// sessions counts the sessions in Redis.
func (e *env) sessions(t *testing.T) []string {
	t.Helper()
	keys, err := e.rdb.Keys(t.Context(), rediskeys.UISession("*")).Result()
	require.NoError(t, err)
	return keys
}

// browser is a client with a cookie jar that does not follow redirects,
// like a browser whose every step the test looks at.
type browser struct {
	t   *testing.T
	e   *env
	c   *http.Client
	jar *cookiejar.Jar
}

func (e *env) browser(t *testing.T) *browser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{
		Transport:     e.client.Transport,
		Jar:           jar,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &browser{t: t, e: e, c: c, jar: jar}
}

// page is an answer of the dashboard, parsed.
type page struct {
	t      *testing.T
	Status int
	Header http.Header
	Body   string
	Doc    *html.Node
}

func (b *browser) do(req *http.Request) *page {
	b.t.Helper()
	res, err := b.c.Do(req)
	require.NoError(b.t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(b.t, err)
	doc, err := html.Parse(strings.NewReader(string(body)))
	require.NoError(b.t, err)
	return &page{t: b.t, Status: res.StatusCode, Header: res.Header, Body: string(body), Doc: doc}
}

func (b *browser) get(path string) *page {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.e.url+path, nil)
	require.NoError(b.t, err)
	return b.do(req)
}

func (b *browser) post(path string, form url.Values) *page {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.e.url+path, strings.NewReader(form.Encode()))
	require.NoError(b.t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

// signIn signs in with key through the form, and checks it worked.
func (b *browser) signIn(key string) {
	b.t.Helper()
	p := b.tryKey(key)
	require.Equal(b.t, http.StatusSeeOther, p.Status, "%s", p.Body)
	require.Equal(b.t, "/ui/calls", p.Header.Get("Location"))
}

// tryKey submits the sign-in form with key.
func (b *browser) tryKey(key string) *page {
	b.t.Helper()
	form := b.get("/ui/login")
	require.Equal(b.t, http.StatusOK, form.Status)
	return b.post("/ui/login", url.Values{"csrf": {form.input("csrf")}, "key": {key}})
}

// csrf is the CSRF token of the signed-in pages.
func (b *browser) csrf() string {
	b.t.Helper()
	p := b.get("/ui/integrations")
	require.Equal(b.t, http.StatusOK, p.Status)
	return p.input("csrf")
}

// cookie is the browser's cookie name for the dashboard, "" if none.
func (b *browser) cookie(name string) string {
	u, _ := url.Parse(b.e.url + "/ui/")
	for _, c := range b.jar.Cookies(u) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

// find returns the elements for which match is true, in document order.
func find(n *html.Node, match func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	for d := range n.Descendants() {
		if d.Type == html.ElementNode && match(d) {
			out = append(out, d)
		}
	}
	return out
}

func attr(n *html.Node, name string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == name {
			return a.Val, true
		}
	}
	return "", false
}

// text is the text content of n.
func text(n *html.Node) string {
	var b strings.Builder
	for d := range n.Descendants() {
		if d.Type == html.TextNode {
			b.WriteString(d.Data)
		}
	}
	return b.String()
}

// elements are the elements named tag.
func (p *page) elements(tag string) []*html.Node {
	return find(p.Doc, func(n *html.Node) bool { return n.Data == tag })
}

// input is the value of the first input named name.
func (p *page) input(name string) string {
	p.t.Helper()
	for _, n := range p.elements("input") {
		if v, _ := attr(n, "name"); v == name {
			val, _ := attr(n, "value")
			return val
		}
	}
	require.FailNow(p.t, "no input "+name, "%s", p.Body)
	return ""
}

// form is the form whose button says label: its action and fields.
func (p *page) form(label string) (string, url.Values) {
	p.t.Helper()
	for _, f := range p.elements("form") {
		for _, btn := range find(f, func(n *html.Node) bool { return n.Data == "button" }) {
			if strings.TrimSpace(text(btn)) != label {
				continue
			}
			action, _ := attr(f, "action")
			vals := url.Values{}
			for _, in := range find(f, func(n *html.Node) bool { return n.Data == "input" }) {
				name, _ := attr(in, "name")
				v, _ := attr(in, "value")
				vals.Set(name, v)
			}
			return action, vals
		}
	}
	require.FailNow(p.t, "no form with a button "+label, "%s", p.Body)
	return "", nil
}

// hasButton reports whether the page has a button saying label.
func (p *page) hasButton(label string) bool {
	for _, btn := range p.elements("button") {
		if strings.TrimSpace(text(btn)) == label {
			return true
		}
	}
	return false
}

// links are the hrefs of the links whose text is label ("" for any).
func (p *page) links(label string) []string {
	var out []string
	for _, a := range p.elements("a") {
		if label == "" || strings.TrimSpace(text(a)) == label {
			href, _ := attr(a, "href")
			out = append(out, href)
		}
	}
	return out
}

// table is the text of the cells of the rows in the body of the table
// with caption.
func (p *page) table(caption string) [][]string {
	p.t.Helper()
	for _, tbl := range p.elements("table") {
		caps := find(tbl, func(n *html.Node) bool { return n.Data == "caption" })
		if len(caps) == 0 || strings.TrimSpace(text(caps[0])) != caption {
			continue
		}
		var rows [][]string
		for _, tr := range find(tbl, func(n *html.Node) bool { return n.Data == "tr" && n.Parent.Data == "tbody" }) {
			var cells []string
			for _, td := range find(tr, func(n *html.Node) bool { return n.Data == "td" }) {
				cells = append(cells, strings.TrimSpace(text(td)))
			}
			rows = append(rows, cells)
		}
		return rows
	}
	require.FailNow(p.t, "no table "+caption, "%s", p.Body)
	return nil
}

// ids are the correlation IDs of a calls table's rows.
func (p *page) ids(caption string) []string {
	p.t.Helper()
	var out []string
	for _, row := range p.table(caption) {
		if len(row) > 1 {
			out = append(out, row[0])
		}
	}
	return out
}

// alert is the text of the page's role=alert, "" if none.
func (p *page) alert() string {
	for _, n := range find(p.Doc, func(n *html.Node) bool { v, _ := attr(n, "role"); return v == "alert" }) {
		return strings.TrimSpace(text(n))
	}
	return ""
}

// h1 is the page's heading.
func (p *page) h1() string {
	p.t.Helper()
	hs := p.elements("h1")
	require.Len(p.t, hs, 1, "%s", p.Body)
	return strings.TrimSpace(text(hs[0]))
}

type htmlNode = html.Node
