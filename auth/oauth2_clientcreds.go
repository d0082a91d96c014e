package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/callq/callq/internal/rediskeys"
)

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
