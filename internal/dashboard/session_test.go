package dashboard_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/dashboard"
)

func TestNewValidates(t *testing.T) {
	t.Parallel()
	_, err := dashboard.New(nil)
	require.EqualError(t, err, "dashboard: Config.Producer is required")
	e := setup(t)
	cfg := dashboard.Config{Producer: e.prod, Keys: e.keys, Credentials: e.creds, Redis: e.rdb}
	_, err = dashboard.New(&cfg)
	require.EqualError(t, err, "dashboard: Config.Catalog is required")
}

func TestSignIn(t *testing.T) {
	t.Parallel()
	e := setup(t)

	t.Run("GoodKey", func(t *testing.T) {
		b := e.browser(t)
		p := b.get("/ui/")
		require.Equal(t, http.StatusSeeOther, p.Status)
		require.Equal(t, "/ui/login", p.Header.Get("Location"))
		p = b.get("/ui/calls")
		require.Equal(t, http.StatusSeeOther, p.Status, "a page without a session sends the browser to sign in")
		require.Equal(t, "/ui/login", p.Header.Get("Location"))

		form := b.get("/ui/login")
		require.Equal(t, "Sign in", form.h1())
		labels := form.elements("label")
		require.Len(t, labels, 1)
		require.Equal(t, "API key", text(labels[0]))
		key := form.elements("input")[1]
		for name, want := range map[string]string{"id": "key", "name": "key", "type": "password"} {
			v, _ := attr(key, name)
			require.Equal(t, want, v, name)
		}
		require.True(t, form.hasButton("Sign in"))

		b.signIn(e.acmeAdmin)
		require.NotEmpty(t, b.cookie("callq_session"))
		require.Empty(t, b.cookie("callq_login_csrf"), "the sign-in token is spent")
		p = b.get("/ui/")
		require.Equal(t, "/ui/calls", p.Header.Get("Location"))
		p = b.get("/ui/calls")
		require.Equal(t, http.StatusOK, p.Status)
		require.Equal(t, "Calls", p.h1())
		nav := p.elements("nav")
		require.Len(t, nav, 1)
		navText := text(nav[0])
		for _, want := range []string{"Calls", "Failed", "Overview", "Integrations", "Credentials", "acme", "Sign out"} {
			require.Contains(t, navText, want)
		}
		require.NotContains(t, p.Body, e.acmeAdmin, "the key is not in the page")

		// Redis holds the session under its token's hash, not the key.
		sessions := e.sessions(t)
		require.NotEmpty(t, sessions)
		for _, k := range sessions {
			v, err := e.rdb.Get(t.Context(), k).Result()
			require.NoError(t, err)
			require.NotContains(t, v, e.acmeAdmin)
			require.NotContains(t, v, b.cookie("callq_session"))
			require.NotContains(t, k, b.cookie("callq_session"))
		}
	})

	t.Run("BadKey", func(t *testing.T) {
		b := e.browser(t)
		before := len(e.sessions(t))
		for _, key := range []string{"cq_not-a-key", "", strings.Repeat("x", 5000)} {
			p := b.tryKey(key)
			require.Equal(t, http.StatusUnauthorized, p.Status)
			require.Equal(t, "That API key is not valid.", p.alert())
			require.True(t, p.hasButton("Sign in"), "the form again")
			require.Empty(t, p.Header.Values("Set-Cookie"), "no session cookie; the sign-in token is kept")
		}
		require.Empty(t, b.cookie("callq_session"))
		require.Len(t, e.sessions(t), before, "no session made")
		require.Equal(t, http.StatusSeeOther, b.get("/ui/calls").Status)
	})

	t.Run("LoginCSRF", func(t *testing.T) {
		b := e.browser(t)
		before := len(e.sessions(t))
		// No sign-in token: a form posted from elsewhere.
		p := b.post("/ui/login", url.Values{"key": {e.acmeAdmin}})
		require.Equal(t, http.StatusForbidden, p.Status)
		require.Empty(t, b.cookie("callq_session"))
		// A token that is not the cookie's.
		form := b.get("/ui/login")
		p = b.post("/ui/login", url.Values{"key": {e.acmeAdmin}, "csrf": {form.input("csrf") + "x"}})
		require.Equal(t, http.StatusForbidden, p.Status)
		require.Empty(t, b.cookie("callq_session"))
		require.Len(t, e.sessions(t), before)
		// The form it answers with works.
		p = b.post("/ui/login", url.Values{"key": {e.acmeAdmin}, "csrf": {p.input("csrf")}})
		require.Equal(t, http.StatusSeeOther, p.Status)
	})
}

