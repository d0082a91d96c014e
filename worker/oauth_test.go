package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/redistest"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

// oauthProvider is a real OAuth2 token endpoint and a resource server that
// accepts only its current access token. Refresh tokens rotate: each refresh
// invalidates the one it used.
type oauthProvider struct {
	token, api   *httptest.Server
	clientSecret string

	mu            sync.Mutex
	n             int
	access        string
	refresh       string
	tokenRequests atomic.Int64
	invalidGrants atomic.Int64
	refuseAll     bool
}

func newOAuthProvider(t *testing.T) *oauthProvider {
	p := &oauthProvider{clientSecret: "cs-client-secret-9d1e"}
	p.access, p.refresh = "at-initial-0", "rt-initial-0"
	p.token = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.tokenRequests.Add(1)
		time.Sleep(150 * time.Millisecond) // widen races
		id, secret, _ := r.BasicAuth()
		if err := r.ParseForm(); err != nil || id != "callq-client" || secret != p.clientSecret {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = fmt.Fprint(w, `{"error":"invalid_client"}`)
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.refuseAll || r.Form.Get("grant_type") != "refresh_token" || r.Form.Get("refresh_token") != p.refresh {
			p.invalidGrants.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = fmt.Fprintf(w, `{"error":"invalid_grant","error_description":"refresh token %s is not valid"}`, r.Form.Get("refresh_token"))
			return
		}
		p.n++
		p.access, p.refresh = fmt.Sprintf("at-fresh-%d-5c2a", p.n), fmt.Sprintf("rt-rotated-%d-77b0", p.n)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": p.access, "refresh_token": p.refresh,
			"token_type": "Bearer", "expires_in": 3600})
	}))
	t.Cleanup(p.token.Close)
	p.api = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		ok := r.Header.Get("Authorization") == "Bearer "+p.access
		p.mu.Unlock()
		if !ok {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		// Echo the token, as careless APIs do: the record must not keep it.
		_, _ = fmt.Fprintf(w, `{"ok":true,"seen":%q}`, r.Header.Get("Authorization"))
	}))
	t.Cleanup(p.api.Close)
	return p
}

// revoke invalidates the current access token (the refresh token stays good).
func (p *oauthProvider) revoke() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.access = "revoked"
}

type oauthEnv struct {
	p       *oauthProvider
	rdb     *redis.Client
	creds   *auth.Store
	client  *producer.Client
	records *tasks.Store
	logs    *syncBuffer
}

// setupOAuth starts two worker servers on one Redis, as two processes of a
// fleet would be, logging at debug level.
func setupOAuth(t *testing.T) *oauthEnv {
	t.Helper()
	p := newOAuthProvider(t)
	t.Setenv("CRM_TEST_CLIENT_SECRET", p.clientSecret)
	srv := redistest.Start(t)
	e := &oauthEnv{p: p, rdb: srv.Client(t), logs: &syncBuffer{}}
	cat, err := tasks.ParseCatalog([]byte(fmt.Sprintf(`
integrations:
  crm:
    base_url: %s
    auth: {type: oauth2, token_url: %s/token, client_id: callq-client, client_secret: "env:CRM_TEST_CLIENT_SECRET", scopes: [read], auth_style: header}
    retry: {max_attempts: 2, initial_interval: 50ms}
`, p.api.URL, p.token.URL)))
	require.NoError(t, err)
	key, _ := auth.GenerateKey()
	ring, err := auth.ParseKeyring(key)
	require.NoError(t, err)
	e.creds, err = auth.NewStore(e.rdb, &auth.StoreConfig{Keyring: ring})
	require.NoError(t, err)
	e.records, err = tasks.NewStore(e.rdb, nil)
	require.NoError(t, err)
	t.Cleanup(func() { e.records.Close() })
	e.client, err = producer.NewClient(e.rdb, "acme", &producer.Config{Catalog: cat, Records: e.records})
	require.NoError(t, err)
	for i := range 2 {
		// Each worker its own Redis connection pool, like its own process.
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
		t.Cleanup(func() { rdb.Close() })
		records, err := tasks.NewStore(rdb, nil)
		require.NoError(t, err)
		creds, err := auth.NewStore(rdb, &auth.StoreConfig{Keyring: ring})
		require.NoError(t, err)
		log := zerolog.New(e.logs).Level(zerolog.DebugLevel)
		w, err := worker.New(rdb, &worker.Config{Catalog: cat, Records: records, Credentials: creds, Keyring: ring,
			Concurrency: 25, Logger: &log, Name: fmt.Sprintf("w%d", i), ShutdownTimeout: time.Second})
		require.NoError(t, err)
		require.NoError(t, w.Start())
		t.Cleanup(w.Shutdown)
	}
	return e
}

// putExpired stores the provider's current tokens as already expired.
func (e *oauthEnv) putExpired(t *testing.T, ref string) {
	e.p.mu.Lock()
	access, refresh := e.p.access, e.p.refresh
	e.p.mu.Unlock()
	_, err := e.creds.Put(context.Background(), "acme", ref, "crm", map[string]string{
		"access_token": access, "refresh_token": refresh, "expiry": time.Now().Add(-time.Hour).Format(time.RFC3339)})
	require.NoError(t, err)
}

