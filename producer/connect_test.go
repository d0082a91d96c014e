package producer_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/oauthtest"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

func connectCatalog(p *oauthtest.Provider) string {
	return fmt.Sprintf(`
integrations:
  crm:
    base_url: %s
    auth: %s
  billing:
    base_url: https://billing.example
    auth: {type: bearer}
  stripe:
    base_url: https://stripe.example
    auth: {type: basic}
  datadog:
    base_url: https://datadog.example
    auth: {type: headers, headers: {DD-API-KEY: "{{api_key}}", DD-APPLICATION-KEY: "{{app_key}}"}}
  plain:
    base_url: https://plain.example
    auth: {type: none}
`, p.API, p.Auth())
}

// app is the tenant's own web application: where the browser ends.
type app struct {
	url  string
	mu   sync.Mutex
	hits []url.Values
}

func startApp(t *testing.T) *app {
	t.Helper()
	a := &app{}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.hits = append(a.hits, r.URL.Query())
		a.mu.Unlock()
		_, _ = io.WriteString(w, "back in the app")
	}))
	t.Cleanup(ts.Close)
	a.url = ts.URL
	return a
}

// receiver is a webhook receiver on a real listener.
type receiver struct {
	url    string
	events chan *http.Request
	bodies chan []byte
}

func startReceiver(t *testing.T) *receiver {
	t.Helper()
	rc := &receiver{events: make(chan *http.Request, 8), bodies: make(chan []byte, 8)}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rc.events <- r
		rc.bodies <- b
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(ts.Close)
	rc.url = ts.URL + "/hooks"
	return rc
}

// next waits for the next delivery and checks its signature with the
// tenant's secret.
func (rc *receiver) next(t *testing.T, secret string) (string, producer.ConnectEvent) {
	t.Helper()
	select {
	case r := <-rc.events:
		b := <-rc.bodies
		require.NoError(t, producer.VerifyWebhook(secret, r.Header, b))
		var ev struct {
			Type string                `json:"type"`
			Data producer.ConnectEvent `json:"data"`
		}
		require.NoError(t, json.Unmarshal(b, &ev))
		return ev.Type, ev.Data
	case <-time.After(15 * time.Second):
		t.Fatal("no webhook delivery within 15s")
		return "", producer.ConnectEvent{}
	}
}

type connectEnv struct {
	*env
	p       *oauthtest.Provider
	app     *app
	hooks   *receiver
	logs    *lockedBuffer
	secret  string // tenant acme's webhook secret
	browser *http.Client
}

func setupConnect(t *testing.T, accessTTL time.Duration) *connectEnv {
	t.Helper()
	p := oauthtest.Start(t, accessTTL)
	a := startApp(t)
	logs := &lockedBuffer{}
	log := zerolog.New(logs)
	master, err := auth.ParseWebhookSecrets("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	require.NoError(t, err)
	origins, err := producer.ParseConnectOrigins(a.url)
	require.NoError(t, err)
	e := setup(t, withCatalog(connectCatalog(p)), withPublicURL(), withPrivateWebhooks(),
		withHandler(func(c *producer.HandlerConfig) {
			c.ConnectAllowedOrigins = origins
			c.Logger = &log
			c.WebhookSecrets = master
		}),
		withWorker(func(c *worker.Config) {
			c.WebhookSecrets, c.WebhookAllowPrivate, c.Logger = master, true, &log
		}))
	p.Register(t, e.url)
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	return &connectEnv{env: e, p: p, app: a, hooks: startReceiver(t), logs: logs,
		secret: master.ForTenant("acme").Secrets()[0], browser: &http.Client{Jar: jar, Timeout: 15 * time.Second}}
}

// session opens a connect session as key and answers its token and URL.
func (ce *connectEnv) session(t *testing.T, key string, body map[string]any) (string, string) {
	t.Helper()
	r := ce.do(t, req{Method: http.MethodPost, Path: "/v1/connect/sessions", Key: key, Body: body})
	require.Equal(t, http.StatusCreated, r.Status, "body: %s", r.Body)
	m := r.JSON(t)
	token, _ := m["token"].(string)
	u, _ := m["url"].(string)
	require.Equal(t, ce.url+"/connect/"+token, u)
	require.NotEmpty(t, m["session"])
	return token, u
}

// lastHit is the query the app's last request carried.
func (a *app) lastHit(t *testing.T) url.Values {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	require.NotEmpty(t, a.hits, "the browser never came back to the app")
	return a.hits[len(a.hits)-1]
}

// The whole dance through real HTTP redirects: callq sends the browser to
// the provider with PKCE and a state, the provider sends it back with a
// code, callq exchanges it and sends the browser to the app. The tokens
// are stored sealed as the credential, the tenant's webhook hears of it,
// and a call through the worker then uses the credential, refreshing its
// short-lived access token first. No code or token reaches the logs, the
// app or Redis in clear.
func TestConnectOAuth2Dance(t *testing.T) {
	t.Parallel()
	ce := setupConnect(t, 20*time.Second) // within the 30s margin: the first call refreshes
	_, u := ce.session(t, ce.adminKey, map[string]any{"integration": "crm", "credential": "cust-42",
		"redirect_uri": ce.app.url + "/connected?from=settings", "webhook": map[string]any{"url": ce.hooks.url}})

	res := ce.open(t, ce.browser, u)
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode, "%s", body)
	require.Equal(t, "back in the app", string(body))
	require.Equal(t, url.Values{"from": {"settings"}, "credential": {"cust-42"}, "status": {"connected"}}, ce.app.lastHit(t))

	// The authorization request callq made: S256 PKCE, the state, the
	// callback, the scopes and the integration's extra parameters.
	require.Equal(t, 1, ce.p.Authorizations())
	require.Equal(t, int32(1), ce.p.Codes.Load())

	cred, err := ce.creds.Get(context.Background(), "acme", "cust-42")
	require.NoError(t, err)
	require.Equal(t, "crm", cred.Integration)
	require.Equal(t, []string{"access_token", "expiry", "refresh_token"}, cred.FieldNames())
	require.NotNil(t, cred.Connected)
	require.Equal(t, auth.ConnectOAuth2, cred.Connected.Method)
	require.WithinDuration(t, time.Now(), cred.Connected.At, time.Minute)
	require.Equal(t, new(true), cred.Connected.Refreshable)
	require.Nil(t, cred.Connected.ExpiresAt, "a refreshable token's expiry is the refresh machinery's")
	for _, v := range cred.Fields {
		require.Equal(t, auth.KindLiteral, v.Kind)
	}

	typ, ev := ce.hooks.next(t, ce.secret)
	require.Equal(t, producer.EventCredentialConnected, typ)
	require.Equal(t, producer.ConnectEvent{Session: cred.Connected.Session, Tenant: "acme", Integration: "crm", Credential: "cust-42", Status: "connected",
		Refreshable: new(true)}, ev)

	// A real call with the connected credential: the worker refreshes the
	// token (it expires within the margin) and the provider's API accepts it.
	enq := ce.post(t, map[string]any{"integration": "crm", "method": "GET", "path": "/me", "credential": "cust-42"})
	require.Equal(t, http.StatusAccepted, enq.Status, "%s", enq.Body)
	id, _ := enq.JSON(t)["correlation_id"].(string)
	rec := ce.get(t, id+"?wait=20s").Record(t)
	require.Equal(t, tasks.StatusSucceeded, rec.Status, "%+v", rec.Error)
	require.Equal(t, 200, rec.Response.Status)
	require.JSONEq(t, `{"user":"user-1"}`, string(rec.Response.Body))
	require.Equal(t, int32(1), ce.p.Refreshes.Load())

	// Secrets: the codes, every token, the client secret and the session's
	// token are in no log line and no Redis value.
	secrets := append(ce.p.Secrets(t), oauthtest.ClientSecret, strings.TrimPrefix(u, ce.url+"/connect/"))
	require.GreaterOrEqual(t, len(secrets), 6) // a code, two pairs of tokens, and ours
	logs := ce.logs.String()
	require.Contains(t, logs, `"credential":"cust-42"`)
	for _, s := range secrets {
		require.NotContains(t, logs, s)
	}
	stored := redisText(t, ce.rdb)
	require.Contains(t, stored, `"integration":"crm"`) // it does read the values
	for i, s := range secrets {
		require.False(t, strings.Contains(stored, s), "secret %d of %d is in Redis in clear", i+1, len(secrets))
	}
}

