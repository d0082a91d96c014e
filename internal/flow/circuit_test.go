package flow_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/flow"
	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/internal/redistest"
	"github.com/callq/callq/tasks"
)

func breaker(failures int, window, cooldown time.Duration) *tasks.CircuitBreaker {
	return &tasks.CircuitBreaker{Failures: failures, Window: tasks.Duration(window), Cooldown: tasks.Duration(cooldown),
		Per: tasks.CircuitPerIntegration}
}

func setup(t *testing.T) (*flow.Circuits, *redis.Client) {
	t.Helper()
	rdb := redistest.Start(t).Client(t)
	return flow.NewCircuits(rdb, nil), rdb
}

// redisNow is the Redis server's time, which the scripts go by.
func redisNow(t *testing.T, rdb *redis.Client) time.Time {
	t.Helper()
	now, err := rdb.Time(t.Context()).Result()
	require.NoError(t, err)
	return now
}

// awaitRedisTime waits until the Redis server's clock has reached at.
func awaitRedisTime(t *testing.T, rdb *redis.Client, at time.Time) {
	t.Helper()
	require.Eventually(t, func() bool { return !redisNow(t, rdb).Before(at) },
		10*time.Second, 5*time.Millisecond, "Redis's clock reaches %s", at)
}

// untilTold runs a scenario, on a fresh integration each time, until a run
// is quick enough to tell: a run answers false when the calls it needed close
// together (within a cooldown, a lease or a window, by Redis's clock) were
// not, having asserted only what holds however slow it was. Slowness then
// runs it again; a wrong answer in a quick run still fails the test.
func untilTold(t *testing.T, run func(integration string) bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; ; i++ {
		if run("crm-" + strconv.Itoa(i)) {
			return
		}
		require.True(t, time.Now().Before(deadline), "no run in 60s was quick enough to tell")
		t.Logf("run %d was too slow to tell; again", i)
	}
}

func report(t *testing.T, cs *flow.Circuits, c *flow.Circuit, probe string, r flow.Result) *flow.Change {
	t.Helper()
	ch, err := cs.Report(t.Context(), c, probe, r)
	require.NoError(t, err)
	return ch
}

func check(t *testing.T, cs *flow.Circuits, c *flow.Circuit, lease time.Duration) flow.Ticket {
	t.Helper()
	tk, err := cs.Check(t.Context(), c, lease)
	require.NoError(t, err)
	return tk
}

// open drives c open with its breaker's failures.
func open(t *testing.T, cs *flow.Circuits, c *flow.Circuit) *flow.Change {
	t.Helper()
	var ch *flow.Change
	for i := range c.Breaker.Failures {
		ch = report(t, cs, c, "", flow.Failed)
		if i < c.Breaker.Failures-1 {
			require.Nil(t, ch, "failure %d of %d does not open it", i+1, c.Breaker.Failures)
		}
	}
	require.NotNil(t, ch)
	return ch
}

