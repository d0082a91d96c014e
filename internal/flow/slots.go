package flow

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/callq/callq/internal/rediskeys"
)

// DefaultLease is how long a concurrency slot stays taken unless renewed:
// the longest a worker that died holding a slot keeps it from the others.
// Short, because a holder renews its slots while it runs (every third of
// the lease, say), so only a dead holder's slots ever run out.
const DefaultLease = 15 * time.Second

// MinLease bounds SlotsConfig.Lease from below: a lease must outlast the
// round trips that renew it.
const MinLease = 10 * time.Millisecond

// ErrLeaseLost is Renew's error for a slot whose lease ended before it was
// renewed (its holder stalled longer than the lease, or Redis lost it): the
// slot is no longer counted, and may be taken by another call.
var ErrLeaseLost = errors.New("flow: the slot's lease ended before it was renewed")

// SlotsConfig configures Slots.
type SlotsConfig struct {
	// Lease is how long a slot stays taken without being renewed. Default
	// DefaultLease (15s); at least MinLease.
	Lease time.Duration
	// Holder begins the token of every slot taken, so that an operator
	// reading a slots set (ZRANGE) sees who holds what: a worker's name,
	// say. Default: none.
	Holder string
}

func (c *SlotsConfig) validate() error {
	if c.Lease != 0 && c.Lease < MinLease {
		return fmt.Errorf("SlotsConfig.Lease must be 0 (the default, %s) or at least %s", DefaultLease, MinLease)
	}
	return nil
}

// Slots are fleet-wide concurrency caps: at most a limit of calls of one
// Scope hold a slot at once, across every worker. A slot is a lease in a
// Redis sorted set (rediskeys.Slots, rediskeys.SlotsOf): a member per slot,
// its unique token, scored by the millisecond its lease ends. Acquire drops
// the ended leases, counts the rest and adds one, in one script: one round
// trip. Release removes it, in another. A holder that dies frees its slots
// when their lease ends, so it must Renew them while it holds them.
type Slots struct {
	rdb    redis.UniversalClient
	lease  time.Duration
	holder string
}

// NewSlots returns the Slots of rdb.
func NewSlots(rdb redis.UniversalClient, cfg *SlotsConfig) (*Slots, error) {
	if cfg == nil {
		cfg = &SlotsConfig{}
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("flow: %w", err)
	}
	s := &Slots{rdb: rdb, lease: cfg.Lease, holder: cfg.Holder}
	if s.lease == 0 {
		s.lease = DefaultLease
	}
	return s, nil
}

// Lease is how long a slot stays taken without being renewed.
func (s *Slots) Lease() time.Duration { return s.lease }

// Scope is the calls one cap counts: a tenant's calls to an integration,
// or with PerCredential, only those that use Credential ("": calls that use
// none). Tenants never share a cap.
type Scope struct {
	Tenant        string
	Integration   string
	PerCredential bool
	Credential    string
}

// keys are the sets a slot of the scope is a member of: the one the cap
// counts first, then the integration's, if that is another.
func (sc Scope) keys() []string {
	all := rediskeys.Slots(sc.Tenant, sc.Integration)
	if !sc.PerCredential {
		return []string{all}
	}
	return []string{rediskeys.SlotsOf(sc.Tenant, sc.Integration, sc.Credential), all}
}

// A Slot is one place under a cap, held from Acquire to Release.
type Slot struct {
	keys  []string
	token string
}

// Scripts. KEYS[1] is the set a cap counts; KEYS[2], when the cap counts
// per credential, the integration's set, which holds the same members so
// that InUse reads one key. Lease ends are Redis's time in milliseconds
// (13 digits: exact in Lua's numbers, and in the "%.14g" Redis formats them
// with), and a lease ending at or before now has ended.
const nowLua = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// acquireScript: ARGV limit, lease (ms), token. Drops ended leases, and
// adds the token unless limit slots are taken; each set then expires with
// its latest lease. Returns {1 if taken else 0, slots in use}.
var acquireScript = redis.NewScript(nowLua + `
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[1]) then
  return {0, n}
end
for i = 1, #KEYS do
  if i > 1 then
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  end
  redis.call('ZADD', KEYS[i], now + lease, ARGV[3])
  redis.call('PEXPIRE', KEYS[i], lease)
end
return {1, n + 1}
`)

// renewScript: ARGV token, lease (ms). Extends the token's lease to lease
// from now; a lease that ended is dropped instead. Returns 1, or 0 when the
// lease had ended.
var renewScript = redis.NewScript(nowLua + `
local lease = tonumber(ARGV[2])
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= now then
  for i = 1, #KEYS do
    redis.call('ZREM', KEYS[i], ARGV[1])
  end
  return 0
end
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], now + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[i], lease)
end
return 1
`)

// releaseScript: ARGV token. Returns how many sets held it.
var releaseScript = redis.NewScript(`
local n = 0
for i = 1, #KEYS do
  n = n + redis.call('ZREM', KEYS[i], ARGV[1])
end
return n
`)

// inUseScript counts the leases of KEYS[1] that have not ended.
var inUseScript = redis.NewScript(nowLua + `
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
`)

// Acquire takes a slot of scope unless limit slots of it are taken. It
// returns the slot, or nil when none is free, and how many are in use (its
// own included). One round trip.
func (s *Slots) Acquire(ctx context.Context, scope Scope, limit int) (*Slot, int, error) {
	if limit < 1 {
		return nil, 0, fmt.Errorf("flow: a cap's limit must be at least 1, got %d", limit)
	}
	token := rand.Text()
	if s.holder != "" {
		token = s.holder + " " + token
	}
	slot := &Slot{keys: scope.keys(), token: token}
	res, err := acquireScript.Run(ctx, s.rdb, slot.keys, limit, s.lease.Milliseconds(), token).Int64Slice()
	if err != nil {
		return nil, 0, fmt.Errorf("flow: taking a slot: %w", err)
	}
	if len(res) != 2 {
		return nil, 0, fmt.Errorf("flow: taking a slot: unexpected answer %v", res)
	}
	if res[0] == 0 {
		return nil, int(res[1]), nil
	}
	return slot, int(res[1]), nil
}

// Renew extends slot's lease to a full lease from now. It returns
// ErrLeaseLost when the lease had already ended: the slot is gone.
func (s *Slots) Renew(ctx context.Context, slot *Slot) error {
	ok, err := renewScript.Run(ctx, s.rdb, slot.keys, slot.token, s.lease.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("flow: renewing a slot: %w", err)
	}
	if ok == 0 {
		return ErrLeaseLost
	}
	return nil
}

// Release frees slot. Releasing a slot again, or one whose lease ended,
// does nothing; so does releasing nil.
func (s *Slots) Release(ctx context.Context, slot *Slot) error {
	if slot == nil {
		return nil
	}
	if err := releaseScript.Run(ctx, s.rdb, slot.keys, slot.token).Err(); err != nil {
		return fmt.Errorf("flow: releasing a slot: %w", err)
	}
	return nil
}

// InUse is how many slots of tenant's calls to integration are taken, all
// credentials together, whatever the integration's cap counts. One round
// trip reading one key.
func (s *Slots) InUse(ctx context.Context, tenant, integration string) (int, error) {
	n, err := inUseScript.Run(ctx, s.rdb, []string{rediskeys.Slots(tenant, integration)}).Int()
	if err != nil {
		return 0, fmt.Errorf("flow: reading the slots in use: %w", err)
	}
	return n, nil
}
