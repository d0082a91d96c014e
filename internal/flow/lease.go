package flow

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrLeaseLapsed is Keep's error when the lease lapsed (this process
// stalled past it) and another process may hold it now.
var ErrLeaseLapsed = errors.New("flow: the lease lapsed")

// Lease is a fleet-wide lease in Redis under one key: the process whose
// token the key holds is the fleet's one holder (the reconciler, the
// scheduler) until it releases the key or stops renewing it for TTL. It is
// not safe for concurrent use: its owner serializes its runs.
type Lease struct {
	rdb   redis.UniversalClient
	key   string
	token string // unique to this process (its name and random bytes)
	ttl   time.Duration
	what  string // "the reconciler's lease", in errors

	held      bool
	renewedAt time.Time
}

// NewLease returns the lease under key for the holder token, outliving its
// holder's last renewal by ttl; what names it in errors.
func NewLease(rdb redis.UniversalClient, key, token string, ttl time.Duration, what string) *Lease {
	return &Lease{rdb: rdb, key: key, token: token, ttl: ttl, what: what}
}

var renewLeaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`)

// releaseLeaseScript deletes the lease only while it is this holder's: a
// lease that lapsed and was taken by another is left alone.
var releaseLeaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// Held says whether this process held the lease when it last looked.
func (l *Lease) Held() bool { return l.held }

// Hold renews the lease this process holds, or takes it if it is free,
// and says whether this process holds it now.
func (l *Lease) Hold(ctx context.Context) (bool, error) {
	now := time.Now()
	if l.held {
		ok, err := renewLeaseScript.Run(ctx, l.rdb, []string{l.key}, l.token, l.ttl.Milliseconds()).Bool()
		if err != nil {
			return false, fmt.Errorf("renew %s: %w", l.what, err)
		}
		if ok {
			l.renewedAt = now
			return true, nil
		}
		l.held = false // it lapsed while this process stalled
	}
	ok, err := l.rdb.SetNX(ctx, l.key, l.token, l.ttl).Result()
	if err != nil {
		return false, fmt.Errorf("take %s: %w", l.what, err)
	}
	l.held, l.renewedAt = ok, now
	return ok, nil
}

// Keep checks, between pieces of a run under the lease, that the run
// should go on: ctx has not ended and the lease is still this process's
// (renewed once a third of it has passed). ErrLeaseLapsed says it is not.
func (l *Lease) Keep(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if time.Since(l.renewedAt) < l.ttl/3 {
		return nil
	}
	ok, err := l.Hold(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return ErrLeaseLapsed
	}
	return nil
}

// Release gives up the lease if this process holds it, so that another
// takes over at once instead of when it lapses.
func (l *Lease) Release(ctx context.Context) error {
	if !l.held {
		return nil
	}
	l.held = false
	if err := releaseLeaseScript.Run(ctx, l.rdb, []string{l.key}, l.token).Err(); err != nil {
		return fmt.Errorf("release %s: %w", l.what, err)
	}
	return nil
}
