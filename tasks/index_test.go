package tasks_test

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/tasks"
)

// indexed is a record created for the index tests, with what it became.
type indexed struct {
	id          string
	status      tasks.Status
	integration string
	created     time.Time
}

// populate creates n records of tenant, created over the hour before
// testNow (several in one millisecond, so that order falls to the ID), and
// moves them through the statuses in turn: queued, running (begun),
// retrying, succeeded, failed, canceled. It returns them newest first.
func (e *storeEnv) populate(t *testing.T, tenant string, n int) []indexed {
	t.Helper()
	statuses := []tasks.Status{tasks.StatusQueued, tasks.StatusRunning, tasks.StatusRetrying,
		tasks.StatusSucceeded, tasks.StatusFailed, tasks.StatusCanceled}
	var out []indexed
	for i := range n {
		rec := newRecord(tenant, fmt.Sprintf("c-%03d", (i*37)%n)) // IDs not in time order
		rec.CreatedAt = testNow.Add(-time.Hour + time.Duration(i/3)*time.Second + time.Duration(i%3)*time.Microsecond)
		if i%4 == 0 {
			rec.Integration = "open"
		}
		require.NoError(t, e.store.Create(e.ctx, rec, "fp", 0, []byte(`{"tenant":"`+tenant+`"}`)))
		st := statuses[i%len(statuses)]
		switch st {
		case tasks.StatusQueued:
		case tasks.StatusRunning:
			_, err := e.store.Begin(e.ctx, tenant, rec.CorrelationID, tasks.RunMarker{Attempt: 1, StartedAt: testNow})
			require.NoError(t, err)
		default:
			cp := *rec
			cp.Status = st
			if st.Terminal() {
				done := testNow
				cp.CompletedAt = &done
			}
			require.NoError(t, e.store.Write(e.ctx, &cp, 0))
		}
		out = append(out, indexed{rec.CorrelationID, st, rec.Integration, rec.CreatedAt})
	}
	slices.SortFunc(out, func(a, b indexed) int {
		if c := cmp.Compare(b.created.UnixMilli(), a.created.UnixMilli()); c != 0 {
			return c
		}
		return cmp.Compare(b.id, a.id)
	})
	return out
}

// listAll pages through List with limit and returns the IDs in order,
// failing on a repeated one.
func (e *storeEnv) listAll(t *testing.T, tenant string, f tasks.Filter, limit int) []string {
	t.Helper()
	ids := []string{}
	seen := map[string]bool{}
	cursor := ""
	for range 1000 {
		page, err := e.store.List(e.ctx, tenant, f, cursor, limit)
		require.NoError(t, err)
		require.LessOrEqual(t, len(page.Calls), limit)
		for _, rec := range page.Calls {
			require.False(t, seen[rec.CorrelationID], "%s listed twice", rec.CorrelationID)
			seen[rec.CorrelationID] = true
			ids = append(ids, rec.CorrelationID)
			require.Nil(t, rec.History, "a summary has no history")
		}
		if page.NextCursor == "" {
			return ids
		}
		cursor = page.NextCursor
	}
	t.Fatal("paging did not end")
	return nil
}

func want(all []indexed, keep func(indexed) bool) []string {
	ids := []string{}
	for _, c := range all {
		if keep(c) {
			ids = append(ids, c.id)
		}
	}
	return ids
}

