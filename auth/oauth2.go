package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/callq/callq/internal/rediskeys"
)

// Grants an oauth2 Spec may name.
const (
	// GrantRefreshToken (the default) keeps a credential's access token
	// fresh with its refresh token.
	GrantRefreshToken = "refresh_token"
	// GrantClientCredentials gets tokens with the client id and secret alone.
	GrantClientCredentials = "client_credentials"
)

// How an oauth2 client authenticates to the token endpoint.
const (
	AuthStyleAuto   = "auto"
	AuthStyleHeader = "header"
	AuthStyleParams = "params"
)

// Credential fields type oauth2 reads and writes.
const (
	FieldAccessToken  = "access_token"
	FieldRefreshToken = "refresh_token"
	// FieldExpiry is the access token's expiry, RFC 3339. Without it the
	// token is used until the upstream answers 401.
	FieldExpiry = "expiry"
	// FieldClientID and FieldClientSecret, when a credential has them,
	// override the Spec's client_id and client_secret.
	FieldClientID     = "client_id"
	FieldClientSecret = "client_secret"
)

// Defaults of OAuthConfig.
const (
	// DefaultExpiryMargin: an access token expiring within this margin is
	// refreshed before the call.
	DefaultExpiryMargin = 30 * time.Second
	// DefaultLockTTL bounds how long one worker holds a credential's refresh
	// lock. Token requests are cut off at a third of it and the write-back
	// of the new tokens fits in the rest, so a lock never expires under a
	// refresh still in flight.
	DefaultLockTTL = 30 * time.Second
	// DefaultWaitPoll is how often a worker waiting on another's refresh
	// reads the stored token again.
	DefaultWaitPoll = 50 * time.Millisecond
	// DefaultTokenTimeout is the timeout of the default token HTTP client.
	DefaultTokenTimeout = 10 * time.Second
)

const (
	// refusalMemory is how long a token endpoint's refusal is shared with
	// the fleet: workers that find it answer with it instead of asking the
	// endpoint again with the same, refused, refresh token or client secret.
	refusalMemory = 10 * time.Second
	// failureMemory is the same for failures that may pass (no answer, 5xx).
	failureMemory = 2 * time.Second
	// ccNoExpiryTTL is how long a client_credentials token that came without
	// expires_in is cached. A 401 replaces it sooner, through ForceRefresh.
	ccNoExpiryTTL = 10 * time.Minute
	// writeBackAttempts bounds the tries to store refreshed tokens.
	writeBackAttempts = 3
	// redisOpTimeout bounds the Redis writes done after the caller's context
	// may have ended (write-back, unlock).
	redisOpTimeout = 5 * time.Second
	// maxProviderText bounds the provider's error code and description kept
	// in an error.
	maxProviderText = 200
	// maxCachedConfigs bounds the per-process cache of oauth2 configs.
	maxCachedConfigs = 256
)

var (
	// ErrTokenRefresh is matched by every error of a token request: the
	// token endpoint refused (see TokenError.Refused) or could not be
	// reached. The concrete error is a *TokenError.
	ErrTokenRefresh = errors.New("oauth2 token request failed")

	// ErrOAuthConfig is matched by errors that another attempt will not fix:
	// the spec is not a valid oauth2 spec, the client secret source cannot be
	// read, the credential is missing, belongs elsewhere, lacks a field (also
	// a *MissingFieldError) or cannot be decrypted.
	ErrOAuthConfig = errors.New("oauth2 credential or configuration cannot be used")
)

// TokenError is a failed token request. It matches ErrTokenRefresh. Its
// fields and message never hold a secret: the provider's error code and
// description are redacted of the client secret and the tokens, and the
// response body is never kept.
type TokenError struct {
	Tenant      string
	Integration string
	Credential  string // ref; empty for a client_credentials token without one
	Grant       string
	// StatusCode is the token endpoint's HTTP status, 0 if it did not answer.
	StatusCode int
	// Code and Description are RFC 6749's error and error_description.
	Code        string
	Description string
	// Refused is true when the endpoint answered with an error that another
	// try with the same credential will not fix (4xx but 408 and 429, or an
	// error code): invalid_grant, invalid_client... The credential needs
	// attention. False means the request may succeed later (no answer, 5xx,
	// 429).
	Refused bool
	// Cause says, redacted, why a request that was not refused failed.
	Cause string
}

