package producer

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/httpurl"
	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/tasks"
)

// Connect sessions: an admin opens one for an end user's credential, and
// the end user's browser, sent to its URL, connects the account (the
// OAuth2 authorization code flow with PKCE, or a form of the auth type's
// fields). The session's token is the only thing the browser holds: it
// is random, stored hashed, single-use and expires.
const (
	// DefaultConnectExpiry is a session's life when the request names none.
	DefaultConnectExpiry = 10 * time.Minute
	// MaxConnectExpiry bounds expires_in.
	MaxConnectExpiry = time.Hour
	// ConnectStateTTL is how long an end user has at the provider (sign
	// in, consent) between callq's redirect and the provider's callback.
	ConnectStateTTL = 10 * time.Minute
	// DefaultConnectTimeout bounds a token exchange of the default
	// HandlerConfig.ConnectHTTPClient.
	DefaultConnectTimeout = 10 * time.Second

	// connectTokenBytes is the entropy of a session token and of a state.
	connectTokenBytes = 32
	// maxConnectForm bounds a hosted form's body.
	maxConnectForm = 64 << 10
	// connectCallbackPath is where providers send the browser back.
	connectCallbackPath = "/connect/callback"
)

// ErrConnectNotConfigured: the connect endpoints need CALLQ_PUBLIC_URL.
var ErrConnectNotConfigured = errors.New("connect is not configured: CALLQ_PUBLIC_URL, the address browsers reach callq at, is not set")

// Connect event types, sent to a session's webhook.
const (
	EventCredentialConnected = "credential.connected"
	EventCredentialFailed    = "credential.failed"
)

// ConnectEvent is the data of a credential.connected or credential.failed
// webhook. It never holds a secret.
type ConnectEvent struct {
	Session     string `json:"session"`
	Tenant      string `json:"tenant"`
	Integration string `json:"integration"`
	Credential  string `json:"credential"`
	Status      string `json:"status"`          // connected | error
	Error       string `json:"error,omitempty"` // the provider's OAuth2 error code (provider_error when it is none), exchange_failed, browser_mismatch, invalid_value or server_error
	// Refreshable and ExpiresAt are the credential's, as connected
	// (auth.Connection): for OAuth2, whether the provider sent a refresh
	// token and, when it did not, when the access token expires.
	Refreshable *bool      `json:"refreshable,omitempty"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
}

//go:embed connect/page.html
var connectFS embed.FS

var connectPage = template.Must(template.ParseFS(connectFS, "connect/page.html"))

// connectCSP is the hosted pages' policy: nothing loads, nothing runs, and
// a form posts only to callq. Browsers hold every redirect that follows a
// form's post to form-action too, so each page adds the origins its post's
// redirects go to (connectHeaders): the session's redirect_uri, and for
// the OAuth2 page the provider's.
const connectCSP = "default-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"

// connectSession is a session as Redis keeps it, under the hash of its
// token.
type connectSession struct {
	ID          string    `json:"id"`
	Tenant      string    `json:"tenant"`
	Integration string    `json:"integration"`
	Credential  string    `json:"credential"`
	RedirectURI string    `json:"redirect_uri,omitempty"`
	Webhook     string    `json:"webhook,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// connectState is an authorization request in flight, under the hash of
// its state parameter, sealed (auth.Store.SealConnectState): the session
// it is for, its PKCE verifier, and the hash of the cookie that binds it
// to the browser that started it.
type connectState struct {
	Session  connectSession `json:"session"`
	Verifier string         `json:"verifier"`
	Browser  string         `json:"browser"`
}

// stateCookie is the name of the cookie binding state to the browser that
// followed the link (one per state: a browser may run two dances at once).
// Without it, whoever got hold of an authorization URL in flight (state
// and all: a browser's history, a proxy's log, a provider page's Referer)
// could finish it in their own browser, consenting with their own
// account, which would then be stored as the end user's credential; or
// have someone else consent, for theirs (RFC 9700, 4.7).
func stateCookie(state string) string {
	return "callq_connect_" + tokenHash(state)[:16]
}

// ParseConnectOrigins reads CALLQ_CONNECT_ALLOWED_ORIGINS: comma-separated
// origins (scheme://host[:port], no path), https, or http for a loopback
// host only. It answers them normalized (lower case, default port left
// out).
func ParseConnectOrigins(raw string) ([]string, error) {
	var out []string
	for _, part := range strings.Split(raw, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		u, err := url.Parse(part)
		if err != nil || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("%q is not an origin: want scheme://host[:port], nothing after", part)
		}
		o, err := originOf(u)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", part, err)
		}
		out = append(out, o)
	}
	return out, nil
}

