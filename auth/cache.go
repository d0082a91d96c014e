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
// Every change a Store makes to a credential (Put, PutConnected, Delete,
// UpdateFields, an OAuth2 refresh, Reseal) is published on rediskeys.CredentialChannel after
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
	// sweepAt is when the earliest of the entries kept at the last sweep
	// expires: while the cache is full, a sweep before then frees nothing,
	// so a read that finds it full does not go over every entry in vain.
	sweepAt time.Time
}

type cached struct {
	cred    *Credential
	expires time.Time
	// opened are cred's secrets and their redactor for spec (Open), when
	// every field of cred is a literal; nil until a call opened it.
	opened *opened
}

type opened struct {
	spec     *Spec
	secrets  Secrets
	redactor *Redactor
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
		if now.Before(c.sweepAt) {
			return
		}
		var next time.Time
		for k, e := range c.entries {
			switch {
			case !now.Before(e.expires):
				delete(c.entries, k)
			case next.IsZero() || e.expires.Before(next):
				next = e.expires
			}
		}
		c.sweepAt = next
		if len(c.entries) >= maxCached {
			return
		}
	}
	c.entries[key] = cached{cred: cred, expires: now.Add(c.ttl)}
}

// Open returns cred's secrets, resolved with k and dirs, and their
// redactor for spec (NewSecretsRedactor), as a call authenticating with
// cred under spec uses them. When cred is the copy c keeps (Get returned
// it) and every field of it is a literal, both are made once and kept with
// it: in this process's memory only, dropped with the copy. A credential
// with env: or file: fields is resolved on every call, so that a changed
// file or environment is read. The secrets returned are shared: callers
// must not modify them.
func (c *Cache) Open(cred *Credential, spec *Spec, k *Keyring, dirs SourceDirs) (Secrets, *Redactor, error) {
	var key string
	kept := false
	c.mu.Lock()
	if c.live { // else nothing is kept
		key = rediskeys.Credential(cred.Tenant, cred.Ref)
		e, ok := c.entries[key]
		if kept = ok && e.cred == cred; kept && e.opened != nil && e.opened.spec == spec {
			c.mu.Unlock()
			return e.opened.secrets, e.opened.redactor, nil
		}
	}
	c.mu.Unlock()
	secrets, err := cred.Resolve(k, dirs)
	if err != nil {
		return nil, nil, err
	}
	redactor := NewSecretsRedactor(spec, secrets)
	if kept && literalsOnly(cred) {
		c.mu.Lock()
		if e, ok := c.entries[key]; ok && e.cred == cred {
			e.opened = &opened{spec: spec, secrets: secrets, redactor: redactor}
			c.entries[key] = e
		}
		c.mu.Unlock()
	}
	return secrets, redactor, nil
}

// literalsOnly says whether every field of cred is a sealed literal.
func literalsOnly(cred *Credential) bool {
	for _, v := range cred.Fields {
		if v.Kind != KindLiteral {
			return false
		}
	}
	return true
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
// TTL: the change is not reported as failed for that. The change stands
// even if ctx ended with its write (an API caller that hung up), so the
// message is sent whatever ctx says (go-redis's own timeouts bound it).
func (s *Store) changed(ctx context.Context, tenant, ref string) {
	_ = s.rdb.Publish(context.WithoutCancel(ctx), rediskeys.CredentialChannel, rediskeys.Credential(tenant, ref)).Err()
}
