package producer_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/tasks"
)

var allStatuses = []tasks.Status{tasks.StatusQueued, tasks.StatusRunning, tasks.StatusRetrying,
	tasks.StatusSucceeded, tasks.StatusFailed, tasks.StatusCanceled}

// seed stores the record of tenant's call id to integration, created at
// created, and moves it to status st through the store, as a worker
// would. It keeps no payload: it cannot be replayed.
func (e *env) seed(tb testing.TB, tenant, id, integration string, created time.Time, st tasks.Status) *tasks.Record {
	tb.Helper()
	ctx := context.Background()
	rec := &tasks.Record{CorrelationID: id, Tenant: tenant, Status: tasks.StatusQueued, Integration: integration,
		Method: "GET", Path: "/get", Queue: "default", MaxAttempts: 3, History: []tasks.Attempt{}, CreatedAt: created.UTC()}
	require.NoError(tb, e.records.Create(ctx, rec, "fp-"+id, 0, nil))
	switch st {
	case tasks.StatusQueued:
	case tasks.StatusRunning:
		_, err := e.records.Begin(ctx, tenant, id, tasks.RunMarker{Attempt: 1, StartedAt: time.Now().UTC()})
		require.NoError(tb, err)
	case tasks.StatusRetrying:
		next := time.Now().Add(time.Hour).UTC()
		rec.Status, rec.Attempts, rec.NextAttemptAt = st, 1, &next
		rec.Error = &tasks.CallError{Kind: tasks.KindHTTPStatus, Message: "upstream answered 503"}
		require.NoError(tb, e.records.Write(ctx, rec, 0))
	default:
		done := time.Now().UTC()
		rec.Status, rec.Attempts, rec.CompletedAt = st, 1, &done
		rec.Response = &tasks.Response{Status: 503, Headers: map[string]string{"X-Upstream": "secret-ish"},
			Body: json.RawMessage(`{"detail":"down"}`), Size: 17}
		rec.History = []tasks.Attempt{{Attempt: 1, StartedAt: done, DurationMS: 3, Status: 503}}
		require.NoError(tb, e.records.Write(ctx, rec, 0))
	}
	rec.Status = st
	return rec
}

// seeded is a seeded call as the tests expect to see it listed.
type seeded struct {
	id          string
	integration string
	status      tasks.Status
	created     time.Time
}

// newestFirst orders calls as the list does: created_at (to the
// millisecond), then ID, descending.
func newestFirst(calls []seeded) {
	slices.SortFunc(calls, func(a, b seeded) int {
		if c := b.created.UnixMilli() - a.created.UnixMilli(); c != 0 {
			return int(c)
		}
		return strings.Compare(b.id, a.id)
	})
}

func ids(calls []seeded) []string {
	out := make([]string, len(calls))
	for i, c := range calls {
		out[i] = c.id
	}
	return out
}

// seedMany seeds n calls of tenant, created a second apart three at a time
// (so that some share a millisecond and are ordered by ID), cycling
// through every status and three integrations.
func (e *env) seedMany(tb testing.TB, tenant string, n int, base time.Time) []seeded {
	tb.Helper()
	integrations := []string{"httpbin", "bearer", "basic"}
	out := make([]seeded, n)
	for i := range n {
		s := seeded{
			id:          tenant + "-" + strings.Repeat("x", i%4) + string(rune('a'+i%26)) + "-" + time.Duration(i).String(),
			integration: integrations[i%len(integrations)],
			status:      allStatuses[(i/2)%len(allStatuses)],
			created:     base.Add(time.Duration(i/3) * time.Second),
		}
		e.seed(tb, tenant, s.id, s.integration, s.created, s.status)
		out[i] = s
	}
	return out
}