// redisText is every key of rdb with its value as the commands of its
// type read it. (Not DUMP: it LZF-compresses values, splitting a secret
// in a compressible one so that a search cannot find it.)
func redisText(t *testing.T, rdb *redis.Client) string {
	t.Helper()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, "*").Result()
	require.NoError(t, err)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s\n", k)
		var v any
		switch typ := rdb.Type(ctx, k).Val(); typ {
		case "string":
			v, err = rdb.Get(ctx, k).Result()
		case "hash":
			v, err = rdb.HGetAll(ctx, k).Result()
		case "set":
			v, err = rdb.SMembers(ctx, k).Result()
		case "zset":
			v, err = rdb.ZRangeWithScores(ctx, k, 0, -1).Result()
		case "list":
			v, err = rdb.LRange(ctx, k, 0, -1).Result()
		case "stream":
			v, err = rdb.XRange(ctx, k, "-", "+").Result()
		case "none": // expired since KEYS
			continue
		default:
			t.Fatalf("key %s has type %s", k, typ)
		}
		if errors.Is(err, redis.Nil) {
			continue
		}
		require.NoError(t, err, k)
		fmt.Fprintf(&b, "%v\n", v)
	}
	return b.String()
}

// followNone is a browser that stops at each redirect, so a test can look
// at it and take it itself.
func followNone() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 15 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// step GETs u and answers the status and the Location.
func step(t *testing.T, c *http.Client, u string) (int, string, string) {
	t.Helper()
	res, err := c.Get(u)
	require.NoError(t, err)
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header.Get("Location"), string(b)
}

// open follows a session's link in browser c as an end user does: the
// page (GET), then its button (a POST to the link). It answers the POST's
// response: the redirect to the provider when c follows no redirects.
func (ce *connectEnv) open(t *testing.T, c *http.Client, connectURL string) *http.Response {
	t.Helper()
	status, _, body := step(t, c, connectURL)
	require.Equal(t, http.StatusOK, status, body)
	require.Contains(t, body, `<form method="post" action="`+connectURL+`">`)
	res, err := c.PostForm(connectURL, nil)
	require.NoError(t, err)
	return res
}

// begin opens a session's link in browser c (which follows no redirects)
// and answers where callq sends it: the provider's authorization URL.
func (ce *connectEnv) begin(t *testing.T, c *http.Client, connectURL string) string {
	t.Helper()
	res := ce.open(t, c, connectURL)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, http.StatusSeeOther, res.StatusCode, "%s", b)
	return res.Header.Get("Location")
}

// toCallback walks a session's dance in browser c up to the provider's
// redirect back to callq, and answers that URL (holding the code and the
// state) and the authorization request.
func (ce *connectEnv) toCallback(t *testing.T, c *http.Client, connectURL string) (string, url.Values) {
	t.Helper()
	loc := ce.begin(t, c, connectURL)
	authz, err := url.Parse(loc)
	require.NoError(t, err)
	require.Equal(t, ce.p.URL+"/authorize", authz.Scheme+"://"+authz.Host+authz.Path)
	status, back, body := step(t, c, loc)
	require.Equal(t, http.StatusFound, status, body)
	require.True(t, strings.HasPrefix(back, ce.url+"/connect/callback?"), back)
	return back, authz.Query()
}

