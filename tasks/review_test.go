package tasks_test

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/tasks"
)

// A record gone (expired, or taken back by Delete when its task could not
// be queued) and made again under the same correlation ID, at another
// created_at, leaves the first's index entries naming the ID: they must
// not be read as the new record's, which would list the call twice, under
// a status it does not have, and let Unfinished file the stale entry under
// the new record's status.
func TestIndexEntriesOfAnEarlierRecordUnderTheSameID(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	failed := []tasks.Status{tasks.StatusFailed}
	shard := rediskeys.Shard("reused")
	indexSizes := func() map[string]int64 {
		out := map[string]int64{}
		for _, name := range []string{rediskeys.IndexOpen, rediskeys.IndexIntegration("gh"),
			rediskeys.IndexStatus("failed", ""), rediskeys.IndexStatus("succeeded", "")} {
			out[name] = e.rdb.ZCard(e.ctx, rediskeys.Index("acme", shard, name)).Val()
		}
		return out
	}

	// Expired, and the ID used again.
	first := newRecord("acme", "reused")
	first.CreatedAt = testNow.Add(-2 * time.Hour)
	require.NoError(t, e.store.Create(e.ctx, first, "fp", 0, []byte(`{}`)))
	done := *first
	done.Status = tasks.StatusFailed
	require.NoError(t, e.store.Write(e.ctx, &done, 0))
	require.NoError(t, e.rdb.Del(e.ctx, rediskeys.Record("acme", "reused")).Err())
	second := newRecord("acme", "reused")
	second.CreatedAt = testNow.Add(-time.Hour)
	require.NoError(t, e.store.Create(e.ctx, second, "fp", 0, []byte(`{}`)))

	require.Equal(t, []string{"reused"}, e.listAll(t, "acme", tasks.Filter{}, 10), "listed once")
	require.Empty(t, e.listAll(t, "acme", tasks.Filter{Statuses: failed}, 10), "the new call is queued, not failed")
	_, err := e.store.Prune(e.ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, map[string]int64{rediskeys.IndexOpen: 1, rediskeys.IndexIntegration("gh"): 1,
		rediskeys.IndexStatus("failed", ""): 0, rediskeys.IndexStatus("succeeded", ""): 0}, indexSizes())
	counts, err := e.store.Count(e.ctx, "acme", testNow.Add(-3*time.Hour), testNow)
	require.NoError(t, err)
	require.Equal(t, int64(1), counts.Total)
	require.Equal(t, int64(1), counts.ByStatus[tasks.StatusQueued])
	require.Zero(t, counts.ByStatus[tasks.StatusFailed])

	// Taken back by Delete (its task could not be queued: the client went
	// away, say), and made again when the client retries.
	require.NoError(t, e.store.Delete(e.ctx, "acme", "reused"))
	third := newRecord("acme", "reused")
	third.CreatedAt = testNow.Add(-30 * time.Minute)
	require.NoError(t, e.store.Create(e.ctx, third, "fp", 0, []byte(`{}`)))
	counts, err = e.store.Count(e.ctx, "acme", testNow.Add(-3*time.Hour), testNow)
	require.NoError(t, err)
	require.Equal(t, int64(1), counts.Total, "Delete takes the record's index entries with it")
	ok := *third
	ok.Status = tasks.StatusSucceeded
	require.NoError(t, e.store.Write(e.ctx, &ok, 0))
	recs, _, err := e.store.Unfinished(e.ctx, "acme", testNow, "", 10)
	require.NoError(t, err)
	require.Empty(t, recs)
	require.Equal(t, []string{"reused"}, e.listAll(t, "acme", tasks.Filter{}, 10))
	require.Equal(t, []string{"reused"}, e.listAll(t, "acme", tasks.Filter{Statuses: []tasks.Status{tasks.StatusSucceeded}}, 10))
	require.Empty(t, e.listAll(t, "acme", tasks.Filter{Statuses: failed}, 10))
	require.Equal(t, map[string]int64{rediskeys.IndexOpen: 0, rediskeys.IndexIntegration("gh"): 1,
		rediskeys.IndexStatus("failed", ""): 0, rediskeys.IndexStatus("succeeded", ""): 1}, indexSizes())
}

// List drops the entries of expired records it meets; it must drop them
// from every index of their shard, not only the one it read: Prune walks
// the all index, so an entry List took from there and left in the status
// and integration indexes would stay there for good.
func TestPruneAfterListMetExpiredRecords(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	for i := range 40 {
		rec := newRecord("acme", "gone-"+strconv.Itoa(i))
		rec.CreatedAt = testNow.Add(time.Duration(i) * time.Second)
		require.NoError(t, e.store.Create(e.ctx, rec, "fp", 0, []byte(`{}`)))
		rec.Status = tasks.StatusFailed
		require.NoError(t, e.store.Write(e.ctx, rec, 0))
		require.NoError(t, e.rdb.Del(e.ctx, rediskeys.Record("acme", rec.CorrelationID)).Err()) // expired
	}
	require.Empty(t, e.listAll(t, "acme", tasks.Filter{}, 10))
	_, err := e.store.Prune(e.ctx, "acme")
	require.NoError(t, err)
	for shard := range rediskeys.RecordShards {
		for _, name := range []string{rediskeys.IndexOpen, rediskeys.IndexIntegration("gh"),
			rediskeys.IndexStatus("failed", "")} {
			require.Zero(t, e.rdb.ZCard(e.ctx, rediskeys.Index("acme", shard, name)).Val(), "shard %d index %s", shard, name)
		}
	}
}

// A bound past 2286 (13 digits of milliseconds) is still a bound: until
// in 2300 keeps every call, since in 2300 none.
func TestListBoundsFarAhead(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	e.create(t, "acme", "now")
	far := time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)
	require.Equal(t, []string{"now"}, e.listAll(t, "acme", tasks.Filter{Until: far}, 10))
	require.Empty(t, e.listAll(t, "acme", tasks.Filter{Since: far}, 10))
	counts, err := e.store.Count(e.ctx, "acme", testNow.Add(-time.Hour), far)
	require.NoError(t, err)
	require.Equal(t, int64(1), counts.Total)
}

// A tenant whose only records were written before the calls index is one
// the reconciler walks once they are moved: else its unfinished calls are
// never reconciled and its index entries never pruned.
func TestMovedRecordsRegisterTheirTenant(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	rec := newRecord("old", "before")
	b, err := json.Marshal(rec)
	require.NoError(t, err)
	require.NoError(t, e.rdb.HSet(e.ctx, rediskeys.LegacyRecord("old", "before"), "rec", b, "status", "queued", "fp", "fp", "v", 1).Err())
	moved, err := e.store.MigrateLegacy(e.ctx)
	require.NoError(t, err)
	require.Equal(t, 1, moved)
	tenants, err := e.store.Tenants(e.ctx)
	require.NoError(t, err)
	require.Contains(t, tenants, "old")
}
