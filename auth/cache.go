package auth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/internal/watch"
)

// DefaultCacheTTL is how long a Cache keeps a credential it read, at most:
// the bound on how stale it can be if the fleet's invalidation of it never
// arrives (a subscription that died without a word).
const DefaultCacheTTL = 30 * time.Second

// maxCached bounds the credentials a Cache holds at once; past it the
// expired ones are swept, and a new one is not kept if none had expired.
const maxCached = 10000

// CacheConfig configures a Cache.
type CacheConfig struct {
	// TTL is how long a credential read is kept. Default DefaultCacheTTL.
	TTL time.Duration
}

func (c *CacheConfig) validate() error {
	if c.TTL < 0 {
		return errors.New("CacheConfig.TTL must not be negative")
	}
	return nil
}

// Cache keeps the credentials a worker read in memory, as Store.Get
// returns them: decoded, their literal fields still sealed (Resolve opens
// them on each use, and reads env: and file: values again). It saves a
// Redis read per attempt.
//
// Every change a Store makes to a credential (Put, Delete, UpdateFields, an
// OAuth2 refresh, Reseal) is published on rediskeys.CredentialChannel after
// it is written; Watch listens for those and drops the credential, so the
// change reaches the next call of every worker as soon as the message does.
// A message missed while the subscription is down cannot be told from none,
// so a break of the subscription drops everything, and until Watch is
// subscribed (again) Get reads Redis every time and keeps nothing. A read
// that raced with a change is not kept either. Whatever is kept expires
// after CacheConfig.TTL, which bounds what a dead subscription nobody
// noticed could leave stale.
//
// A Cache is safe for concurrent use. The credentials it returns are shared:
// callers must not modify them.
type Cache struct {
	store *Store
	ttl   time.Duration

	mu      sync.Mutex
	entries map[string]cached // by the credential's Redis key
	gen     uint64            // counts invalidations: a read keeps its result only if none came during it
	live    bool              // Watch is subscribed
}

type cached struct {
	cred    *Credential
	expires time.Time
}

// NewCache returns a Cache over store. It keeps nothing until Watch runs.
func NewCache(store *Store, cfg *CacheConfig) (*Cache, error) {
	if store == nil {
		return nil, errors.New("auth: NewCache needs a Store")
	}
	var c CacheConfig
	if cfg != nil {
		c = *cfg
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	if c.TTL == 0 {
		c.TTL = DefaultCacheTTL
	}
	return &Cache{store: store, ttl: c.TTL, entries: map[string]cached{}}, nil
}

// Get is Store.Get, answered from memory when the credential was read
// before and has not changed since.
func (c *Cache) Get(ctx context.Context, tenant, ref string) (*Credential, error) {
	if err := validateTenantRef(tenant, ref); err != nil {
		return nil, err
	}
	key := rediskeys.Credential(tenant, ref)
	now := time.Now()
	c.mu.Lock()
	e, ok := c.entries[key]
	gen, live := c.gen, c.live
	c.mu.Unlock()
	if ok && live && now.Before(e.expires) {
		return e.cred, nil
	}
	cred, err := c.store.read(ctx, c.store.rdb, key, tenant, ref)
	if err != nil {
		return nil, err
	}
	c.keep(key, cred, gen, now)
	return cred, nil
}

// keep remembers cred, read at generation gen, unless something was
// invalidated since or the subscription is down.
func (c *Cache) keep(key string, cred *Credential, gen uint64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live || c.gen != gen {
		return
	}
	if _, ok := c.entries[key]; !ok && len(c.entries) >= maxCached {
		for k, e := range c.entries {
			if !now.Before(e.expires) {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= maxCached {
			return
		}
	}
	c.entries[key] = cached{cred: cred, expires: now.Add(c.ttl)}
}

// Watch listens for the fleet's credential changes until ctx ends; Get
// keeps credentials only while it runs.
func (c *Cache) Watch(ctx context.Context) {
	watch.Channel(ctx, c.store.rdb, rediskeys.CredentialChannel, c.forget, c.forgetAll)
}

// forget drops the credential whose Redis key is key.
func (c *Cache) forget(key string) {
	c.mu.Lock()
	delete(c.entries, key)
	c.gen++
	c.mu.Unlock()
}

// forgetAll drops every credential, and notes whether the subscription
// that lets Get keep them is up.
func (c *Cache) forgetAll(live bool) {
	c.mu.Lock()
	clear(c.entries)
	c.gen++
	c.live = live
	c.mu.Unlock()
}

// Len is the number of credentials kept (for tests and metrics).
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// Live reports whether Watch is subscribed, so that Get keeps what it
// reads.
func (c *Cache) Live() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.live
}

// changed tells every Cache of the fleet that the credential ref of tenant
// changed. It runs after the change is written (a Cache that reads in
// between reads the new value), outside the change's transaction: on a
// Cluster, a keyless PUBLISH in a MULTI is not sent with the key's. If it
// fails, the change stands and the caches drop the old value within their
// TTL: the change is not reported as failed for that.
func (s *Store) changed(ctx context.Context, tenant, ref string) {
	_ = s.rdb.Publish(ctx, rediskeys.CredentialChannel, rediskeys.Credential(tenant, ref)).Err()
}
