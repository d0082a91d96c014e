package producer_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
)

// fakeClock is a scheduler's clock that a test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func newScheduler(tb testing.TB, p *producer.Producer, cfg *producer.SchedulerConfig, clock *fakeClock) *producer.Scheduler {
	tb.Helper()
	s, err := producer.NewScheduler(p, cfg)
	require.NoError(tb, err)
	if clock != nil {
		producer.SetSchedulerClock(s, clock.now)
	}
	tb.Cleanup(func() { _ = s.Release(context.Background()) })
	return s
}

// scheduledCalls returns the records of tenant acme's calls made by
// schedule id, by the Unix second of their firing.
func (e *env) scheduledCalls(tb testing.TB, id string) map[int64]*tasks.Record {
	tb.Helper()
	out := map[int64]*tasks.Record{}
	c := e.tenantClient(tb, "acme")
	cursor := ""
	for {
		page, err := c.List(context.Background(), tasks.Filter{}, cursor, tasks.MaxListLimit)
		require.NoError(tb, err)
		for _, rec := range page.Calls {
			if rec.Schedule != id {
				continue
			}
			unix, ok := strings.CutPrefix(rec.CorrelationID, "sched-"+id+"-")
			require.True(tb, ok, "call %s of schedule %s", rec.CorrelationID, id)
			n, err := strconv.ParseInt(unix, 10, 64)
			require.NoError(tb, err, rec.CorrelationID)
			_, dup := out[n]
			require.False(tb, dup, "instant %d listed twice", n)
			out[n] = rec
		}
		if page.NextCursor == "" {
			return out
		}
		cursor = page.NextCursor
	}
}

func (e *env) getSchedule(tb testing.TB, id string) *producer.Schedule {
	tb.Helper()
	r := e.schedules(tb, http.MethodGet, "/"+id, e.adminKey, nil)
	require.Equal(tb, http.StatusOK, r.Status, "body: %s", r.Body)
	return decodeSchedule(tb, r)
}

