package auth

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/redistest"
)

const (
	oauthTenant       = "acme"
	oauthIntegration  = "crm"
	oauthRef          = "crm-main"
	oauthClientID     = "callq-client"
	oauthClientSecret = "cs-7f3a9c1e5b2d-very-secret"
)

// parallelOAuth marks t parallel unless the suite shares one external Redis
// (CALLQ_TEST_REDIS_URL), which each redistest.Start flushes.
func parallelOAuth(t *testing.T) {
	if os.Getenv(redistest.EnvURL) == "" {
		t.Parallel()
	}
}

// tokenServer is an OAuth2 token endpoint with rotating refresh tokens: each
// refresh invalidates the refresh token it used and issues a new one, and a
// refresh token used twice is answered 400 invalid_grant. It also serves
// /resource, which answers 401 to an access token it does not know.
type tokenServer struct {
	srv          *httptest.Server
	clientSecret string
	delay        atomic.Int64 // nanoseconds each token request takes
	expiresIn    atomic.Int64 // seconds, for refreshed tokens
	ccExpiresIn  atomic.Int64 // seconds, for client_credentials tokens
	gate         atomic.Pointer[tokenGate]

	mu       sync.Mutex
	seq      int
	refresh  string          // the one valid refresh token
	access   map[string]bool // valid access tokens
	styles   []string        // "header" or "params", per token request
	scopes   []string        // scope of each client_credentials request
	failWith int             // if set, every token request answers this status

	requests      atomic.Int64 // token requests
	invalidGrants atomic.Int64 // refresh requests answered invalid_grant
}

func newTokenServer(t *testing.T) *tokenServer {
	t.Helper()
	ts := &tokenServer{clientSecret: oauthClientSecret, access: make(map[string]bool)}
	ts.expiresIn.Store(3600)
	ts.ccExpiresIn.Store(3600)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", ts.token)
	mux.HandleFunc("GET /resource", ts.resource)
	ts.srv = httptest.NewServer(mux)
	t.Cleanup(ts.srv.Close)
	return ts
}

func (ts *tokenServer) url() string { return ts.srv.URL + "/token" }

// tokenGate holds token requests: each one sends a channel on arrived and is
// answered when that channel is closed, so a test decides when; once open
// is closed, requests pass.
type tokenGate struct {
	arrived chan chan struct{}
	open    chan struct{}
}

// newTokenGate holds ts's token requests until the test ends or calls the
// function it returns.
func newTokenGate(t *testing.T, ts *tokenServer) (*tokenGate, func()) {
	g := &tokenGate{arrived: make(chan chan struct{}), open: make(chan struct{})}
	ts.gate.Store(g)
	open := sync.OnceFunc(func() { close(g.open) })
	t.Cleanup(open)
	return g, open
}

func newTestToken(kind string, seq int) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%d-%s", kind, seq, hex.EncodeToString(b))
}

// issue makes a valid access and refresh token pair, as an authorization
// code exchange would have.
func (ts *tokenServer) issue() (access, refresh string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.seq++
	access, refresh = newTestToken("at", ts.seq), newTestToken("rt", ts.seq)
	ts.access[access] = true
	ts.refresh = refresh
	return access, refresh
}

// revoke invalidates an access token, as a provider does on logout or
// password change.
func (ts *tokenServer) revoke(access string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	delete(ts.access, access)
}

// revokeRefresh invalidates the current refresh token.
func (ts *tokenServer) revokeRefresh() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.refresh = "rt-none"
}

func (ts *tokenServer) currentRefresh() string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.refresh
}

func (ts *tokenServer) lastStyle() string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.styles[len(ts.styles)-1]
}

func writeTokenJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (ts *tokenServer) token(w http.ResponseWriter, r *http.Request) {
	ts.requests.Add(1)
	time.Sleep(time.Duration(ts.delay.Load()))
	if g := ts.gate.Load(); g != nil {
		release := make(chan struct{})
		select {
		case g.arrived <- release:
			select {
			case <-release:
			case <-g.open:
			}
		case <-g.open:
		}
	}
	if err := r.ParseForm(); err != nil {
		writeTokenJSON(w, 400, map[string]string{"error": "invalid_request"})
		return
	}
	style, id, secret := "params", r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		style = "header"
		id, _ = url.QueryUnescape(u)
		secret, _ = url.QueryUnescape(p)
	}

	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.styles = append(ts.styles, style)
	if ts.failWith != 0 {
		writeTokenJSON(w, ts.failWith, map[string]string{"error": "temporarily_unavailable"})
		return
	}
	if id != oauthClientID || secret != ts.clientSecret {
		// Echo what was sent, as careless providers do: callq must redact it.
		writeTokenJSON(w, 401, map[string]string{"error": "invalid_client", "error_description": "bad client secret " + secret})
		return
	}
	ts.seq++
	switch r.PostForm.Get("grant_type") {
	case "refresh_token":
		rt := r.PostForm.Get("refresh_token")
		if rt != ts.refresh {
			ts.invalidGrants.Add(1)
			writeTokenJSON(w, 400, map[string]string{"error": "invalid_grant", "error_description": "refresh token " + rt + " is not valid"})
			return
		}
		access := newTestToken("at", ts.seq)
		ts.refresh = newTestToken("rt", ts.seq) // rotation: the old one is dead
		ts.access[access] = true
		writeTokenJSON(w, 200, map[string]any{"access_token": access, "token_type": "Bearer",
			"refresh_token": ts.refresh, "expires_in": ts.expiresIn.Load()})
	case "client_credentials":
		access := newTestToken("cc", ts.seq)
		ts.access[access] = true
		ts.scopes = append(ts.scopes, r.PostForm.Get("scope"))
		writeTokenJSON(w, 200, map[string]any{"access_token": access, "token_type": "Bearer", "expires_in": ts.ccExpiresIn.Load()})
	default:
		writeTokenJSON(w, 400, map[string]string{"error": "unsupported_grant_type"})
	}
}

