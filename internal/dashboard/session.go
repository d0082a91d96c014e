package dashboard

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/rediskeys"
)

// Cookies.
const (
	sessionCookie = "callq_session"
	loginCookie   = "callq_login_csrf"
	cookiePath    = "/ui/"
	// maxKeyLen bounds what the sign-in form hashes: keys are 46
	// characters, a dev key a little more.
	maxKeyLen = 1024
)

// errNoSession: the request has no session, or its session has ended
// (idle, signed out, or its key revoked).
var errNoSession = errors.New("dashboard: no session")

// session is a signed-in operator: what Redis holds under the hash of the
// session's token. The API key is not part of it.
type session struct {
	Tenant    string    `json:"tenant"`
	Role      auth.Role `json:"role"`
	KeyID     string    `json:"key_id"`
	CSRF      string    `json:"csrf"`
	CreatedAt time.Time `json:"created_at"`

	// hash names the session's key in Redis.
	hash string
}

// Admin reports whether the session's key is an admin's.
func (s *session) Admin() bool { return s.Role == auth.RoleAdmin }

// newToken is 32 random bytes, base64url.
func newToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("reading random bytes failed: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// secure reports whether r came over TLS, directly or through a proxy
// that says so: a cookie then travels over TLS only. A client cannot gain
// by claiming TLS falsely: it would only lose its cookie.
func secure(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

// setCookie sets (maxAge 0: for the browser session) or, with maxAge -1,
// deletes cookie name.
func setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: cookiePath, MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secure(r),
	})
}

// startSession makes a session of key and returns its token.
func (d *dashboard) startSession(ctx context.Context, key *auth.APIKey) (string, error) {
	token, err := newToken()
	if err != nil {
		return "", err
	}
	csrf, err := newToken()
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(&session{Tenant: key.Tenant, Role: key.Role, KeyID: key.ID, CSRF: csrf, CreatedAt: time.Now().UTC()})
	if err != nil {
		return "", err
	}
	if err := d.cfg.Redis.Set(ctx, rediskeys.UISession(tokenHash(token)), b, d.cfg.SessionIdle).Err(); err != nil {
		return "", fmt.Errorf("storing a session failed: %w", err)
	}
	return token, nil
}

// session returns r's session, renewing its idle expiry if renew, or
// errNoSession. A session whose key is gone is ended here.
func (d *dashboard) session(r *http.Request, renew bool) (*session, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" || len(c.Value) > 64 {
		return nil, errNoSession
	}
	ctx := r.Context()
	hash := tokenHash(c.Value)
	key := rediskeys.UISession(hash)
	var b []byte
	if renew {
		b, err = d.cfg.Redis.GetEx(ctx, key, d.cfg.SessionIdle).Bytes()
	} else {
		b, err = d.cfg.Redis.Get(ctx, key).Bytes()
	}
	if errors.Is(err, redis.Nil) {
		return nil, errNoSession
	}
	if err != nil {
		return nil, fmt.Errorf("reading a session failed: %w", err)
	}
	var s session
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("a session is corrupt in Redis: %w", err)
	}
	s.hash = hash
	apiKey, err := d.cfg.Keys.Lookup(ctx, s.KeyID)
	if errors.Is(err, auth.ErrAPIKeyNotFound) || err == nil && (apiKey.Tenant != s.Tenant || apiKey.Role != s.Role) {
		// Revoked: the session ends with its key.
		_ = d.cfg.Redis.Del(context.WithoutCancel(ctx), key).Err()
		return nil, errNoSession
	}
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// page is a handler of a signed-in page.
type page func(w http.ResponseWriter, r *http.Request, s *session)