// A schedule @every 1s fires calls that run and succeed; their records
// name the schedule; the schedule shows its last run; a delete stops it.
func TestSchedulerFiresCalls(t *testing.T) {
	t.Parallel()
	e := setup(t, withUpstream())
	r := e.schedules(t, http.MethodPost, "", e.adminKey, schedule(map[string]any{"id": "tick", "cron": "@every 1s",
		"call": map[string]any{"integration": "httpbin", "method": "GET", "path": "/get", "query": map[string]any{"from": "schedule"}}}))
	require.Equal(t, http.StatusCreated, r.Status, "body: %s", r.Body)

	s := newScheduler(t, e.prod, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	var calls map[int64]*tasks.Record
	require.Eventually(t, func() bool {
		calls = e.scheduledCalls(t, "tick")
		n := 0
		for _, rec := range calls {
			if rec.Status == tasks.StatusSucceeded {
				n++
			}
		}
		return n >= 3
	}, 20*time.Second, 50*time.Millisecond, "three firings did not succeed")

	var first int64
	for unix, rec := range calls {
		if first == 0 || unix < first {
			first = unix
		}
		require.NotEqual(t, tasks.StatusFailed, rec.Status, "%+v", rec.Error)
	}
	created := decodeSchedule(t, r)
	require.Equal(t, created.UpdatedAt.Truncate(time.Second).Add(time.Second).Unix(), first, "the first instant is a second after the schedule's creation")
	for unix := first; unix < first+3; unix++ {
		require.Contains(t, calls, unix, "instants are consecutive seconds: %v", calls)
	}

	// The record names its schedule, in GET and in the list.
	id := producer.ScheduleCorrelationID("tick", time.Unix(first, 0))
	got := e.get(t, id)
	require.Equal(t, http.StatusOK, got.Status)
	require.Contains(t, string(got.Body), `"schedule":"tick"`)
	rec := got.Record(t)
	require.Equal(t, tasks.StatusSucceeded, rec.Status)
	require.Equal(t, 200, rec.Response.Status)
	require.Contains(t, string(rec.Response.Body), `"from"`, "the call as the schedule holds it reached the upstream")
	list := e.do(t, req{Method: http.MethodGet, Path: "/v1/calls?limit=1", Key: e.producerKey})
	require.Contains(t, string(list.Body), `"schedule":"tick"`)

	st := e.getSchedule(t, "tick")
	require.NotNil(t, st.LastRunAt)
	require.NotNil(t, st.LastCorrelationID)
	require.Equal(t, producer.ScheduleCorrelationID("tick", *st.LastRunAt), *st.LastCorrelationID)
	require.Nil(t, st.LastError)
	require.True(t, st.NextRunAt.After(*st.LastRunAt))
	require.Equal(t, http.StatusOK, e.get(t, *st.LastCorrelationID).Status)

	// Deleted: no firing comes after the delete (one under way may end).
	require.Equal(t, http.StatusNoContent, e.schedules(t, http.MethodDelete, "/tick", e.adminKey, nil).Status)
	deleted := time.Now()
	require.Never(t, func() bool {
		for unix := range e.scheduledCalls(t, "tick") {
			if unix > deleted.Unix()+1 {
				return true
			}
		}
		return false
	}, 3*time.Second, 100*time.Millisecond, "a deleted schedule fired")
}

// Missed instants are not a backlog: the latest is fired, if at most
// CatchUp late; otherwise they are passed over and the schedule says so.
func TestSchedulerMissedFirings(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.schedules(t, http.MethodPost, "", e.adminKey, schedule(map[string]any{"id": "ten", "cron": "@every 10s"}))
	require.Equal(t, http.StatusCreated, r.Status, "body: %s", r.Body)
	t0 := decodeSchedule(t, r).UpdatedAt.Truncate(time.Second)

	clock := &fakeClock{t: t0.Add(3*time.Minute + 5*time.Second)}
	s := newScheduler(t, e.prod, &producer.SchedulerConfig{CatchUp: time.Minute}, clock)
	rep, err := s.RunOnce(context.Background())
	require.NoError(t, err)
	require.Equal(t, producer.SchedulerReport{Schedules: 1, Fired: 1, Missed: 1}, *rep)
	calls := e.scheduledCalls(t, "ten")
	require.Len(t, calls, 1, "seventeen instants missed, the latest fired")
	require.Contains(t, calls, t0.Add(3*time.Minute).Unix())
	st := e.getSchedule(t, "ten")
	require.Equal(t, t0.Add(3*time.Minute), st.LastRunAt.UTC())
	require.Nil(t, st.LastError)

	// Nothing more is due until the next instant; then one firing each.
	rep, err = s.RunOnce(context.Background())
	require.NoError(t, err)
	require.Zero(t, rep.Fired)
	clock.set(t0.Add(3*time.Minute + 10*time.Second))
	rep, err = s.RunOnce(context.Background())
	require.NoError(t, err)
	require.Equal(t, producer.SchedulerReport{Schedules: 1, Fired: 1}, *rep)
	require.Len(t, e.scheduledCalls(t, "ten"), 2)

	// An hourly schedule missed by more than CatchUp: passed over, and
	// the schedule says so, until its next instant fires.
	r = e.schedules(t, http.MethodPut, "/ten", e.adminKey, schedule(map[string]any{"id": "ten", "cron": "@every 1h"}))
	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)
	// Instants count from the last run or the change, whichever is later:
	// here the last run, on the test's clock.
	require.True(t, decodeSchedule(t, r).UpdatedAt.Before(t0.Add(3*time.Minute+10*time.Second)))
	u := t0.Add(3*time.Minute + 10*time.Second)
	clock.set(u.Add(time.Hour + 2*time.Minute))
	rep, err = s.RunOnce(context.Background())
	require.NoError(t, err)
	require.Equal(t, producer.SchedulerReport{Schedules: 1, Missed: 1}, *rep)
	require.Len(t, e.scheduledCalls(t, "ten"), 2, "nothing fired")
	st = e.getSchedule(t, "ten")
	require.NotNil(t, st.LastError)
	require.Contains(t, *st.LastError, "the firings due from "+u.Add(time.Hour).Format(time.RFC3339))
	require.Contains(t, *st.LastError, "no scheduler ran then, and a firing is made at most 1m0s late")
	rep, err = s.RunOnce(context.Background())
	require.NoError(t, err)
	require.Zero(t, rep.Missed, "passed over once")

	clock.set(u.Add(2*time.Hour + 30*time.Second))
	rep, err = s.RunOnce(context.Background())
	require.NoError(t, err)
	require.Equal(t, producer.SchedulerReport{Schedules: 1, Fired: 1}, *rep)
	require.Contains(t, e.scheduledCalls(t, "ten"), u.Add(2*time.Hour).Unix())
	require.Nil(t, e.getSchedule(t, "ten").LastError, "a firing that enqueues clears it")
}