// listPage is GET /v1/calls decoded.
type listPage struct {
	Calls []struct {
		CorrelationID string          `json:"correlation_id"`
		Tenant        string          `json:"tenant"`
		Status        tasks.Status    `json:"status"`
		Integration   string          `json:"integration"`
		ReplayOf      string          `json:"replay_of"`
		ReplayedBy    string          `json:"replayed_by"`
		CreatedAt     time.Time       `json:"created_at"`
		Raw           json.RawMessage `json:"-"`
	} `json:"calls"`
	NextCursor *string `json:"next_cursor"`
}

func (e *env) list(tb testing.TB, key, query string) (*listPage, *resp) {
	tb.Helper()
	r := e.do(tb, req{Method: http.MethodGet, Path: "/v1/calls?" + query, Key: key})
	require.Equal(tb, http.StatusOK, r.Status, "GET /v1/calls?%s: %s", query, r.Body)
	var p listPage
	require.NoError(tb, json.Unmarshal(r.Body, &p), "body: %s", r.Body)
	return &p, r
}

// listAll pages through GET /v1/calls?query with pages of limit and
// returns the IDs in the order listed. between, if not nil, runs after
// each page.
func (e *env) listAll(tb testing.TB, key, query string, limit int, between func()) []string {
	tb.Helper()
	var out []string
	cursor := ""
	for pages := 0; ; pages++ {
		require.Less(tb, pages, 1000, "paging does not end")
		q := query + "&limit=" + strconv.Itoa(limit)
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		p, _ := e.list(tb, key, q)
		require.LessOrEqual(tb, len(p.Calls), limit)
		for _, c := range p.Calls {
			out = append(out, c.CorrelationID)
		}
		if p.NextCursor == nil {
			return out
		}
		require.NotEmpty(tb, *p.NextCursor)
		cursor = *p.NextCursor
		if between != nil {
			between()
		}
	}
}

// matching keeps the calls pred selects.
func matching(calls []seeded, pred func(seeded) bool) []seeded {
	var out []seeded
	for _, c := range calls {
		if pred(c) {
			out = append(out, c)
		}
	}
	return out
}

func TestListPagesNeitherRepeatNorSkipACall(t *testing.T) {
	t.Parallel()
	e := setup(t)
	base := time.Now().Add(-2 * time.Hour).Truncate(time.Millisecond)
	calls := e.seedMany(t, "acme", 130, base)
	newestFirst(calls)

	// Every call, in pages of 50: three pages, the last without a cursor.
	pages := 0
	require.Equal(t, ids(calls), e.listAll(t, e.producerKey, "", 50, func() { pages++ }))
	require.Equal(t, 2, pages)

	// A filter, in pages of 7, while new calls it selects arrive between
	// pages: each call that existed when paging began and matches is
	// listed once, in order; the later ones are newer than the cursor.
	failedOrQueued := func(c seeded) bool { return c.status == tasks.StatusFailed || c.status == tasks.StatusQueued }
	want := matching(calls, failedOrQueued)
	require.Greater(t, len(want), 14, "more than two pages")
	n := 0
	got := e.listAll(t, e.producerKey, "status=failed&status=queued", 7, func() {
		n++
		e.seed(t, "acme", "late-f-"+strconv.Itoa(n), "httpbin", time.Now(), tasks.StatusFailed)
		e.seed(t, "acme", "late-q-"+strconv.Itoa(n), "bearer", time.Now(), tasks.StatusQueued)
	})
	require.Greater(t, n, 2)
	require.Equal(t, ids(want), got)

	// With an integration too, in pages of 1, and bounded in time.
	want = matching(calls, func(c seeded) bool {
		return failedOrQueued(c) && c.integration == "httpbin" && !c.created.Before(base.Add(10*time.Second))
	})
	require.Greater(t, len(want), 3)
	since := url.QueryEscape(base.Add(10 * time.Second).Format(time.RFC3339Nano))
	require.Equal(t, ids(want), e.listAll(t, e.producerKey, "status=failed&status=queued&integration=httpbin&until=1h&since="+since, 1, nil))
}