// The authorization request, a state that works once, and a session token
// that works once.
func TestConnectStateAndTokenAreSingleUse(t *testing.T) {
	t.Parallel()
	ce := setupConnect(t, time.Hour)
	_, u := ce.session(t, ce.adminKey, map[string]any{"integration": "crm", "credential": "cust-42", "redirect_uri": ce.app.url + "/done"})
	// A link checker's HEAD does not use the link up.
	res, err := followNone().Head(u)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	browser := followNone()
	back, q := ce.toCallback(t, browser, u)

	require.Equal(t, "code", q.Get("response_type"))
	require.Equal(t, oauthtest.ClientID, q.Get("client_id"))
	require.Equal(t, ce.url+"/connect/callback", q.Get("redirect_uri"))
	require.Equal(t, "read", q.Get("scope"))
	require.Equal(t, "S256", q.Get("code_challenge_method"))
	require.Len(t, q.Get("code_challenge"), 43)
	require.Len(t, q.Get("state"), 43)
	require.Equal(t, "offline", q.Get("access_type"))

	// The session's link is used up by the post that sent the browser to
	// the provider.
	status, _, body := step(t, followNone(), u)
	require.Equal(t, http.StatusNotFound, status)
	require.Contains(t, body, "already been used")

	status, loc, _ := step(t, browser, back)
	require.Equal(t, http.StatusFound, status)
	require.Equal(t, ce.app.url+"/done?credential=cust-42&status=connected", loc)
	first, err := ce.creds.Get(context.Background(), "acme", "cust-42")
	require.NoError(t, err)

	// The same callback again: the state is gone; nothing is stored again.
	status, _, body = step(t, browser, back)
	require.Equal(t, http.StatusBadRequest, status)
	require.Contains(t, body, "already been used")
	again, err := ce.creds.Get(context.Background(), "acme", "cust-42")
	require.NoError(t, err)
	require.Equal(t, first.UpdatedAt, again.UpdatedAt)
	require.Equal(t, int32(1), ce.p.Codes.Load())

	// A state callq never made.
	status, _, _ = step(t, followNone(), ce.url+"/connect/callback?code=x&state="+strings.Repeat("A", 43))
	require.Equal(t, http.StatusBadRequest, status)
}

// The state is bound to the browser that followed the link (a cookie): an
// authorization URL (state and all) finished in another browser, leaked
// or forwarded, stores nothing, whoever consented there; the tenant hears
// of it.
func TestConnectStateBoundToBrowser(t *testing.T) {
	t.Parallel()
	ce := setupConnect(t, time.Hour)
	_, u := ce.session(t, ce.adminKey, map[string]any{"integration": "crm", "credential": "cust-42",
		"redirect_uri": ce.app.url + "/done", "webhook": map[string]any{"url": ce.hooks.url}})
	attacker := followNone()
	authorize := ce.begin(t, attacker, u)
	setCookie := attacker.Jar.Cookies(mustParse(t, ce.url+"/connect/callback"))
	require.Len(t, setCookie, 1, "callq binds the state to the browser with a cookie")

	victim := followNone()
	status, back, body := step(t, victim, authorize)
	require.Equal(t, http.StatusFound, status, body)
	status, loc, _ := step(t, victim, back)
	require.Equal(t, http.StatusFound, status)
	require.Equal(t, ce.app.url+"/done?credential=cust-42&error=browser_mismatch&status=error", loc)
	_, err := ce.creds.Get(context.Background(), "acme", "cust-42")
	require.ErrorIs(t, err, auth.ErrCredentialNotFound)
	require.Equal(t, int32(0), ce.p.Codes.Load(), "the code is not exchanged")
	typ, ev := ce.hooks.next(t, ce.secret)
	require.Equal(t, producer.EventCredentialFailed, typ)
	require.Equal(t, "browser_mismatch", ev.Error)

	// The state is used up: the attacker's own browser cannot use it now.
	status, _, _ = step(t, attacker, back)
	require.Equal(t, http.StatusBadRequest, status)
	_, err = ce.creds.Get(context.Background(), "acme", "cust-42")
	require.ErrorIs(t, err, auth.ErrCredentialNotFound)
}

func mustParse(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	require.NoError(t, err)
	return u
}

// Two (or more) callbacks with the same state at once, as a double
// click or a retried request would send: one exchanges the code and
// stores, the others find the state used; the code is exchanged once.
func TestConnectConcurrentCallbacks(t *testing.T) {
	t.Parallel()
	ce := setupConnect(t, time.Hour)
	_, u := ce.session(t, ce.adminKey, map[string]any{"integration": "crm", "credential": "cust-42", "redirect_uri": ce.app.url + "/done"})
	browser := followNone()
	back, _ := ce.toCallback(t, browser, u)
	const n = 8
	statuses := make(chan int, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			res, err := browser.Get(back)
			if err != nil {
				statuses <- 0
				return
			}
			res.Body.Close()
			statuses <- res.StatusCode
		}()
	}
	close(start)
	wg.Wait()
	close(statuses)
	got := map[int]int{}
	for s := range statuses {
		got[s]++
	}
	require.Equal(t, map[int]int{http.StatusFound: 1, http.StatusBadRequest: n - 1}, got)
	require.Equal(t, int32(1), ce.p.Codes.Load())
	cred, err := ce.creds.Get(context.Background(), "acme", "cust-42")
	require.NoError(t, err)
	require.Equal(t, auth.ConnectOAuth2, cred.Connected.Method)
}