func (e *TokenError) Error() string {
	var b strings.Builder
	b.WriteString("oauth2: ")
	if e.Refused {
		b.WriteString("the token endpoint refused ")
		if e.Grant == GrantRefreshToken {
			fmt.Fprintf(&b, "to refresh credential %q of integration %q", e.Credential, e.Integration)
		} else {
			fmt.Fprintf(&b, "a %s token for integration %q", e.Grant, e.Integration)
			if e.Credential != "" {
				fmt.Fprintf(&b, " with credential %q", e.Credential)
			}
		}
		fmt.Fprintf(&b, ": HTTP %d", e.StatusCode)
		if e.Code != "" {
			fmt.Fprintf(&b, ", error %q", e.Code)
		}
		if e.Description != "" {
			fmt.Fprintf(&b, " (%q)", e.Description)
		}
		return b.String()
	}
	if e.Grant == GrantRefreshToken {
		fmt.Fprintf(&b, "refreshing credential %q of integration %q failed: ", e.Credential, e.Integration)
	} else {
		fmt.Fprintf(&b, "getting a %s token for integration %q", e.Grant, e.Integration)
		if e.Credential != "" {
			fmt.Fprintf(&b, " with credential %q", e.Credential)
		}
		b.WriteString(" failed: ")
	}
	b.WriteString(e.Cause)
	return b.String()
}

// Unwrap lets errors.Is(err, ErrTokenRefresh) match.
func (e *TokenError) Unwrap() error { return ErrTokenRefresh }

// OAuthConfig configures an OAuth.
type OAuthConfig struct {
	// Store is where credentials live; refreshed tokens are written back to
	// it, sealed. Required. It must be on the same Redis as NewOAuth's client.
	Store *Store
	// Keyring opens the credentials' sealed fields. Required.
	Keyring *Keyring
	// HTTPClient makes the token requests. The default has a 10s timeout
	// and does not follow redirects (a 307 would resend the client secret
	// and refresh token to wherever it points).
	HTTPClient *http.Client
	// LockTTL is the TTL of the fleet-wide refresh lock. Default 30s. A
	// third of it bounds the token request.
	LockTTL time.Duration
	// ExpiryMargin: a token expiring within it is refreshed. Default 30s.
	ExpiryMargin time.Duration
	// WaitPoll is how often a worker waiting on another's refresh reads the
	// stored token. Default 50ms.
	WaitPoll time.Duration
}

// OAuth gets OAuth2 access tokens for type oauth2 integrations, through
// golang.org/x/oauth2, and keeps them fresh for a whole fleet of workers.
//
// Grant refresh_token: the credential holds access_token, refresh_token and
// expiry. A token that is expired or expires within the margin is refreshed
// by one worker of the fleet, under a Redis lock per credential; the new
// access token and, for providers that rotate them, the new refresh token
// are written back sealed at once. Workers that find the lock taken wait for
// the stored token to change instead of refreshing again, and the lock
// holder reads the credential again after taking the lock, so a rotated
// refresh token is never sent twice (which providers answer with
// invalid_grant).
//
// Grant client_credentials: a token is fetched with the client id and
// secret, cached sealed in Redis until shortly before it expires and shared
// by the fleet, per tenant and integration, or per tenant and credential
// when the call names one (whose client_id and client_secret fields then
// override the spec's).
//
// A token endpoint's answer to a failed request is shared with the fleet for
// a few seconds, so a revoked refresh token costs one request, not one per
// waiting call. An OAuth is safe for concurrent use.
type OAuth struct {
	rdb          redis.UniversalClient
	store        *Store
	keyring      *Keyring
	client       *http.Client
	lockTTL      time.Duration
	margin       time.Duration
	poll         time.Duration
	tokenTimeout time.Duration
	waitLimit    time.Duration
	now          func() time.Time
	// refusalMemory and failureMemory: how long a failure is shared with the
	// fleet (the constants; tests lengthen them so no window closes).
	refusalMemory, failureMemory time.Duration

	mu        sync.Mutex
	configs   map[string]*oauth2.Config
	ccConfigs map[string]*clientcredentials.Config
}

