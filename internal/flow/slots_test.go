package flow_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/flow"
	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/internal/redistest"
)

func newSlots(t *testing.T, lease time.Duration) (*flow.Slots, *redis.Client) {
	t.Helper()
	rdb := redistest.Start(t).Client(t)
	s, err := flow.NewSlots(rdb, &flow.SlotsConfig{Lease: lease, Holder: "worker-1"})
	require.NoError(t, err)
	return s, rdb
}

var github = flow.Scope{Tenant: "acme", Integration: "github"}

func TestAcquireUpToTheLimit(t *testing.T) {
	t.Parallel()
	s, rdb := newSlots(t, 0)
	ctx := t.Context()
	require.Equal(t, flow.DefaultLease, s.Lease())

	var held []*flow.Slot
	for i := 1; i <= 3; i++ {
		slot, n, err := s.Acquire(ctx, github, 3)
		require.NoError(t, err)
		require.NotNil(t, slot, "slot %d of 3", i)
		require.Equal(t, i, n, "in use, this one included")
		held = append(held, slot)
	}
	slot, n, err := s.Acquire(ctx, github, 3)
	require.NoError(t, err)
	require.Nil(t, slot, "no fourth slot under a cap of 3")
	require.Equal(t, 3, n)
	inUse, err := s.InUse(ctx, "acme", "github")
	require.NoError(t, err)
	require.Equal(t, 3, inUse, "a refusal takes nothing")

	require.NoError(t, s.Release(ctx, held[1]))
	slot, n, err = s.Acquire(ctx, github, 3)
	require.NoError(t, err)
	require.NotNil(t, slot, "a released slot is free again")
	require.Equal(t, 3, n)

	// The set holds the tokens, each beginning with its holder, scored by
	// the end of its lease, and expires with the last of them.
	members, err := rdb.ZRangeWithScores(ctx, rediskeys.Slots("acme", "github"), 0, -1).Result()
	require.NoError(t, err)
	require.Len(t, members, 3)
	for _, m := range members {
		require.Regexp(t, `^worker-1 [A-Z2-7]{26}$`, m.Member)
		ends := time.UnixMilli(int64(m.Score))
		require.WithinDuration(t, time.Now().Add(flow.DefaultLease), ends, 5*time.Second)
	}
	ttl, err := rdb.PTTL(ctx, rediskeys.Slots("acme", "github")).Result()
	require.NoError(t, err)
	require.InDelta(t, flow.DefaultLease.Seconds(), ttl.Seconds(), 5)
}

// Many workers at once never take more than the limit between them.
func TestAcquireIsAtomic(t *testing.T) {
	t.Parallel()
	s, _ := newSlots(t, 0)
	var taken atomic.Int64
	var wg sync.WaitGroup
	for range 40 {
		wg.Go(func() {
			slot, _, err := s.Acquire(context.Background(), github, 5)
			if err == nil && slot != nil {
				taken.Add(1)
			}
		})
	}
	wg.Wait()
	require.Equal(t, int64(5), taken.Load())
}

// A holder that stops renewing (a worker that died) frees its slot when
// the lease ends, and the set goes when its last lease does.
func TestExpiredLeaseFreesTheSlot(t *testing.T) {
	t.Parallel()
	const lease = 300 * time.Millisecond
	s, rdb := newSlots(t, lease)
	ctx := t.Context()
	start := time.Now()
	for range 2 {
		slot, _, err := s.Acquire(ctx, github, 2)
		require.NoError(t, err)
		require.NotNil(t, slot)
	}
	slot, _, err := s.Acquire(ctx, github, 2)
	require.NoError(t, err)
	require.Nil(t, slot)

	var freedAt time.Time
	require.Eventually(t, func() bool {
		slot, _, err := s.Acquire(ctx, github, 2)
		freedAt = time.Now()
		return err == nil && slot != nil
	}, 10*time.Second, 10*time.Millisecond, "a slot nobody renews is freed")
	require.GreaterOrEqual(t, freedAt.Sub(start), lease-50*time.Millisecond, "not before its lease ends")
	require.Less(t, freedAt.Sub(start), lease+time.Second, "within its lease")
	require.Eventually(t, func() bool {
		n, err := s.InUse(ctx, "acme", "github")
		return err == nil && n == 0
	}, 10*time.Second, 10*time.Millisecond, "InUse counts only leases still running")
	require.Eventually(t, func() bool {
		n, err := rdb.Exists(ctx, rediskeys.Slots("acme", "github")).Result()
		return err == nil && n == 0
	}, 10*time.Second, 10*time.Millisecond, "the set expires with its last lease")
}