// The user refuses consent: the app hears status=error&error=access_denied,
// the webhook credential.failed, and nothing is stored.
func TestConnectRefusedConsent(t *testing.T) {
	t.Parallel()
	ce := setupConnect(t, time.Hour)
	ce.p.Deny.Store(true)
	_, u := ce.session(t, ce.adminKey, map[string]any{"integration": "crm", "credential": "cust-42",
		"redirect_uri": ce.app.url + "/done", "webhook": map[string]any{"url": ce.hooks.url}})
	ce.open(t, ce.browser, u).Body.Close()
	require.Equal(t, url.Values{"credential": {"cust-42"}, "status": {"error"}, "error": {"access_denied"}}, ce.app.lastHit(t))
	_, err := ce.creds.Get(context.Background(), "acme", "cust-42")
	require.ErrorIs(t, err, auth.ErrCredentialNotFound)
	require.Equal(t, int32(0), ce.p.Codes.Load())
	typ, ev := ce.hooks.next(t, ce.secret)
	require.Equal(t, producer.EventCredentialFailed, typ)
	require.Equal(t, "access_denied", ev.Error)
	require.Equal(t, "error", ev.Status)
}

// The provider's error and error_description come from whoever sent the
// browser to the callback: an error that is not an OAuth2 error code is
// not passed on (provider_error), the description never is, and neither
// reaches the app's redirect, callq's page or the logs as sent.
func TestConnectHostileProviderError(t *testing.T) {
	t.Parallel()
	ce := setupConnect(t, time.Hour)
	const evil = `<script>alert(1)</script>"><img src=x onerror=alert(2)>`
	for _, redirect := range []string{ce.app.url + "/done", ""} {
		body := map[string]any{"integration": "crm", "credential": "cust-42"}
		if redirect != "" {
			body["redirect_uri"] = redirect
		}
		_, u := ce.session(t, ce.adminKey, body)
		browser := followNone()
		back, _ := ce.toCallback(t, browser, u)
		state := mustParse(t, back).Query().Get("state")
		hostile := ce.url + "/connect/callback?" + url.Values{"state": {state}, "error": {evil}, "error_description": {evil}}.Encode()
		status, loc, page := step(t, browser, hostile)
		if redirect != "" {
			require.Equal(t, http.StatusFound, status)
			require.Equal(t, redirect+"?credential=cust-42&error=provider_error&status=error", loc)
		} else {
			require.Equal(t, http.StatusOK, status)
			require.Contains(t, page, "(provider_error)")
		}
		require.NotContains(t, page, "<script")
		require.NotContains(t, page, "onerror")
		_, err := ce.creds.Get(context.Background(), "acme", "cust-42")
		require.ErrorIs(t, err, auth.ErrCredentialNotFound)
	}
	require.NotContains(t, ce.logs.String(), "alert(")
	require.Equal(t, int32(0), ce.p.Codes.Load())
}

// A code obtained for another tenant's session, brought back with acme's
// state, does not exchange (its PKCE challenge is the other session's):
// nothing is stored in either tenant. And the other tenant's own session
// of the same ref stores in its tenant only.
func TestConnectAnotherTenantsCode(t *testing.T) {
	t.Parallel()
	ce := setupConnect(t, time.Hour)
	_, mine := ce.session(t, ce.adminKey, map[string]any{"integration": "crm", "credential": "cust-42", "redirect_uri": ce.app.url + "/done"})
	_, theirs := ce.session(t, ce.otherAdminKey, map[string]any{"integration": "crm", "credential": "cust-42", "redirect_uri": ce.app.url + "/done"})
	myBrowser := followNone()
	myBack, _ := ce.toCallback(t, myBrowser, mine)
	theirBack, _ := ce.toCallback(t, followNone(), theirs)
	mu, err := url.Parse(myBack)
	require.NoError(t, err)
	tu, err := url.Parse(theirBack)
	require.NoError(t, err)

	forged := ce.url + "/connect/callback?" + url.Values{"state": {mu.Query().Get("state")}, "code": {tu.Query().Get("code")}}.Encode()
	status, loc, _ := step(t, myBrowser, forged)
	require.Equal(t, http.StatusFound, status)
	require.Equal(t, ce.app.url+"/done?credential=cust-42&error=exchange_failed&status=error", loc)
	for _, tenant := range []string{"acme", "other"} {
		_, err = ce.creds.Get(context.Background(), tenant, "cust-42")
		require.ErrorIs(t, err, auth.ErrCredentialNotFound, tenant)
	}
	require.NotContains(t, ce.logs.String(), tu.Query().Get("code"))

	// A session of theirs, walked to the end, stores in their tenant only.
	_, theirs = ce.session(t, ce.otherAdminKey, map[string]any{"integration": "crm", "credential": "cust-42", "redirect_uri": ce.app.url + "/done"})
	ce.open(t, ce.browser, theirs).Body.Close()
	require.Equal(t, "connected", ce.app.lastHit(t).Get("status"))
	_, err = ce.creds.Get(context.Background(), "other", "cust-42")
	require.NoError(t, err)
	_, err = ce.creds.Get(context.Background(), "acme", "cust-42")
	require.ErrorIs(t, err, auth.ErrCredentialNotFound)
}