// NewOAuth returns an OAuth over rdb, which holds the refresh locks, the
// client_credentials token cache and the shared failures, and must be the
// Redis of cfg.Store.
func NewOAuth(rdb redis.UniversalClient, cfg *OAuthConfig) (*OAuth, error) {
	if rdb == nil {
		return nil, errors.New("redis client is nil: NewOAuth needs one")
	}
	if cfg == nil || cfg.Store == nil || cfg.Keyring == nil {
		return nil, errors.New("OAuthConfig.Store and OAuthConfig.Keyring are required")
	}
	if cfg.LockTTL < 0 || cfg.ExpiryMargin < 0 || cfg.WaitPoll < 0 {
		return nil, errors.New("OAuthConfig durations must not be negative")
	}
	o := &OAuth{
		rdb:           rdb,
		store:         cfg.Store,
		keyring:       cfg.Keyring,
		client:        cfg.HTTPClient,
		lockTTL:       orDefault(cfg.LockTTL, DefaultLockTTL),
		margin:        orDefault(cfg.ExpiryMargin, DefaultExpiryMargin),
		poll:          orDefault(cfg.WaitPoll, DefaultWaitPoll),
		now:           time.Now,
		refusalMemory: refusalMemory,
		failureMemory: failureMemory,
		configs:       make(map[string]*oauth2.Config),
		ccConfigs:     make(map[string]*clientcredentials.Config),
	}
	if o.client == nil {
		o.client = &http.Client{
			Timeout: DefaultTokenTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	// The token request and the write-back (writeBackAttempts ×
	// redisOpTimeout) must both fit in the lock's life, or another worker
	// could refresh with a refresh token already rotated.
	o.tokenTimeout = o.lockTTL / 3
	o.waitLimit = 2 * o.lockTTL
	return o, nil
}

func orDefault(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}

// Token returns secrets for a call of integration (its catalog name, spec
// its auth block) with a fresh access token under "access_token", for
// Spec.Apply, and every other value to redact: the refresh token, the other
// credential fields but expiry, and the client secret under
// "client_secret". An access token that is missing, expired or expires
// within the margin is refreshed first, once for the whole fleet. cred is
// the call's credential as read from the Store; it may be nil for grant
// client_credentials.
//
// Errors: ErrOAuthConfig (the call cannot succeed as configured),
// ErrTokenRefresh (a *TokenError; see Refused), the context's error, or
// another error when Redis fails.
func (o *OAuth) Token(ctx context.Context, tenant, integration string, spec *Spec, cred *Credential) (Secrets, error) {
	return o.token(ctx, tenant, integration, spec, cred, "")
}

// ForceRefresh is Token after the upstream answered 401 to stale, the access
// token the call used: it refreshes unless the stored token already differs
// from stale (another worker refreshed: that token is returned), so one
// revocation costs one token request across the fleet.
func (o *OAuth) ForceRefresh(ctx context.Context, tenant, integration string, spec *Spec, cred *Credential, stale string) (Secrets, error) {
	if stale == "" {
		return nil, errors.New("ForceRefresh needs the access token the upstream refused")
	}
	return o.token(ctx, tenant, integration, spec, cred, stale)
}

// oauthCall is what one Token or ForceRefresh is about.
type oauthCall struct {
	tenant, integration, ref string
	spec                     *Spec
	grant                    string
	name                     string     // names its keys (internal/rediskeys's OAuth*)
	dirs                     SourceDirs // file: values are read under these
}

func (o *OAuth) token(ctx context.Context, tenant, integration string, spec *Spec, cred *Credential, stale string) (Secrets, error) {
	if spec == nil || spec.Type != TypeOAuth2 {
		return nil, fmt.Errorf("%w: integration %q does not have auth type oauth2", ErrOAuthConfig, integration)
	}
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("%w: integration %q: %w", ErrOAuthConfig, integration, err)
	}
	if err := ValidateTenant(tenant); err != nil {
		return nil, err
	}
	c := &oauthCall{tenant: tenant, integration: integration, spec: spec, grant: spec.grant(), dirs: o.store.SourceDirs()}
	if cred != nil {
		if cred.Tenant != tenant || cred.Integration != integration {
			return nil, fmt.Errorf("%w: credential %q belongs to tenant %q and integration %q, not %q and %q",
				ErrOAuthConfig, cred.Ref, cred.Tenant, cred.Integration, tenant, integration)
		}
		c.ref = cred.Ref
	}
	if c.grant == GrantClientCredentials {
		// The cached token, its lock and its remembered failure belong to
		// one client of one token endpoint: a credential put again (new
		// client_id or secret, another integration) or a catalog change
		// gets a token of its own.
		client := sha256.Sum256([]byte(integration + "\x00" + spec.TokenURL + "\x00" + spec.ClientID + "\x00" + strings.Join(spec.Scopes, " ")))
		suffix := ":" + hex.EncodeToString(client[:6])
		if c.ref != "" {
			c.name = "cc:cred:" + c.ref + suffix + ":" + strconv.FormatInt(cred.UpdatedAt.UnixNano(), 36)
		} else {
			c.name = "cc:int:" + integration + suffix
		}
		return o.clientCredentials(ctx, c, cred, stale)
	}
	if cred == nil {
		return nil, fmt.Errorf("%w: integration %q (oauth2 grant refresh_token) needs a credential and the call names none", ErrOAuthConfig, integration)
	}
	c.name = "cred:" + c.ref
	return o.refresh(ctx, c, cred, stale)
}

// tokenState is a credential of grant refresh_token, opened.
type tokenState struct {
	secrets  Secrets
	access   string
	expiry   time.Time // zero: none given
	expiryOK bool      // false: given, but not RFC 3339
	version  string    // changes with every write of the credential
}

func (o *OAuth) open(cred *Credential) (*tokenState, error) {
	secrets, err := cred.Resolve(o.keyring, o.store.SourceDirs())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrOAuthConfig, err)
	}
	st := &tokenState{secrets: secrets, access: secrets[FieldAccessToken], expiryOK: true, version: credVersion(cred)}
	if e := secrets[FieldExpiry]; e != "" {
		if t, err := time.Parse(time.RFC3339, e); err == nil {
			st.expiry = t
		} else {
			st.expiryOK = false // refreshing writes a good one
		}
	}
	return st, nil
}

