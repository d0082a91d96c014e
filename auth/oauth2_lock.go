package auth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/callq/callq/internal/rediskeys"
)

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
