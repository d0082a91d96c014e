package auth

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/internal/redistest"
)

// cacheEnv is a real redis-server, a Store on it (the API's), and two
// Caches on clients of their own (two workers), both watching.
type cacheEnv struct {
	t      *testing.T
	srv    *redistest.Server
	rdb    *redis.Client
	ring   *Keyring
	k1     string // ring's one key, k1
	store  *Store
	caches []*Cache
}

func newCacheEnv(t *testing.T, ttl time.Duration) *cacheEnv {
	t.Helper()
	e := &cacheEnv{t: t, srv: redistest.Start(t)}
	e.rdb = e.srv.Client(t)
	var err error
	e.k1, err = GenerateKey()
	require.NoError(t, err)
	e.ring, err = ParseKeyring("k1:" + e.k1)
	require.NoError(t, err)
	e.store, err = NewStore(e.rdb, &StoreConfig{Keyring: e.ring})
	require.NoError(t, err)
	for range 2 {
		worker, err := NewStore(e.srv.Client(t), &StoreConfig{Keyring: e.ring})
		require.NoError(t, err)
		c, err := NewCache(worker, &CacheConfig{TTL: ttl})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); c.Watch(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		e.caches = append(e.caches, c)
	}
	for _, c := range e.caches {
		require.Eventually(t, c.Live, 5*time.Second, 5*time.Millisecond)
	}
	return e
}

// token is what cache c gives as the token of acme's credential gh.
func (e *cacheEnv) token(c *Cache) string {
	e.t.Helper()
	cred, err := c.Get(context.Background(), "acme", "gh")
	require.NoError(e.t, err)
	secrets, err := cred.Resolve(e.ring, nil)
	require.NoError(e.t, err)
	return secrets["token"]
}

// setSilently writes acme's credential gh with token as a Put would, but
// announces nothing: a change whose announcement was lost.
func (e *cacheEnv) setSilently(token string) {
	e.t.Helper()
	mr, mrdb := testRedis(e.t) // another Redis, that no cache listens to
	other, err := NewStore(mrdb, &StoreConfig{Keyring: e.ring})
	require.NoError(e.t, err)
	_, err = other.Put(context.Background(), "acme", "gh", "github", map[string]string{"token": token})
	require.NoError(e.t, err)
	b, err := mr.Get(rediskeys.Credential("acme", "gh"))
	require.NoError(e.t, err)
	require.NoError(e.t, e.rdb.Set(context.Background(), rediskeys.Credential("acme", "gh"), b, 0).Err())
}

// primed reads the credential through every cache, and shows that they
// then answer from memory: a change announced to nobody is not seen.
func (e *cacheEnv) primed(want string) {
	e.t.Helper()
	for _, c := range e.caches {
		require.Equal(e.t, want, e.token(c))
		require.Equal(e.t, 1, c.Len())
	}
	e.setSilently("unannounced")
	for _, c := range e.caches {
		require.Equal(e.t, want, e.token(c), "the cache answers from memory")
	}
}

// change runs fn, which changes the credential, and waits until every
// cache has heard of it (its generation moved) and dropped what it kept.
func (e *cacheEnv) change(fn func()) {
	e.t.Helper()
	gens := make([]uint64, len(e.caches))
	for i, c := range e.caches {
		c.mu.Lock()
		gens[i] = c.gen
		c.mu.Unlock()
	}
	fn()
	for i, c := range e.caches {
		require.Eventually(e.t, func() bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.gen > gens[i] && len(c.entries) == 0
		}, 5*time.Second, time.Millisecond)
	}
}

// put puts acme's credential gh with token, and waits until every cache
// has heard of it.
func (e *cacheEnv) put(token string) {
	e.t.Helper()
	e.change(func() {
		_, err := e.store.Put(context.Background(), "acme", "gh", "github", map[string]string{"token": token})
		require.NoError(e.t, err)
	})
}

// Every way a credential changes (a PUT, an OAuth2 refresh's UpdateFields,
// a reseal, a DELETE) reaches both workers' caches: the next read after the
// announcement gets the new value.
func TestCacheFollowsEveryChange(t *testing.T) {
	t.Parallel()
	e := newCacheEnv(t, time.Hour)
	ctx := context.Background()

	e.put("v1")
	e.primed("v1")

	e.put("v2")
	e.primed("v2")

	e.change(func() {
		_, err := e.store.UpdateFields(ctx, "acme", "gh", map[string]string{"token": "v3"})
		require.NoError(t, err)
	})
	e.primed("v3")

	// A reseal under a new primary key: the caches' copies, sealed under
	// k1, are dropped, and the next read has the k2 seal.
	k2, err := GenerateKey()
	require.NoError(t, err)
	ring, err := ParseKeyring("k2:" + k2 + ",k1:" + e.k1)
	require.NoError(t, err)
	e.put("v4")
	e.primed("v4")
	resealer, err := NewStore(e.rdb, &StoreConfig{Keyring: ring})
	require.NoError(t, err)
	e.change(func() {
		stats, err := resealer.Reseal(ctx)
		require.NoError(t, err)
		require.Equal(t, 1, stats.Credentials)
	})
	for _, c := range e.caches {
		cred, err := c.Get(ctx, "acme", "gh")
		require.NoError(t, err)
		require.Equal(t, "k2", sealedKeyID(cred.Fields["token"].Sealed))
	}

	e.change(func() { require.NoError(t, e.store.Delete(ctx, "acme", "gh")) })
	for _, c := range e.caches {
		_, err := c.Get(ctx, "acme", "gh")
		require.ErrorIs(t, err, ErrCredentialNotFound)
	}
}