func (ts *tokenServer) resource(w http.ResponseWriter, r *http.Request) {
	ts.mu.Lock()
	ok := ts.access[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
	ts.mu.Unlock()
	if !ok {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// callResource calls /resource the way a worker calls an upstream.
func (ts *tokenServer) callResource(t *testing.T, spec *Spec, secrets Secrets) int {
	req, err := http.NewRequest(http.MethodGet, ts.srv.URL+"/resource", nil)
	if err != nil {
		t.Error(err)
		return 0
	}
	if err := spec.Apply(req, secrets); err != nil {
		t.Error(err)
		return 0
	}
	resp, err := ts.srv.Client().Do(req)
	if err != nil {
		t.Error(err)
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// oauthWorker is one callq worker process: its own Redis client, Store and OAuth.
type oauthWorker struct {
	rdb   *redis.Client
	store *Store
	oauth *OAuth
}

type oauthEnv struct {
	ts      *tokenServer
	redis   *redistest.Server
	keyring *Keyring
	workers [2]*oauthWorker
	spec    *Spec
}

func newOAuthEnv(t *testing.T, configure func(*OAuthConfig)) *oauthEnv {
	t.Helper()
	e := &oauthEnv{ts: newTokenServer(t), redis: redistest.Start(t), keyring: testKeyring(t, "k1")}
	e.spec = &Spec{Type: TypeOAuth2, TokenURL: e.ts.url(), ClientID: oauthClientID, ClientSecret: oauthClientSecret}
	for i := range e.workers {
		rdb := e.redis.Client(t)
		store, err := NewStore(rdb, &StoreConfig{Keyring: e.keyring})
		require.NoError(t, err)
		cfg := &OAuthConfig{Store: store, Keyring: e.keyring}
		if configure != nil {
			configure(cfg)
		}
		o, err := NewOAuth(rdb, cfg)
		require.NoError(t, err)
		// A shared failure is remembered seconds: an hour here, so that no
		// test's "the fleet sees it" window can close under load.
		o.refusalMemory, o.failureMemory = time.Hour, time.Hour
		e.workers[i] = &oauthWorker{rdb: rdb, store: store, oauth: o}
	}
	return e
}

// putCredential stores a credential holding tokens the server issued,
// expiring at expiry.
func (e *oauthEnv) putCredential(t *testing.T, expiry time.Time) (access, refresh string) {
	t.Helper()
	access, refresh = e.ts.issue()
	_, err := e.workers[0].store.Put(t.Context(), oauthTenant, oauthRef, oauthIntegration, map[string]string{
		FieldAccessToken: access, FieldRefreshToken: refresh, FieldExpiry: expiry.UTC().Format(time.RFC3339),
	})
	require.NoError(t, err)
	return access, refresh
}

func (e *oauthEnv) credential(t *testing.T) *Credential {
	t.Helper()
	cred, err := e.workers[0].store.Get(t.Context(), oauthTenant, oauthRef)
	require.NoError(t, err)
	return cred
}

// expire marks the stored access token expired, keeping the refresh token.
func (e *oauthEnv) expire(t *testing.T) {
	t.Helper()
	_, err := e.workers[0].store.UpdateFields(t.Context(), oauthTenant, oauthRef, map[string]string{
		FieldExpiry: time.Now().Add(-time.Minute).UTC().Format(time.RFC3339),
	})
	require.NoError(t, err)
}

// dump returns every key and string value in Redis, for asserting that no
// secret is stored in clear.
func (e *oauthEnv) dump(t *testing.T) string {
	t.Helper()
	ctx := t.Context()
	rdb := e.workers[0].rdb
	keys, err := rdb.Keys(ctx, "*").Result()
	require.NoError(t, err)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + "\n")
		switch typ := rdb.Type(ctx, k).Val(); typ {
		case "string":
			b.WriteString(rdb.Get(ctx, k).Val())
		case "set":
			b.WriteString(strings.Join(rdb.SMembers(ctx, k).Val(), "\n"))
		default:
			t.Fatalf("key %q has type %q", k, typ)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func TestOAuthRefreshesExpiredToken(t *testing.T) {
	parallelOAuth(t)
	e := newOAuthEnv(t, nil)
	ctx := t.Context()
	oldAccess, oldRefresh := e.putCredential(t, time.Now().Add(-time.Minute))
	o := e.workers[0].oauth

	secrets, err := o.Token(ctx, oauthTenant, oauthIntegration, e.spec, e.credential(t))
	require.NoError(t, err)
	require.EqualValues(t, 1, e.ts.requests.Load())
	newAccess, newRefresh := secrets[FieldAccessToken], secrets[FieldRefreshToken]
	require.NotEqual(t, oldAccess, newAccess)
	require.NotEqual(t, oldRefresh, newRefresh)
	require.Equal(t, e.ts.currentRefresh(), newRefresh, "the rotated refresh token")
	require.Equal(t, oauthClientSecret, secrets[FieldClientSecret])
	require.NotContains(t, secrets, FieldExpiry)
	require.Equal(t, "header", e.ts.lastStyle(), "auto tries header auth first")

	// Stored at once, sealed: the new access and the rotated refresh token.
	cred := e.credential(t)
	stored, err := cred.Resolve(e.keyring, nil)
	require.NoError(t, err)
	require.Equal(t, newAccess, stored[FieldAccessToken])
	require.Equal(t, newRefresh, stored[FieldRefreshToken])
	expiry, err := time.Parse(time.RFC3339, stored[FieldExpiry])
	require.NoError(t, err)
	require.WithinDuration(t, time.Now().Add(time.Hour), expiry, 5*time.Second)
	for _, name := range []string{FieldAccessToken, FieldRefreshToken, FieldExpiry} {
		require.Equal(t, KindLiteral, cred.Fields[name].Kind, name)
	}
	dump := e.dump(t)
	for _, secret := range []string{newAccess, newRefresh, oldAccess, oldRefresh, oauthClientSecret} {
		require.NotContains(t, dump, secret)
	}

	// The token is fresh now: no request, from either worker.
	for _, w := range e.workers {
		again, err := w.oauth.Token(ctx, oauthTenant, oauthIntegration, e.spec, e.credential(t))
		require.NoError(t, err)
		require.Equal(t, newAccess, again[FieldAccessToken])
	}
	require.EqualValues(t, 1, e.ts.requests.Load())
	require.Equal(t, http.StatusOK, e.ts.callResource(t, e.spec, secrets))

	// The redactor of the call covers the client secret and both tokens.
	r := NewSecretsRedactor(e.spec, secrets)
	text := fmt.Sprintf("%s %s %s", oauthClientSecret, newAccess, newRefresh)
	require.Equal(t, "[REDACTED] [REDACTED] [REDACTED]", r.String(text))
}

func TestOAuthFreshTokenMakesNoRequest(t *testing.T) {
	parallelOAuth(t)
	e := newOAuthEnv(t, nil)
	ctx := t.Context()
	o := e.workers[0].oauth

	access, _ := e.putCredential(t, time.Now().Add(time.Hour))
	secrets, err := o.Token(ctx, oauthTenant, oauthIntegration, e.spec, e.credential(t))
	require.NoError(t, err)
	require.Equal(t, access, secrets[FieldAccessToken])
	require.EqualValues(t, 0, e.ts.requests.Load())

	// No expiry at all: used until the upstream answers 401.
	_, err = e.workers[0].store.UpdateFields(ctx, oauthTenant, oauthRef, map[string]string{FieldExpiry: ""})
	require.NoError(t, err)
	secrets, err = o.Token(ctx, oauthTenant, oauthIntegration, e.spec, e.credential(t))
	require.NoError(t, err)
	require.Equal(t, access, secrets[FieldAccessToken])
	require.EqualValues(t, 0, e.ts.requests.Load())

	// Expiring within the margin: refreshed before the call.
	access, _ = e.putCredential(t, time.Now().Add(DefaultExpiryMargin-10*time.Second))
	secrets, err = o.Token(ctx, oauthTenant, oauthIntegration, e.spec, e.credential(t))
	require.NoError(t, err)
	require.NotEqual(t, access, secrets[FieldAccessToken])
	require.EqualValues(t, 1, e.ts.requests.Load())

	// An expiry that is not RFC 3339 is refreshed, and rewritten.
	_, err = e.workers[0].store.UpdateFields(ctx, oauthTenant, oauthRef, map[string]string{FieldExpiry: "tomorrow"})
	require.NoError(t, err)
	_, err = o.Token(ctx, oauthTenant, oauthIntegration, e.spec, e.credential(t))
	require.NoError(t, err)
	require.EqualValues(t, 2, e.ts.requests.Load())
}

// TestOAuthRefreshRace: two workers, each with its own Redis client, make 50
// concurrent calls each on one expired credential, against a slow token
// endpoint that rotates refresh tokens. Exactly one token request must be
// made, and none with a spent refresh token.
func TestOAuthRefreshRace(t *testing.T) {
	parallelOAuth(t)
	e := newOAuthEnv(t, nil)
	e.ts.delay.Store(int64(200 * time.Millisecond))
	e.putCredential(t, time.Now().Add(-time.Minute))

	const perWorker = 50
	for run := 1; run <= 5; run++ {
		if run > 1 {
			e.expire(t)
		}
		before := e.ts.requests.Load()
		start := make(chan struct{})
		var wg sync.WaitGroup
		got := make(chan string, 2*perWorker)
		for _, w := range e.workers {
			for range perWorker {
				wg.Go(func() {
					<-start
					// As the worker does: read the credential, then ask for a token.
					cred, err := w.store.Get(t.Context(), oauthTenant, oauthRef)
					if err != nil {
						t.Error(err)
						return
					}
					secrets, err := w.oauth.Token(t.Context(), oauthTenant, oauthIntegration, e.spec, cred)
					if err != nil {
						t.Error(err)
						return
					}
					got <- secrets[FieldAccessToken]
				})
			}
		}
		began := time.Now()
		close(start)
		wg.Wait()
		close(got)

		requests := e.ts.requests.Load() - before
		t.Logf("run %d: %d token requests for %d concurrent calls on 2 workers, %d invalid_grant, %s",
			run, requests, 2*perWorker, e.ts.invalidGrants.Load(), time.Since(began).Round(time.Millisecond))
		require.EqualValues(t, 1, requests, "run %d", run)
		require.Zero(t, e.ts.invalidGrants.Load(), "run %d", run)
		tokens := map[string]int{}
		for tok := range got {
			tokens[tok]++
		}
		require.Len(t, tokens, 1, "every call got the same new token")
		stored, err := e.credential(t).Resolve(e.keyring, nil)
		require.NoError(t, err)
		require.Equal(t, 2*perWorker, tokens[stored[FieldAccessToken]])
		require.Equal(t, e.ts.currentRefresh(), stored[FieldRefreshToken])
	}
}

// A worker releasing its refresh lock releases only its own: if its lock
// expired while it refreshed and another worker took it, that worker's lock
// stays, or a third worker could refresh beside it.
func TestOAuthUnlockKeepsAnotherWorkersLock(t *testing.T) {
	parallelOAuth(t)
	e := newOAuthEnv(t, nil)
	e.putCredential(t, time.Now().Add(-time.Minute))
	gate, openGate := newTokenGate(t, e.ts)
	ctx := t.Context()
	rdb := e.workers[0].rdb
	lockKey := "callq:{" + oauthTenant + "}:oauthlock:cred:" + oauthRef
	token := func(w *oauthWorker) <-chan error {
		done := make(chan error, 1)
		go func() {
			cred, err := w.store.Get(ctx, oauthTenant, oauthRef)
			if err == nil {
				_, err = w.oauth.Token(ctx, oauthTenant, oauthIntegration, e.spec, cred)
			}
			done <- err
		}()
		return done
	}

	aDone := token(e.workers[0])
	releaseA := <-gate.arrived // A holds the lock; its token request is in flight
	aLock, err := rdb.Get(ctx, lockKey).Result()
	require.NoError(t, err, "A holds the lock")

	// A's lock expires, as it would if A stalled past LockTTL.
	require.NoError(t, rdb.PExpire(ctx, lockKey, time.Millisecond).Err())
	require.Eventually(t, func() bool { return rdb.Exists(ctx, lockKey).Val() == 0 }, 10*time.Second, time.Millisecond)

	bDone := token(e.workers[1])
	releaseB := <-gate.arrived // B took the free lock and asks for a token
	bLock, err := rdb.Get(ctx, lockKey).Result()
	require.NoError(t, err, "B holds the lock")
	require.NotEqual(t, aLock, bLock)

	close(releaseA)
	require.NoError(t, <-aDone)
	held, err := rdb.Get(ctx, lockKey).Result()
	require.NoError(t, err, "A's release deleted the lock B holds")
	require.Equal(t, bLock, held)

	openGate()
	close(releaseB)
	<-bDone // B sent the refresh token A's request rotated: refused, as expected
	require.Zero(t, rdb.Exists(ctx, lockKey).Val(), "B released its own lock")
}

// TestOAuthForceRefreshRace: the provider revokes the access token; 40
// calls across two workers get 401 from the upstream and force a refresh.
// Exactly one token request must be made.
func TestOAuthForceRefreshRace(t *testing.T) {
	parallelOAuth(t)
	e := newOAuthEnv(t, nil)
	e.ts.delay.Store(int64(200 * time.Millisecond))
	access, _ := e.putCredential(t, time.Now().Add(time.Hour))

	for run := 1; run <= 3; run++ {
		e.ts.revoke(access)
		before := e.ts.requests.Load()
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range 40 {
			w := e.workers[i%2]
			wg.Go(func() {
				<-start
				cred, err := w.store.Get(t.Context(), oauthTenant, oauthRef)
				if err != nil {
					t.Error(err)
					return
				}
				secrets, err := w.oauth.Token(t.Context(), oauthTenant, oauthIntegration, e.spec, cred)
				if err != nil {
					t.Error(err)
					return
				}
				status := e.ts.callResource(t, e.spec, secrets)
				if status != http.StatusUnauthorized {
					return // read after the refresh: nothing to do
				}
				secrets, err = w.oauth.ForceRefresh(t.Context(), oauthTenant, oauthIntegration, e.spec, cred, secrets[FieldAccessToken])
				if err != nil {
					t.Error(err)
					return
				}
				if status := e.ts.callResource(t, e.spec, secrets); status != http.StatusOK {
					t.Errorf("after ForceRefresh the upstream answered %d", status)
				}
			})
		}
		close(start)
		wg.Wait()
		requests := e.ts.requests.Load() - before
		t.Logf("ForceRefresh run %d: %d token requests for 40 calls answered 401, %d invalid_grant", run, requests, e.ts.invalidGrants.Load())
		require.EqualValues(t, 1, requests)
		require.Zero(t, e.ts.invalidGrants.Load())

		stored, err := e.credential(t).Resolve(e.keyring, nil)
		require.NoError(t, err)
		require.NotEqual(t, access, stored[FieldAccessToken])
		access = stored[FieldAccessToken]
	}

	// A stale token that is no longer the stored one: the stored one, no
	// request.
	before := e.ts.requests.Load()
	secrets, err := e.workers[1].oauth.ForceRefresh(t.Context(), oauthTenant, oauthIntegration, e.spec, e.credential(t), "at-long-gone")
	require.NoError(t, err)
	require.Equal(t, access, secrets[FieldAccessToken])
	require.Equal(t, before, e.ts.requests.Load())

	_, err = e.workers[1].oauth.ForceRefresh(t.Context(), oauthTenant, oauthIntegration, e.spec, e.credential(t), "")
	require.Error(t, err)
}

func TestOAuthClientCredentials(t *testing.T) {
	parallelOAuth(t)
	// Lifetimes of hours, and expiry forced below: no window in this test
	// can close under load.
	e := newOAuthEnv(t, func(c *OAuthConfig) { c.ExpiryMargin = time.Hour })
	e.ts.ccExpiresIn.Store(3 * 3600)
	ctx := t.Context()
	spec := *e.spec
	spec.Grant = GrantClientCredentials
	spec.Scopes = []string{"read", "write"}
	require.NoError(t, spec.Validate())
	require.Empty(t, spec.RequiredFields())

	// Fetched once, with no credential at all.
	secrets, err := e.workers[0].oauth.Token(ctx, oauthTenant, oauthIntegration, &spec, nil)
	require.NoError(t, err)
	access := secrets[FieldAccessToken]
	require.True(t, strings.HasPrefix(access, "cc-"), access)
	require.Equal(t, oauthClientSecret, secrets[FieldClientSecret])
	require.EqualValues(t, 1, e.ts.requests.Load())
	require.Equal(t, []string{"read write"}, e.ts.scopes)
	require.Equal(t, http.StatusOK, e.ts.callResource(t, &spec, secrets))

	// Cached sealed in Redis for the fleet, until expiry minus the margin.
	keys, err := e.workers[0].rdb.Keys(ctx, "callq:{acme}:oauthcc:int:crm:*").Result()
	require.NoError(t, err)
	require.Len(t, keys, 1, "one cached token, keyed by integration and client")
	key := keys[0]
	raw, err := e.workers[0].rdb.Get(ctx, key).Result()
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(raw, "v1.k1."), raw)
	require.NotContains(t, e.dump(t), access)
	pttl := e.workers[0].rdb.PTTL(ctx, key).Val()
	require.True(t, pttl > 2*time.Hour-time.Minute && pttl <= 2*time.Hour, "PTTL %s: 3h less the 1h margin", pttl)
	for _, w := range e.workers {
		again, err := w.oauth.Token(ctx, oauthTenant, oauthIntegration, &spec, nil)
		require.NoError(t, err)
		require.Equal(t, access, again[FieldAccessToken])
	}
	require.EqualValues(t, 1, e.ts.requests.Load())

	// Once the cache expires: one request. A token living less than twice
	// the margin is cached half its life.
	e.ts.ccExpiresIn.Store(90 * 60)
	require.NoError(t, e.workers[0].rdb.PExpire(ctx, key, time.Millisecond).Err())
	require.Eventually(t, func() bool { return e.workers[0].rdb.Exists(ctx, key).Val() == 0 }, 10*time.Second, time.Millisecond)
	secrets, err = e.workers[1].oauth.Token(ctx, oauthTenant, oauthIntegration, &spec, nil)
	require.NoError(t, err)
	require.NotEqual(t, access, secrets[FieldAccessToken])
	require.EqualValues(t, 2, e.ts.requests.Load())
	pttl = e.workers[0].rdb.PTTL(ctx, key).Val()
	require.True(t, pttl > 45*time.Minute-time.Minute && pttl <= 45*time.Minute, "PTTL %s: half of 90m", pttl)

	// A credential of its own: its client_secret overrides the spec's and its
	// token is cached apart.
	e.ts.mu.Lock()
	e.ts.clientSecret = "cs-tenant-own-secret-42"
	e.ts.mu.Unlock()
	_, err = e.workers[0].store.Put(ctx, oauthTenant, "crm-app", oauthIntegration, map[string]string{FieldClientSecret: "cs-tenant-own-secret-42"})
	require.NoError(t, err)
	cred, err := e.workers[0].store.Get(ctx, oauthTenant, "crm-app")
	require.NoError(t, err)
	secrets, err = e.workers[0].oauth.Token(ctx, oauthTenant, oauthIntegration, &spec, cred)
	require.NoError(t, err)
	require.Equal(t, "cs-tenant-own-secret-42", secrets[FieldClientSecret])
	require.EqualValues(t, 3, e.ts.requests.Load())
	credKeys, err := e.workers[0].rdb.Keys(ctx, "callq:{acme}:oauthcc:cred:crm-app:*").Result()
	require.NoError(t, err)
	require.Len(t, credKeys, 1)
	require.NotContains(t, e.dump(t), "cs-tenant-own-secret-42")

	// The credential put again (another client secret): a token of its own,
	// not the one cached for the old client.
	e.ts.mu.Lock()
	e.ts.clientSecret = "cs-tenant-rotated-43"
	e.ts.mu.Unlock()
	_, err = e.workers[0].store.Put(ctx, oauthTenant, "crm-app", oauthIntegration, map[string]string{FieldClientSecret: "cs-tenant-rotated-43"})
	require.NoError(t, err)
	cred, err = e.workers[0].store.Get(ctx, oauthTenant, "crm-app")
	require.NoError(t, err)
	again, err := e.workers[1].oauth.Token(ctx, oauthTenant, oauthIntegration, &spec, cred)
	require.NoError(t, err)
	require.NotEqual(t, secrets[FieldAccessToken], again[FieldAccessToken])
	require.EqualValues(t, 4, e.ts.requests.Load())
}

func TestOAuthClientCredentialsForceRefreshRace(t *testing.T) {
	parallelOAuth(t)
	e := newOAuthEnv(t, nil)
	e.ts.delay.Store(int64(200 * time.Millisecond))
	spec := *e.spec
	spec.Grant = GrantClientCredentials

	first, err := e.workers[0].oauth.Token(t.Context(), oauthTenant, oauthIntegration, &spec, nil)
	require.NoError(t, err)
	e.ts.revoke(first[FieldAccessToken])
	before := e.ts.requests.Load()

	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 40 {
		w := e.workers[i%2]
		wg.Go(func() {
			<-start
			secrets, err := w.oauth.ForceRefresh(t.Context(), oauthTenant, oauthIntegration, &spec, nil, first[FieldAccessToken])
			if err != nil {
				t.Error(err)
				return
			}
			if status := e.ts.callResource(t, &spec, secrets); status != http.StatusOK {
				t.Errorf("after ForceRefresh the upstream answered %d", status)
			}
		})
	}
	close(start)
	wg.Wait()
	requests := e.ts.requests.Load() - before
	t.Logf("client_credentials ForceRefresh: %d token requests for 40 calls", requests)
	require.EqualValues(t, 1, requests)
}

// requireNoOAuthSecret asserts that err's message holds none of the secrets.
func requireNoOAuthSecret(t *testing.T, err error, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		require.NotContains(t, err.Error(), s)
	}
}

func TestOAuthRefusal(t *testing.T) {
	parallelOAuth(t)
	e := newOAuthEnv(t, nil)
	e.ts.delay.Store(int64(100 * time.Millisecond))
	e.spec.AuthStyle = AuthStyleHeader // auto would try params after a refusal
	access, refresh := e.putCredential(t, time.Now().Add(-time.Minute))
	e.ts.revokeRefresh() // the user revoked callq's access at the provider

	// Many concurrent calls: one token request, every call the same refusal.
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		w := e.workers[i%2]
		wg.Go(func() {
			_, err := w.oauth.Token(t.Context(), oauthTenant, oauthIntegration, e.spec, e.credential(t))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	require.EqualValues(t, 1, e.ts.requests.Load(), "a refusal is shared with the fleet")
	for err := range errs {
		require.ErrorIs(t, err, ErrTokenRefresh)
		var te *TokenError
		require.ErrorAs(t, err, &te)
		require.True(t, te.Refused)
		require.Equal(t, http.StatusBadRequest, te.StatusCode)
		require.Equal(t, "invalid_grant", te.Code)
		require.Equal(t, `oauth2: the token endpoint refused to refresh credential "crm-main" of integration "crm": HTTP 400, error "invalid_grant" ("refresh token [REDACTED] is not valid")`, err.Error())
		requireNoOAuthSecret(t, err, oauthClientSecret, access, refresh)
	}

	// The refusal is remembered for this version of the credential only: a
	// credential put again is tried at once.
	e.ts.mu.Lock()
	e.ts.refresh = refresh
	e.ts.mu.Unlock()
	_, err := e.workers[0].oauth.Token(t.Context(), oauthTenant, oauthIntegration, e.spec, e.credential(t))
	require.ErrorIs(t, err, ErrTokenRefresh)
	require.EqualValues(t, 1, e.ts.requests.Load())
	e.putCredential(t, time.Now().Add(-time.Minute))
	_, err = e.workers[0].oauth.Token(t.Context(), oauthTenant, oauthIntegration, e.spec, e.credential(t))
	require.NoError(t, err)
	require.EqualValues(t, 2, e.ts.requests.Load())

	// A wrong client secret, echoed by the provider: redacted.
	e.expire(t)
	spec := *e.spec
	spec.ClientSecret = "cs-wrong-but-still-secret"
	_, err = e.workers[1].oauth.Token(t.Context(), oauthTenant, oauthIntegration, &spec, e.credential(t))
	var te *TokenError
	require.ErrorAs(t, err, &te)
	require.True(t, te.Refused)
	require.Equal(t, "invalid_client", te.Code)
	require.Equal(t, http.StatusUnauthorized, te.StatusCode)
	requireNoOAuthSecret(t, err, "cs-wrong-but-still-secret", oauthClientSecret)
	require.Contains(t, err.Error(), "bad client secret [REDACTED]")

	// client_credentials refused.
	spec.Grant = GrantClientCredentials
	_, err = e.workers[1].oauth.Token(t.Context(), oauthTenant, oauthIntegration, &spec, nil)
	require.ErrorIs(t, err, ErrTokenRefresh)
	require.ErrorAs(t, err, &te)
	require.True(t, te.Refused)
	require.Contains(t, err.Error(), `the token endpoint refused a client_credentials token for integration "crm": HTTP 401, error "invalid_client"`)
	requireNoOAuthSecret(t, err, "cs-wrong-but-still-secret")
}

func TestOAuthTransientFailure(t *testing.T) {
	parallelOAuth(t)
	e := newOAuthEnv(t, nil)
	e.spec.AuthStyle = AuthStyleParams
	_, refresh := e.putCredential(t, time.Now().Add(-time.Minute))

	// The endpoint answers 503: worth another try, not a refusal.
	e.ts.mu.Lock()
	e.ts.failWith = http.StatusServiceUnavailable
	e.ts.mu.Unlock()
	_, err := e.workers[0].oauth.Token(t.Context(), oauthTenant, oauthIntegration, e.spec, e.credential(t))
	require.ErrorIs(t, err, ErrTokenRefresh)
	var te *TokenError
	require.ErrorAs(t, err, &te)
	require.False(t, te.Refused)
	require.Equal(t, http.StatusServiceUnavailable, te.StatusCode)
	require.Equal(t, "params", e.ts.lastStyle())
	requireNoOAuthSecret(t, err, oauthClientSecret, refresh)

	// Shared with the fleet for a moment: the same failure, no request.
	failKey := "callq:{" + oauthTenant + "}:oauthfail:cred:" + oauthRef
	pttl := e.workers[0].rdb.PTTL(t.Context(), failKey).Val()
	require.True(t, pttl > 59*time.Minute && pttl <= time.Hour, "PTTL %s: the failure memory", pttl)
	_, err = e.workers[1].oauth.Token(t.Context(), oauthTenant, oauthIntegration, e.spec, e.credential(t))
	require.ErrorAs(t, err, &te)
	require.Equal(t, http.StatusServiceUnavailable, te.StatusCode)
	require.EqualValues(t, 1, e.ts.requests.Load())

	// The endpoint is down. (expire writes the credential: a new version,
	// which the shared failure does not apply to.)
	e.expire(t)
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	spec := *e.spec
	spec.TokenURL = down.URL + "/token?client_secret=" + oauthClientSecret
	_, err = e.workers[1].oauth.Token(t.Context(), oauthTenant, oauthIntegration, &spec, e.credential(t))
	require.ErrorAs(t, err, &te)
	require.False(t, te.Refused)
	require.Zero(t, te.StatusCode)
	require.Contains(t, err.Error(), `refreshing credential "crm-main" of integration "crm" failed: `)
	requireNoOAuthSecret(t, err, oauthClientSecret, refresh)

	// The stored refresh token was not touched.
	stored, err := e.credential(t).Resolve(e.keyring, nil)
	require.NoError(t, err)
	require.Equal(t, refresh, stored[FieldRefreshToken])
}

func TestOAuthClientSecretSources(t *testing.T) {
	// t.Setenv: not parallel.
	e := newOAuthEnv(t, nil)
	ctx := t.Context()
	e.putCredential(t, time.Now().Add(-time.Minute))

	t.Setenv("OAUTHTEST_CLIENT_SECRET", oauthClientSecret)
	spec := *e.spec
	spec.ClientSecret = "env:OAUTHTEST_CLIENT_SECRET"
	spec.AuthStyle = AuthStyleHeader
	require.NoError(t, spec.Validate())
	secrets, err := e.workers[0].oauth.Token(ctx, oauthTenant, oauthIntegration, &spec, e.credential(t))
	require.NoError(t, err)
	require.Equal(t, oauthClientSecret, secrets[FieldClientSecret], "resolved, so that it is redacted")
	require.EqualValues(t, 1, e.ts.requests.Load())

	path := filepath.Join(t.TempDir(), "client_secret")
	require.NoError(t, os.WriteFile(path, []byte(oauthClientSecret+"\n"), 0o600))
	spec.ClientSecret = "file:" + path
	spec.AuthStyle = AuthStyleParams
	e.expire(t)
	secrets, err = e.workers[1].oauth.Token(ctx, oauthTenant, oauthIntegration, &spec, e.credential(t))
	require.NoError(t, err)
	require.Equal(t, oauthClientSecret, secrets[FieldClientSecret])
	require.EqualValues(t, 2, e.ts.requests.Load())
	require.Equal(t, "params", e.ts.lastStyle())

	// Resolved at every use: a missing source fails the call, naming the
	// source and no secret.
	spec.ClientSecret = "env:OAUTHTEST_CLIENT_SECRET_UNSET"
	e.expire(t)
	_, err = e.workers[1].oauth.Token(ctx, oauthTenant, oauthIntegration, &spec, e.credential(t))
	require.ErrorIs(t, err, ErrOAuthConfig)
	require.NotErrorIs(t, err, ErrTokenRefresh)
	require.ErrorContains(t, err, "env var OAUTHTEST_CLIENT_SECRET_UNSET is not set")
	require.EqualValues(t, 2, e.ts.requests.Load())
}

func TestOAuthConfigErrors(t *testing.T) {
	parallelOAuth(t)
	e := newOAuthEnv(t, nil)
	ctx := t.Context()
	o := e.workers[0].oauth

	_, err := NewOAuth(nil, &OAuthConfig{})
	require.Error(t, err)
	_, err = NewOAuth(e.workers[0].rdb, &OAuthConfig{Keyring: e.keyring})
	require.Error(t, err)

	// refresh_token needs a credential.
	_, err = o.Token(ctx, oauthTenant, oauthIntegration, e.spec, nil)
	require.ErrorIs(t, err, ErrOAuthConfig)

	// Not an oauth2 spec, or an invalid one.
	_, err = o.Token(ctx, oauthTenant, oauthIntegration, &Spec{Type: TypeBearer}, nil)
	require.ErrorIs(t, err, ErrOAuthConfig)
	_, err = o.Token(ctx, oauthTenant, oauthIntegration, &Spec{Type: TypeOAuth2, ClientID: "x"}, nil)
	require.ErrorIs(t, err, ErrOAuthConfig)

	// A credential of another integration.
	e.putCredential(t, time.Now().Add(-time.Minute))
	_, err = o.Token(ctx, oauthTenant, "other", e.spec, e.credential(t))
	require.ErrorIs(t, err, ErrOAuthConfig)

	// No refresh token to refresh with.
	_, err = e.workers[0].store.Put(ctx, oauthTenant, "no-rt", oauthIntegration, map[string]string{FieldAccessToken: "at-only-token"})
	require.NoError(t, err)
	cred, err := e.workers[0].store.Get(ctx, oauthTenant, "no-rt")
	require.NoError(t, err)
	// Without an expiry the token is used as is.
	secrets, err := o.Token(ctx, oauthTenant, oauthIntegration, e.spec, cred)
	require.NoError(t, err)
	require.Equal(t, "at-only-token", secrets[FieldAccessToken])
	_, err = o.ForceRefresh(ctx, oauthTenant, oauthIntegration, e.spec, cred, "at-only-token")
	require.ErrorIs(t, err, ErrOAuthConfig)
	var mf *MissingFieldError
	require.ErrorAs(t, err, &mf)
	require.Equal(t, FieldRefreshToken, mf.Field)
	// With an expiry: used to its end, within the margin too (nothing
	// could refresh it), and refused once it has passed.
	soon := time.Now().Add(DefaultExpiryMargin / 3).UTC().Format(time.RFC3339)
	_, err = e.workers[0].store.Put(ctx, oauthTenant, "no-rt", oauthIntegration, map[string]string{FieldAccessToken: "at-only-token", FieldExpiry: soon})
	require.NoError(t, err)
	cred, err = e.workers[0].store.Get(ctx, oauthTenant, "no-rt")
	require.NoError(t, err)
	secrets, err = o.Token(ctx, oauthTenant, oauthIntegration, e.spec, cred)
	require.NoError(t, err)
	require.Equal(t, "at-only-token", secrets[FieldAccessToken])
	_, err = e.workers[0].store.Put(ctx, oauthTenant, "no-rt", oauthIntegration, map[string]string{FieldAccessToken: "at-only-token",
		FieldExpiry: time.Now().Add(-time.Second).UTC().Format(time.RFC3339)})
	require.NoError(t, err)
	cred, err = e.workers[0].store.Get(ctx, oauthTenant, "no-rt")
	require.NoError(t, err)
	_, err = o.Token(ctx, oauthTenant, oauthIntegration, e.spec, cred)
	require.ErrorIs(t, err, ErrOAuthConfig)
	require.ErrorAs(t, err, &mf)

	// client_credentials without any client secret.
	_, err = o.Token(ctx, oauthTenant, oauthIntegration, &Spec{Type: TypeOAuth2, Grant: GrantClientCredentials, TokenURL: e.ts.url(), ClientID: oauthClientID}, nil)
	require.ErrorIs(t, err, ErrOAuthConfig)
	require.ErrorContains(t, err, "needs a client_secret")
	require.Zero(t, e.ts.requests.Load())
}

func TestStoreUpdateFields(t *testing.T) {
	t.Parallel()
	b := setupStore(t)
	_, err := b.store.Put(b.ctx, "acme", "gh", "github", map[string]string{
		"token": "old-token-value", "other": "env:OTHER_SECRET", "gone": "to-be-removed",
	})
	require.NoError(t, err)
	later := time.Date(2025, 2, 3, 4, 5, 6, 0, time.UTC)
	b.store.now = func() time.Time { return later }

	cred, err := b.store.UpdateFields(b.ctx, "acme", "gh", map[string]string{
		"token": "new-token-value", "added": "env:NOT_A_SOURCE_HERE", "gone": "",
	})
	require.NoError(t, err)
	require.Equal(t, later, cred.UpdatedAt)
	require.Equal(t, []string{"added", "other", "token"}, cred.FieldNames())
	require.Equal(t, Value{Kind: KindEnv, Ref: "OTHER_SECRET"}, cred.Fields["other"], "kept as it was")
	require.Equal(t, KindLiteral, cred.Fields["added"].Kind, "values are literals, never sources")

	stored, err := b.store.Get(b.ctx, "acme", "gh")
	require.NoError(t, err)
	require.Equal(t, cred, stored)
	for name, want := range map[string]string{"token": "new-token-value", "added": "env:NOT_A_SOURCE_HERE"} {
		got, err := stored.Fields[name].Resolve(b.keyring, fieldAAD("acme", "gh", name), nil)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	require.NotContains(t, redisDump(t, b.mr), "new-token-value")

	_, err = b.store.UpdateFields(b.ctx, "acme", "nope", map[string]string{"token": "x-value"})
	require.ErrorIs(t, err, ErrCredentialNotFound)
	_, err = b.store.UpdateFields(b.ctx, "acme", "gh", map[string]string{"bad name": "x-value"})
	var fe *FieldError
	require.ErrorAs(t, err, &fe)
	_, err = b.store.UpdateFields(b.ctx, "acme", "gh", map[string]string{"token": "", "added": "", "other": ""})
	require.ErrorAs(t, err, &fe, "a credential keeps at least one field")
	stored, err = b.store.Get(b.ctx, "acme", "gh")
	require.NoError(t, err)
	require.Len(t, stored.Fields, 3, "a refused update changes nothing")
}