func TestCircuitOpensAfterFailuresWithinWindow(t *testing.T) {
	t.Parallel()
	cs, rdb := setup(t)
	c := &flow.Circuit{Tenant: "acme", Integration: "crm", Breaker: breaker(3, time.Minute, 30*time.Second)}

	tk := check(t, cs, c, time.Second)
	require.True(t, tk.Go)
	require.True(t, tk.Quiet(), "a circuit never used is closed with no failure")
	n, err := rdb.Exists(t.Context(), rediskeys.Circuit("acme", "crm", false, "")).Result()
	require.NoError(t, err)
	require.Zero(t, n, "and has no hash")

	require.Nil(t, report(t, cs, c, "", flow.Failed))
	require.Nil(t, report(t, cs, c, "", flow.Failed))
	tk = check(t, cs, c, time.Second)
	require.True(t, tk.Go, "two failures of three: still closed")
	require.Equal(t, flow.Closed, tk.State)
	require.Equal(t, 2, tk.Failures)
	require.False(t, tk.Quiet())

	before := redisNow(t, rdb)
	ch := report(t, cs, c, "", flow.Failed)
	require.NotNil(t, ch)
	require.Equal(t, flow.Closed, ch.From)
	require.Equal(t, flow.Open, ch.To)
	require.Equal(t, 3, ch.Failures)
	require.WithinDuration(t, before, ch.OpenedAt, time.Second)
	require.Equal(t, 30*time.Second, ch.NextProbeAt.Sub(ch.OpenedAt))

	tk = check(t, cs, c, time.Second)
	require.False(t, tk.Go, "an open circuit holds calls")
	require.Empty(t, tk.Probe)
	require.Equal(t, flow.Open, tk.State)
	require.Equal(t, 3, tk.Failures)
	require.Equal(t, ch.OpenedAt, tk.OpenedAt)
	require.Equal(t, ch.NextProbeAt, tk.NextProbeAt)
	require.InDelta(t, 30*time.Second, tk.Wait, float64(time.Second), "until the cooldown has passed")

	// More failures and answers of calls let through before it opened
	// change nothing: they are stale.
	require.Nil(t, report(t, cs, c, "", flow.Failed))
	require.Nil(t, report(t, cs, c, "", flow.Answered))
	tk = check(t, cs, c, time.Second)
	require.False(t, tk.Go)
	require.Equal(t, 3, tk.Failures)
}

func TestCircuitFailuresSpreadWiderThanWindowDoNotOpen(t *testing.T) {
	t.Parallel()
	cs, rdb := setup(t)
	window := 500 * time.Millisecond
	untilTold(t, func(integration string) bool {
		c := &flow.Circuit{Tenant: "acme", Integration: integration, Breaker: breaker(3, window, time.Minute)}
		require.Nil(t, report(t, cs, c, "", flow.Failed))
		first := redisNow(t, rdb)
		awaitRedisTime(t, rdb, first.Add(window+100*time.Millisecond))
		start := redisNow(t, rdb)
		require.Nil(t, report(t, cs, c, "", flow.Failed))
		// However slow, the first failure is out of the window: no opening.
		require.Nil(t, report(t, cs, c, "", flow.Failed), "three failures, but the first is out of the window")
		tk := check(t, cs, c, time.Second)
		require.True(t, tk.Go)
		// The same three failures close together do open it: the control.
		ch := report(t, cs, c, "", flow.Failed)
		if redisNow(t, rdb).Sub(start) >= window {
			return false // the second failure may have left the window since
		}
		require.Equal(t, 2, tk.Failures, "the first one is forgotten")
		require.NotNil(t, ch, "three failures within the window")
		require.Equal(t, flow.Open, ch.To)
		require.Equal(t, 3, ch.Failures)
		return true
	})
}

func TestCircuitAnswerResetsFailures(t *testing.T) {
	t.Parallel()
	cs, rdb := setup(t)
	c := &flow.Circuit{Tenant: "acme", Integration: "crm", Breaker: breaker(3, time.Minute, time.Minute)}

	require.Nil(t, report(t, cs, c, "", flow.Failed))
	require.Nil(t, report(t, cs, c, "", flow.Failed))
	require.Nil(t, report(t, cs, c, "", flow.Neutral), "neutral counts for nothing either way")
	require.Equal(t, 2, check(t, cs, c, time.Second).Failures)
	require.Nil(t, report(t, cs, c, "", flow.Answered), "an answer (a 404, say) ends the run of failures")
	tk := check(t, cs, c, time.Second)
	require.True(t, tk.Quiet())
	n, err := rdb.Exists(t.Context(), rediskeys.Circuit("acme", "crm", false, "")).Result()
	require.NoError(t, err)
	require.Zero(t, n, "a closed circuit with no failure has no hash")

	require.Nil(t, report(t, cs, c, "", flow.Failed))
	require.Nil(t, report(t, cs, c, "", flow.Failed))
	require.NotNil(t, report(t, cs, c, "", flow.Failed), "three in a row do open it")
}

