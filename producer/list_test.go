package producer_test

import (
	"context"
	"encoding/base64"
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
	var out []string
	for _, c := range calls {
		out = append(out, c.id)
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

func TestListFilters(t *testing.T) {
	t.Parallel()
	e := setup(t)
	base := time.Now().Add(-3 * time.Hour).Truncate(time.Second)
	calls := e.seedMany(t, "acme", 60, base) // created over 20s from base
	newestFirst(calls)
	at := func(sec int) time.Time { return base.Add(time.Duration(sec) * time.Second) }
	ts := func(sec int) string { return url.QueryEscape(at(sec).Format(time.RFC3339Nano)) }

	cases := []struct {
		query string
		pred  func(seeded) bool
	}{
		{"", func(seeded) bool { return true }},
		{"status=failed", func(c seeded) bool { return c.status == tasks.StatusFailed }},
		{"status=queued", func(c seeded) bool { return c.status == tasks.StatusQueued }},
		{"status=running", func(c seeded) bool { return c.status == tasks.StatusRunning }},
		{"status=retrying&status=running", func(c seeded) bool {
			return c.status == tasks.StatusRetrying || c.status == tasks.StatusRunning
		}},
		{"status=succeeded&status=canceled&status=failed", func(c seeded) bool { return c.status.Terminal() }},
		{"status=failed&status=queued&status=failed", func(c seeded) bool {
			return c.status == tasks.StatusFailed || c.status == tasks.StatusQueued
		}},
		{"integration=bearer", func(c seeded) bool { return c.integration == "bearer" }},
		{"integration=nothing-here", func(seeded) bool { return false }},
		{"integration=basic&status=canceled&status=retrying", func(c seeded) bool {
			return c.integration == "basic" && (c.status == tasks.StatusCanceled || c.status == tasks.StatusRetrying)
		}},
		{"since=" + ts(10), func(c seeded) bool { return !c.created.Before(at(10)) }},
		{"until=" + ts(10), func(c seeded) bool { return c.created.Before(at(10)) }},
		{"since=" + ts(5) + "&until=" + ts(15), func(c seeded) bool { return !c.created.Before(at(5)) && c.created.Before(at(15)) }},
		{"since=" + ts(5) + "&until=" + ts(15) + "&status=succeeded&status=queued&integration=httpbin", func(c seeded) bool {
			return !c.created.Before(at(5)) && c.created.Before(at(15)) && c.integration == "httpbin" &&
				(c.status == tasks.StatusSucceeded || c.status == tasks.StatusQueued)
		}},
		// Durations mean that long ago: every call is older than 2h.
		{"since=2h", func(seeded) bool { return false }},
		{"until=2h", func(seeded) bool { return true }},
		{"since=4h&until=90m&status=failed", func(c seeded) bool { return c.status == tasks.StatusFailed }},
	}
	for _, tc := range cases {
		want := ids(matching(calls, tc.pred))
		got := e.listAll(t, e.producerKey, tc.query, tasks.MaxListLimit, nil)
		require.Equal(t, want, got, "GET /v1/calls?%s", tc.query)
		if len(want) > 4 {
			require.Equal(t, want, e.listAll(t, e.producerKey, tc.query, 4, nil), "GET /v1/calls?%s in pages of 4", tc.query)
		}
	}
}

func TestListLimit(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.seedMany(t, "acme", 60, time.Now().Add(-time.Hour))

	p, _ := e.list(t, e.producerKey, "")
	require.Len(t, p.Calls, tasks.DefaultListLimit, "the default limit")
	require.NotNil(t, p.NextCursor)
	p, _ = e.list(t, e.producerKey, "limit=1")
	require.Len(t, p.Calls, 1)
	p, _ = e.list(t, e.producerKey, "limit=500")
	require.Len(t, p.Calls, 60)
	require.Nil(t, p.NextCursor, "nothing is left")
	p, _ = e.list(t, e.producerKey, "limit=60")
	require.Len(t, p.Calls, 60)

	// The Go client: 0 is the default.
	page, err := e.tenantClient(t, "acme").List(context.Background(), tasks.Filter{}, "", 0)
	require.NoError(t, err)
	require.Len(t, page.Calls, tasks.DefaultListLimit)
	_, err = e.tenantClient(t, "acme").List(context.Background(), tasks.Filter{}, "", tasks.MaxListLimit+1)
	var fe *tasks.FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "limit", fe.Field)
}

// A summary is the record without history, and its response without
// headers or body.
func TestListSummaries(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.post(t, call(map[string]any{"correlation_id": "sum-1"}))
	require.Equal(t, http.StatusAccepted, r.Status, "body: %s", r.Body)
	e.finish(t, "acme", "sum-1", tasks.StatusSucceeded)
	a := replayed(t, e.replay(t, e.producerKey, "sum-1", nil), "sum-1")

	_, r = e.list(t, e.producerKey, "")
	var page struct {
		Calls []map[string]json.RawMessage `json:"calls"`
	}
	require.NoError(t, json.Unmarshal(r.Body, &page))
	require.Len(t, page.Calls, 2)
	rep, orig := page.Calls[0], page.Calls[1]
	require.JSONEq(t, `"`+a.CorrelationID+`"`, string(rep["correlation_id"]))
	require.JSONEq(t, `"sum-1"`, string(rep["replay_of"]))
	require.JSONEq(t, `"queued"`, string(rep["status"]))
	require.JSONEq(t, `null`, string(rep["response"]))
	require.JSONEq(t, `"sum-1"`, string(orig["correlation_id"]))
	require.JSONEq(t, `"`+a.CorrelationID+`"`, string(orig["replayed_by"]))
	require.JSONEq(t, `"succeeded"`, string(orig["status"]))
	require.JSONEq(t, `{"status": 200, "size": 11, "truncated": false}`, string(orig["response"]))
	for _, c := range page.Calls {
		require.NotContains(t, c, "history")
		for _, k := range []string{"correlation_id", "status", "integration", "method", "path", "attempts", "error", "created_at", "completed_at"} {
			require.Contains(t, c, k)
		}
	}
	require.NotContains(t, string(r.Body), "application/json", "no response headers")
	require.NotContains(t, string(r.Body), `"ok"`, "no response body")
}

func TestListBadInput(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.seedMany(t, "acme", 3, time.Now().Add(-time.Hour))
	forged := base64.RawURLEncoding.EncodeToString([]byte("1764000000000:a b"))
	cases := map[string]string{
		"status=bogus":                "status",
		"status=failed&status=Failed": "status",
		"status=":                     "status",
		"integration=a%20b":           "integration",
		"integration=a&integration=b": "integration",
		"integration=":                "integration",
		"since=yesterday":             "since",
		"since=-1h":                   "since",
		"since=0s":                    "since",
		"since=2026-13-01T00:00:00Z":  "since",
		"until=1d":                    "until",
		"since=1h&until=2h":           "until",
		"since=1h&until=1h":           "until",
		"limit=0":                     "limit",
		"limit=501":                   "limit",
		"limit=-1":                    "limit",
		"limit=ten":                   "limit",
		"limit=1.5":                   "limit",
		"limit=1&limit=2":             "limit",
		"cursor=!!!":                  "cursor",
		"cursor=abc":                  "cursor",
		"cursor=" + forged:            "cursor",
		"cursor=a&cursor=b":           "cursor",
		"bogus=1":                     "bogus",
		"Status=failed":               "Status",
		"status=failed&wait=1s":       "wait",
		"since=1h&until=1h&zzz=1":     "zzz",    // unknown parameters first
		"status=fa%ZZiled":            "status", // dropped by url.Values: the filter would be lifted
		"integration=gh&sta%tus=x":    "sta%tus",
	}
	for query, field := range cases {
		r := e.do(t, req{Method: http.MethodGet, Path: "/v1/calls?" + query, Key: e.producerKey})
		requireError(t, r, http.StatusBadRequest, "invalid_field", field)
	}
	requireError(t, e.do(t, req{Method: http.MethodGet, Path: "/v1/calls"}), http.StatusUnauthorized, "unauthorized", "")
}