// burst enqueues n calls at once and waits for all of them.
func (e *oauthEnv) burst(t *testing.T, prefix string, n int) []*tasks.Record {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%d", prefix, i)
		_, err := e.client.Enqueue(context.Background(), &tasks.Call{Integration: "crm", Method: "GET", Path: "/contacts",
			Credential: "crm-main", CorrelationID: ids[i]})
		require.NoError(t, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	recs := make([]*tasks.Record, n)
	for i, id := range ids {
		rec, err := e.client.Wait(ctx, id)
		require.NoError(t, err)
		recs[i] = rec
	}
	return recs
}

func TestOAuthFleetRefreshesOncePerExpiry(t *testing.T) {
	e := setupOAuth(t)
	e.putExpired(t, "crm-main")
	var perRun []int64
	for run := range 3 {
		before := e.p.tokenRequests.Load()
		for _, rec := range e.burst(t, fmt.Sprintf("expired-%d", run), 40) {
			require.Equal(t, tasks.StatusSucceeded, rec.Status, "%+v", rec.Error)
			require.Equal(t, 1, rec.Attempts)
		}
		perRun = append(perRun, e.p.tokenRequests.Load()-before)
		e.putExpired(t, "crm-main") // expire it again for the next run
	}
	t.Logf("token requests per expiry (40 concurrent calls, 2 workers): %v", perRun)
	for _, n := range perRun {
		require.EqualValues(t, 1, n, "one refresh per expiry for the whole fleet")
	}
	require.Zero(t, e.p.invalidGrants.Load(), "never a request with a stale refresh token")

	// The rotated refresh token was stored at once, sealed.
	cred, err := e.creds.Get(context.Background(), "acme", "crm-main")
	require.NoError(t, err)
	require.Contains(t, cred.FieldNames(), "refresh_token")
}

func TestOAuth401RefreshesAndResendsWithoutSpendingAnAttempt(t *testing.T) {
	e := setupOAuth(t)
	e.putExpired(t, "crm-main")
	require.Equal(t, tasks.StatusSucceeded, e.burst(t, "warm", 1)[0].Status)

	var perRun []int64
	for run := range 3 {
		e.p.revoke()
		before := e.p.tokenRequests.Load()
		for _, rec := range e.burst(t, fmt.Sprintf("revoked-%d", run), 30) {
			require.Equal(t, tasks.StatusSucceeded, rec.Status, "%+v", rec.Error)
			require.Equal(t, 1, rec.Attempts, "the resend after a 401 spends no attempt")
			require.Equal(t, 200, rec.Response.Status)
		}
		perRun = append(perRun, e.p.tokenRequests.Load()-before)
	}
	t.Logf("token requests per revocation (30 concurrent calls, 2 workers): %v", perRun)
	for _, n := range perRun {
		require.EqualValues(t, 1, n, "one refresh per revocation for the whole fleet")
	}
	require.Zero(t, e.p.invalidGrants.Load())
}

func TestOAuthRefusedRefreshFailsWithCredentialKind(t *testing.T) {
	e := setupOAuth(t)
	e.putExpired(t, "crm-main")
	e.p.mu.Lock()
	e.p.refuseAll = true
	e.p.mu.Unlock()
	recs := e.burst(t, "refused", 5)
	for _, rec := range recs {
		require.Equal(t, tasks.StatusFailed, rec.Status)
		require.Equal(t, tasks.KindCredential, rec.Error.Kind)
		require.Equal(t, 1, rec.Attempts, "a refused refresh is not retried")
		require.Contains(t, rec.Error.Message, "refused")
		require.Contains(t, rec.Error.Message, "invalid_grant")
		require.NotContains(t, rec.Error.Message, "rt-initial-0", "the provider echoed the refresh token; it is redacted")
	}
}

// A full OAuth flow at debug level: no client secret, access or refresh
// token appears in any log line, record, error or credential listing.
func TestOAuthSecretsNeverLeak(t *testing.T) {
	e := setupOAuth(t)
	e.putExpired(t, "crm-main")
	var all []string
	for _, rec := range e.burst(t, "leak-a", 5) {
		b, _ := json.Marshal(rec)
		all = append(all, string(b))
	}
	e.p.revoke()
	for _, rec := range e.burst(t, "leak-b", 5) {
		b, _ := json.Marshal(rec)
		all = append(all, string(b))
		require.Contains(t, string(b), auth.Redacted, "the echoed token was redacted")
	}
	e.p.mu.Lock()
	e.p.refuseAll = true
	e.p.mu.Unlock()
	e.p.revoke()
	for _, rec := range e.burst(t, "leak-c", 3) {
		b, _ := json.Marshal(rec)
		all = append(all, string(b))
	}
	creds, err := e.creds.List(context.Background(), "acme")
	require.NoError(t, err)
	b, _ := json.Marshal(creds)
	all = append(all, string(b), e.logs.String())
	require.Contains(t, e.logs.String(), `"level":"debug"`, "debug logging was on")

	e.p.mu.Lock()
	secrets := []string{e.p.clientSecret, "at-initial-0", "rt-initial-0"}
	for i := 1; i <= e.p.n; i++ {
		secrets = append(secrets, fmt.Sprintf("at-fresh-%d-5c2a", i), fmt.Sprintf("rt-rotated-%d-77b0", i))
	}
	e.p.mu.Unlock()
	out := strings.Join(all, "\n")
	for _, s := range secrets {
		require.NotContains(t, out, s)
	}
}