func TestCircuitHalfOpenLetsOneProbeThrough(t *testing.T) {
	t.Parallel()
	cs, rdb := setup(t)
	var c *flow.Circuit
	untilTold(t, func(integration string) bool {
		c = &flow.Circuit{Tenant: "acme", Integration: integration, Breaker: breaker(2, time.Minute, 300*time.Millisecond)}
		ch := open(t, cs, c)
		held := check(t, cs, c, time.Minute)
		if !redisNow(t, rdb).Before(ch.NextProbeAt) {
			return false // the check may have come after the cooldown, as the probe
		}
		require.False(t, held.Go, "held during the cooldown")
		awaitRedisTime(t, rdb, ch.NextProbeAt)
		return true
	})

	// Many calls at once after the cooldown: exactly one is the probe.
	var (
		mu      sync.Mutex
		tickets []flow.Ticket
		wg      sync.WaitGroup
	)
	for range 20 {
		wg.Go(func() {
			tk, err := cs.Check(context.Background(), c, time.Minute)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			tickets = append(tickets, tk)
			mu.Unlock()
		})
	}
	wg.Wait()
	var probes []flow.Ticket
	for _, tk := range tickets {
		require.Equal(t, flow.HalfOpen, tk.State)
		if tk.Go {
			probes = append(probes, tk)
			continue
		}
		require.Empty(t, tk.Probe)
		require.Positive(t, tk.Wait)
		require.LessOrEqual(t, tk.Wait, time.Second, "a held call looks again soon: the probe is usually quick")
	}
	require.Len(t, probes, 1, "one probe")
	require.NotEmpty(t, probes[0].Probe)
	require.True(t, probes[0].HalfOpened, "its check moved the circuit to half-open")
	require.Equal(t, 2, probes[0].Failures)
}

func TestCircuitProbeAnswerCloses(t *testing.T) {
	t.Parallel()
	cs, rdb := setup(t)
	c := &flow.Circuit{Tenant: "acme", Integration: "crm", Breaker: breaker(2, time.Minute, 100*time.Millisecond)}
	awaitRedisTime(t, rdb, open(t, cs, c).NextProbeAt)
	probe := check(t, cs, c, time.Minute)
	require.True(t, probe.Go)

	// Another call's report does not settle a half-open circuit: only its
	// probe's does.
	require.Nil(t, report(t, cs, c, "", flow.Answered))
	require.Nil(t, report(t, cs, c, "wrong-token", flow.Answered))
	require.False(t, check(t, cs, c, time.Minute).Go)

	ch := report(t, cs, c, probe.Probe, flow.Answered)
	require.Equal(t, &flow.Change{From: flow.HalfOpen, To: flow.Closed}, ch)
	tk := check(t, cs, c, time.Minute)
	require.True(t, tk.Go)
	require.True(t, tk.Quiet(), "closed afresh, its failures forgotten")
	require.Nil(t, report(t, cs, c, probe.Probe, flow.Failed), "the probe's report counts once")
	require.True(t, check(t, cs, c, time.Minute).Quiet(), "a second one is stale")
}

func TestCircuitProbeFailureReopens(t *testing.T) {
	t.Parallel()
	cs, rdb := setup(t)
	untilTold(t, func(integration string) bool {
		c := &flow.Circuit{Tenant: "acme", Integration: integration, Breaker: breaker(2, time.Minute, 200*time.Millisecond)}
		first := open(t, cs, c)
		awaitRedisTime(t, rdb, first.NextProbeAt)
		probe := check(t, cs, c, time.Minute)
		require.True(t, probe.Go)

		ch := report(t, cs, c, probe.Probe, flow.Failed)
		require.NotNil(t, ch)
		require.Equal(t, flow.HalfOpen, ch.From)
		require.Equal(t, flow.Open, ch.To)
		require.Equal(t, 3, ch.Failures, "the failed probe is one more consecutive failure")
		require.True(t, ch.OpenedAt.After(first.OpenedAt) || ch.OpenedAt.Equal(first.OpenedAt))
		require.Equal(t, 200*time.Millisecond, ch.NextProbeAt.Sub(ch.OpenedAt), "another cooldown")

		tk := check(t, cs, c, time.Minute)
		if !redisNow(t, rdb).Before(ch.NextProbeAt) {
			return false // the check may have come after the new cooldown, as the probe
		}
		require.False(t, tk.Go, "open again")
		require.Equal(t, flow.Open, tk.State)
		awaitRedisTime(t, rdb, ch.NextProbeAt)
		require.True(t, check(t, cs, c, time.Minute).Go, "and probed again after the new cooldown")
		return true
	})
}

