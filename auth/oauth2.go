package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
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
	name                     string     // lock and failure key suffix
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