func TestListFiltersAndPages(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	all := e.populate(t, "acme", 240)
	e.populate(t, "other", 30) // another tenant's calls never show

	// The index keeps created_at to the millisecond.
	since, until := all[150].created.Truncate(time.Millisecond), all[40].created.Truncate(time.Millisecond)
	for _, tc := range []struct {
		name string
		f    tasks.Filter
		keep func(indexed) bool
	}{
		{"every call", tasks.Filter{}, func(indexed) bool { return true }},
		{"failed", tasks.Filter{Statuses: []tasks.Status{tasks.StatusFailed}},
			func(c indexed) bool { return c.status == tasks.StatusFailed }},
		{"failed or canceled", tasks.Filter{Statuses: []tasks.Status{tasks.StatusFailed, tasks.StatusCanceled}},
			func(c indexed) bool { return c.status == tasks.StatusFailed || c.status == tasks.StatusCanceled }},
		{"running or succeeded", tasks.Filter{Statuses: []tasks.Status{tasks.StatusRunning, tasks.StatusSucceeded}},
			func(c indexed) bool { return c.status == tasks.StatusRunning || c.status == tasks.StatusSucceeded }},
		{"queued", tasks.Filter{Statuses: []tasks.Status{tasks.StatusQueued}},
			func(c indexed) bool { return c.status == tasks.StatusQueued }},
		{"integration", tasks.Filter{Integration: "open"},
			func(c indexed) bool { return c.integration == "open" }},
		{"integration and status", tasks.Filter{Integration: "gh", Statuses: []tasks.Status{tasks.StatusFailed, tasks.StatusRetrying}},
			func(c indexed) bool {
				return c.integration == "gh" && (c.status == tasks.StatusFailed || c.status == tasks.StatusRetrying)
			}},
		{"window", tasks.Filter{Since: since, Until: until},
			func(c indexed) bool { return !c.created.Before(since) && c.created.Before(until) }},
		{"window and status", tasks.Filter{Since: since, Until: until, Statuses: []tasks.Status{tasks.StatusSucceeded}},
			func(c indexed) bool {
				return !c.created.Before(since) && c.created.Before(until) && c.status == tasks.StatusSucceeded
			}},
		{"unknown integration", tasks.Filter{Integration: "nope"}, func(indexed) bool { return false }},
	} {
		expect := want(all, tc.keep)
		for _, limit := range []int{1, 7, 50, 500} {
			t.Run(tc.name+"/limit "+strconv.Itoa(limit), func(t *testing.T) {
				require.Equal(t, expect, e.listAll(t, "acme", tc.f, limit))
			})
		}
	}

	t.Run("summary", func(t *testing.T) {
		page, err := e.store.List(e.ctx, "acme", tasks.Filter{Statuses: []tasks.Status{tasks.StatusRunning}}, "", 1)
		require.NoError(t, err)
		require.Len(t, page.Calls, 1)
		rec := page.Calls[0]
		require.Equal(t, tasks.StatusRunning, rec.Status, "the authoritative status, not the summary's")
		require.Equal(t, "acme", rec.Tenant)
		require.NotEmpty(t, page.NextCursor)
	})
}