// A holder that renews keeps its slot for as long as it runs, many leases
// over; once it stops, the slot frees within a lease.
func TestRenewKeepsTheSlot(t *testing.T) {
	t.Parallel()
	const lease = 300 * time.Millisecond
	s, _ := newSlots(t, lease)
	ctx := t.Context()
	mine, _, err := s.Acquire(ctx, github, 1)
	require.NoError(t, err)
	require.NotNil(t, mine)

	tick := time.NewTicker(lease / 3)
	defer tick.Stop()
	for start := time.Now(); time.Since(start) < 4*lease; <-tick.C {
		require.NoError(t, s.Renew(ctx, mine))
		other, n, err := s.Acquire(ctx, github, 1)
		require.NoError(t, err)
		require.Nil(t, other, "the renewed slot is still taken after %s", time.Since(start))
		require.Equal(t, 1, n)
	}
	stopped := time.Now()
	require.Eventually(t, func() bool {
		other, _, err := s.Acquire(ctx, github, 1)
		return err == nil && other != nil
	}, 10*time.Second, 10*time.Millisecond)
	require.Less(t, time.Since(stopped), lease+time.Second, "freed within a lease of the last renewal")

	// Renewing a slot whose lease ended says so, and does not bring it back.
	require.ErrorIs(t, s.Renew(ctx, mine), flow.ErrLeaseLost)
	n, err := s.InUse(ctx, "acme", "github")
	require.NoError(t, err)
	require.Equal(t, 1, n, "only the new holder's")
}

func TestReleaseIsIdempotent(t *testing.T) {
	t.Parallel()
	s, _ := newSlots(t, 0)
	ctx := t.Context()
	scope := flow.Scope{Tenant: "acme", Integration: "github", PerCredential: true, Credential: "gh"}
	a, _, err := s.Acquire(ctx, scope, 2)
	require.NoError(t, err)
	b, _, err := s.Acquire(ctx, scope, 2)
	require.NoError(t, err)
	require.NoError(t, s.Release(ctx, a))
	require.NoError(t, s.Release(ctx, a), "again")
	require.NoError(t, s.Release(ctx, nil))
	n, err := s.InUse(ctx, "acme", "github")
	require.NoError(t, err)
	require.Equal(t, 1, n, "releasing a twice frees a's slot only, not b's")
	require.ErrorIs(t, s.Renew(ctx, a), flow.ErrLeaseLost, "a released slot cannot be renewed back")
	require.NoError(t, s.Renew(ctx, b))
	require.NoError(t, s.Release(ctx, b))
	n, err = s.InUse(ctx, "acme", "github")
	require.NoError(t, err)
	require.Zero(t, n)
}

// A cap per credential counts each credential apart, a cap per integration
// counts them together, and tenants never share one. InUse totals an
// integration's slots either way.
func TestScopes(t *testing.T) {
	t.Parallel()
	s, rdb := newSlots(t, 0)
	ctx := t.Context()
	cred := func(tenant, ref string) flow.Scope {
		return flow.Scope{Tenant: tenant, Integration: "github", PerCredential: true, Credential: ref}
	}
	take := func(scope flow.Scope, limit int) bool {
		t.Helper()
		slot, _, err := s.Acquire(ctx, scope, limit)
		require.NoError(t, err)
		return slot != nil
	}
	require.True(t, take(cred("acme", "gh-a"), 1))
	require.False(t, take(cred("acme", "gh-a"), 1), "gh-a's one slot is taken")
	require.True(t, take(cred("acme", "gh-b"), 1), "gh-b has its own")
	require.True(t, take(cred("acme", ""), 1), "so do calls without a credential")
	require.True(t, take(cred("globex", "gh-a"), 1), "so does another tenant's gh-a")
	n, err := s.InUse(ctx, "acme", "github")
	require.NoError(t, err)
	require.Equal(t, 3, n, "every credential of the integration, one tenant")
	for _, key := range []string{rediskeys.SlotsOf("acme", "github", "gh-a"), rediskeys.SlotsOf("acme", "github", "gh-b"),
		rediskeys.SlotsOf("acme", "github", ""), rediskeys.Slots("acme", "github"), rediskeys.SlotsOf("globex", "github", "gh-a")} {
		require.EqualValues(t, 1, rdb.Exists(ctx, key).Val(), key)
	}

	whole := flow.Scope{Tenant: "acme", Integration: "stripe"}
	require.True(t, take(whole, 2))
	require.True(t, take(whole, 2))
	require.False(t, take(whole, 2), "a cap per integration counts every credential")
	require.True(t, take(flow.Scope{Tenant: "globex", Integration: "stripe"}, 2), "per tenant")
	n, err = s.InUse(ctx, "acme", "stripe")
	require.NoError(t, err)
	require.Equal(t, 2, n)
	keys, err := rdb.Keys(ctx, "callq:{acme}:slots:stripe*").Result()
	require.NoError(t, err)
	require.Equal(t, []string{rediskeys.Slots("acme", "stripe")}, keys, "one set: the integration's")

	n, err = s.InUse(ctx, "acme", "none")
	require.NoError(t, err)
	require.Zero(t, n, "an integration that never took a slot")
}

func TestConfig(t *testing.T) {
	t.Parallel()
	_, err := flow.NewSlots(nil, &flow.SlotsConfig{Lease: time.Millisecond})
	require.ErrorContains(t, err, "SlotsConfig.Lease must be 0 (the default, 15s) or at least 10ms")
	s, err := flow.NewSlots(nil, nil)
	require.NoError(t, err)
	require.Equal(t, flow.DefaultLease, s.Lease())
	_, _, err = s.Acquire(t.Context(), github, 0)
	require.ErrorContains(t, err, "limit must be at least 1")
}