// Who may open a session, and what it may name.
func TestConnectSessionRequests(t *testing.T) {
	t.Parallel()
	ce := setupConnect(t, time.Hour)
	ok := map[string]any{"integration": "crm", "credential": "cust-42", "redirect_uri": ce.app.url + "/done"}
	with := func(k string, v any) map[string]any {
		m := map[string]any{}
		for k, v := range ok {
			m[k] = v
		}
		m[k] = v
		return m
	}
	post := func(key string, body any) *resp {
		return ce.do(t, req{Method: http.MethodPost, Path: "/v1/connect/sessions", Key: key, Body: body})
	}
	requireError(t, post(ce.producerKey, ok), http.StatusForbidden, producer.CodeForbidden, "")
	requireError(t, post("", ok), http.StatusUnauthorized, producer.CodeUnauthorized, "")

	for _, c := range []struct {
		body  map[string]any
		field string
	}{
		{with("integration", "nope"), "integration"},
		{with("integration", "plain"), "integration"},
		{with("credential", "bad ref"), "credential"},
		{with("expires_in", "2h"), "expires_in"},
		{with("expires_in", "0s"), "expires_in"},
		{with("redirect_uri", "https://evil.example/done"), "redirect_uri"},
		{with("redirect_uri", "javascript:alert(1)"), "redirect_uri"},
		{with("redirect_uri", "//evil.example/done"), "redirect_uri"},
		{with("redirect_uri", strings.Replace(ce.app.url, "127.0.0.1", "127.0.0.1.evil.example", 1)), "redirect_uri"},
		{with("redirect_uri", ce.app.url+"/done#x"), "redirect_uri"},
		// A query Go cannot read would lose its parameters when callq adds
		// credential and status to it.
		{with("redirect_uri", ce.app.url+"/done?tab=1;next=2"), "redirect_uri"},
		{with("redirect_uri", ce.app.url+"/done?tab=%zz"), "redirect_uri"},
		{with("webhook", map[string]any{"url": "ftp://x"}), "webhook.url"},
	} {
		requireError(t, post(ce.adminKey, c.body), http.StatusBadRequest, producer.CodeInvalidField, c.field)
	}
	r := post(ce.adminKey, `{"integration": "crm", "credential": "c", "extra": 1}`)
	requireError(t, r, http.StatusBadRequest, producer.CodeInvalidJSON, "")

	// Without a redirect_uri, the browser ends on callq's own page.
	token, u := ce.session(t, ce.adminKey, map[string]any{"integration": "billing", "credential": "own", "expires_in": "1h"})
	require.Len(t, token, 43)
	res, err := ce.browser.PostForm(u, url.Values{"token": {"tok-own-0123"}})
	require.NoError(t, err)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Contains(t, string(b), "is connected")
	require.NotContains(t, string(b), "tok-own-0123")
}

func TestParseConnectOrigins(t *testing.T) {
	t.Parallel()
	got, err := producer.ParseConnectOrigins(" https://App.Example , https://app.example:443,http://localhost:3000,http://[::1]:8080 ")
	require.NoError(t, err)
	require.Equal(t, []string{"https://app.example", "https://app.example", "http://localhost:3000", "http://[::1]:8080"}, got)
	for _, bad := range []string{"http://app.example", "https://app.example/path", "app.example", "ftp://app.example", "https://u@app.example", "https://app.example?x=1"} {
		_, err := producer.ParseConnectOrigins(bad)
		require.Error(t, err, bad)
	}
	_, err = producer.NewHandler(&producer.HandlerConfig{PublicURL: "http://callq.example"})
	require.Error(t, err)
}

// A redirect_uri whose host only case-folds to an allowed one is refused:
// Go lowers U+0130 (İ) to "i", but a browser maps it (IDNA) to another
// domain, which an attacker can own; so an allowed "https://items.example"
// must not let "https://İtems.example" through. Hosts are ASCII (punycode).
func TestConnectRedirectUnicodeHost(t *testing.T) {
	t.Parallel()
	p := oauthtest.Start(t, time.Hour)
	e := setup(t, withCatalog(connectCatalog(p)), withPublicURL(), withHandler(func(c *producer.HandlerConfig) {
		c.ConnectAllowedOrigins = []string{"https://items.example", "https://kite.example"}
	}))
	post := func(redirect string) *resp {
		return e.do(t, req{Method: http.MethodPost, Path: "/v1/connect/sessions", Key: e.adminKey,
			Body: map[string]any{"integration": "billing", "credential": "c1", "redirect_uri": redirect}})
	}
	require.Equal(t, http.StatusCreated, post("https://ITEMS.example:443/done").Status)
	for _, bad := range []string{"https://\u0130tems.example/done", "https://\u212Aite.example/done", "https://items.ex\u00e4mple/done"} {
		requireError(t, post(bad), http.StatusBadRequest, producer.CodeInvalidField, "redirect_uri")
	}
	for _, bad := range []string{"https://\u0130tems.example", "https://b\u00fccher.example"} {
		_, err := producer.ParseConnectOrigins(bad)
		require.Error(t, err, bad)
	}
}

// A session's link stops working when it expires.
func TestConnectExpiredSession(t *testing.T) {
	t.Parallel()
	ce := setupConnect(t, time.Hour)
	_, u := ce.session(t, ce.adminKey, map[string]any{"integration": "billing", "credential": "c1", "expires_in": "1s", "redirect_uri": ce.app.url + "/done"})
	require.Eventually(t, func() bool {
		status, _, _ := step(t, followNone(), u)
		return status == http.StatusNotFound
	}, 10*time.Second, 50*time.Millisecond)
	res, err := followNone().PostForm(u, url.Values{"token": {"tok-late-0123"}})
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusNotFound, res.StatusCode)
	_, err = ce.creds.Get(context.Background(), "acme", "c1")
	require.ErrorIs(t, err, auth.ErrCredentialNotFound)
}

// Without CALLQ_PUBLIC_URL the connect endpoints answer 503 saying so.
func TestConnectNotConfigured(t *testing.T) {
	t.Parallel()
	p := oauthtest.Start(t, time.Hour)
	e := setup(t, withCatalog(connectCatalog(p)))
	r := e.do(t, req{Method: http.MethodPost, Path: "/v1/connect/sessions", Key: e.adminKey,
		Body: map[string]any{"integration": "crm", "credential": "c"}})
	requireError(t, r, http.StatusServiceUnavailable, producer.CodeUnavailable, "")
	require.Contains(t, string(r.Body), "CALLQ_PUBLIC_URL")
	for _, path := range []string{"/connect/" + strings.Repeat("a", 43), "/connect/callback?code=c&state=" + strings.Repeat("a", 43)} {
		status, _, body := step(t, followNone(), e.url+path)
		require.Equal(t, http.StatusServiceUnavailable, status, path)
		require.Contains(t, body, "CALLQ_PUBLIC_URL", path)
	}
	res, err := followNone().PostForm(e.url+"/connect/"+strings.Repeat("a", 43), url.Values{"token": {"t"}})
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, res.StatusCode)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var externalAsset = regexp.MustCompile(`(?i)(src|href)\s*=`)