func TestSessionCookie(t *testing.T) {
	t.Parallel()
	check := func(t *testing.T, e *env, secure bool) {
		b := e.browser(t)
		form := b.get("/ui/login")
		var loginCookie *http.Cookie
		for _, c := range (&http.Response{Header: form.Header}).Cookies() {
			if c.Name == "callq_login_csrf" {
				loginCookie = c
			}
		}
		require.NotNil(t, loginCookie)
		p := b.post("/ui/login", url.Values{"csrf": {form.input("csrf")}, "key": {e.acmeProducer}})
		require.Equal(t, http.StatusSeeOther, p.Status)
		var session *http.Cookie
		for _, c := range (&http.Response{Header: p.Header}).Cookies() {
			if c.Name == "callq_session" {
				session = c
			}
		}
		require.NotNil(t, session)
		for _, c := range []*http.Cookie{session, loginCookie} {
			require.True(t, c.HttpOnly, c.Name)
			require.Equal(t, http.SameSiteStrictMode, c.SameSite, c.Name)
			require.Equal(t, "/ui/", c.Path, c.Name)
			require.Equal(t, secure, c.Secure, c.Name)
		}
		require.Len(t, session.Value, 43, "32 random bytes, base64url")
		require.Zero(t, session.MaxAge, "a browser-session cookie; Redis ends the session")
		require.Equal(t, http.StatusOK, b.get("/ui/calls").Status)
	}
	t.Run("HTTP", func(t *testing.T) {
		t.Parallel()
		check(t, setup(t), false)
	})
	t.Run("TLS", func(t *testing.T) {
		t.Parallel()
		check(t, setup(t, withTLS()), true)
	})
}

// A session ends after SessionIdle without a request: Redis expires it.
func TestSessionIdleExpiry(t *testing.T) {
	t.Parallel()
	const idle = 250 * time.Millisecond
	e := setup(t, withIdle(idle))
	b := e.browser(t)
	b.signIn(e.acmeProducer)
	sessions := e.sessions(t)
	require.Len(t, sessions, 1)
	key := sessions[0]
	ctx := t.Context()
	ttl, err := e.rdb.PTTL(ctx, key).Result()
	require.NoError(t, err)
	require.Greater(t, ttl, time.Duration(0))
	require.LessOrEqual(t, ttl, idle)

	// A page renews the expiry; the rows' refresh does not.
	require.NoError(t, e.rdb.PExpire(ctx, key, time.Hour).Err())
	require.Equal(t, http.StatusOK, b.get("/ui/calls?fragment=rows").Status)
	ttl, err = e.rdb.PTTL(ctx, key).Result()
	require.NoError(t, err)
	require.Greater(t, ttl, idle, "the refresh renewed the session")
	require.Equal(t, http.StatusOK, b.get("/ui/overview").Status)
	ttl, err = e.rdb.PTTL(ctx, key).Result()
	require.NoError(t, err)
	require.LessOrEqual(t, ttl, idle, "a page did not renew the session")

	require.Eventually(t, func() bool {
		n, err := e.rdb.Exists(ctx, key).Result()
		return err == nil && n == 0
	}, 10*time.Second, 20*time.Millisecond, "the idle session never expired")
	p := b.get("/ui/calls")
	require.Equal(t, http.StatusSeeOther, p.Status)
	require.Equal(t, "/ui/login", p.Header.Get("Location"))
	require.Empty(t, b.cookie("callq_session"), "the dead cookie is cleared")
	p = b.get("/ui/calls?fragment=rows")
	require.Equal(t, http.StatusUnauthorized, p.Status, "the refresh is told, not redirected")
}

func TestSignOut(t *testing.T) {
	t.Parallel()
	e := setup(t)
	b := e.browser(t)
	b.signIn(e.acmeAdmin)
	token := b.cookie("callq_session")
	require.NotEmpty(t, token)
	p := b.get("/ui/calls")
	action, form := p.form("Sign out")
	require.Equal(t, "/ui/logout", action)

	// Without the CSRF token, nothing happens.
	require.Equal(t, http.StatusForbidden, b.post(action, url.Values{}).Status)
	require.Equal(t, http.StatusOK, b.get("/ui/calls").Status, "still signed in")

	p = b.post(action, form)
	require.Equal(t, http.StatusSeeOther, p.Status)
	require.Equal(t, "/ui/login", p.Header.Get("Location"))
	require.Empty(t, e.sessions(t))
	require.Empty(t, b.cookie("callq_session"))

	// The old cookie, replayed, opens nothing.
	old := e.browser(t)
	u, _ := url.Parse(e.url + "/ui/")
	old.jar.SetCookies(u, []*http.Cookie{{Name: "callq_session", Value: token, Path: "/ui/"}})
	p = old.get("/ui/calls")
	require.Equal(t, http.StatusSeeOther, p.Status)
	require.Equal(t, "/ui/login", p.Header.Get("Location"))
}

// Revoking an API key ends its sessions at their next request.
func TestRevokedKeyEndsSession(t *testing.T) {
	t.Parallel()
	e := setup(t)
	b := e.browser(t)
	b.signIn(e.acmeProducer)
	other := e.browser(t)
	other.signIn(e.acmeAdmin)
	require.Equal(t, http.StatusOK, b.get("/ui/calls").Status)
	csrf := b.csrf()
	require.NoError(t, e.keys.Revoke(t.Context(), e.acmeProducerID))

	p := b.get("/ui/calls")
	require.Equal(t, http.StatusSeeOther, p.Status)
	require.Equal(t, "/ui/login", p.Header.Get("Location"))
	p = b.post("/ui/logout", url.Values{"csrf": {csrf}})
	require.Equal(t, http.StatusUnauthorized, p.Status)
	require.Len(t, e.sessions(t), 1, "the revoked key's session is deleted; the other key's stays")
	require.Equal(t, http.StatusOK, other.get("/ui/calls").Status)
	require.Equal(t, http.StatusUnauthorized, b.tryKey(e.acmeProducer).Status, "nor can it sign in again")
}