// credVersion identifies one write of a credential: every write seals its
// literals again under fresh nonces, and bumps UpdatedAt.
func credVersion(cred *Credential) string {
	b, _ := json.Marshal(cred)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// fresh reports whether st's access token can be used without refreshing.
func (o *OAuth) fresh(st *tokenState, now time.Time) bool {
	if st.access == "" || !st.expiryOK {
		return false
	}
	return st.expiry.IsZero() || st.expiry.Sub(now) > o.margin
}

// acceptable reports whether st, read while this call waited or after it
// took the lock, has a token this call can use: a fresh one, or one that
// another worker wrote since base (the version this call started from) and
// that has not expired, even if within the margin (a provider may issue
// tokens shorter-lived than the margin: do not refresh those again and
// again). stale, if set, is never acceptable.
func (o *OAuth) acceptable(st *tokenState, base, stale string, now time.Time) bool {
	if stale != "" && st.access == stale {
		return false
	}
	if o.fresh(st, now) {
		return true
	}
	return st.version != base && st.access != "" && st.expiryOK && (st.expiry.IsZero() || st.expiry.After(now))
}

func (o *OAuth) refresh(ctx context.Context, c *oauthCall, cred *Credential, stale string) (Secrets, error) {
	st, err := o.open(cred)
	if err != nil {
		return nil, err
	}
	if stale == "" && o.fresh(st, o.now()) {
		return c.secrets(st.secrets)
	}
	base := st.version
	deadline := o.now().Add(o.waitLimit)
	for {
		st, failure, err := o.readCredential(ctx, c)
		if err != nil {
			return nil, err
		}
		if o.acceptable(st, base, stale, o.now()) {
			return c.secrets(st.secrets)
		}
		if failure != nil && failure.Version == st.version {
			return nil, failure.tokenError(c)
		}
		lock, ok, err := o.lock(ctx, c)
		if err != nil {
			return nil, err
		}
		if ok {
			secrets, err := o.refreshLocked(ctx, c, base, stale)
			o.unlock(ctx, c, lock)
			return secrets, err
		}
		if err := o.wait(ctx, c, deadline); err != nil {
			return nil, err
		}
	}
}

// refreshLocked refreshes the credential, holding its lock.
func (o *OAuth) refreshLocked(ctx context.Context, c *oauthCall, base, stale string) (Secrets, error) {
	// Another worker may have refreshed between this call's last read and
	// its lock: read again, lest a rotated refresh token be sent twice.
	st, failure, err := o.readCredential(ctx, c)
	if err != nil {
		return nil, err
	}
	if o.acceptable(st, base, stale, o.now()) {
		return c.secrets(st.secrets)
	}
	if failure != nil && failure.Version == st.version {
		return nil, failure.tokenError(c)
	}
	refreshToken := st.secrets[FieldRefreshToken]
	if refreshToken == "" {
		return nil, fmt.Errorf("%w: credential %q: %w", ErrOAuthConfig, c.ref, &MissingFieldError{Field: FieldRefreshToken, AuthType: TypeOAuth2})
	}
	clientID, clientSecret, err := c.client(st.secrets)
	if err != nil {
		return nil, err
	}
	redactor := NewRedactor(clientSecret, refreshToken, st.access, stale)

	conf := o.refreshConfig(c.spec, clientID, clientSecret)
	rctx, cancel := o.requestContext(ctx)
	// No access token: x/oauth2 refreshes at once, whatever the expiry.
	tok, err := conf.TokenSource(rctx, &oauth2.Token{RefreshToken: refreshToken}).Token()
	cancel()
	if err != nil {
		te := c.tokenError(err, redactor, o.tokenTimeout)
		o.remember(ctx, c, st.version, te)
		return nil, te
	}

	// x/oauth2 keeps the old refresh token when the provider sends none.
	fields := map[string]string{
		FieldAccessToken:  tok.AccessToken,
		FieldRefreshToken: tok.RefreshToken,
		FieldExpiry:       "",
	}
	if !tok.Expiry.IsZero() {
		fields[FieldExpiry] = tok.Expiry.UTC().Format(time.RFC3339)
	}
	if err := o.writeBack(ctx, c, fields, st.version); err != nil {
		return nil, err
	}
	secrets := make(Secrets, len(st.secrets)+len(fields))
	for k, v := range st.secrets {
		secrets[k] = v
	}
	for k, v := range fields {
		secrets[k] = v
	}
	return c.secrets(secrets)
}

// writeBack stores refreshed tokens, unless the credential changed since it
// was read under the lock (an admin put a new one: keep theirs; this call
// still uses the tokens it got). It does not give up when the call's context
// ends: a rotated refresh token that is not stored is lost for good.
func (o *OAuth) writeBack(ctx context.Context, c *oauthCall, fields map[string]string, version string) error {
	unchanged := func(cur *Credential) bool { return credVersion(cur) == version }
	var err error
	for attempt := range writeBackAttempts {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
		}
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), redisOpTimeout)
		_, err = o.store.updateFields(wctx, c.tenant, c.ref, fields, unchanged)
		cancel()
		if err == nil || errors.Is(err, errCredentialChanged) || errors.Is(err, ErrCredentialNotFound) {
			return nil
		}
		var fe *FieldError
		if errors.As(err, &fe) {
			break
		}
	}
	return fmt.Errorf("credential %q of integration %q was refreshed but the new tokens could not be stored (if the provider rotates refresh tokens, the credential must be put again): %w", c.ref, c.integration, err)
}