func TestCircuitProbeLeaseExpires(t *testing.T) {
	t.Parallel()
	cs, rdb := setup(t)
	lease := 300 * time.Millisecond
	var (
		c     *flow.Circuit
		lost  flow.Ticket
		taken time.Time
	)
	untilTold(t, func(integration string) bool {
		c = &flow.Circuit{Tenant: "acme", Integration: integration, Breaker: breaker(1, time.Minute, 50*time.Millisecond)}
		awaitRedisTime(t, rdb, open(t, cs, c).NextProbeAt)
		before := redisNow(t, rdb)    // the lease ends after before+lease
		lost = check(t, cs, c, lease) // its worker dies: it never reports
		require.True(t, lost.Go)
		taken = redisNow(t, rdb) // and by taken+lease
		held := check(t, cs, c, lease)
		require.LessOrEqual(t, held.Wait, lease)
		if !redisNow(t, rdb).Before(before.Add(lease)) {
			return false // the check may have come after the lease, as the next probe
		}
		require.False(t, held.Go, "the probe's lease holds the others")
		return true
	})

	awaitRedisTime(t, rdb, taken.Add(lease+50*time.Millisecond))
	next := check(t, cs, c, lease)
	require.True(t, next.Go, "once the lease ends, another call probes")
	require.False(t, next.HalfOpened, "the circuit was half-open already")
	require.NotEqual(t, lost.Probe, next.Probe)

	require.Nil(t, report(t, cs, c, lost.Probe, flow.Answered), "the lost probe's late report is stale")
	require.False(t, check(t, cs, c, lease).Go)
	require.Equal(t, flow.Closed, report(t, cs, c, next.Probe, flow.Answered).To)
}

func TestCircuitNeutralProbeLetsNextCallProbe(t *testing.T) {
	t.Parallel()
	cs, rdb := setup(t)
	c := &flow.Circuit{Tenant: "acme", Integration: "crm", Breaker: breaker(1, time.Minute, 50*time.Millisecond)}
	awaitRedisTime(t, rdb, open(t, cs, c).NextProbeAt)
	probe := check(t, cs, c, time.Hour)
	require.True(t, probe.Go)
	require.False(t, check(t, cs, c, time.Hour).Go)
	// The probe made no request (a later gate held it, or it was
	// interrupted): the next call probes at once, not after the lease.
	require.Nil(t, report(t, cs, c, probe.Probe, flow.Neutral))
	next := check(t, cs, c, time.Hour)
	require.True(t, next.Go)
	require.Equal(t, flow.HalfOpen, next.State)
}

func TestCircuitsArePerTenant(t *testing.T) {
	t.Parallel()
	cs, _ := setup(t)
	b := breaker(2, time.Minute, time.Minute)
	acme := &flow.Circuit{Tenant: "acme", Integration: "crm", Breaker: b}
	globex := &flow.Circuit{Tenant: "globex", Integration: "crm", Breaker: b}
	open(t, cs, acme)
	require.False(t, check(t, cs, acme, time.Second).Go)
	tk := check(t, cs, globex, time.Second)
	require.True(t, tk.Go, "another tenant's circuit of the same integration stays closed")
	require.True(t, tk.Quiet())
}

