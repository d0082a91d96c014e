package flow_test

import (
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/flow"
	"github.com/callq/callq/tasks"
)

// `callq dev` runs on miniredis: the circuit breaker's scripts must run
// there too (Lua, TIME inside a script).
func TestCircuitOnMiniredis(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	cs := flow.NewCircuits(rdb, nil)
	b := breaker(2, time.Minute, 300*time.Millisecond)
	b.Per = tasks.CircuitPerCredential
	untilTold(t, func(integration string) bool {
		c := &flow.Circuit{Tenant: "dev", Integration: integration, Credential: "x", Breaker: b}
		require.True(t, check(t, cs, c, time.Second).Quiet())
		require.Nil(t, report(t, cs, c, "", flow.Failed))
		ch := report(t, cs, c, "", flow.Failed)
		require.NotNil(t, ch)
		require.Equal(t, flow.Open, ch.To)
		held := check(t, cs, c, time.Second)
		if !redisNow(t, rdb).Before(ch.NextProbeAt) {
			return false // the check may have come after the cooldown, as the probe
		}
		require.False(t, held.Go)
		st, err := cs.Read(t.Context(), "dev", map[string]*tasks.CircuitBreaker{integration: b})
		require.NoError(t, err)
		require.Equal(t, flow.Open, st[integration].State)
		require.Eventually(t, func() bool { return check(t, cs, c, time.Second).Go }, 10*time.Second, 5*time.Millisecond,
			"the cooldown passes on miniredis's clock")
		return true
	})
}