// readCredential reads the credential and the failure shared for it, in one
// round trip.
func (o *OAuth) readCredential(ctx context.Context, c *oauthCall) (*tokenState, *failureRecord, error) {
	pipe := o.rdb.Pipeline()
	credCmd := pipe.Get(ctx, rediskeys.Credential(c.tenant, c.ref))
	failCmd := pipe.Get(ctx, rediskeys.OAuthFailure(c.tenant, c.name))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, fmt.Errorf("reading credential %q failed: %w", c.ref, err)
	}
	b, err := credCmd.Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil, fmt.Errorf("%w: %w", ErrOAuthConfig, notFound(c.tenant, c.ref))
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading credential %q failed: %w", c.ref, err)
	}
	cred, err := decodeCredential(b, c.tenant, c.ref)
	if err != nil {
		return nil, nil, err
	}
	if cred.Integration != c.integration {
		return nil, nil, fmt.Errorf("%w: credential %q now belongs to integration %q, not %q", ErrOAuthConfig, c.ref, cred.Integration, c.integration)
	}
	st, err := o.open(cred)
	if err != nil {
		return nil, nil, err
	}
	return st, decodeFailure(failCmd), nil
}

// secrets completes a credential's resolved fields for the call: expiry is
// dropped (not secret, and a redacted timestamp would garble records), the
// client secret added.
func (c *oauthCall) secrets(fields Secrets) (Secrets, error) {
	_, clientSecret, err := c.client(fields)
	if err != nil {
		return nil, err
	}
	out := make(Secrets, len(fields)+1)
	for k, v := range fields {
		out[k] = v
	}
	delete(out, FieldExpiry)
	if clientSecret != "" {
		out[FieldClientSecret] = clientSecret
	}
	return out, nil
}

// client returns the client id and secret: the credential's fields if it
// has them, else the spec's, the secret resolved from its source now.
func (c *oauthCall) client(fields Secrets) (id, secret string, err error) {
	id, secret = c.spec.ClientID, fields[FieldClientSecret]
	if v := fields[FieldClientID]; v != "" {
		id = v
	}
	if secret == "" && c.spec.ClientSecret != "" {
		secret, err = resolveSecretSource(c.spec.ClientSecret, c.dirs)
		if err != nil {
			return "", "", fmt.Errorf("%w: integration %q: auth.client_secret: %w", ErrOAuthConfig, c.integration, err)
		}
	}
	if secret == "" && c.grant == GrantClientCredentials {
		return "", "", fmt.Errorf("%w: integration %q: grant client_credentials needs a client_secret, in the auth block or the credential", ErrOAuthConfig, c.integration)
	}
	return id, secret, nil
}

// ccToken is a client_credentials token as cached, sealed, in Redis.
type ccToken struct {
	AccessToken string    `json:"access_token"`
	Expiry      time.Time `json:"expiry,omitzero"`
}

func (o *OAuth) clientCredentials(ctx context.Context, c *oauthCall, cred *Credential, stale string) (Secrets, error) {
	var fields Secrets
	if cred != nil {
		var err error
		if fields, err = cred.Resolve(o.keyring, c.dirs); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrOAuthConfig, err)
		}
	}
	clientID, clientSecret, err := c.client(fields)
	if err != nil {
		return nil, err
	}
	secretsWith := func(access string) (Secrets, error) {
		out, err := c.secrets(fields)
		if err != nil {
			return nil, err
		}
		out[FieldAccessToken] = access
		return out, nil
	}

	deadline := o.now().Add(o.waitLimit)
	for {
		tok, failure, err := o.readCached(ctx, c)
		if err != nil {
			return nil, err
		}
		if tok != nil && tok.AccessToken != stale {
			return secretsWith(tok.AccessToken)
		}
		if failure != nil {
			return nil, failure.tokenError(c)
		}
		lock, ok, err := o.lock(ctx, c)
		if err != nil {
			return nil, err
		}
		if ok {
			access, err := o.fetchLocked(ctx, c, clientID, clientSecret, stale)
			o.unlock(ctx, c, lock)
			if err != nil {
				return nil, err
			}
			return secretsWith(access)
		}
		if err := o.wait(ctx, c, deadline); err != nil {
			return nil, err
		}
	}
}