// signedIn serves fn to a signed-in operator (an admin if admin), after
// checking a POST's CSRF token. Without a session, a page sends the
// browser to sign in; a POST or the rows' refresh answers 401.
func (d *dashboard) signedIn(admin bool, fn page) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		refresh := r.URL.Query().Get("fragment") != ""
		s, err := d.session(r, !refresh)
		switch {
		case errors.Is(err, errNoSession):
			if _, cerr := r.Cookie(sessionCookie); cerr == nil {
				setCookie(w, r, sessionCookie, "", -1)
			}
			if r.Method == http.MethodGet && !refresh {
				http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
				return
			}
			d.fail(w, r, nil, http.StatusUnauthorized, "You are not signed in, or your session has ended. Sign in again.")
			return
		case err != nil:
			d.unavailable(w, r, nil, err)
			return
		}
		if r.Method == http.MethodPost && !validCSRF(r.PostFormValue("csrf"), s.CSRF) {
			d.fail(w, r, s, http.StatusForbidden, "This form has expired or did not come from this dashboard, so nothing was done. Reload the page and try again.")
			return
		}
		if admin && !s.Admin() {
			d.fail(w, r, s, http.StatusForbidden, "This page is for admin keys; this key's role is "+string(s.Role)+".")
			return
		}
		fn(w, r, s)
	}
}

// validCSRF compares a form's token with the expected one in constant time.
func validCSRF(got, want string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// loginData is the sign-in form's.
type loginData struct {
	CSRF string
}

// loginForm shows the sign-in form, with a fresh double-submit token.
func (d *dashboard) loginForm(w http.ResponseWriter, r *http.Request) {
	if _, err := d.session(r, true); err == nil {
		http.Redirect(w, r, "/ui/calls", http.StatusSeeOther)
		return
	}
	d.showLogin(w, r, http.StatusOK, "", false)
}

// showLogin answers status with the sign-in form and alert, keeping the
// browser's double-submit token if it has one, unless fresh.
func (d *dashboard) showLogin(w http.ResponseWriter, r *http.Request, status int, alert string, fresh bool) {
	token := ""
	if c, err := r.Cookie(loginCookie); err == nil && len(c.Value) == 43 && !fresh {
		token = c.Value
	} else {
		var err error
		if token, err = newToken(); err != nil {
			d.unavailable(w, r, nil, err)
			return
		}
		setCookie(w, r, loginCookie, token, 0)
	}
	d.render(w, r, status, "login", &view{Title: "Sign in", Alert: alert, Data: loginData{CSRF: token}})
}

// login exchanges an API key for a session.
func (d *dashboard) login(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie(loginCookie)
	if err != nil || !validCSRF(r.PostFormValue("csrf"), c.Value) {
		d.showLogin(w, r, http.StatusForbidden, "The sign-in form had expired. Try again.", true)
		return
	}
	secret := strings.TrimSpace(r.PostFormValue("key"))
	var key *auth.APIKey
	if len(secret) <= maxKeyLen {
		key, err = d.cfg.Keys.Authenticate(r.Context(), secret)
	} else {
		err = auth.ErrInvalidAPIKey
	}
	if errors.Is(err, auth.ErrInvalidAPIKey) {
		d.log.Info().Str("remote_addr", r.RemoteAddr).Msg("sign-in refused: the API key is not valid")
		d.showLogin(w, r, http.StatusUnauthorized, "That API key is not valid.", false)
		return
	}
	if err != nil {
		d.unavailable(w, r, nil, err)
		return
	}
	// A session from before is ended, not reused (fixation).
	if old, err := r.Cookie(sessionCookie); err == nil && old.Value != "" {
		_ = d.cfg.Redis.Del(r.Context(), rediskeys.UISession(tokenHash(old.Value))).Err()
	}
	token, err := d.startSession(r.Context(), key)
	if err != nil {
		d.unavailable(w, r, nil, err)
		return
	}
	setCookie(w, r, sessionCookie, token, 0)
	setCookie(w, r, loginCookie, "", -1)
	d.log.Info().Str("tenant", key.Tenant).Str("key_id", key.ID).Msg("signed in")
	http.Redirect(w, r, "/ui/calls", http.StatusSeeOther)
}

// logout ends the session.
func (d *dashboard) logout(w http.ResponseWriter, r *http.Request, s *session) {
	if err := d.cfg.Redis.Del(r.Context(), rediskeys.UISession(s.hash)).Err(); err != nil {
		d.unavailable(w, r, s, err)
		return
	}
	setCookie(w, r, sessionCookie, "", -1)
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}
