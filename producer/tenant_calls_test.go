package producer_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/tasks"
)

// Tenant B's key sees none of tenant A's calls: not in a list, whatever
// the filter; not to replay, one by one or in bulk; not in stats.
func TestTenantIsolationOfListReplayAndStats(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	_, otherKey, err := e.keys.Create(ctx, "other", "producer")
	require.NoError(t, err)

	// acme: three failed calls (one under an ID other also uses), one
	// queued. other: one failed call, under the shared ID.
	e.enqueueFinished(t, "httpbin", tasks.StatusFailed, "a-1", "a-2", "shared")
	e.enqueueFinished(t, "bearer", tasks.StatusQueued, "a-3")
	r := e.do(t, req{Method: http.MethodPost, Path: "/v1/calls", Key: otherKey, Body: call(map[string]any{"correlation_id": "shared"})})
	require.Equal(t, http.StatusAccepted, r.Status, "body: %s", r.Body)
	e.finish(t, "other", "shared", tasks.StatusFailed)

	// List: other sees its one call, under any filter.
	for _, q := range []string{"", "status=failed", "status=queued", "integration=httpbin", "integration=bearer", "since=1h"} {
		p, _ := e.list(t, otherKey, q)
		for _, c := range p.Calls {
			require.Equal(t, "other", c.Tenant, "GET /v1/calls?%s", q)
			require.Equal(t, "shared", c.CorrelationID)
		}
	}
	require.Equal(t, []string{"shared"}, e.listAll(t, otherKey, "", 10, nil))
	require.Equal(t, []string{"shared", "a-2", "a-1"}, e.listAll(t, e.producerKey, "status=failed", 10, nil))
	// A cursor from acme's list pages through other's calls only.
	p, _ := e.list(t, e.producerKey, "limit=1")
	require.NotNil(t, p.NextCursor)
	op, _ := e.list(t, otherKey, "cursor="+*p.NextCursor)
	for _, c := range op.Calls {
		require.Equal(t, "other", c.Tenant)
	}

	// Replay: acme's calls are not found by other; the shared ID replays
	// other's own call.
	for _, id := range []string{"a-1", "a-2", "a-3"} {
		requireError(t, e.replay(t, otherKey, id, nil), http.StatusNotFound, "not_found", "")
	}
	_, err = e.tenantClient(t, "other").Replay(ctx, "a-1")
	require.ErrorIs(t, err, tasks.ErrNotFound)
	a := replayed(t, e.replay(t, otherKey, "shared", nil), "shared")
	require.Empty(t, e.get(t, "shared").Record(t).ReplayedBy, "acme's call is untouched")
	require.Equal(t, http.StatusNotFound, e.get(t, a.CorrelationID).Status, "the replay is other's")

	// Bulk: other replays only its own (none left); acme's are untouched.
	b := e.bulkReplay(t, otherKey, map[string]any{"again": true, "dry_run": true})
	require.Equal(t, []string{"shared"}, b.originals())
	b = e.bulkReplay(t, otherKey, map[string]any{})
	require.Zero(t, b.Replayed)
	for _, id := range []string{"a-1", "a-2", "shared"} {
		require.Empty(t, e.get(t, id).Record(t).ReplayedBy)
	}
	b = e.bulkReplay(t, e.producerKey, map[string]any{"filter": map[string]any{"status": "failed"}, "dry_run": true})
	require.Equal(t, []string{"shared", "a-2", "a-1"}, b.originals())

	// Stats: each tenant counts its own.
	st := e.stats(t, otherKey, "since=1h")
	require.EqualValues(t, 2, st.Total, "its call and the replay")
	require.Equal(t, map[string]int64{"httpbin": 2}, st.ByIntegration)
	require.EqualValues(t, 1, st.ByStatus["failed"])
	require.EqualValues(t, 1, st.ByStatus["queued"])
	st = e.stats(t, e.producerKey, "since=1h")
	require.EqualValues(t, 4, st.Total)
	require.Equal(t, map[string]int64{"httpbin": 3, "bearer": 1}, st.ByIntegration)
	// Queue depths are the fleet's, the same for both.
	require.Equal(t, st.Queues, e.stats(t, otherKey, "").Queues)
	require.Equal(t, 6, st.Queues["default"].Pending, "every task of both tenants: no worker runs")
}
