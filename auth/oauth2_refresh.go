package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"

	"github.com/callq/callq/internal/rediskeys"
)

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
		// Nothing to refresh with (a provider that sent no refresh token):
		// the access token serves to its end, margin or not.
		if stale == "" && st.access != "" && st.expiryOK && st.expiry.After(o.now()) {
			return c.secrets(st.secrets)
		}
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

	// x/oauth2 keeps the old refresh token when the provider sends none. A
	// new token without an expiry drops the old one ("" removes a field).
	fields := TokenFields(tok)
	if _, ok := fields[FieldExpiry]; !ok {
		fields[FieldExpiry] = ""
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