// An instant is fired once, whatever the schedulers: one holds the lease;
// a scheduler that fires an instant fired already (restarted without its
// state, or stalled past its lease) finds the call enqueued and queues
// nothing.
func TestSchedulerFiresAnInstantOnce(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.schedules(t, http.MethodPost, "", e.adminKey, schedule(map[string]any{"id": "once", "cron": "@every 5s"}))
	require.Equal(t, http.StatusCreated, r.Status, "body: %s", r.Body)
	t0 := decodeSchedule(t, r).UpdatedAt.Truncate(time.Second)
	clock := &fakeClock{t: t0.Add(5 * time.Second)}

	a := newScheduler(t, e.prod, &producer.SchedulerConfig{Name: "a"}, clock)
	b := newScheduler(t, e.prod, &producer.SchedulerConfig{Name: "b"}, clock)
	rep, err := a.RunOnce(context.Background())
	require.NoError(t, err)
	require.Equal(t, 1, rep.Fired)
	_, err = b.RunOnce(context.Background())
	require.ErrorIs(t, err, producer.ErrSchedulerLeaseHeld)
	lease, err := e.rdb.Get(context.Background(), rediskeys.SchedulerLease).Result()
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(lease, "a/"), "the lease names its holder: %s", lease)

	// b takes over from a without a's state (as after a restart that lost
	// it): it fires the same instant again, which enqueues nothing.
	require.NoError(t, a.Release(context.Background()))
	require.NoError(t, e.rdb.HDel(context.Background(), rediskeys.ScheduleState("acme"), "once").Err())
	rep, err = b.RunOnce(context.Background())
	require.NoError(t, err)
	require.Equal(t, 1, rep.Fired)
	calls := e.scheduledCalls(t, "once")
	require.Len(t, calls, 1)
	require.Contains(t, calls, t0.Add(5*time.Second).Unix())
	require.Equal(t, 1, e.queueSize(t, tasks.DefaultQueue), "one task queued")

	// Nor does a scheduler whose configuration fills the call in another
	// way (a deploy under way: here, CALLQ_QUEUES without "default"): the
	// call under the ID is the schedule's own.
	require.NoError(t, b.Release(context.Background()))
	require.NoError(t, e.rdb.HDel(context.Background(), rediskeys.ScheduleState("acme"), "once").Err())
	lowOnly, err := producer.New(e.rdb, &producer.Config{Catalog: e.cat, Records: e.records, Limits: &tasks.Limits{Queues: []string{"low"}}})
	require.NoError(t, err)
	d := newScheduler(t, lowOnly, &producer.SchedulerConfig{Name: "d"}, clock)
	rep, err = d.RunOnce(context.Background())
	require.NoError(t, err)
	require.Equal(t, producer.SchedulerReport{Schedules: 1, Fired: 1}, *rep)
	require.Len(t, e.scheduledCalls(t, "once"), 1)
	require.Nil(t, e.getSchedule(t, "once").LastError)
	require.Equal(t, 1, e.queueSize(t, tasks.DefaultQueue))
	require.Zero(t, e.queueSize(t, "low"))

	// A restart with the state kept fires nothing twice either.
	require.NoError(t, d.Release(context.Background()))
	c := newScheduler(t, e.prod, &producer.SchedulerConfig{Name: "c"}, clock)
	rep, err = c.RunOnce(context.Background())
	require.NoError(t, err)
	require.Zero(t, rep.Fired)

	// A call of the tenant's own holding the next instant's ID: that firing
	// enqueues nothing and says why.
	next := producer.ScheduleCorrelationID("once", t0.Add(10*time.Second))
	require.Equal(t, http.StatusAccepted, e.post(t, call(map[string]any{"correlation_id": next, "query": nil})).Status)
	clock.set(t0.Add(10 * time.Second))
	rep, err = c.RunOnce(context.Background())
	require.NoError(t, err)
	require.Equal(t, producer.SchedulerReport{Schedules: 1, Failed: 1}, *rep)
	st := e.getSchedule(t, "once")
	require.NotNil(t, st.LastError)
	require.Contains(t, *st.LastError, `its correlation_id "`+next+`" is held by a call this schedule did not make`)
	require.Equal(t, t0.Add(5*time.Second), st.LastRunAt.UTC(), "the last run that enqueued")
	rep, err = c.RunOnce(context.Background())
	require.NoError(t, err)
	require.Zero(t, rep.Failed, "the instant is not tried again")
}