func TestCircuitsPerCredential(t *testing.T) {
	t.Parallel()
	cs, rdb := setup(t)
	ctx := t.Context()
	b := breaker(2, time.Minute, 300*time.Millisecond)
	b.Per = tasks.CircuitPerCredential
	plain := breaker(2, time.Minute, time.Minute)
	// Each run has a tenant of its own: a run too slow to tell leaves its
	// circuit in its tenant's set.
	untilTold(t, func(name string) bool {
		tenant := "acme-" + name
		bad := &flow.Circuit{Tenant: tenant, Integration: "crm", Credential: "cust-1", Breaker: b}
		good := &flow.Circuit{Tenant: tenant, Integration: "crm", Credential: "cust-2", Breaker: b}
		none := &flow.Circuit{Tenant: tenant, Integration: "crm", Breaker: b}
		opened := open(t, cs, bad)
		require.Nil(t, report(t, cs, none, "", flow.Failed))
		held := check(t, cs, bad, time.Minute)
		if !redisNow(t, rdb).Before(opened.NextProbeAt) {
			return false // the check may have come after the cooldown, as the probe
		}
		require.False(t, held.Go)
		require.True(t, check(t, cs, good, time.Minute).Go, "another credential's circuit is closed")
		require.True(t, check(t, cs, none, time.Minute).Go, "and so is the no-credential one")

		// Open until a check after the cooldown makes it half-open: Read
		// makes none, so how slow it comes does not matter.
		st, err := cs.Read(ctx, tenant, map[string]*tasks.CircuitBreaker{"crm": b, "billing": plain})
		require.NoError(t, err)
		require.Equal(t, flow.Open, st["crm"].State, "the worst of its circuits")
		require.Len(t, st["crm"].Credentials, 1, "only the circuits not closed are listed")
		got := st["crm"].Credentials[0]
		require.Equal(t, "cust-1", got.Credential)
		require.Equal(t, flow.Open, got.State)
		require.Equal(t, 2, got.Failures)
		require.Equal(t, opened.OpenedAt, *got.OpenedAt)
		require.Equal(t, opened.NextProbeAt, *got.NextProbeAt)
		require.Equal(t, flow.Closed, st["billing"].State)
		require.Empty(t, st["billing"].Credentials)

		st, err = cs.Read(ctx, "globex", map[string]*tasks.CircuitBreaker{"crm": b})
		require.NoError(t, err)
		require.Equal(t, flow.Closed, st["crm"].State, "another tenant sees none of it")
		require.Empty(t, st["crm"].Credentials)

		awaitRedisTime(t, rdb, opened.NextProbeAt)
		probe := check(t, cs, bad, time.Minute)
		require.True(t, probe.Go)
		st, err = cs.Read(ctx, tenant, map[string]*tasks.CircuitBreaker{"crm": b})
		require.NoError(t, err)
		require.Equal(t, flow.HalfOpen, st["crm"].State)
		require.Equal(t, flow.Closed, report(t, cs, bad, probe.Probe, flow.Answered).To)
		st, err = cs.Read(ctx, tenant, map[string]*tasks.CircuitBreaker{"crm": b})
		require.NoError(t, err)
		require.Equal(t, flow.Closed, st["crm"].State)
		require.Empty(t, st["crm"].Credentials)
		members, err := rdb.SMembers(ctx, rediskeys.Circuits(tenant)).Result()
		require.NoError(t, err)
		require.Empty(t, members, "a circuit that closes leaves the tenant's set")
		return true
	})
}

