package producer_test

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
)

// Concurrent bulk replays of the same filter make one replay of each call
// between them.
func TestConcurrentBulkReplaysReplayEachCallOnce(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	client := e.tenantClient(t, "acme")
	const n = 60
	for range n {
		res, err := client.Enqueue(ctx, &tasks.Call{Integration: "httpbin", Method: "GET", Path: "/get"})
		require.NoError(t, err)
		e.finish(t, "acme", res.Record.CorrelationID, tasks.StatusFailed)
	}
	const runs = 6
	var wg sync.WaitGroup
	start := make(chan struct{})
	results := make([]*producer.ReplayResult, runs)
	errs := make([]error, runs)
	for i := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[i], errs[i] = client.ReplayMany(ctx, producer.ReplayRequest{
				Filter: tasks.Filter{Statuses: []tasks.Status{tasks.StatusFailed}}})
		}()
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	// Every call listed is an original or a replay; each original has
	// exactly one replay.
	replays := map[string][]string{}
	cursor := ""
	for {
		page, err := client.List(ctx, tasks.Filter{}, cursor, tasks.MaxListLimit)
		require.NoError(t, err)
		for _, c := range page.Calls {
			if c.ReplayOf != "" {
				replays[c.ReplayOf] = append(replays[c.ReplayOf], c.CorrelationID)
			}
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	require.Len(t, replays, n)
	for orig, rs := range replays {
		require.Len(t, rs, 1, "%s replayed %d times", orig, len(rs))
	}
}

// A time before 1970 is a bound like any other, not "no bound": Go's zero
// time (0001-01-01T00:00:00Z) as until selects nothing, and a bulk replay
// given it replays nothing.
func TestBoundsBefore1970(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.enqueueFinished(t, "httpbin", tasks.StatusFailed, "f1")
	for _, until := range []string{"0001-01-01T00:00:00Z", "1900-01-01T00:00:00Z"} {
		p, _ := e.list(t, e.producerKey, "until="+until)
		require.Empty(t, p.Calls, "until=%s", until)
		a := e.bulkReplay(t, e.producerKey, map[string]any{"filter": map[string]any{"until": until}})
		require.Zero(t, a.Replayed, "until=%s", until)
		r := e.do(t, req{Method: http.MethodGet, Path: "/v1/stats?until=" + until, Key: e.producerKey})
		require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)
		var st producer.Stats
		require.NoError(t, json.Unmarshal(r.Body, &st))
		require.Zero(t, st.Total, "until=%s: %s", until, r.Body)
	}
	p, _ := e.list(t, e.producerKey, "since=0001-01-01T00:00:00Z")
	require.Len(t, p.Calls, 1)
	require.Empty(t, e.get(t, "f1").Record(t).ReplayedBy)
}