// The hosted form: one labelled input per field the auth type uses,
// nothing loaded from anywhere, a strict CSP; values stored sealed, as
// literals, never echoed, logged or redirected.
func TestConnectHostedForm(t *testing.T) {
	t.Parallel()
	ce := setupConnect(t, time.Hour)
	for _, c := range []struct {
		integration string
		fields      []string
	}{
		{"billing", []string{"token"}},
		{"stripe", []string{"username", "password"}},
		{"datadog", []string{"api_key", "app_key"}},
	} {
		_, u := ce.session(t, ce.adminKey, map[string]any{"integration": c.integration, "credential": "f-" + c.integration, "redirect_uri": ce.app.url + "/done"})
		status, _, body := step(t, followNone(), u)
		require.Equal(t, http.StatusOK, status)
		for _, f := range c.fields {
			require.Regexp(t, `<label for="field-`+f+`">`, body)
			require.Regexp(t, `<input id="field-`+f+`" name="`+f+`"`, body)
		}
		require.Equal(t, len(c.fields), strings.Count(body, "<input"))
		require.NotRegexp(t, externalAsset, body)
		require.NotContains(t, body, "<script")
		require.NotContains(t, body, "style")
	}

	_, u := ce.session(t, ce.adminKey, map[string]any{"integration": "stripe", "credential": "cust-7",
		"redirect_uri": ce.app.url + "/done", "webhook": map[string]any{"url": ce.hooks.url}})
	res, err := followNone().Get(u)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, "default-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self' "+ce.app.url, res.Header.Get("Content-Security-Policy"))
	require.Equal(t, "no-referrer", res.Header.Get("Referrer-Policy"))
	require.Equal(t, "no-store", res.Header.Get("Cache-Control"))

	// A missing required field: the form again, without the values sent.
	res, err = followNone().PostForm(u, url.Values{"password": {"pw-never-echoed-1"}})
	require.NoError(t, err)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, http.StatusBadRequest, res.StatusCode)
	require.Contains(t, string(b), "Username is required.")
	require.NotContains(t, string(b), "pw-never-echoed-1")

	// Too long a value: the form again.
	res, err = followNone().PostForm(u, url.Values{"username": {"u"}, "password": {strings.Repeat("p", auth.MaxFieldValueBytes+1)}})
	require.NoError(t, err)
	b, _ = io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, http.StatusBadRequest, res.StatusCode)
	require.Contains(t, string(b), "Password is longer than")
	require.Contains(t, string(b), `action="`+u+`"`)

	// The link still works: the values, one of them looking like a
	// reference to the workers' environment, are stored as literals.
	res, err = followNone().PostForm(u, url.Values{"username": {"env:HOME"}, "password": {"pw-never-echoed-1"}, "other": {"ignored"}})
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusSeeOther, res.StatusCode)
	require.Equal(t, ce.app.url+"/done?credential=cust-7&status=connected", res.Header.Get("Location"))
	cred, err := ce.creds.Get(context.Background(), "acme", "cust-7")
	require.NoError(t, err)
	require.Equal(t, []string{"password", "username"}, cred.FieldNames())
	require.Equal(t, auth.ConnectForm, cred.Connected.Method)
	sec, err := cred.Resolve(ce.ring, nil)
	require.NoError(t, err)
	require.Equal(t, "env:HOME", sec["username"])
	require.Equal(t, "pw-never-echoed-1", sec["password"])

	typ, ev := ce.hooks.next(t, ce.secret)
	require.Equal(t, producer.EventCredentialConnected, typ)
	require.Equal(t, "cust-7", ev.Credential)

	// Used up.
	res, err = followNone().PostForm(u, url.Values{"username": {"u2"}})
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusNotFound, res.StatusCode)
	require.NotContains(t, ce.logs.String(), "pw-never-echoed-1")
}

// The README's connect section, run as written: its session call answers
// what it shows; the browser's transcript is what callq answers, step by
// step (the page, its post's redirect to the provider with the parameters
// shown, the callback's redirect to the app); and the credential's GET
// then answers what it shows.
func TestReadmeConnectExamples(t *testing.T) {
	t.Parallel()
	needCommands(t, "curl")
	p := oauthtest.Start(t, time.Hour)
	catalog := strings.Replace(connectCatalog(p), "client_id: "+oauthtest.ClientID, "client_id: callq", 1)
	e := setup(t, withCatalog(catalog), withPublicURL(), withWebhooks(), withHandler(func(c *producer.HandlerConfig) {
		c.ConnectAllowedOrigins = []string{"https://app.example"}
	}))
	p.RegisterClient(t, "callq", e.url)
	run := func(script string) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
		cmd.Env = append(os.Environ(), "CALLQ_URL="+e.url, "ADMIN_KEY="+e.adminKey)
		out, err := cmd.Output()
		require.NoError(t, err)
		return out
	}
	// shown is the JSON a block shows as its answer, in "# " lines.
	shown := func(script string) any {
		t.Helper()
		var b strings.Builder
		for line := range strings.Lines(script) {
			if answer, ok := strings.CutPrefix(line, "#"); ok {
				b.WriteString(answer)
			}
		}
		var v any
		require.NoError(t, json.Unmarshal([]byte(b.String()), &v), "the README's answer: %s", b.String())
		return v
	}

	script := readmeScript(t, "connect-api")
	out := run(script)
	var ans map[string]any
	require.NoError(t, json.Unmarshal(out, &ans), "%s", out)
	want := shown(script).(map[string]any)
	require.Len(t, ans, len(want))
	for k := range want {
		require.Contains(t, ans, k)
	}
	require.True(t, strings.HasPrefix(ans["session"].(string), "cs_"))
	link := ans["url"].(string)

	transcript := readmeScript(t, "connect-browser")
	browser := followNone()
	require.Contains(t, transcript, "GET  https://callq.example/connect/<token>\n200  ")
	status, _, page := step(t, browser, link)
	require.Equal(t, http.StatusOK, status, page)
	require.Contains(t, page, `<form method="post" action="`+link+`">`)

	_, rest, ok := strings.Cut(transcript, "POST https://callq.example/connect/<token>\n303  Location: ")
	require.True(t, ok, "the transcript's POST and its 303")
	res, err := browser.PostForm(link, nil)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusSeeOther, res.StatusCode)
	got, err := url.Parse(res.Header.Get("Location"))
	require.NoError(t, err)
	shownURL, _, _ := strings.Cut(rest, "\n     ...")
	su, err := url.Parse(strings.Join(strings.Fields(shownURL), ""))
	require.NoError(t, err)
	require.Equal(t, su.Scheme+"://"+su.Host+su.Path, "https://crm.example/oauth/authorize")
	for k := range got.Query() {
		require.Contains(t, su.Query(), k)
	}
	for k, v := range su.Query() {
		require.Contains(t, got.Query(), k)
		if !strings.HasPrefix(v[0], "<") && k != "redirect_uri" {
			require.Equal(t, v, got.Query()[k], k)
		}
	}
	require.Equal(t, e.url+"/connect/callback", got.Query().Get("redirect_uri"))

	status, back, body := step(t, browser, got.String())
	require.Equal(t, http.StatusFound, status, body)
	status, final, body := step(t, browser, back)
	require.Equal(t, http.StatusFound, status, body)
	require.True(t, strings.HasSuffix(transcript, "\n302  Location: "+final), "the transcript ends at %s", final)

	script = readmeScript(t, "connect-credential")
	var view any
	out = run(script)
	require.NoError(t, json.Unmarshal(out, &view), "%s", out)
	requireSameShape(t, "", shown(script), view)
}