// Paging never repeats or skips a call that existed when paging began, while
// new calls arrive and open calls finish.
func TestListPagesStableUnderWrites(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	all := e.populate(t, "acme", 120)
	f := tasks.Filter{Statuses: []tasks.Status{tasks.StatusFailed, tasks.StatusQueued}}
	expectFailed := want(all, func(c indexed) bool { return c.status == tasks.StatusFailed })

	var got []string
	cursor := ""
	for i := 0; ; i++ {
		page, err := e.store.List(e.ctx, "acme", f, cursor, 3)
		require.NoError(t, err)
		for _, rec := range page.Calls {
			got = append(got, rec.CorrelationID)
		}
		// Between pages: a new call, newer than every page, and an open
		// call finishing.
		newer := newRecord("acme", "new-"+strconv.Itoa(i))
		newer.CreatedAt = testNow.Add(time.Duration(i) * time.Millisecond)
		require.NoError(t, e.store.Create(e.ctx, newer, "fp", 0, nil))
		for _, c := range all {
			if c.status == tasks.StatusQueued {
				rec, err := e.store.Get(e.ctx, "acme", c.id)
				require.NoError(t, err)
				if !rec.Status.Terminal() {
					rec.Status = tasks.StatusSucceeded
					require.NoError(t, e.store.Write(e.ctx, rec, 0))
					break
				}
			}
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	var failed []string
	seen := map[string]bool{}
	for _, id := range got {
		require.False(t, seen[id], "%s listed twice", id)
		seen[id] = true
		if rec, err := e.store.Get(e.ctx, "acme", id); err == nil && rec.Status == tasks.StatusFailed {
			failed = append(failed, id)
		}
	}
	require.Equal(t, expectFailed, failed, "every failed call, once, in order")
}

func TestListBadInput(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	for _, tc := range []struct {
		f      tasks.Filter
		cursor string
		limit  int
		field  string
	}{
		{f: tasks.Filter{Statuses: []tasks.Status{"done"}}, limit: 10, field: "status"},
		{f: tasks.Filter{Integration: "no spaces"}, limit: 10, field: "integration"},
		{f: tasks.Filter{Since: testNow, Until: testNow}, limit: 10, field: "until"},
		{limit: 0, field: "limit"},
		{limit: tasks.MaxListLimit + 1, field: "limit"},
	} {
		_, err := e.store.List(e.ctx, "acme", tc.f, tc.cursor, tc.limit)
		requireFieldError(t, err, tc.field)
	}
	for _, c := range []string{"x", "MTIzOmFiYw", "!!!!", "MDAwMDAwMDAwMDAwMTpiIGM"} {
		_, err := e.store.List(e.ctx, "acme", tasks.Filter{}, c, 10)
		require.ErrorIs(t, err, tasks.ErrBadCursor, c)
	}
}

// An expired record leaves the list, and its entry the index.
func TestListDropsExpiredRecords(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	e.create(t, "acme", "keep")
	e.create(t, "acme", "gone")
	require.NoError(t, e.rdb.Del(e.ctx, rediskeys.Record("acme", "gone")).Err())
	page, err := e.store.List(e.ctx, "acme", tasks.Filter{}, "", 10)
	require.NoError(t, err)
	require.Len(t, page.Calls, 1)
	require.Equal(t, "keep", page.Calls[0].CorrelationID)
	members, err := e.rdb.ZRange(e.ctx, rediskeys.Index("acme", rediskeys.Shard("gone"), rediskeys.IndexIntegration("gh")), 0, -1).Result()
	require.NoError(t, err)
	for _, m := range members {
		require.NotContains(t, m, ":gone")
	}
}

func TestCount(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	all := e.populate(t, "acme", 120)
	e.populate(t, "other", 12)
	since, until := all[100].created.Truncate(time.Millisecond), all[10].created.Truncate(time.Millisecond)
	counts, err := e.store.Count(e.ctx, "acme", since, until)
	require.NoError(t, err)
	byStatus := map[tasks.Status]int64{}
	byIntegration := map[string]int64{}
	var total int64
	for _, c := range all {
		if !c.created.Before(since) && c.created.Before(until) {
			byStatus[c.status]++
			byIntegration[c.integration]++
			total++
		}
	}
	for _, st := range []tasks.Status{tasks.StatusQueued, tasks.StatusRunning, tasks.StatusRetrying,
		tasks.StatusSucceeded, tasks.StatusFailed, tasks.StatusCanceled} {
		require.Equal(t, byStatus[st], counts.ByStatus[st], st)
	}
	require.Equal(t, byIntegration, counts.ByIntegration)
	require.Equal(t, total, counts.Total)
}

func TestReplayClaims(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	rec := newRecord("acme", "orig")
	payload := []byte(`{"tenant":"acme","call":{"integration":"gh"}}`)
	require.NoError(t, e.store.Create(e.ctx, rec, "fp", 0, payload))

	_, err := e.store.ClaimReplay(e.ctx, "acme", "nope", "r0", false, false)
	require.ErrorIs(t, err, tasks.ErrNotFound)
	_, err = e.store.ClaimReplay(e.ctx, "acme", "orig", "r0", false, false)
	require.ErrorIs(t, err, tasks.ErrUnfinished)
	e.finish(t, rec, 500)

	claim, err := e.store.ClaimReplay(e.ctx, "acme", "orig", "r1", false, false)
	require.NoError(t, err)
	require.Equal(t, "r1", claim.ID)
	require.JSONEq(t, string(payload), string(claim.Payload))
	// Interrupted before confirming: the next claim takes r1 up again.
	claim, err = e.store.ClaimReplay(e.ctx, "acme", "orig", "r2", false, false)
	require.NoError(t, err)
	require.Equal(t, "r1", claim.ID)
	require.NoError(t, e.store.ConfirmReplay(e.ctx, "acme", "orig", "r1"))
	got, err := e.store.Get(e.ctx, "acme", "orig")
	require.NoError(t, err)
	require.Equal(t, "r1", got.ReplayedBy)

	_, err = e.store.ClaimReplay(e.ctx, "acme", "orig", "r2", false, false)
	var replayed *tasks.ReplayedError
	require.ErrorAs(t, err, &replayed)
	require.ErrorIs(t, err, tasks.ErrReplayed)
	require.Equal(t, "r1", replayed.By)

	claim, err = e.store.ClaimReplay(e.ctx, "acme", "orig", "r2", true, false)
	require.NoError(t, err)
	require.Equal(t, "r2", claim.ID)
	// A replay asked for by name replaces an unconfirmed claim.
	claim, err = e.store.ClaimReplay(e.ctx, "acme", "orig", "named", true, true)
	require.NoError(t, err)
	require.Equal(t, "named", claim.ID)
	require.NoError(t, e.store.ConfirmReplay(e.ctx, "acme", "orig", "named"))
	page, err := e.store.List(e.ctx, "acme", tasks.Filter{}, "", 5)
	require.NoError(t, err)
	require.Equal(t, "named", page.Calls[0].ReplayedBy, "summaries show the latest replay")

	old := e.create(t, "acme", "no-payload")
	e.finish(t, old, 200)
	_, err = e.store.ClaimReplay(e.ctx, "acme", "no-payload", "r3", true, false)
	require.ErrorIs(t, err, tasks.ErrNoPayload)
}

// A record written before the calls index is moved into its shard, indexed,
// by the first read or write that misses it, or by MigrateLegacy.
func TestLegacyRecordsMove(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	legacy := func(id string, status tasks.Status) {
		rec := newRecord("acme", id)
		rec.Status = status
		if status.Terminal() {
			rec.Response = &tasks.Response{Status: 200, Headers: map[string]string{"X-A": "1"}, Body: json.RawMessage(`{"ok":true}`), Size: 11}
			rec.History = []tasks.Attempt{{Attempt: 1, DurationMS: 3, Status: 200}}
		}
		b, err := json.Marshal(rec)
		require.NoError(t, err)
		key := rediskeys.LegacyRecord("acme", id)
		require.NoError(t, e.rdb.HSet(e.ctx, key, "rec", b, "status", string(status), "fp", "fp-"+id, "v", 1).Err())
		require.NoError(t, e.rdb.PExpire(e.ctx, key, 90*time.Minute).Err())
	}
	legacy("read", tasks.StatusSucceeded)
	legacy("begin", tasks.StatusQueued)
	legacy("scan-1", tasks.StatusQueued)
	legacy("scan-2", tasks.StatusFailed)

	rec, err := e.store.Get(e.ctx, "acme", "read")
	require.NoError(t, err)
	require.Equal(t, tasks.StatusSucceeded, rec.Status)
	require.Equal(t, map[string]string{"X-A": "1"}, rec.Response.Headers, "the whole record is kept")
	require.JSONEq(t, `{"ok":true}`, string(rec.Response.Body))
	require.Len(t, rec.History, 1)
	sum := e.rdb.HGet(e.ctx, rediskeys.Record("acme", "read"), "rec").Val()
	require.NotContains(t, sum, "X-A", "its JSON is split into summary and detail")
	require.NotContains(t, sum, "duration_ms")
	require.Zero(t, e.rdb.Exists(e.ctx, rediskeys.LegacyRecord("acme", "read")).Val())
	require.InDelta(t, 90*time.Minute, e.pttl(t, "acme", "read"), float64(5*time.Second), "its time to live is kept")

	begun, err := e.store.Begin(e.ctx, "acme", "begin", tasks.RunMarker{Attempt: 1, StartedAt: testNow})
	require.NoError(t, err)
	require.Equal(t, tasks.StatusQueued, begun.Record.Status)

	moved, err := e.store.MigrateLegacy(e.ctx)
	require.NoError(t, err)
	require.Equal(t, 2, moved)
	ids := e.listAll(t, "acme", tasks.Filter{}, 10)
	require.ElementsMatch(t, []string{"read", "begin", "scan-1", "scan-2"}, ids)
	require.Equal(t, []string{"scan-2"}, e.listAll(t, "acme", tasks.Filter{Statuses: []tasks.Status{tasks.StatusFailed}}, 10))
	moved, err = e.store.MigrateLegacy(e.ctx)
	require.NoError(t, err)
	require.Zero(t, moved)

	// Every one moved: later scans are skipped; a record met on a read is
	// still moved.
	require.Equal(t, int64(1), e.rdb.Exists(e.ctx, rediskeys.LegacyMoved).Val())
	legacy("late", tasks.StatusFailed)
	moved, err = e.store.MigrateLegacy(e.ctx)
	require.NoError(t, err)
	require.Zero(t, moved, "no scan once every record was moved")
	require.Equal(t, int64(1), e.rdb.Exists(e.ctx, rediskeys.LegacyRecord("acme", "late")).Val())
	_, err = e.store.Get(e.ctx, "acme", "late")
	require.NoError(t, err)
}

// A scan that meets a record it cannot move leaves later scans to try.
func TestLegacyScanGoesOnWhileARecordIsLeft(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	require.NoError(t, e.rdb.HSet(e.ctx, rediskeys.LegacyRecord("acme", "bad"), "rec", "not json", "status", "queued").Err())
	moved, err := e.store.MigrateLegacy(e.ctx)
	require.NoError(t, err)
	require.Zero(t, moved)
	require.Zero(t, e.rdb.Exists(e.ctx, rediskeys.LegacyMoved).Val())
}

// Unfinished walks the open calls created before a time; on the way it
// drops entries of expired records and moves finished ones out.
func TestUnfinished(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	all := e.populate(t, "acme", 90)
	before := all[20].created.Truncate(time.Millisecond)
	var expect []string
	for _, c := range all {
		if !c.status.Terminal() && c.created.Before(before) {
			expect = append(expect, c.id)
		}
	}
	var got []string
	cursor := ""
	for {
		recs, next, err := e.store.Unfinished(e.ctx, "acme", before, cursor, 4)
		require.NoError(t, err)
		for _, r := range recs {
			require.False(t, r.Status.Terminal())
			got = append(got, r.CorrelationID)
		}
		if next == "" {
			break
		}
		cursor = next
	}
	require.ElementsMatch(t, expect, got)
	_, _, err := e.store.Unfinished(e.ctx, "acme", before, "bad", 4)
	require.ErrorIs(t, err, tasks.ErrBadCursor)
}

// Index entries go with their records: after every record has expired,
// Prune leaves the indexes empty, so memory stays bounded however many
// calls pass through. The records are written with long TTLs, so however
// slowly they are written none expires before the last is; that each has
// its TTL is checked, then the time they expire is brought to now.
func TestPruneFollowsExpiry(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	const n = 3000
	for i := range n {
		rec := newRecord("acme", "churn-"+strconv.Itoa(i))
		rec.CreatedAt = time.Now()
		require.NoError(t, e.store.Create(e.ctx, rec, "fp", 0, []byte("{}")))
		if i%3 != 0 {
			rec.Status = tasks.StatusFailed
			require.NoError(t, e.store.Write(e.ctx, rec, 0))
		}
	}
	indexSize := func() int64 {
		var total int64
		for shard := range rediskeys.RecordShards {
			for _, name := range []string{rediskeys.IndexOpen, rediskeys.IndexIntegration("gh"),
				rediskeys.IndexStatus("failed", "")} {
				total += e.rdb.ZCard(e.ctx, rediskeys.Index("acme", shard, name)).Val()
			}
		}
		return total
	}
	require.Equal(t, int64(n*2), indexSize(), "each call in its integration's index and in open or failed")
	pipe := e.rdb.Pipeline()
	ttls := make([]*redis.DurationCmd, n)
	for i := range n {
		ttls[i] = pipe.PTTL(e.ctx, rediskeys.Record("acme", "churn-"+strconv.Itoa(i)))
	}
	_, err := pipe.Exec(e.ctx)
	require.NoError(t, err)
	for i, c := range ttls {
		want := e.cfg.PendingTTL
		if i%3 != 0 {
			want = e.cfg.ResultTTL
		}
		require.Positive(t, c.Val(), "record %d expires", i)
		require.LessOrEqual(t, c.Val(), want, "record %d expires within its TTL", i)
	}
	pipe = e.rdb.Pipeline()
	for i := range n {
		pipe.PExpire(e.ctx, rediskeys.Record("acme", "churn-"+strconv.Itoa(i)), time.Millisecond)
	}
	_, err = pipe.Exec(e.ctx)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		keys, err := e.rdb.Keys(e.ctx, "callq:{acme:*}:call:*").Result()
		return err == nil && len(keys) == 0
	}, 10*time.Second, 20*time.Millisecond)
	removed, err := e.store.Prune(e.ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, n, removed)
	require.Zero(t, indexSize())
}