// A schedule whose integration left the catalog: its firings enqueue no
// call, and the schedule's last_error names the field, until the schedule
// is changed.
func TestSchedulerIntegrationRemoved(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.schedules(t, http.MethodPost, "", e.adminKey, schedule(map[string]any{"id": "gone", "cron": "@every 1s"}))
	require.Equal(t, http.StatusCreated, r.Status, "body: %s", r.Body)
	t0 := decodeSchedule(t, r).UpdatedAt.Truncate(time.Second)

	// The workers' catalog, since the schedule was made, has no httpbin.
	cat, err := tasks.ParseCatalog([]byte("integrations:\n  other:\n    base_url: https://other.example\n    auth: {type: none}\n"))
	require.NoError(t, err)
	p, err := producer.New(e.rdb, &producer.Config{Catalog: cat, Records: e.records})
	require.NoError(t, err)
	clock := &fakeClock{t: t0.Add(time.Second)}
	s := newScheduler(t, p, nil, clock)
	rep, err := s.RunOnce(context.Background())
	require.NoError(t, err)
	require.Equal(t, producer.SchedulerReport{Schedules: 1, Failed: 1}, *rep)
	require.Empty(t, e.scheduledCalls(t, "gone"))
	st := e.getSchedule(t, "gone")
	require.NotNil(t, st.LastError)
	require.Equal(t, "the firing at "+t0.Add(time.Second).Format(time.RFC3339)+` enqueued no call: call.integration: unknown integration "httpbin"; known: other`, *st.LastError)
	require.Nil(t, st.LastRunAt)

	// A change clears the error (the API's catalog still has httpbin).
	r = e.schedules(t, http.MethodPut, "/gone", e.adminKey, schedule(map[string]any{"id": "gone", "cron": "@every 2s"}))
	require.Equal(t, http.StatusOK, r.Status)
	require.Nil(t, decodeSchedule(t, r).LastError)
}

// A lease that is not renewed lapses, and another scheduler takes over.
func TestSchedulerLeaseLapses(t *testing.T) {
	t.Parallel()
	e := setup(t)
	cfg := producer.SchedulerConfig{Interval: 10 * time.Millisecond, Lease: 200 * time.Millisecond}
	a := newScheduler(t, e.prod, &cfg, nil)
	b := newScheduler(t, e.prod, &cfg, nil)
	_, err := a.RunOnce(context.Background())
	require.NoError(t, err)
	_, err = b.RunOnce(context.Background())
	require.ErrorIs(t, err, producer.ErrSchedulerLeaseHeld)
	require.Eventually(t, func() bool {
		_, err := b.RunOnce(context.Background())
		return err == nil
	}, 5*time.Second, 10*time.Millisecond, "b never took the lapsed lease")
	_, err = a.RunOnce(context.Background())
	require.ErrorIs(t, err, producer.ErrSchedulerLeaseHeld, "a lost it")
}

func TestSchedulerConfig(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, cfg := range []producer.SchedulerConfig{
		{Interval: -time.Second},
		{Interval: time.Millisecond},
		{Interval: time.Second, Lease: time.Second},
		{CatchUp: -time.Second},
		{Resync: -time.Second},
	} {
		_, err := producer.NewScheduler(e.prod, &cfg)
		require.Error(t, err, "%+v", cfg)
	}
	_, err := producer.NewScheduler(nil, nil)
	require.Error(t, err)
}

// Each tenant's schedule fires into its own tenant, under one ID.
func TestSchedulerTenants(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var t0 time.Time
	for _, key := range []string{e.adminKey, e.otherAdminKey} {
		r := e.schedules(t, http.MethodPost, "", key, schedule(map[string]any{"id": "same", "cron": "@every 1h"}))
		require.Equal(t, http.StatusCreated, r.Status, "body: %s", r.Body)
		if u := decodeSchedule(t, r).UpdatedAt.Truncate(time.Second); u.After(t0) {
			t0 = u
		}
	}
	clock := &fakeClock{t: t0.Add(time.Hour + time.Second)}
	rep, err := newScheduler(t, e.prod, nil, clock).RunOnce(context.Background())
	require.NoError(t, err)
	require.Equal(t, 2, rep.Fired)
	for _, tenant := range []string{"acme", "other"} {
		page, err := e.tenantClient(t, tenant).List(context.Background(), tasks.Filter{}, "", 10)
		require.NoError(t, err)
		require.Len(t, page.Calls, 1, tenant)
		require.Equal(t, tenant, page.Calls[0].Tenant)
		require.Equal(t, "same", page.Calls[0].Schedule)
	}
}