// A link preview (a chat's unfurler, a mail scanner) or a link checker
// that fetches the link before the end user uses nothing up: GET and HEAD
// answer a page whose button posts to the link; only that post starts the
// dance. The page reflects nothing of the request and loads nothing.
func TestConnectLinkPreviewsUseNothingUp(t *testing.T) {
	t.Parallel()
	ce := setupConnect(t, time.Hour)
	_, u := ce.session(t, ce.adminKey, map[string]any{"integration": "crm", "credential": "cust-42", "redirect_uri": ce.app.url + "/done"})
	for _, agent := range []string{"Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "SkypeUriPreview Preview/0.5", "Mozilla/5.0 (scanner)"} {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			r, err := http.NewRequest(method, u, nil)
			require.NoError(t, err)
			r.Header.Set("User-Agent", agent)
			res, err := followNone().Do(r)
			require.NoError(t, err)
			res.Body.Close()
			require.Equal(t, http.StatusOK, res.StatusCode, "%s %s", method, agent)
			require.Empty(t, res.Header.Get("Location"))
			require.Empty(t, res.Cookies(), "a preview starts nothing")
		}
	}
	// A preview that follows redirects, as some do, and one with a hostile
	// query: the same page, nothing of the query in it.
	hostile := `"><script>alert(1)</script>`
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	res, err := (&http.Client{Jar: jar, Timeout: 15 * time.Second}).Get(u + "?q=" + url.QueryEscape(hostile))
	require.NoError(t, err)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	page := string(b)
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Equal(t, u, res.Request.URL.String()[:len(u)], "no redirect")
	require.NotContains(t, page, "<script")
	require.NotContains(t, page, "alert(")
	require.NotRegexp(t, externalAsset, page)
	require.NotContains(t, page, "style")
	require.Contains(t, page, `<form method="post" action="`+u+`">`)
	require.Contains(t, page, "<button type=\"submit\">Continue to 127.0.0.1</button>")
	require.Equal(t, "default-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self' https: "+ce.p.URL+" "+ce.app.url,
		res.Header.Get("Content-Security-Policy"), "the post's redirects reach the provider (and its own hosts), then the app")
	require.Equal(t, "no-store", res.Header.Get("Cache-Control"))
	require.Equal(t, "no-referrer", res.Header.Get("Referrer-Policy"))
	require.Equal(t, "nosniff", res.Header.Get("X-Content-Type-Options"))
	require.Equal(t, 0, ce.p.Authorizations())

	// The end user, after all of them: the dance works, once.
	browser := followNone()
	back, _ := ce.toCallback(t, browser, u)
	status, loc, _ := step(t, browser, back)
	require.Equal(t, http.StatusFound, status)
	require.Equal(t, ce.app.url+"/done?credential=cust-42&status=connected", loc)
	status, _, body := step(t, followNone(), u)
	require.Equal(t, http.StatusNotFound, status)
	require.Contains(t, body, "already been used")
	res, err = followNone().PostForm(u, nil)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusNotFound, res.StatusCode)
}

// A HEAD of the callback (a link checker, a prefetch) does not use the
// state up; methods but GET and HEAD are refused (405, Allow: GET) and use
// nothing up either.
func TestConnectCallbackHeadUsesNothingUp(t *testing.T) {
	t.Parallel()
	ce := setupConnect(t, time.Hour)
	_, u := ce.session(t, ce.adminKey, map[string]any{"integration": "crm", "credential": "cust-42", "redirect_uri": ce.app.url + "/done"})
	browser := followNone()
	back, _ := ce.toCallback(t, browser, u)
	for range 2 {
		res, err := browser.Head(back)
		require.NoError(t, err)
		res.Body.Close()
		require.Equal(t, http.StatusOK, res.StatusCode)
		require.Empty(t, res.Header.Get("Location"))
		require.Equal(t, "no-store", res.Header.Get("Cache-Control"))
	}
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodOptions} {
		r, err := http.NewRequest(method, back, nil)
		require.NoError(t, err)
		res, err := browser.Do(r)
		require.NoError(t, err)
		res.Body.Close()
		require.Equal(t, http.StatusMethodNotAllowed, res.StatusCode, method)
		require.Equal(t, "GET", res.Header.Get("Allow"), method)
	}
	require.Equal(t, int32(0), ce.p.Codes.Load())
	status, loc, _ := step(t, browser, back)
	require.Equal(t, http.StatusFound, status)
	require.Equal(t, ce.app.url+"/done?credential=cust-42&status=connected", loc)
	require.Equal(t, int32(1), ce.p.Codes.Load())
}