// originOf answers u's origin, normalized, if it is one a browser may be
// sent to: https, or http on a loopback host.
func originOf(u *url.URL) (string, error) {
	scheme, host, port := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname()), u.Port()
	switch scheme {
	case "https":
		if port == "443" {
			port = ""
		}
	case "http":
		if !isLoopbackHost(host) {
			return "", errors.New("http is allowed only for a loopback host (localhost, 127.0.0.1, ::1); use https")
		}
		if port == "80" {
			port = ""
		}
	default:
		return "", errors.New("the scheme must be https (or http for a loopback host)")
	}
	if host == "" {
		return "", errors.New("the host is missing")
	}
	// Only ASCII: strings.ToLower folds some non-ASCII letters (U+0130,
	// U+212A) to ASCII ones, while a browser maps them (IDNA) to another
	// domain, so a Unicode host could pass for an allowed one.
	if strings.ContainsFunc(u.Hostname(), func(c rune) bool { return c >= utf8.RuneSelf }) {
		return "", errors.New("the host must be ASCII: write an internationalized domain name in its punycode form (xn--...)")
	}
	if port != "" {
		host = net.JoinHostPort(host, port)
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return scheme + "://" + host, nil
}

func isLoopbackHost(host string) bool {
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ParsePublicURL checks CALLQ_PUBLIC_URL (an absolute https URL, or http
// on a loopback host, with no query or fragment) and answers it without a
// trailing slash.
func ParsePublicURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%q is not an absolute URL without userinfo, query or fragment", raw)
	}
	if _, err := originOf(u); err != nil {
		return "", fmt.Errorf("%q: %w", raw, err)
	}
	return strings.TrimSuffix(raw, "/"), nil
}

func newConnectToken() string {
	b := make([]byte, connectTokenBytes)
	_, _ = rand.Read(b) // crypto/rand never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

var connectTokenPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)

