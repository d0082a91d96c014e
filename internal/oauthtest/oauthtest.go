package oauthtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	oauthv4 "github.com/go-oauth2/oauth2/v4"
	oautherrors "github.com/go-oauth2/oauth2/v4/errors"
	"github.com/go-oauth2/oauth2/v4/manage"
	"github.com/go-oauth2/oauth2/v4/models"
	"github.com/go-oauth2/oauth2/v4/server"
	"github.com/go-oauth2/oauth2/v4/store"
)

// The client callq is registered as.
const (
	ClientID     = "callq-client"
	ClientSecret = "client-s3cret-0123456789"
)

// Provider is the authorization server (URL: /authorize and /token) and
// its API (API: any path answers {"user": "user-1"} to a valid token, 401
// otherwise). Its user approves every request unless Deny is set.
type Provider struct {
	URL string
	API string
	// Deny makes the user refuse consent: error=access_denied.
	Deny atomic.Bool
	// Refreshes and Codes count the token requests of each grant.
	Refreshes, Codes atomic.Int32
	// NoRefreshToken and NoExpiry make the token endpoint leave
	// refresh_token, and expires_in, out of its answers, as providers
	// whose tokens do not expire (or are not renewed) do.
	NoRefreshToken, NoExpiry atomic.Bool

	clients   *store.ClientStore
	mu        sync.Mutex
	redirects []string // the authorize endpoint's Location headers
	tokens    []string // the token endpoint's answers
	verifiers []string // the PKCE verifiers the token endpoint was sent
}

// Start runs a provider until tb ends. Its access tokens from a code live
// accessTTL; refreshed ones an hour; refresh tokens rotate.
func Start(tb testing.TB, accessTTL time.Duration) *Provider {
	tb.Helper()
	p := &Provider{clients: store.NewClientStore()}
	m := manage.NewDefaultManager()
	m.MustTokenStorage(store.NewMemoryTokenStore())
	m.MapClientStorage(p.clients)
	m.SetAuthorizeCodeTokenCfg(&manage.Config{AccessTokenExp: accessTTL, RefreshTokenExp: 24 * time.Hour, IsGenerateRefresh: true})
	m.SetRefreshTokenCfg(&manage.RefreshingConfig{AccessTokenExp: time.Hour, IsGenerateRefresh: true, IsRemoveAccess: true, IsRemoveRefreshing: true})
	srv := server.NewDefaultServer(m)
	srv.Config.ForcePKCE = true
	srv.Config.AllowedCodeChallengeMethods = []oauthv4.CodeChallengeMethod{oauthv4.CodeChallengeS256}
	srv.SetUserAuthorizationHandler(func(http.ResponseWriter, *http.Request) (string, error) {
		if p.Deny.Load() {
			return "", oautherrors.ErrAccessDenied
		}
		return "user-1", nil
	})
	mux := http.NewServeMux()
	mux.HandleFunc("/authorize", func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		if err := srv.HandleAuthorizeRequest(rec, r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		p.mu.Lock()
		p.redirects = append(p.redirects, rec.Header().Get("Location"))
		p.mu.Unlock()
		copyResponse(w, rec)
	})
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		switch r.PostForm.Get("grant_type") {
		case "refresh_token":
			p.Refreshes.Add(1)
		case "authorization_code":
			p.Codes.Add(1)
			p.mu.Lock()
			p.verifiers = append(p.verifiers, r.PostForm.Get("code_verifier"))
			p.mu.Unlock()
		}
		rec := httptest.NewRecorder()
		_ = srv.HandleTokenRequest(rec, r)
		p.leaveOut(rec)
		p.mu.Lock()
		p.tokens = append(p.tokens, rec.Body.String())
		p.mu.Unlock()
		copyResponse(w, rec)
	})
	ts := httptest.NewServer(mux)
	tb.Cleanup(ts.Close)
	p.URL = ts.URL

	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ti, err := srv.ValidationBearerToken(r)
		if err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"user":%q}`, ti.GetUserID())
	}))
	tb.Cleanup(api.Close)
	p.API = api.URL
	return p
}

// leaveOut takes refresh_token and expires_in out of a token answer, as
// NoRefreshToken and NoExpiry say.
func (p *Provider) leaveOut(rec *httptest.ResponseRecorder) {
	if !p.NoRefreshToken.Load() && !p.NoExpiry.Load() {
		return
	}
	var tok map[string]any
	if json.Unmarshal(rec.Body.Bytes(), &tok) != nil {
		return
	}
	if p.NoRefreshToken.Load() {
		delete(tok, "refresh_token")
	}
	if p.NoExpiry.Load() {
		delete(tok, "expires_in")
	}
	b, _ := json.Marshal(tok)
	rec.Body.Reset()
	rec.Body.Write(b)
}

func copyResponse(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// Register makes callq at publicURL the provider's client: its redirect
// URIs must be under publicURL.
func (p *Provider) Register(tb testing.TB, publicURL string) {
	tb.Helper()
	p.RegisterClient(tb, ClientID, publicURL)
}

// RegisterClient is Register under another client id (with the same
// secret), for a catalog that names its own.
func (p *Provider) RegisterClient(tb testing.TB, id, publicURL string) {
	tb.Helper()
	if err := p.clients.Set(id, &models.Client{ID: id, Secret: ClientSecret, Domain: publicURL}); err != nil {
		tb.Fatal(err)
	}
}

// Authorizations counts the authorization requests the provider answered.
func (p *Provider) Authorizations() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.redirects)
}

// Secrets are every code and token the provider gave out.
func (p *Provider) Secrets(tb testing.TB) []string {
	tb.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, loc := range p.redirects {
		u, err := url.Parse(loc)
		if err != nil {
			tb.Fatal(err)
		}
		if c := u.Query().Get("code"); c != "" {
			out = append(out, c)
		}
	}
	for _, body := range p.tokens {
		var tok map[string]any
		if json.Unmarshal([]byte(body), &tok) == nil {
			for _, k := range []string{"access_token", "refresh_token"} {
				if s, _ := tok[k].(string); s != "" {
					out = append(out, s)
				}
			}
		}
	}
	return out
}

// Verifiers are the PKCE code verifiers the token endpoint was sent.
func (p *Provider) Verifiers() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.verifiers...)
}

// Auth is the catalog auth block of an oauth2 integration of this
// provider, in YAML flow style.
func (p *Provider) Auth() string {
	return fmt.Sprintf(`{type: oauth2, authorize_url: %s/authorize, token_url: %s/token, client_id: %s,
           client_secret: %s, scopes: [read], auth_style: header,
           authorize_params: {access_type: offline}}`, p.URL, p.URL, ClientID, ClientSecret)
}
