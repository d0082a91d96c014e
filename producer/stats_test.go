package producer_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
)

func (e *env) stats(tb testing.TB, key, query string) *producer.Stats {
	tb.Helper()
	r := e.do(tb, req{Method: http.MethodGet, Path: "/v1/stats?" + query, Key: key})
	require.Equal(tb, http.StatusOK, r.Status, "body: %s", r.Body)
	var st producer.Stats
	require.NoError(tb, json.Unmarshal(r.Body, &st), "body: %s", r.Body)
	return &st
}

func TestStats(t *testing.T) {
	t.Parallel()
	e := setup(t)
	now := time.Now()
	// In the last hour: two failed and a queued call to httpbin, a
	// succeeded, a running and a retrying one to bearer.
	e.seed(t, "acme", "f1", "httpbin", now.Add(-10*time.Minute), tasks.StatusFailed)
	e.seed(t, "acme", "f2", "httpbin", now.Add(-20*time.Minute), tasks.StatusFailed)
	e.seed(t, "acme", "q1", "httpbin", now.Add(-30*time.Minute), tasks.StatusQueued)
	e.seed(t, "acme", "s1", "bearer", now.Add(-40*time.Minute), tasks.StatusSucceeded)
	e.seed(t, "acme", "r1", "bearer", now.Add(-50*time.Minute), tasks.StatusRunning)
	e.seed(t, "acme", "t1", "bearer", now.Add(-55*time.Minute), tasks.StatusRetrying)
	// Earlier: a canceled call to basic, 3h ago.
	e.seed(t, "acme", "c1", "basic", now.Add(-3*time.Hour), tasks.StatusCanceled)

	st := e.stats(t, e.producerKey, "")
	require.EqualValues(t, 6, st.Total)
	require.Equal(t, map[tasks.Status]int64{"queued": 1, "running": 1, "retrying": 1, "succeeded": 1, "failed": 2, "canceled": 0}, st.ByStatus)
	require.Equal(t, map[string]int64{"httpbin": 3, "bearer": 3}, st.ByIntegration)
	require.WithinDuration(t, time.Now(), st.Until, time.Minute)
	require.Equal(t, time.Hour, st.Until.Sub(st.Since), "the default window")

	st = e.stats(t, e.producerKey, "since=4h")
	require.EqualValues(t, 7, st.Total)
	require.EqualValues(t, 1, st.ByStatus["canceled"])
	require.EqualValues(t, 1, st.ByIntegration["basic"])

	st = e.stats(t, e.producerKey, "since=4h&until=1h")
	require.EqualValues(t, 1, st.Total)
	require.Equal(t, map[string]int64{"basic": 1}, st.ByIntegration)

	from := now.Add(-45 * time.Minute).UTC()
	st = e.stats(t, e.producerKey, "since="+url.QueryEscape(from.Format(time.RFC3339Nano))+"&until=15m")
	require.EqualValues(t, 3, st.Total, "q1, s1 and f2")
	require.True(t, from.Equal(st.Since))
	require.Equal(t, map[tasks.Status]int64{"queued": 1, "running": 0, "retrying": 0, "succeeded": 1, "failed": 1, "canceled": 0}, st.ByStatus)

	st = e.stats(t, e.producerKey, "since=168h")
	require.EqualValues(t, 7, st.Total)

	// Queue depths are asynq's: the seeded calls have no tasks; enqueued
	// ones do.
	require.Empty(t, st.Queues)
	for _, c := range []map[string]any{
		call(map[string]any{"correlation_id": "p1"}),
		call(map[string]any{"correlation_id": "p2"}),
		call(map[string]any{"correlation_id": "p3", "queue": "critical"}),
		call(map[string]any{"correlation_id": "d1", "delay": "1h"}),
	} {
		r := e.post(t, c)
		require.Equal(t, http.StatusAccepted, r.Status, "body: %s", r.Body)
	}
	st = e.stats(t, e.producerKey, "")
	require.Equal(t, map[string]producer.QueueDepth{
		"default":  {Pending: 2, Scheduled: 1},
		"critical": {Pending: 1},
	}, st.Queues)
	require.EqualValues(t, 10, st.Total)
	require.EqualValues(t, 5, st.ByStatus["queued"])

	// The Go client: the same, and the window checked.
	client := e.tenantClient(t, "acme")
	gst, err := client.Stats(context.Background(), time.Time{}, time.Time{})
	require.NoError(t, err)
	require.EqualValues(t, 10, gst.Total)
	_, err = client.Stats(context.Background(), now.Add(-8*24*time.Hour), now)
	var fe *tasks.FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "since", fe.Field)
	_, err = client.Stats(context.Background(), now, now)
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "until", fe.Field)
}

func TestStatsBadInput(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for query, field := range map[string]string{
		"since=8d":                   "since",
		"since=169h":                 "since",
		"since=yesterday":            "since",
		"since=-1h":                  "since",
		"since=":                     "since",
		"since=1h&since=2h":          "since",
		"until=x":                    "until",
		"since=1h&until=2h":          "until",
		"since=2026-01-01T00:00:00Z": "since",
		"status=failed":              "status",
		"window=1h":                  "window",
	} {
		r := e.do(t, req{Method: http.MethodGet, Path: "/v1/stats?" + query, Key: e.producerKey})
		requireError(t, r, http.StatusBadRequest, "invalid_field", field)
	}
	requireError(t, e.do(t, req{Method: http.MethodGet, Path: "/v1/stats"}), http.StatusUnauthorized, "unauthorized", "")
}