// A page of the open index whose entries are all dropped (expired or
// finished) does not end the walk of its shard.
func TestUnfinishedWalksPastDroppedEntries(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	var ids []string
	for i := range 400 {
		id := "u-" + strconv.Itoa(i)
		if rediskeys.Shard(id) != 0 {
			continue
		}
		rec := e.create(t, "acme", id)
		ids = append(ids, rec.CorrelationID)
	}
	require.Greater(t, len(ids), 12)
	slices.Sort(ids)
	// The oldest entries (by ID within one millisecond) expire.
	for _, id := range ids[:10] {
		require.NoError(t, e.rdb.Del(e.ctx, rediskeys.Record("acme", id)).Err())
	}
	recs, _, err := e.store.Unfinished(e.ctx, "acme", testNow.Add(time.Second), "", 3)
	require.NoError(t, err)
	require.Len(t, recs, 3, "the live calls behind a page of dropped ones")
}

// Create adds a call's integration to its shard's names once per store
// (and refresh period), not per call; another store adds it again.
func TestCreateAddsIntegrationNamesOnce(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	var ids []string // four IDs of shard 0
	for i := 0; len(ids) < 4; i++ {
		if id := "n-" + strconv.Itoa(i); rediskeys.Shard(id) == 0 {
			ids = append(ids, id)
		}
	}
	names := rediskeys.Index("acme", 0, rediskeys.IndexNames)
	e.create(t, "acme", ids[0])
	require.Equal(t, []string{"gh"}, e.rdb.SMembers(e.ctx, names).Val())

	require.NoError(t, e.rdb.Del(e.ctx, names).Err())
	e.create(t, "acme", ids[1])
	require.Zero(t, e.rdb.Exists(e.ctx, names).Val(), "added lately: not again")
	other := newRecord("acme", ids[2])
	other.Integration = "dd"
	require.NoError(t, e.store.Create(e.ctx, other, "fp", 0, nil))
	require.Equal(t, []string{"dd"}, e.rdb.SMembers(e.ctx, names).Val(), "another integration is added")

	store, err := tasks.NewStore(e.rdb, &e.cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	require.NoError(t, store.Create(e.ctx, newRecord("acme", ids[3]), "fp", 0, nil))
	require.ElementsMatch(t, []string{"dd", "gh"}, e.rdb.SMembers(e.ctx, names).Val(), "another store adds it")
}