// An announcement lost with the subscription's connection cannot be told
// from none: the break drops everything, and the cache fills again once
// it has subscribed again.
func TestCacheDropsEverythingWhenItsSubscriptionBreaks(t *testing.T) {
	t.Parallel()
	e := newCacheEnv(t, time.Hour)
	ctx := context.Background()
	e.put("v1")
	e.primed("v1")

	e.setSilently("v2") // changed while the announcement is lost
	e.change(func() { require.NoError(t, e.rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err()) })
	for _, c := range e.caches {
		require.Equal(t, "v2", e.token(c))
		require.Eventually(t, func() bool { return c.Live() && e.token(c) == "v2" && c.Len() == 1 }, 5*time.Second, 5*time.Millisecond,
			"subscribed again, the cache keeps what it reads")
	}
}

// A change whose announcement never arrives, the subscription looking
// alive, is seen once the copy's TTL runs out.
func TestCacheTTLBoundsAnUnannouncedChange(t *testing.T) {
	t.Parallel()
	e := newCacheEnv(t, 200*time.Millisecond)
	e.put("v1")
	e.primed("v1")
	for _, c := range e.caches {
		require.Eventually(t, func() bool { return e.token(c) == "unannounced" }, 5*time.Second, 10*time.Millisecond)
	}
}

// Without Watch, nothing is kept: every Get reads Redis. A read that an
// invalidation overtook is not kept either.
func TestCacheKeepsNothingUnwatchedOrOvertaken(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client(t)
	ring := testKeyring(t, "k1")
	store, err := NewStore(rdb, &StoreConfig{Keyring: ring})
	require.NoError(t, err)
	c, err := NewCache(store, nil)
	require.NoError(t, err)
	require.Equal(t, DefaultCacheTTL, c.ttl)
	ctx := context.Background()
	_, err = store.Put(ctx, "acme", "gh", "github", map[string]string{"token": "v1"})
	require.NoError(t, err)
	_, err = c.Get(ctx, "acme", "gh")
	require.NoError(t, err)
	require.Zero(t, c.Len(), "not watching: nothing kept")

	c.forgetAll(true) // as Watch does once subscribed
	cred, err := store.Get(ctx, "acme", "gh")
	require.NoError(t, err)
	key := rediskeys.Credential("acme", "gh")
	gen := c.gen
	c.forget(key) // announced while the read was in flight
	c.keep(key, cred, gen, time.Now())
	require.Zero(t, c.Len(), "a read an announcement overtook is not kept")
	c.keep(key, cred, c.gen, time.Now())
	require.Equal(t, 1, c.Len())

	_, err = NewCache(store, &CacheConfig{TTL: -time.Second})
	require.EqualError(t, err, "auth: CacheConfig.TTL must not be negative")
	_, err = NewCache(nil, nil)
	require.Error(t, err)
}

// Open resolves a credential kept by the cache once when all its fields are
// literals, and on every call when one is a file: or env: value (a rotated
// file takes effect on the next call); a changed credential is a new copy,
// opened again.
func TestCacheOpenKeepsLiteralsOnly(t *testing.T) {
	t.Parallel()
	e := newCacheEnv(t, time.Hour)
	ctx := context.Background()
	c := e.caches[0]
	spec := &Spec{Type: TypeBearer}
	e.put("v1-literal")
	cred, err := c.Get(ctx, "acme", "gh")
	require.NoError(t, err)
	s1, r1, err := c.Open(cred, spec, e.ring, nil)
	require.NoError(t, err)
	require.Equal(t, "v1-literal", s1["token"])
	require.Equal(t, "[REDACTED]", r1.String("v1-literal"))
	s2, r2, err := c.Open(cred, spec, e.ring, nil)
	require.NoError(t, err)
	require.Same(t, r1, r2, "opened once, kept with the copy")
	require.Equal(t, s1, s2)

	e.put("v2-literal")
	cred2, err := c.Get(ctx, "acme", "gh")
	require.NoError(t, err)
	s3, r3, err := c.Open(cred2, spec, e.ring, nil)
	require.NoError(t, err)
	require.Equal(t, "v2-literal", s3["token"])
	require.NotSame(t, r1, r3)

	file := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(file, []byte("from-file-1"), 0o600))
	e.put("file:" + file)
	cred3, err := c.Get(ctx, "acme", "gh")
	require.NoError(t, err)
	s4, _, err := c.Open(cred3, spec, e.ring, nil)
	require.NoError(t, err)
	require.Equal(t, "from-file-1", s4["token"])
	require.NoError(t, os.WriteFile(file, []byte("from-file-2"), 0o600))
	s5, r5, err := c.Open(cred3, spec, e.ring, nil)
	require.NoError(t, err)
	require.Equal(t, "from-file-2", s5["token"], "a file: value is read on every call")
	require.Equal(t, "[REDACTED]", r5.String("from-file-2"))
}