// fetchLocked gets a client_credentials token and caches it, holding the
// lock.
func (o *OAuth) fetchLocked(ctx context.Context, c *oauthCall, clientID, clientSecret, stale string) (string, error) {
	tok, failure, err := o.readCached(ctx, c)
	if err != nil {
		return "", err
	}
	if tok != nil && tok.AccessToken != stale {
		return tok.AccessToken, nil
	}
	if failure != nil {
		return "", failure.tokenError(c)
	}
	redactor := NewRedactor(clientSecret, stale)
	conf := o.ccConfig(c.spec, clientID, clientSecret)
	rctx, cancel := o.requestContext(ctx)
	got, err := conf.Token(rctx)
	cancel()
	if err != nil {
		te := c.tokenError(err, redactor, o.tokenTimeout)
		o.remember(ctx, c, "", te)
		return "", te
	}

	ttl := ccNoExpiryTTL
	if !got.Expiry.IsZero() {
		life := got.Expiry.Sub(o.now())
		ttl = max(life-o.margin, life/2) // a token shorter-lived than the margin is cached half its life
	}
	if ttl >= time.Millisecond {
		if err := o.store.putCCToken(ctx, c, &ccToken{AccessToken: got.AccessToken, Expiry: got.Expiry}, ttl); err != nil {
			return "", err
		}
	}
	return got.AccessToken, nil
}

func (o *OAuth) readCached(ctx context.Context, c *oauthCall) (*ccToken, *failureRecord, error) {
	pipe := o.rdb.Pipeline()
	tokCmd := pipe.Get(ctx, rediskeys.OAuthToken(c.tenant, c.name))
	failCmd := pipe.Get(ctx, rediskeys.OAuthFailure(c.tenant, c.name))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, fmt.Errorf("reading the cached oauth2 token of integration %q failed: %w", c.integration, err)
	}
	failure := decodeFailure(failCmd)
	sealed, err := tokCmd.Result()
	if errors.Is(err, redis.Nil) {
		return nil, failure, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading the cached oauth2 token of integration %q failed: %w", c.integration, err)
	}
	tok, err := o.store.openCCToken(c, sealed)
	if err != nil {
		// Unreadable (sealed under a key since removed from the ring, say):
		// as good as absent; a new token replaces it.
		return nil, failure, nil
	}
	return tok, failure, nil
}

func ccAAD(c *oauthCall) []byte {
	return []byte("oauthcc\x00" + c.tenant + "\x00" + c.name)
}

// putCCToken caches a client_credentials token sealed, for ttl.
func (s *Store) putCCToken(ctx context.Context, c *oauthCall, tok *ccToken, ttl time.Duration) error {
	b, err := json.Marshal(tok)
	if err != nil {
		return fmt.Errorf("encoding the oauth2 token of integration %q failed: %w", c.integration, err)
	}
	sealed, err := s.keyring.Seal(b, ccAAD(c))
	if err != nil {
		return fmt.Errorf("sealing the oauth2 token of integration %q failed: %w", c.integration, err)
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), redisOpTimeout)
	defer cancel()
	if err := s.rdb.Set(wctx, rediskeys.OAuthToken(c.tenant, c.name), sealed, ttl).Err(); err != nil {
		return fmt.Errorf("caching the oauth2 token of integration %q failed: %w", c.integration, err)
	}
	return nil
}

func (s *Store) openCCToken(c *oauthCall, sealed string) (*ccToken, error) {
	b, err := s.keyring.Open(sealed, ccAAD(c))
	if err != nil {
		return nil, err
	}
	var tok ccToken
	if err := json.Unmarshal(b, &tok); err != nil || tok.AccessToken == "" {
		return nil, errors.New("cached oauth2 token is corrupt")
	}
	return &tok, nil
}