func TestCircuitsRead(t *testing.T) {
	t.Parallel()
	cs, rdb := setup(t)
	ctx := t.Context()
	window := 500 * time.Millisecond
	crm, billing := breaker(3, window, time.Minute), breaker(1, time.Minute, time.Minute)
	breakers := map[string]*tasks.CircuitBreaker{"crm": crm, "billing": billing, "quiet": crm}

	// Each run has a tenant of its own, so a slow run's failures stay in it.
	untilTold(t, func(name string) bool {
		tenant := "acme-" + name
		start := redisNow(t, rdb) // the crm failure is counted after start
		require.Nil(t, report(t, cs, &flow.Circuit{Tenant: tenant, Integration: "crm", Breaker: crm}, "", flow.Failed))
		at := redisNow(t, rdb) // and before at
		opened := report(t, cs, &flow.Circuit{Tenant: tenant, Integration: "billing", Breaker: billing}, "", flow.Failed)
		require.NotNil(t, opened)

		st, err := cs.Read(ctx, tenant, breakers)
		require.NoError(t, err)
		if redisNow(t, rdb).Sub(start) >= window {
			return false // the crm failure may have left the window
		}
		require.Len(t, st, 3)
		require.Equal(t, flow.Status{State: flow.Closed, Failures: 1}, st["crm"].Status)
		require.Equal(t, flow.Status{State: flow.Open, Failures: 1, OpenedAt: &opened.OpenedAt, NextProbeAt: &opened.NextProbeAt}, st["billing"].Status)
		require.Equal(t, flow.Status{State: flow.Closed}, st["quiet"].Status)

		// A failure older than the window no longer counts.
		awaitRedisTime(t, rdb, at.Add(window+100*time.Millisecond))
		st, err = cs.Read(ctx, tenant, breakers)
		require.NoError(t, err)
		require.Equal(t, flow.Status{State: flow.Closed}, st["crm"].Status)
		return true
	})

	st, err := cs.Read(ctx, "acme", nil)
	require.NoError(t, err)
	require.Empty(t, st)
}

// A closed circuit with no failure costs a call one round trip (the
// check): its answer says there is nothing to report unless the call fails.
func BenchmarkCheckClosed(b *testing.B) {
	rdb := redistest.Start(b).Client(b)
	cs := flow.NewCircuits(rdb, nil)
	c := &flow.Circuit{Tenant: "acme", Integration: "crm", Breaker: breaker(5, time.Minute, time.Minute)}
	ctx := context.Background()
	for b.Loop() {
		tk, err := cs.Check(ctx, c, time.Minute)
		if err != nil || !tk.Quiet() {
			b.Fatal(err, tk)
		}
	}
}

// For comparison: one PING, the cheapest round trip.
func BenchmarkPing(b *testing.B) {
	rdb := redistest.Start(b).Client(b)
	ctx := context.Background()
	for b.Loop() {
		if err := rdb.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
	}
}

// scriptCalls is how many scripts Redis has run (EVALSHA and EVAL).
func scriptCalls(t *testing.T, rdb *redis.Client) int {
	t.Helper()
	info, err := rdb.Info(t.Context(), "commandstats").Result()
	require.NoError(t, err)
	n := 0
	for _, cmd := range []string{"cmdstat_evalsha:calls=", "cmdstat_eval:calls="} {
		if _, rest, ok := strings.Cut(info, cmd); ok {
			v, _, _ := strings.Cut(rest, ",")
			c, err := strconv.Atoi(v)
			require.NoError(t, err)
			n += c
		}
	}
	return n
}