// cancelAfterWrite is a go-redis hook that cancels the context of a change
// once its transaction has been written: a client that went away (an API
// request whose caller hung up, a reseal interrupted) right after the write.
type cancelAfterWrite struct{ cancel context.CancelFunc }

func (h cancelAfterWrite) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h cancelAfterWrite) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h cancelAfterWrite) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		h.cancel()
		return err
	}
}

// A change whose context ends once it is written (its caller hung up) is
// still announced: it stands, so the caches must drop what they kept.
func TestCacheHearsAChangeWhoseCallerLeft(t *testing.T) {
	t.Parallel()
	e := newCacheEnv(t, time.Hour)
	e.put("v1")
	e.primed("v1")
	for _, tc := range []struct {
		name string
		fn   func(ctx context.Context, s *Store) error
	}{
		{"Put", func(ctx context.Context, s *Store) error {
			_, err := s.Put(ctx, "acme", "gh", "github", map[string]string{"token": "v2"})
			return err
		}},
		{"PutConnected", func(ctx context.Context, s *Store) error {
			_, err := s.PutConnected(ctx, "acme", "gh", "github", map[string]string{"token": "v3"},
				&Connection{Method: ConnectForm, At: time.Now()})
			return err
		}},
		{"UpdateFields", func(ctx context.Context, s *Store) error {
			_, err := s.UpdateFields(ctx, "acme", "gh", map[string]string{"token": "v4"})
			return err
		}},
		{"Delete", func(ctx context.Context, s *Store) error { return s.Delete(ctx, "acme", "gh") }},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		rdb := e.srv.Client(t)
		rdb.AddHook(cancelAfterWrite{cancel})
		s, err := NewStore(rdb, &StoreConfig{Keyring: e.ring})
		require.NoError(t, err)
		e.change(func() { require.NoError(t, tc.fn(ctx, s), tc.name) })
		if tc.name != "Delete" {
			e.primed(e.token(e.caches[0]))
		}
	}
}

// A full cache keeps no more, and a read that finds it full goes over its
// entries (to sweep the expired ones) only once one can have expired: with
// more credentials in use than it holds, every read missing it would
// otherwise go over all of them under the lock.
func TestCacheFullSweepsOnlyWhenSomethingExpired(t *testing.T) {
	t.Parallel()
	_, rdb := testRedis(t)
	store, err := NewStore(rdb, &StoreConfig{Keyring: testKeyring(t, "k1")})
	require.NoError(t, err)
	c, err := NewCache(store, &CacheConfig{TTL: time.Minute})
	require.NoError(t, err)
	c.forgetAll(true)
	cred := &Credential{Tenant: "acme", Ref: "gh"}
	start := time.Now()
	for i := range maxCached {
		c.keep(rediskeys.Credential("acme", "c"+strconv.Itoa(i)), cred, c.gen, start.Add(time.Duration(i)*time.Microsecond))
	}
	require.Equal(t, maxCached, c.Len())

	c.keep(rediskeys.Credential("acme", "new"), cred, c.gen, start.Add(time.Second))
	require.Equal(t, maxCached, c.Len(), "full, nothing expired: not kept")
	require.Equal(t, start.Add(time.Minute), c.sweepAt, "no sweep until the first entry expires")
	// c1 made expired behind the cache's back: a sweep would free it,
	// but none is made before sweepAt.
	c.mu.Lock()
	c.entries[rediskeys.Credential("acme", "c1")] = cached{cred: cred, expires: start}
	c.mu.Unlock()
	c.keep(rediskeys.Credential("acme", "new"), cred, c.gen, start.Add(2*time.Second))
	require.Equal(t, maxCached, c.Len(), "not swept before sweepAt")

	c.keep(rediskeys.Credential("acme", "new"), cred, c.gen, start.Add(time.Minute+time.Microsecond))
	require.Equal(t, maxCached-1, c.Len(), "c0 and c1 swept, new kept")
	c.mu.Lock()
	_, ok := c.entries[rediskeys.Credential("acme", "new")]
	c.mu.Unlock()
	require.True(t, ok)
}