func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// createConnectSession is POST /v1/connect/sessions (admin).
func (h *handler) createConnectSession(w http.ResponseWriter, r *http.Request) {
	if h.cfg.PublicURL == "" {
		writeError(w, &APIError{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: ErrConnectNotConfigured.Error()})
		return
	}
	body, aerr := h.readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	var req struct {
		Integration string          `json:"integration"`
		Credential  string          `json:"credential"`
		RedirectURI string          `json:"redirect_uri"`
		ExpiresIn   *tasks.Duration `json:"expires_in"`
		Webhook     *struct {
			URL string `json:"url"`
		} `json:"webhook"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidJSON,
			Message: `the body must be {"integration": "...", "credential": "...", "redirect_uri": "https://...", "expires_in": "10m", "webhook": {"url": "..."}}: ` + err.Error()})
		return
	}
	bad := func(field, format string, args ...any) {
		writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidField, Field: field, Message: fmt.Sprintf(format, args...)})
	}
	in, ok := h.cfg.Producer.catalog().Lookup(req.Integration)
	if !ok {
		bad("integration", "unknown integration %q", req.Integration)
		return
	}
	if _, err := in.Auth.ConnectMethod(); err != nil {
		bad("integration", "integration %q: %s", in.Name, err.Error())
		return
	}
	if !auth.ValidID(req.Credential) {
		bad("credential", "credential ref %q is not valid: want %s", req.Credential, auth.IDRule)
		return
	}
	expiry := DefaultConnectExpiry
	if req.ExpiresIn != nil {
		expiry = req.ExpiresIn.D()
		if expiry <= 0 || expiry > MaxConnectExpiry {
			bad("expires_in", "must be more than 0 and at most %s, got %s", MaxConnectExpiry, expiry)
			return
		}
	}
	if req.RedirectURI != "" {
		if err := h.checkRedirect(req.RedirectURI); err != nil {
			bad("redirect_uri", "%s", err.Error())
			return
		}
	}
	sess := connectSession{Tenant: h.tenant(r), Integration: in.Name, Credential: req.Credential, RedirectURI: req.RedirectURI}
	if req.Webhook != nil {
		if u, ok := httpurl.Parse(req.Webhook.URL); !ok || u.User != nil || len(req.Webhook.URL) > 2048 {
			bad("webhook.url", "must be an absolute http or https URL without userinfo, at most 2048 bytes")
			return
		}
		if err := h.cfg.Producer.checkWebhook(req.Webhook.URL); err != nil {
			var fe *tasks.FieldError
			if errors.As(err, &fe) {
				bad(fe.Field, "%s", fe.Message)
				return
			}
			bad("webhook", "%s", err.Error())
			return
		}
		sess.Webhook = req.Webhook.URL
	}
	now := time.Now().UTC()
	sess.CreatedAt, sess.ExpiresAt = now, now.Add(expiry)
	sess.ID = "cs_" + newConnectToken()[:22]
	token := newConnectToken()
	b, err := json.Marshal(sess)
	if err != nil {
		h.unavailable(w, r, err)
		return
	}
	if err := h.cfg.Producer.rdb.Set(r.Context(), rediskeys.ConnectSession(tokenHash(token)), b, expiry).Err(); err != nil {
		h.unavailable(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, map[string]any{
		"session":    sess.ID,
		"token":      token,
		"url":        h.cfg.PublicURL + "/connect/" + token,
		"expires_at": sess.ExpiresAt,
	})
}

// checkRedirect refuses a redirect_uri whose origin is not allowed: no
// open redirect.
func (h *handler) checkRedirect(raw string) error {
	if len(h.cfg.ConnectAllowedOrigins) == 0 {
		return errors.New("no origin is allowed: the operator sets CALLQ_CONNECT_ALLOWED_ORIGINS to the origins browsers may be sent back to")
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.User != nil || u.Fragment != "" || len(raw) > 2048 {
		return errors.New("must be an absolute URL without userinfo or fragment, at most 2048 bytes")
	}
	if _, err := url.ParseQuery(u.RawQuery); err != nil {
		// finishConnect adds credential and status to the query: what it
		// cannot read (a ";" separator, a bad escape) would be dropped.
		return fmt.Errorf("its query cannot be read (%s); use & between parameters and valid %%-escapes", err.Error())
	}
	o, err := originOf(u)
	if err != nil {
		return err
	}
	for _, allowed := range h.cfg.ConnectAllowedOrigins {
		if o == allowed {
			return nil
		}
	}
	return fmt.Errorf("origin %s is not in CALLQ_CONNECT_ALLOWED_ORIGINS", o)
}

// connectView is what the hosted page shows: a message, the form of the
// auth type's fields (Form), or the button that starts the OAuth2 dance
// (Start) at Provider.
type connectView struct {
	Title       string
	Message     string
	Form        bool
	Start       bool
	Integration string
	Provider    string
	Action      string
	Error       string
	Fields      []connectField
}

type connectField struct {
	Name, Label, Type string
	Required          bool
}

// anyHTTPS, among connectHeaders' targets, lets a form's redirects reach
// any https origin.
const anyHTTPS = "https:"

// connectHeaders sets the hosted pages' headers: a strict CSP whose
// form-action also lets the redirects after a post reach the origins of
// targets (URLs, or anyHTTPS).
func connectHeaders(w http.ResponseWriter, targets ...string) {
	csp := connectCSP
	for _, t := range targets {
		o := t
		if t != anyHTTPS {
			o = cspOrigin(t)
		}
		if o != "" && !strings.Contains(csp+" ", " "+o+" ") {
			csp += " " + o
		}
	}
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cache-Control", "no-store")
}

// cspOrigin is raw's origin as a CSP source expression (scheme://host[:port],
// lower case), or "" when raw is not an absolute http or https URL whose
// host is plain ASCII: nothing else may reach the header.
func cspOrigin(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return ""
	}
	host := strings.ToLower(u.Host)
	if strings.ContainsFunc(host, func(c rune) bool {
		return !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.ContainsRune(".-:[]", c))
	}) {
		return ""
	}
	return u.Scheme + "://" + host
}

// connectPage answers the hosted page v; its form's redirects may reach
// the origins of targets.
func (h *handler) connectPage(w http.ResponseWriter, status int, v *connectView, targets ...string) {
	connectHeaders(w, targets...)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	var b bytes.Buffer
	if err := connectPage.ExecuteTemplate(&b, "page", v); err != nil {
		h.log.Error().Err(err).Msg("connect page failed to render")
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

func (h *handler) connectMessage(w http.ResponseWriter, status int, title, msg string) {
	h.connectPage(w, status, &connectView{Title: title, Message: msg})
}

var errSessionGone = errors.New("connect session unknown, expired or used")

// loadSession reads the session of token, without using it up (take
// true: and uses it up, atomically, so of two requests one gets it).
func (h *handler) loadSession(ctx context.Context, token string, take bool) (*connectSession, error) {
	if !connectTokenPattern.MatchString(token) {
		return nil, errSessionGone
	}
	key := rediskeys.ConnectSession(tokenHash(token))
	var b []byte
	var err error
	if take {
		b, err = h.cfg.Producer.rdb.GetDel(ctx, key).Bytes()
	} else {
		b, err = h.cfg.Producer.rdb.Get(ctx, key).Bytes()
	}
	if errors.Is(err, redis.Nil) {
		return nil, errSessionGone
	}
	if err != nil {
		return nil, err
	}
	var s connectSession
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("connect session is corrupt in Redis: %w", err)
	}
	if time.Now().After(s.ExpiresAt) {
		return nil, errSessionGone
	}
	return &s, nil
}

// sessionError answers a page for loadSession's error.
func (h *handler) sessionError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, errSessionGone) {
		h.connectMessage(w, http.StatusNotFound, "This link cannot be used",
			"This connect link is unknown, has expired or has already been used. Ask for a new one.")
		return
	}
	h.log.Error().Err(err).Str("path", "/connect").Msg("connect request failed")
	storeDown(w)
	h.connectMessage(w, http.StatusServiceUnavailable, "Try again", "callq cannot reach its store; try again in a moment.")
}

// connectConfigured answers the browser a 503 page when CALLQ_PUBLIC_URL
// is not set.
func (h *handler) connectConfigured(w http.ResponseWriter) bool {
	if h.cfg.PublicURL == "" {
		h.connectMessage(w, http.StatusServiceUnavailable, "Connect is not configured", ErrConnectNotConfigured.Error())
		return false
	}
	return true
}

// linkSession is what the link's pages begin with: the session of the
// token in the path, still usable (not used up here), its integration and
// how it connects, or the page saying why not.
func (h *handler) linkSession(w http.ResponseWriter, r *http.Request) (*connectSession, string, *tasks.Integration, auth.ConnectMethod, bool) {
	if !h.connectConfigured(w) {
		return nil, "", nil, "", false
	}
	token := r.PathValue("token")
	sess, err := h.loadSession(r.Context(), token, false)
	if err != nil {
		h.sessionError(w, r, err)
		return nil, "", nil, "", false
	}
	in, ok := h.cfg.Producer.catalog().Lookup(sess.Integration)
	method := auth.ConnectMethod("")
	if ok {
		method, err = in.Auth.ConnectMethod()
	}
	if !ok || err != nil {
		h.connectMessage(w, http.StatusNotFound, "This link cannot be used", "The integration this link connects is no longer available.")
		return nil, "", nil, "", false
	}
	return sess, token, in, method, true
}

// connectStart is GET (and HEAD) /connect/{token}: the hosted form, or, for
// OAuth2, a page whose button posts to the link to start the dance. Neither
// uses the link up: chat unfurlers, mail scanners and link checkers fetch
// the links they see, and a GET that used it up would leave the end user
// a dead link. There is no script to press the button: a scanner that runs
// scripts would press it too.
func (h *handler) connectStart(w http.ResponseWriter, r *http.Request) {
	sess, token, in, method, ok := h.linkSession(w, r)
	if !ok {
		return
	}
	if method == auth.ConnectForm {
		h.connectPage(w, http.StatusOK, h.formView(in, token, ""), sess.RedirectURI)
		return
	}
	conf, ok := h.authCodeConfig(w, in)
	if !ok {
		return
	}
	provider := ""
	if u, err := url.Parse(conf.Endpoint.AuthURL); err == nil {
		provider = u.Hostname()
	}
	// The button's post is answered by a redirect to the provider, which
	// may pass the browser on at once through hosts of its own (a
	// federated sign-in, a custom domain) before sending it back to the
	// callback and then to redirect_uri; browsers hold every hop to
	// form-action. So any https origin, and the two known ones (which may
	// be http on a loopback host).
	h.connectPage(w, http.StatusOK, &connectView{Title: "Connect " + in.Name, Start: true, Integration: in.Name,
		Provider: provider, Action: h.cfg.PublicURL + "/connect/" + token}, anyHTTPS, conf.Endpoint.AuthURL, sess.RedirectURI)
}

// authCodeConfig is the integration's OAuth2 client, or the page saying it
// cannot be used.
func (h *handler) authCodeConfig(w http.ResponseWriter, in *tasks.Integration) (*oauth2.Config, bool) {
	conf, err := in.Auth.AuthCodeConfig(h.cfg.PublicURL+connectCallbackPath, h.cfg.Credentials.SourceDirs())
	if err != nil {
		h.log.Error().Err(err).Str("integration", in.Name).Msg("connect: the integration's oauth2 client cannot be used")
		h.connectMessage(w, http.StatusServiceUnavailable, "Connect is not available", "This integration's OAuth2 client is misconfigured; the operator has been told.")
		return nil, false
	}
	return conf, true
}

// connectBegin is POST /connect/{token} of an OAuth2 session: it uses the
// link up and sends the browser to the provider, with a state bound to it
// (a cookie) and a PKCE challenge.
func (h *handler) connectBegin(w http.ResponseWriter, r *http.Request, in *tasks.Integration, token string) {
	conf, ok := h.authCodeConfig(w, in)
	if !ok {
		return
	}
	sess, err := h.loadSession(r.Context(), token, true)
	if err != nil {
		h.sessionError(w, r, err)
		return
	}
	state, verifier, browser := newConnectToken(), oauth2.GenerateVerifier(), newConnectToken()
	id := tokenHash(state)
	b, err := json.Marshal(connectState{Session: *sess, Verifier: verifier, Browser: tokenHash(browser)})
	var sealed string
	if err == nil {
		// Sealed: the verifier is what makes a stolen code useless.
		sealed, err = h.cfg.Credentials.SealConnectState(id, b)
	}
	if err == nil {
		err = h.cfg.Producer.rdb.Set(r.Context(), rediskeys.ConnectState(id), sealed, ConnectStateTTL).Err()
	}
	if err != nil {
		h.sessionError(w, r, err)
		return
	}
	opts := append(in.Auth.AuthCodeOptions(), oauth2.S256ChallengeOption(verifier))
	connectHeaders(w)
	http.SetCookie(w, h.stateCookie(stateCookie(state), browser, int(ConnectStateTTL/time.Second)))
	http.Redirect(w, r, conf.AuthCodeURL(state, opts...), http.StatusSeeOther)
}

// stateCookie is the cookie name=value, sent back to the OAuth2 callback
// only (top-level navigations from the provider carry SameSite=Lax ones).
// maxAge -1 deletes it.
func (h *handler) stateCookie(name, value string, maxAge int) *http.Cookie {
	path := connectCallbackPath
	secure := strings.HasPrefix(h.cfg.PublicURL, "https:")
	if u, err := url.Parse(h.cfg.PublicURL); err == nil {
		path = strings.TrimSuffix(u.Path, "/") + connectCallbackPath
	}
	return &http.Cookie{Name: name, Value: value, Path: path, MaxAge: maxAge,
		HttpOnly: true, Secure: secure, SameSite: http.SameSiteLaxMode}
}

// formView is the hosted form of integration in for the session token. It
// posts to the link itself, under CALLQ_PUBLIC_URL.
func (h *handler) formView(in *tasks.Integration, token, errMsg string) *connectView {
	v := &connectView{Title: "Connect " + in.Name, Form: true, Integration: in.Name, Action: h.cfg.PublicURL + "/connect/" + token, Error: errMsg}
	required := in.Auth.RequiredFields()
	for _, name := range in.Auth.ConnectFields() {
		f := connectField{Name: name, Label: fieldLabel(name), Type: "password"}
		if name == auth.FieldUsername {
			f.Type = "text"
		}
		for _, req := range required {
			f.Required = f.Required || req == name
		}
		v.Fields = append(v.Fields, f)
	}
	return v
}

func fieldLabel(name string) string {
	switch name {
	case auth.FieldToken:
		return "API token"
	case auth.FieldKey:
		return "API key"
	case auth.FieldUsername:
		return "Username"
	case auth.FieldPassword:
		return "Password"
	}
	return strings.ReplaceAll(name, "_", " ")
}

// connectSubmit is POST /connect/{token}: the start of the OAuth2 dance
// (connectBegin), or the hosted form's values, stored sealed. They are
// never echoed, logged or redirected.
func (h *handler) connectSubmit(w http.ResponseWriter, r *http.Request) {
	sess, token, in, method, ok := h.linkSession(w, r)
	if !ok {
		return
	}
	if method == auth.ConnectOAuth2 {
		h.connectBegin(w, r, in, token)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxConnectForm)
	if err := r.ParseForm(); err != nil {
		h.connectPage(w, http.StatusBadRequest, h.formView(in, token, "The form could not be read; fill it in again."), sess.RedirectURI)
		return
	}
	fields := map[string]string{}
	for _, name := range in.Auth.ConnectFields() {
		if v := r.PostForm.Get(name); v != "" {
			fields[name] = v
		}
	}
	for _, f := range h.formView(in, token, "").Fields {
		if f.Required && fields[f.Name] == "" {
			h.connectPage(w, http.StatusBadRequest, h.formView(in, token, f.Label+" is required."), sess.RedirectURI)
			return
		}
	}
	if len(fields) == 0 {
		h.connectPage(w, http.StatusBadRequest, h.formView(in, token, "Fill in at least one field."), sess.RedirectURI)
		return
	}
	for _, name := range in.Auth.ConnectFields() {
		v := fields[name]
		if strings.ContainsFunc(v, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
			h.connectPage(w, http.StatusBadRequest, h.formView(in, token, fieldLabel(name)+" holds a character that cannot be sent (a line break or other control character)."), sess.RedirectURI)
			return
		}
		if len(v) > auth.MaxFieldValueBytes {
			h.connectPage(w, http.StatusBadRequest, h.formView(in, token, fmt.Sprintf("%s is longer than %d bytes.", fieldLabel(name), auth.MaxFieldValueBytes)), sess.RedirectURI)
			return
		}
	}
	// Use the session up only now: a form sent back for a missing field
	// can be sent again.
	sess, err := h.loadSession(r.Context(), token, true)
	if err != nil {
		h.sessionError(w, r, err)
		return
	}
	conn := &auth.Connection{Method: auth.ConnectForm, At: time.Now().UTC(), Session: sess.ID}
	_, err = h.cfg.Credentials.PutConnected(r.Context(), sess.Tenant, sess.Credential, sess.Integration, fields, conn)
	var fe *auth.FieldError
	if errors.As(err, &fe) {
		// Field errors name the field, never its value.
		h.finishConnect(w, r, sess, nil, "invalid_value", http.StatusSeeOther)
		return
	}
	if err != nil {
		h.log.Error().Err(err).Str("tenant", sess.Tenant).Str("credential", sess.Credential).Msg("connect: storing the credential failed")
		h.finishConnect(w, r, sess, nil, "server_error", http.StatusSeeOther)
		return
	}
	h.finishConnect(w, r, sess, conn, "", http.StatusSeeOther)
}

var oauthErrorCode = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// connectCallback is GET /connect/callback: the provider sends the browser
// back with a code (or an error) and the state. HEAD answers without
// reading the state: a link checker or prefetch must not use it up.
func (h *handler) connectCallback(w http.ResponseWriter, r *http.Request) {
	if !h.connectConfigured(w) {
		return
	}
	if r.Method != http.MethodGet {
		connectHeaders(w)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		return
	}
	q := r.URL.Query()
	state := q.Get("state")
	gone := func() {
		h.connectMessage(w, http.StatusBadRequest, "This authorization cannot be used",
			"This authorization is unknown, has expired or has already been used. Start again from the application.")
	}
	if !connectTokenPattern.MatchString(state) {
		gone()
		return
	}
	id := tokenHash(state)
	sealed, err := h.cfg.Producer.rdb.GetDel(r.Context(), rediskeys.ConnectState(id)).Result()
	if errors.Is(err, redis.Nil) {
		gone()
		return
	}
	if err != nil {
		h.sessionError(w, r, err)
		return
	}
	b, err := h.cfg.Credentials.OpenConnectState(id, sealed)
	if err != nil {
		// Sealed under a key since removed from CALLQ_SECRET_KEY (or not
		// callq's): as good as expired.
		h.log.Warn().Err(err).Msg("connect: an authorization in flight cannot be opened; the end user must start again")
		gone()
		return
	}
	var st connectState
	if err := json.Unmarshal(b, &st); err != nil {
		h.sessionError(w, r, fmt.Errorf("connect state is corrupt in Redis: %w", err))
		return
	}
	sess := &st.Session
	name := stateCookie(state)
	c, cerr := r.Cookie(name)
	http.SetCookie(w, h.stateCookie(name, "", -1))
	if cerr != nil || subtle.ConstantTimeCompare([]byte(tokenHash(c.Value)), []byte(st.Browser)) != 1 {
		// Not the browser that followed the link: the code is not
		// exchanged, whoever consented.
		h.finishConnect(w, r, sess, nil, "browser_mismatch", http.StatusFound)
		return
	}
	if e := q.Get("error"); e != "" {
		if !oauthErrorCode.MatchString(e) {
			e = "provider_error"
		}
		h.finishConnect(w, r, sess, nil, e, http.StatusFound)
		return
	}
	code := q.Get("code")
	in, ok := h.cfg.Producer.catalog().Lookup(sess.Integration)
	if code == "" || !ok {
		h.finishConnect(w, r, sess, nil, "invalid_request", http.StatusFound)
		return
	}
	conf, err := in.Auth.AuthCodeConfig(h.cfg.PublicURL+connectCallbackPath, h.cfg.Credentials.SourceDirs())
	if err != nil {
		h.log.Error().Err(err).Str("integration", in.Name).Msg("connect: the integration's oauth2 client cannot be used")
		h.finishConnect(w, r, sess, nil, "server_error", http.StatusFound)
		return
	}
	ctx := context.WithValue(r.Context(), oauth2.HTTPClient, h.cfg.ConnectHTTPClient)
	tok, err := conf.Exchange(ctx, code, oauth2.VerifierOption(st.Verifier))
	if err != nil || tok.AccessToken == "" {
		ev := h.log.Warn().Str("tenant", sess.Tenant).Str("integration", sess.Integration).Str("session", sess.ID)
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil {
			// Never the error's text nor the body: they may echo the code.
			code := re.ErrorCode
			if !oauthErrorCode.MatchString(code) {
				code = "unreadable"
			}
			ev = ev.Int("status", re.Response.StatusCode).Str("error_code", code)
		}
		ev.Msg("connect: the token exchange failed; nothing stored")
		h.finishConnect(w, r, sess, nil, "exchange_failed", http.StatusFound)
		return
	}
	// A token without a refresh token is stored (a provider whose tokens
	// do not expire sends none), and said so: in the credential's
	// connection, the webhook and the log.
	conn := auth.OAuth2Connection(tok, time.Now().UTC(), sess.ID)
	_, err = h.cfg.Credentials.PutConnected(r.Context(), sess.Tenant, sess.Credential, sess.Integration, auth.TokenFields(tok), conn)
	if err != nil {
		h.log.Error().Str("tenant", sess.Tenant).Str("credential", sess.Credential).Str("error", errorKind(err)).Msg("connect: storing the tokens failed")
		h.finishConnect(w, r, sess, nil, "server_error", http.StatusFound)
		return
	}
	h.finishConnect(w, r, sess, conn, "", http.StatusFound)
}

// errorKind says what failed without the error's text, which a store error
// about a token might carry.
func errorKind(err error) string {
	var fe *auth.FieldError
	if errors.As(err, &fe) {
		return "invalid field " + fe.Field
	}
	return "redis"
}

// finishConnect tells the tenant (webhook) and sends the browser back to
// the session's redirect_uri with the credential and status (and the
// error code), never a code or a token; without a redirect_uri it answers
// a page of its own. conn is the stored credential's connection (nil when
// nothing was stored).
func (h *handler) finishConnect(w http.ResponseWriter, r *http.Request, sess *connectSession, conn *auth.Connection, errCode string, status int) {
	ev := ConnectEvent{Session: sess.ID, Tenant: sess.Tenant, Integration: sess.Integration, Credential: sess.Credential, Status: "connected", Error: errCode}
	typ := EventCredentialConnected
	if errCode != "" {
		ev.Status, typ = "error", EventCredentialFailed
	}
	if conn != nil {
		ev.Refreshable, ev.ExpiresAt = conn.Refreshable, conn.ExpiresAt
	}
	le := h.log.Info()
	if ev.Refreshable != nil && !*ev.Refreshable {
		le = h.log.Warn().Bool("refreshable", false)
		if ev.ExpiresAt != nil {
			le = le.Time("expires_at", *ev.ExpiresAt)
		}
	}
	le.Str("tenant", sess.Tenant).Str("integration", sess.Integration).Str("credential", sess.Credential).
		Str("session", sess.ID).Str("status", ev.Status).Str("error", errCode).Msg("connect")
	if sess.Webhook != "" {
		task, id, err := tasks.NewEventWebhookTask(sess.Tenant, sess.ID, sess.Webhook, typ, time.Now(), ev)
		if err == nil {
			_, err = h.cfg.Producer.enqueueOrReplace(context.WithoutCancel(r.Context()), task, tasks.WebhookQueue, sess.ID, id)
		}
		if err != nil {
			h.log.Error().Err(err).Str("session", sess.ID).Msg("connect: the webhook could not be queued")
		}
	}
	if sess.RedirectURI == "" {
		if errCode != "" {
			h.connectMessage(w, http.StatusOK, "Not connected", fmt.Sprintf("Your %s account was not connected (%s). You can close this window.", sess.Integration, errCode))
		} else {
			h.connectMessage(w, http.StatusOK, "Connected", fmt.Sprintf("Your %s account is connected. You can close this window.", sess.Integration))
		}
		return
	}
	u, err := url.Parse(sess.RedirectURI)
	if err != nil { // checked when the session was made
		h.connectMessage(w, http.StatusInternalServerError, "Error", "The application's address cannot be used.")
		return
	}
	q := u.Query()
	q.Set("credential", sess.Credential)
	q.Set("status", ev.Status)
	q.Del("error")
	if errCode != "" {
		q.Set("error", errCode)
	}
	u.RawQuery = q.Encode()
	connectHeaders(w, "")
	http.Redirect(w, r, u.String(), status)
}