// While Watch runs, a circuit found closed with no failure is remembered:
// its checks make no round trip, until an opening anywhere is heard, or
// this process reports a failure.
func TestCircuitRememberedWhileWatched(t *testing.T) {
	t.Parallel()
	_, rdb := setup(t)
	b := breaker(2, time.Minute, time.Minute)
	c := &flow.Circuit{Tenant: "acme", Integration: "crm", Breaker: b}
	mine := flow.NewCircuits(rdb, &flow.CircuitsConfig{Remember: time.Hour})
	other := flow.NewCircuits(rdb, nil) // another worker's

	// Not watching: every check asks Redis (the control).
	check(t, mine, c, time.Second) // loads the script (NOSCRIPT, then EVAL)
	require.Nil(t, report(t, mine, c, "", flow.Answered))
	before := scriptCalls(t, rdb)
	for range 3 {
		require.True(t, check(t, mine, c, time.Second).Quiet())
	}
	require.Equal(t, 3, scriptCalls(t, rdb)-before, "without Watch, nothing is remembered")

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); mine.Watch(ctx) }()
	require.Eventually(t, func() bool {
		// The first check may ask Redis (and remember, once subscribed);
		// the second is answered from memory once it has.
		check(t, mine, c, time.Second)
		before := scriptCalls(t, rdb)
		check(t, mine, c, time.Second)
		return scriptCalls(t, rdb) == before
	}, 10*time.Second, 5*time.Millisecond, "once subscribed, a check is answered from memory")
	before = scriptCalls(t, rdb)
	for range 100 {
		tk := check(t, mine, c, time.Second)
		require.True(t, tk.Go)
		require.True(t, tk.Quiet())
	}
	require.Equal(t, 0, scriptCalls(t, rdb)-before, "a quiet circuit remembered costs no round trip")

	// Another worker opens it: the opening is heard, and the next checks
	// ask Redis again.
	open(t, other, c)
	require.Eventually(t, func() bool { return !check(t, mine, c, time.Second).Go }, 10*time.Second, 5*time.Millisecond,
		"the opening is heard")

	// A failure this process reports is not quiet: forgotten at once.
	d := &flow.Circuit{Tenant: "acme", Integration: "billing", Breaker: b}
	require.Eventually(t, func() bool {
		before := scriptCalls(t, rdb)
		check(t, mine, d, time.Second)
		check(t, mine, d, time.Second)
		return scriptCalls(t, rdb)-before == 1
	}, 10*time.Second, 5*time.Millisecond)
	require.Nil(t, report(t, mine, d, "", flow.Failed))
	require.Equal(t, 1, check(t, mine, d, time.Second).Failures, "the check after a failure asks Redis")

	// Stopped watching: nothing is trusted any more.
	cancel()
	<-done
	require.Nil(t, report(t, other, d, "", flow.Answered))
	before = scriptCalls(t, rdb)
	check(t, mine, d, time.Second)
	check(t, mine, d, time.Second)
	require.Equal(t, 2, scriptCalls(t, rdb)-before)
}

// An answer noted without a report (Answered) ends the run of failures for
// the failures counted before it, when the same process next reports a
// failure; failures after it still make a run.
func TestCircuitAnsweredEndsTheRun(t *testing.T) {
	t.Parallel()
	cs, rdb := setup(t)
	// A report places the answer at its script's time less how long ago
	// the process saw it, measured before the round trip: the answer seems
	// later by up to that report's latency. A run tells only when the
	// failure after the answer came later than that (the clocks are this
	// host's both).
	untilTold(t, func(integration string) bool {
		c := &flow.Circuit{Tenant: "acme", Integration: integration, Breaker: breaker(2, time.Minute, 30*time.Second)}
		require.Nil(t, report(t, cs, c, "", flow.Failed))
		// The answer comes a millisecond of Redis's clock after the failure
		// at least: the failure is strictly before it.
		awaitRedisTime(t, rdb, redisNow(t, rdb).Add(2*time.Millisecond))
		cs.Answered(&flow.Circuit{Tenant: "acme", Integration: integration, Breaker: c.Breaker})
		answered := time.Now()
		awaitRedisTime(t, rdb, redisNow(t, rdb).Add(2*time.Millisecond))
		after := redisNow(t, rdb) // the next failure is counted after
		require.Nil(t, report(t, cs, c, "", flow.Failed), "failure, answer, failure: not a run")
		sent := time.Now()
		ch := report(t, cs, c, "", flow.Failed)
		// And the milliseconds, truncated on both sides.
		if time.Since(sent)+2*time.Millisecond >= after.Sub(answered) {
			return false // the answer may have seemed later than that failure
		}
		require.NotNil(t, ch, "two failures after the answer are")
		require.Equal(t, flow.Open, ch.To)
		require.Equal(t, 2, ch.Failures)
		return true
	})
}