// unlockScript deletes the lock only if it still holds this holder's token:
// a lock that expired and was taken by another worker is not released.
var unlockScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0`)

func (o *OAuth) lock(ctx context.Context, c *oauthCall) (token string, ok bool, err error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", false, fmt.Errorf("reading random bytes for a lock token failed: %w", err)
	}
	token = hex.EncodeToString(b)
	ok, err = o.rdb.SetNX(ctx, rediskeys.OAuthLock(c.tenant, c.name), token, o.lockTTL).Result()
	if err != nil {
		return "", false, fmt.Errorf("taking the oauth2 refresh lock of integration %q failed: %w", c.integration, err)
	}
	return token, ok, nil
}

func (o *OAuth) unlock(ctx context.Context, c *oauthCall, token string) {
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), redisOpTimeout)
	defer cancel()
	// On failure the lock expires after LockTTL.
	_ = unlockScript.Run(uctx, o.rdb, []string{rediskeys.OAuthLock(c.tenant, c.name)}, token).Err()
}

// wait sleeps about one poll interval, or fails when the caller's context
// ends or another worker's refresh has been waited on for too long.
func (o *OAuth) wait(ctx context.Context, c *oauthCall, deadline time.Time) error {
	if o.now().After(deadline) {
		return &TokenError{Tenant: c.tenant, Integration: c.integration, Credential: c.ref, Grant: c.grant,
			Cause: fmt.Sprintf("another worker's token request did not finish within %s", o.waitLimit)}
	}
	d := time.Duration(float64(o.poll) * (0.75 + 0.5*mrand.Float64()))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// requestContext is the context of a token request: not canceled with the
// call (a refresh cut short after the provider rotated the refresh token
// would lose it), bounded well within the lock's TTL.
func (o *OAuth) requestContext(ctx context.Context) (context.Context, context.CancelFunc) {
	rctx := context.WithValue(context.WithoutCancel(ctx), oauth2.HTTPClient, o.client)
	return context.WithTimeout(rctx, o.tokenTimeout)
}

// tokenError turns a failed token request into a *TokenError, redacted.
func (c *oauthCall) tokenError(err error, redactor *Redactor, timeout time.Duration) *TokenError {
	te := &TokenError{Tenant: c.tenant, Integration: c.integration, Credential: c.ref, Grant: c.grant}
	var re *oauth2.RetrieveError
	switch {
	case errors.As(err, &re):
		// re.Error() and re.Body may hold the whole response: never used.
		if re.Response != nil {
			te.StatusCode = re.Response.StatusCode
		}
		te.Code = providerText(redactor.String(re.ErrorCode))
		te.Description = providerText(redactor.String(re.ErrorDescription))
		s := te.StatusCode
		te.Refused = (s >= 400 && s < 500 && s != http.StatusRequestTimeout && s != http.StatusTooManyRequests) ||
			(s < 400 && te.Code != "")
		if !te.Refused {
			te.Cause = fmt.Sprintf("the token endpoint answered HTTP %d", s)
			if te.Code != "" {
				te.Cause += fmt.Sprintf(", error %q", te.Code)
			}
		}
	case errors.Is(err, context.DeadlineExceeded):
		te.Cause = fmt.Sprintf("no answer from the token endpoint within %s", timeout)
	default:
		var ue *url.Error
		if errors.As(err, &ue) && ue.Timeout() {
			te.Cause = "no answer from the token endpoint within the HTTP client's timeout"
		} else {
			te.Cause = providerText(redactor.String(err.Error()))
		}
	}
	return te
}

// providerText keeps text from the token endpoint printable and short.
func providerText(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxProviderText {
		cut := maxProviderText
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return strings.TrimSpace(s)
}

// failureRecord is a failed token request shared with the fleet, so that
// workers waiting on it answer with it instead of repeating it. Its text is
// redacted already.
type failureRecord struct {
	Version     string `json:"v,omitempty"` // the credential version it failed for
	StatusCode  int    `json:"status,omitempty"`
	Code        string `json:"code,omitempty"`
	Description string `json:"description,omitempty"`
	Refused     bool   `json:"refused,omitempty"`
	Cause       string `json:"cause,omitempty"`
}

func (f *failureRecord) tokenError(c *oauthCall) *TokenError {
	return &TokenError{Tenant: c.tenant, Integration: c.integration, Credential: c.ref, Grant: c.grant,
		StatusCode: f.StatusCode, Code: f.Code, Description: f.Description, Refused: f.Refused, Cause: f.Cause}
}

func decodeFailure(cmd *redis.StringCmd) *failureRecord {
	b, err := cmd.Bytes()
	if err != nil {
		return nil
	}
	var f failureRecord
	if json.Unmarshal(b, &f) != nil {
		return nil
	}
	return &f
}

// remember shares te with the fleet for a while: refusals longer, since the
// same request would be refused again.
func (o *OAuth) remember(ctx context.Context, c *oauthCall, version string, te *TokenError) {
	b, err := json.Marshal(&failureRecord{Version: version, StatusCode: te.StatusCode, Code: te.Code,
		Description: te.Description, Refused: te.Refused, Cause: te.Cause})
	if err != nil {
		return
	}
	ttl := o.failureMemory
	if te.Refused {
		ttl = o.refusalMemory
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), redisOpTimeout)
	defer cancel()
	_ = o.rdb.Set(wctx, rediskeys.OAuthFailure(c.tenant, c.name), b, ttl).Err() // best effort
}

func (o *OAuth) refreshConfig(spec *Spec, clientID, clientSecret string) *oauth2.Config {
	// One config per client, kept: with auth_style auto, x/oauth2 probes the
	// style once per config and remembers it.
	return cachedConfig(&o.mu, o.configs, configKey(spec, clientID, clientSecret), func() *oauth2.Config {
		return &oauth2.Config{
			ClientID:     clientID,
			ClientSecret: clientSecret,
			Endpoint:     oauth2.Endpoint{TokenURL: spec.TokenURL, AuthStyle: spec.oauth2AuthStyle()},
			Scopes:       spec.Scopes,
		}
	})
}

func (o *OAuth) ccConfig(spec *Spec, clientID, clientSecret string) *clientcredentials.Config {
	return cachedConfig(&o.mu, o.ccConfigs, configKey(spec, clientID, clientSecret), func() *clientcredentials.Config {
		return &clientcredentials.Config{
			ClientID:     clientID,
			ClientSecret: clientSecret,
			TokenURL:     spec.TokenURL,
			Scopes:       spec.Scopes,
			AuthStyle:    spec.oauth2AuthStyle(),
		}
	})
}

// cachedConfig returns m's config for key, building it once; the map is
// bounded by dropping everything when full.
func cachedConfig[T any](mu *sync.Mutex, m map[string]*T, key string, build func() *T) *T {
	mu.Lock()
	defer mu.Unlock()
	if conf, ok := m[key]; ok {
		return conf
	}
	if len(m) >= maxCachedConfigs {
		clear(m)
	}
	conf := build()
	m[key] = conf
	return conf
}

func configKey(spec *Spec, clientID, clientSecret string) string {
	h := sha256.New()
	for _, part := range append([]string{spec.TokenURL, clientID, clientSecret, spec.AuthStyle}, spec.Scopes...) {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// grant returns the spec's grant, refresh_token if none is given.
func (s *Spec) grant() string {
	if s.Grant == "" {
		return GrantRefreshToken
	}
	return s.Grant
}

func (s *Spec) oauth2AuthStyle() oauth2.AuthStyle {
	switch s.AuthStyle {
	case AuthStyleHeader:
		return oauth2.AuthStyleInHeader
	case AuthStyleParams:
		return oauth2.AuthStyleInParams
	default:
		return oauth2.AuthStyleAutoDetect
	}
}

func (s *Spec) validateOAuth2() error {
	if s.TokenURL == "" {
		return fieldErrorf("auth.token_url", "token_url is required for auth type oauth2")
	}
	u, err := url.Parse(s.TokenURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fieldErrorf("auth.token_url", "token_url must be an absolute http or https URL, got %q", s.TokenURL)
	}
	if u.User != nil || u.Fragment != "" {
		return fieldErrorf("auth.token_url", "token_url must not hold userinfo or a fragment")
	}
	if s.ClientID == "" {
		return fieldErrorf("auth.client_id", "client_id is required for auth type oauth2")
	}
	if hasControl(s.ClientID) {
		return fieldErrorf("auth.client_id", "client_id contains a control character")
	}
	if isSecretSource(s.ClientSecret) {
		if _, err := ParseValue(nil, s.ClientSecret, nil); err != nil {
			return fieldErrorf("auth.client_secret", "%s", err.Error())
		}
	} else if hasControl(s.ClientSecret) {
		return fieldErrorf("auth.client_secret", "client_secret contains a control character")
	}
	for i, scope := range s.Scopes {
		if scope == "" || strings.ContainsFunc(scope, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return fieldErrorf(fmt.Sprintf("auth.scopes[%d]", i), "scope %q is not valid: want a non-empty token without spaces", scope)
		}
	}
	switch s.Grant {
	case "", GrantRefreshToken, GrantClientCredentials:
	default:
		return fieldErrorf("auth.grant", "grant %q is not valid: want refresh_token or client_credentials", s.Grant)
	}
	switch s.AuthStyle {
	case "", AuthStyleAuto, AuthStyleHeader, AuthStyleParams:
	default:
		return fieldErrorf("auth.auth_style", "auth_style %q is not valid: want header, params or auto", s.AuthStyle)
	}
	return nil
}

// isSecretSource reports whether raw names a source ("env:NAME",
// "file:/path") rather than being a literal secret.
func isSecretSource(raw string) bool {
	return strings.HasPrefix(raw, envPrefix) || strings.HasPrefix(raw, filePrefix)
}

// resolveSecretSource returns the secret raw stands for: read from the
// environment or a file (under dirs) now, or raw itself if it is a literal.
func resolveSecretSource(raw string, dirs SourceDirs) (string, error) {
	if !isSecretSource(raw) {
		return raw, nil
	}
	v, err := ParseValue(nil, raw, nil)
	if err != nil {
		return "", err
	}
	return v.Resolve(nil, nil, dirs)
}