// The authorization in flight is sealed in Redis: a dump taken between the
// redirect to the provider and the callback holds no PKCE verifier, in any
// encoding of it, nor the browser's cookie.
func TestConnectStateSealedAtRest(t *testing.T) {
	t.Parallel()
	ce := setupConnect(t, time.Hour)
	_, u := ce.session(t, ce.adminKey, map[string]any{"integration": "crm", "credential": "cust-42",
		"redirect_uri": ce.app.url + "/done", "webhook": map[string]any{"url": ce.hooks.url + "?k=hook-s3cret-77"}})
	browser := followNone()
	back, _ := ce.toCallback(t, browser, u)
	keys, err := ce.rdb.Keys(context.Background(), "callq:connect:state:*").Result()
	require.NoError(t, err)
	require.Len(t, keys, 1, "the state is in Redis until the callback")
	stored := redisText(t, ce.rdb)

	status, loc, _ := step(t, browser, back)
	require.Equal(t, http.StatusFound, status)
	require.Equal(t, ce.app.url+"/done?credential=cust-42&status=connected", loc)
	verifiers := ce.p.Verifiers()
	require.Len(t, verifiers, 1)
	v := verifiers[0]
	require.Len(t, v, 43, "the verifier the token endpoint was sent")
	raw, err := base64.RawURLEncoding.DecodeString(v)
	require.NoError(t, err)
	forms := []string{v, base64.StdEncoding.EncodeToString([]byte(v)), base64.RawStdEncoding.EncodeToString([]byte(v)),
		base64.URLEncoding.EncodeToString([]byte(v)), hex.EncodeToString([]byte(v)), hex.EncodeToString(raw),
		base64.StdEncoding.EncodeToString(raw)}
	for _, c := range browser.Jar.Cookies(mustParse(t, ce.url+"/connect/callback")) {
		forms = append(forms, c.Value)
	}
	for i, f := range forms {
		require.NotContains(t, stored, f, "form %d of the verifier", i)
		require.NotContains(t, strings.ToLower(stored), strings.ToLower(f), "form %d of the verifier", i)
	}
	require.NotContains(t, stored, "hook-s3cret-77", "the session within the state is sealed too")
	require.NotContains(t, stored, `"verifier"`)
}

// A provider that sends no refresh token: the token is stored, and the
// credential, its GET, the webhook and the log say it cannot be refreshed
// and, when the provider said, when it expires. Without an expiry (a
// token that does not expire) there is no expires_at.
func TestConnectWithoutRefreshToken(t *testing.T) {
	t.Parallel()
	ce := setupConnect(t, time.Hour)
	ce.p.NoRefreshToken.Store(true)
	_, u := ce.session(t, ce.adminKey, map[string]any{"integration": "crm", "credential": "dies",
		"redirect_uri": ce.app.url + "/done", "webhook": map[string]any{"url": ce.hooks.url}})
	ce.open(t, ce.browser, u).Body.Close()
	require.Equal(t, "connected", ce.app.lastHit(t).Get("status"))

	cred, err := ce.creds.Get(context.Background(), "acme", "dies")
	require.NoError(t, err)
	require.Equal(t, []string{"access_token", "expiry"}, cred.FieldNames())
	require.Equal(t, new(false), cred.Connected.Refreshable)
	require.NotNil(t, cred.Connected.ExpiresAt)
	require.WithinDuration(t, time.Now().Add(time.Hour), *cred.Connected.ExpiresAt, time.Minute)

	r := ce.do(t, req{Method: http.MethodGet, Path: "/v1/credentials/dies", Key: ce.adminKey})
	require.Equal(t, http.StatusOK, r.Status)
	connected, _ := r.JSON(t)["connected"].(map[string]any)
	require.Equal(t, false, connected["refreshable"])
	require.Equal(t, cred.Connected.ExpiresAt.Format(time.RFC3339), connected["expires_at"])

	typ, ev := ce.hooks.next(t, ce.secret)
	require.Equal(t, producer.EventCredentialConnected, typ)
	require.Equal(t, new(false), ev.Refreshable)
	require.NotNil(t, ev.ExpiresAt)
	require.True(t, ev.ExpiresAt.Equal(*cred.Connected.ExpiresAt))
	require.Regexp(t, `"level":"warn",("component":"api",)?"refreshable":false,"expires_at":"[^"]+","tenant":"acme","integration":"crm","credential":"dies"`, ce.logs.String())

	// No expiry either: not refreshable, and nothing to expire.
	ce.p.NoExpiry.Store(true)
	_, u = ce.session(t, ce.adminKey, map[string]any{"integration": "crm", "credential": "lives", "redirect_uri": ce.app.url + "/done"})
	ce.open(t, ce.browser, u).Body.Close()
	require.Equal(t, "connected", ce.app.lastHit(t).Get("status"))
	cred, err = ce.creds.Get(context.Background(), "acme", "lives")
	require.NoError(t, err)
	require.Equal(t, []string{"access_token"}, cred.FieldNames())
	require.Equal(t, new(false), cred.Connected.Refreshable)
	require.Nil(t, cred.Connected.ExpiresAt)
	r = ce.do(t, req{Method: http.MethodGet, Path: "/v1/credentials/lives", Key: ce.adminKey})
	connected, _ = r.JSON(t)["connected"].(map[string]any)
	require.Equal(t, false, connected["refreshable"])
	require.NotContains(t, connected, "expires_at")
}
