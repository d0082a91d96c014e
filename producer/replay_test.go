package producer_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
)

// replayAnswer is POST /v1/calls/{id}/replay's 202.
type replayAnswer struct {
	CorrelationID string       `json:"correlation_id"`
	Status        tasks.Status `json:"status"`
	URL           string       `json:"url"`
	ReplayOf      string       `json:"replay_of"`
}

func (e *env) replay(tb testing.TB, key, id string, body any) *resp {
	tb.Helper()
	return e.do(tb, req{Method: http.MethodPost, Path: "/v1/calls/" + id + "/replay", Key: key, Body: body})
}

// replayed checks a 202 answer of a replay of id and returns it.
func replayed(tb testing.TB, r *resp, id string) replayAnswer {
	tb.Helper()
	require.Equal(tb, http.StatusAccepted, r.Status, "body: %s", r.Body)
	var a replayAnswer
	require.NoError(tb, json.Unmarshal(r.Body, &a), "body: %s", r.Body)
	require.Equal(tb, id, a.ReplayOf)
	require.True(tb, tasks.ValidID(a.CorrelationID), "%s", r.Body)
	require.Equal(tb, "/v1/calls/"+a.CorrelationID, a.URL)
	require.Equal(tb, a.URL, r.Header.Get("Location"))
	return a
}

// waitFor waits (GET ?wait=30s) for the call to finish and returns it.
func (e *env) waitFor(tb testing.TB, id string) *tasks.Record {
	tb.Helper()
	r := e.get(tb, id+"?wait=30s")
	require.Equal(tb, http.StatusOK, r.Status, "body: %s", r.Body)
	rec := r.Record(tb)
	require.True(tb, rec.Status.Terminal(), "%s did not finish: %s", id, r.Body)
	return rec
}

// echo is what go-httpbin's /anything saw.
type echo struct {
	Method  string              `json:"method"`
	URL     string              `json:"url"`
	Args    map[string][]string `json:"args"`
	Headers map[string][]string `json:"headers"`
	Data    string              `json:"data"`
}

func echoOf(tb testing.TB, rec *tasks.Record) echo {
	tb.Helper()
	require.NotNil(tb, rec.Response)
	var ec echo
	require.NoError(tb, json.Unmarshal(rec.Response.Body, &ec), "%s", rec.Response.Body)
	return ec
}

func TestReplayMakesTheSameCallAgain(t *testing.T) {
	t.Parallel()
	e := setup(t, withUpstream())
	r := e.post(t, map[string]any{"integration": "httpbin", "method": "PATCH", "path": "/anything/orders/981",
		"query":   map[string]any{"since": "364", "tag": []string{"a", "b"}},
		"headers": map[string]string{"X-Request-Source": "billing"},
		"body":    map[string]any{"state": "shipped", "n": 3},
		"timeout": "7s", "retry": map[string]any{"max_attempts": 2}, "queue": "low",
		"correlation_id": "order-981"})
	require.Equal(t, http.StatusAccepted, r.Status, "body: %s", r.Body)
	orig := e.waitFor(t, "order-981")
	require.Equal(t, tasks.StatusSucceeded, orig.Status)
	origEcho := echoOf(t, orig)
	require.Equal(t, "PATCH", origEcho.Method)

	a := replayed(t, e.replay(t, e.producerKey, "order-981", nil), "order-981")
	require.NotEqual(t, "order-981", a.CorrelationID)
	require.Equal(t, tasks.StatusQueued, a.Status)

	rep := e.waitFor(t, a.CorrelationID)
	require.Equal(t, tasks.StatusSucceeded, rep.Status)
	require.Equal(t, "order-981", rep.ReplayOf)
	require.Empty(t, rep.ReplayedBy)
	for _, f := range []func(*tasks.Record) any{
		func(r *tasks.Record) any { return r.Integration }, func(r *tasks.Record) any { return r.Method },
		func(r *tasks.Record) any { return r.Path }, func(r *tasks.Record) any { return r.Queue },
		func(r *tasks.Record) any { return r.Credential }, func(r *tasks.Record) any { return r.MaxAttempts },
	} {
		require.Equal(t, f(orig), f(rep))
	}
	require.Equal(t, "low", rep.Queue)
	require.Equal(t, 2, rep.MaxAttempts)

	// The upstream saw the same request.
	repEcho := echoOf(t, rep)
	require.Equal(t, origEcho.Method, repEcho.Method)
	require.Equal(t, origEcho.URL, repEcho.URL)
	require.Equal(t, origEcho.Args, repEcho.Args)
	require.Equal(t, map[string][]string{"since": {"364"}, "tag": {"a", "b"}}, repEcho.Args)
	require.Equal(t, origEcho.Data, repEcho.Data)
	require.JSONEq(t, `{"state": "shipped", "n": 3}`, repEcho.Data)
	require.Equal(t, []string{"billing"}, repEcho.Headers["X-Request-Source"])

	// The original names its replay.
	got := e.get(t, "order-981").Record(t)
	require.Equal(t, a.CorrelationID, got.ReplayedBy)
	require.Empty(t, got.ReplayOf)
	require.Contains(t, string(e.get(t, "order-981").Body), `"replayed_by":"`+a.CorrelationID+`"`)

	// Replayed again, under a chosen ID: replayed_by is the latest.
	b := replayed(t, e.replay(t, e.producerKey, "order-981", map[string]string{"correlation_id": "order-981-again"}), "order-981")
	require.Equal(t, "order-981-again", b.CorrelationID)
	require.Equal(t, tasks.StatusSucceeded, e.waitFor(t, "order-981-again").Status)
	require.Equal(t, "order-981-again", e.get(t, "order-981").Record(t).ReplayedBy)

	// The same request again is a safe retry: the same replay, nothing new.
	b = replayed(t, e.replay(t, e.producerKey, "order-981", map[string]string{"correlation_id": "order-981-again"}), "order-981")
	require.Equal(t, "order-981-again", b.CorrelationID)
	require.Equal(t, tasks.StatusSucceeded, b.Status)

	// A replay can be replayed: its replay_of is the replay.
	c := replayed(t, e.replay(t, e.producerKey, a.CorrelationID, ""), a.CorrelationID)
	require.Equal(t, a.CorrelationID, e.waitFor(t, c.CorrelationID).ReplayOf)
}

func TestReplayErrors(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	client := e.tenantClient(t, "acme")

	// Not finished: 409, and the Go client's *NotFinishedError.
	r := e.post(t, call(map[string]any{"correlation_id": "later", "delay": "1h"}))
	require.Equal(t, http.StatusAccepted, r.Status, "body: %s", r.Body)
	requireError(t, e.replay(t, e.producerKey, "later", nil), http.StatusConflict, "conflict", "")
	_, err := client.Replay(ctx, "later")
	var nf *producer.NotFinishedError
	require.ErrorAs(t, err, &nf)
	require.Equal(t, tasks.StatusQueued, nf.Record.Status)
	require.ErrorIs(t, err, producer.ErrNotFinished)

	// Unknown, or not an ID at all: 404.
	for _, id := range []string{"nope", "bad%20id", "a%7Bb%7D"} {
		requireError(t, e.replay(t, e.producerKey, id, nil), http.StatusNotFound, "not_found", "")
	}
	_, err = client.Replay(ctx, "nope")
	require.ErrorIs(t, err, producer.ErrNotFound)

	// A record without a payload (written before callq kept them): 409.
	e.seed(t, "acme", "old", "httpbin", time.Now(), tasks.StatusFailed)
	requireError(t, e.replay(t, e.producerKey, "old", nil), http.StatusConflict, "conflict", "")
	_, err = client.Replay(ctx, "old")
	require.ErrorIs(t, err, producer.ErrNoPayload)

	// Finished calls to replay.
	for _, id := range []string{"done", "taken"} {
		r = e.post(t, call(map[string]any{"correlation_id": id}))
		require.Equal(t, http.StatusAccepted, r.Status, "body: %s", r.Body)
		e.finish(t, "acme", id, tasks.StatusFailed)
	}

	// Bad bodies: 400 naming the field; nothing is replayed.
	for body, field := range map[string]string{
		`{"correlation_id": 5}`:           "correlation_id",
		`{"correlation_id": "a b"}`:       "correlation_id",
		`{"correlation_id": "x", "q": 1}`: "q",
		`{"Correlation_id": "x"}`:         "Correlation_id",
	} {
		requireError(t, e.replay(t, e.producerKey, "done", body), http.StatusBadRequest, "invalid_field", field)
	}
	for _, body := range []string{`[`, `[]`, `"x"`, `null`} {
		requireError(t, e.replay(t, e.producerKey, "done", body), http.StatusBadRequest, "invalid_json", "")
	}
	require.Empty(t, e.get(t, "done").Record(t).ReplayedBy)

	// An ID another call holds: 409 naming correlation_id, like enqueue;
	// the next replay gets an ID of its own.
	requireError(t, e.replay(t, e.producerKey, "done", map[string]string{"correlation_id": "taken"}), http.StatusConflict, "conflict", "correlation_id")
	_, err = client.Replay(ctx, "done", producer.ReplayAs("taken"))
	var conflict *producer.ConflictError
	require.ErrorAs(t, err, &conflict)
	require.Equal(t, "taken", conflict.Existing.CorrelationID)
	require.Empty(t, e.get(t, "done").Record(t).ReplayedBy)
	a := replayed(t, e.replay(t, e.producerKey, "done", nil), "done")
	require.NotEqual(t, "taken", a.CorrelationID)
	require.Equal(t, a.CorrelationID, e.get(t, "done").Record(t).ReplayedBy)
	// So is the original's own ID.
	requireError(t, e.replay(t, e.producerKey, "done", map[string]string{"correlation_id": "done"}), http.StatusConflict, "conflict", "correlation_id")

	// Another tenant's call is not found.
	requireError(t, e.replay(t, e.otherAdminKey, "done", nil), http.StatusNotFound, "not_found", "")
	requireError(t, e.do(t, req{Method: http.MethodPost, Path: "/v1/calls/done/replay"}), http.StatusUnauthorized, "unauthorized", "")
}

// A call whose integration the configuration no longer has cannot be
// replayed: 409 naming the field, and a *tasks.FieldError in Go.
func TestReplayOfACallTheCatalogNoLongerAccepts(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	rec := &tasks.Record{CorrelationID: "gone", Tenant: "acme", Status: tasks.StatusQueued, Integration: "removed",
		Method: "GET", Path: "/x", Queue: "default", History: []tasks.Attempt{}, CreatedAt: time.Now().UTC()}
	payload, err := json.Marshal(tasks.Payload{Tenant: "acme", Call: tasks.Call{Integration: "removed", Method: "GET", Path: "/x",
		CorrelationID: "gone", Queue: "default"}, CreatedAt: rec.CreatedAt})
	require.NoError(t, err)
	require.NoError(t, e.records.Create(ctx, rec, "fp", 0, payload))
	e.finish(t, "acme", "gone", tasks.StatusFailed)

	requireError(t, e.replay(t, e.producerKey, "gone", nil), http.StatusConflict, "conflict", "integration")
	_, err = e.tenantClient(t, "acme").Replay(ctx, "gone")
	var fe *tasks.FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "integration", fe.Field)
	require.Empty(t, e.get(t, "gone").Record(t).ReplayedBy)
}

// "replay", like "batch", is also a correlation ID: GET and DELETE
// /v1/calls/replay reach that call, and POST /v1/calls/replay/replay
// replays it.
func TestReplayIsAlsoACorrelationID(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, id := range []string{"replay", "batch"} {
		r := e.post(t, call(map[string]any{"correlation_id": id}))
		require.Equal(t, http.StatusAccepted, r.Status, "body: %s", r.Body)
		got := e.get(t, id)
		require.Equal(t, http.StatusOK, got.Status, "body: %s", got.Body)
		require.Equal(t, id, got.Record(t).CorrelationID)

		requireError(t, e.replay(t, e.producerKey, id, nil), http.StatusConflict, "conflict", "")
		r = e.do(t, req{Method: http.MethodDelete, Path: "/v1/calls/" + id, Key: e.producerKey})
		require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)
		require.Equal(t, tasks.StatusCanceled, r.Record(t).Status)
		replayed(t, e.replay(t, e.producerKey, id, nil), id)
	}
}

// bulkAnswer is POST /v1/calls/replay's answer.
type bulkAnswer struct {
	Replayed int  `json:"replayed"`
	Skipped  int  `json:"skipped"`
	DryRun   bool `json:"dry_run"`
	Calls    []struct {
		ReplayOf      string  `json:"replay_of"`
		CorrelationID *string `json:"correlation_id"`
	} `json:"calls"`
}

func (e *env) bulkReplay(tb testing.TB, key string, body any) bulkAnswer {
	tb.Helper()
	r := e.do(tb, req{Method: http.MethodPost, Path: "/v1/calls/replay", Key: key, Body: body})
	require.Equal(tb, http.StatusOK, r.Status, "body: %s", r.Body)
	var a bulkAnswer
	require.NoError(tb, json.Unmarshal(r.Body, &a), "body: %s", r.Body)
	require.Len(tb, a.Calls, a.Replayed, "body: %s", r.Body)
	return a
}

func (a bulkAnswer) originals() []string {
	var out []string
	for _, c := range a.Calls {
		out = append(out, c.ReplayOf)
	}
	return out
}

// enqueueFinished enqueues calls under ids to integration and finishes
// them as st, oldest first.
func (e *env) enqueueFinished(tb testing.TB, integration string, st tasks.Status, ids ...string) {
	tb.Helper()
	for _, id := range ids {
		r := e.post(tb, call(map[string]any{"correlation_id": id, "integration": integration}))
		require.Equal(tb, http.StatusAccepted, r.Status, "body: %s", r.Body)
		if st != tasks.StatusQueued {
			e.finish(tb, "acme", id, st)
		}
	}
}

func TestReplayMany(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	e.enqueueFinished(t, "httpbin", tasks.StatusFailed, "f1", "f2", "f3")
	e.enqueueFinished(t, "bearer", tasks.StatusFailed, "f4", "f5", "f6")
	e.enqueueFinished(t, "httpbin", tasks.StatusSucceeded, "s1", "s2", "s3")
	e.enqueueFinished(t, "httpbin", tasks.StatusQueued, "q1", "q2")
	count := func() int { return len(e.listAll(t, e.producerKey, "", tasks.MaxListLimit, nil)) }
	failed := map[string]any{"status": "failed"}

	// A dry run counts, newest first, and changes nothing.
	a := e.bulkReplay(t, e.producerKey, map[string]any{"filter": failed, "dry_run": true})
	require.Equal(t, 6, a.Replayed)
	require.True(t, a.DryRun)
	require.Equal(t, []string{"f6", "f5", "f4", "f3", "f2", "f1"}, a.originals())
	for _, c := range a.Calls {
		require.Nil(t, c.CorrelationID)
	}
	a = e.bulkReplay(t, e.producerKey, map[string]any{"dry_run": true})
	require.Equal(t, 9, a.Replayed)
	require.Equal(t, 2, a.Skipped, "the queued calls")
	require.Equal(t, 11, count())
	require.Empty(t, e.get(t, "f6").Record(t).ReplayedBy)

	// A limit caps the replays: the newest first.
	a = e.bulkReplay(t, e.producerKey, map[string]any{"filter": failed, "limit": 2})
	require.False(t, a.DryRun)
	require.Equal(t, []string{"f6", "f5"}, a.originals())
	for _, c := range a.Calls {
		require.NotNil(t, c.CorrelationID)
		rep := e.get(t, *c.CorrelationID).Record(t)
		require.Equal(t, c.ReplayOf, rep.ReplayOf)
		require.Equal(t, tasks.StatusQueued, rep.Status)
		require.Equal(t, *c.CorrelationID, e.get(t, c.ReplayOf).Record(t).ReplayedBy)
		_, err := e.taskInfo("acme", "default", *c.CorrelationID)
		require.NoError(t, err, "the replay is queued in asynq")
	}

	// The rest; then the same again replays nothing new.
	a = e.bulkReplay(t, e.producerKey, map[string]any{"filter": failed})
	require.Equal(t, []string{"f4", "f3", "f2", "f1"}, a.originals())
	require.Equal(t, 2, a.Skipped, "replayed already")
	require.Equal(t, 17, count())
	a = e.bulkReplay(t, e.producerKey, map[string]any{"filter": failed})
	require.Zero(t, a.Replayed)
	require.Equal(t, 6, a.Skipped)
	a = e.bulkReplay(t, e.producerKey, map[string]any{"filter": failed, "dry_run": true})
	require.Zero(t, a.Replayed)
	require.Equal(t, 6, a.Skipped)
	require.Equal(t, 17, count())

	// again replays them again; replayed_by is the latest.
	first := e.get(t, "f5").Record(t).ReplayedBy
	a = e.bulkReplay(t, e.producerKey, map[string]any{"filter": map[string]any{"status": []string{"failed"}, "integration": "bearer"}, "again": true})
	require.Equal(t, []string{"f6", "f5", "f4"}, a.originals())
	require.Zero(t, a.Skipped)
	latest := e.get(t, "f5").Record(t).ReplayedBy
	require.NotEqual(t, first, latest)
	require.Equal(t, *a.Calls[1].CorrelationID, latest)
	require.Equal(t, 20, count())

	// Only finished calls: queued ones (the replays among them) are skipped.
	a = e.bulkReplay(t, e.producerKey, map[string]any{"filter": map[string]any{"status": "queued"}})
	require.Zero(t, a.Replayed)
	require.Equal(t, 11, a.Skipped)

	// An interrupted replay (claimed, not made) is taken up under its
	// claimed ID, not made a second time.
	e.enqueueFinished(t, "httpbin", tasks.StatusFailed, "f7")
	claim, err := e.records.ClaimReplay(ctx, "acme", "f7", "claimed-f7", false, false)
	require.NoError(t, err)
	require.Equal(t, "claimed-f7", claim.ID)
	a = e.bulkReplay(t, e.producerKey, map[string]any{"filter": failed})
	require.Equal(t, []string{"f7"}, a.originals())
	require.Equal(t, "claimed-f7", *a.Calls[0].CorrelationID)
	require.Equal(t, "claimed-f7", e.get(t, "f7").Record(t).ReplayedBy)
	require.Equal(t, "f7", e.get(t, "claimed-f7").Record(t).ReplayOf)

	// Interrupted after the replay was made, before it was recorded on the
	// original: a claim under the ID of a replay that exists. Taken up, it
	// is that replay, and no call is made.
	e.enqueueFinished(t, "httpbin", tasks.StatusFailed, "f8")
	made, err := e.tenantClient(t, "acme").Replay(ctx, "f8", producer.ReplayAs("made-f8"))
	require.NoError(t, err)
	require.False(t, made.Duplicate)
	_, err = e.records.ClaimReplay(ctx, "acme", "f8", "made-f8", true, true) // as if not confirmed
	require.NoError(t, err)
	before := count()
	r, err := e.tenantClient(t, "acme").Replay(ctx, "f8")
	require.NoError(t, err)
	require.True(t, r.Duplicate)
	require.Equal(t, "made-f8", r.Record.CorrelationID)
	require.Equal(t, before, count())
}

func TestReplayManyBadInput(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for body, field := range map[string]string{
		`{"limit": 0}`:                               "limit",
		`{"limit": 10001}`:                           "limit",
		`{"limit": -3}`:                              "limit",
		`{"limit": "10"}`:                            "limit",
		`{"limit": 1.5}`:                             "limit",
		`{"dry_run": "yes"}`:                         "dry_run",
		`{"again": 1}`:                               "again",
		`{"bogus": true}`:                            "bogus",
		`{"Limit": 5}`:                               "Limit",
		`{"filter": []}`:                             "filter",
		`{"filter": "failed"}`:                       "filter",
		`{"filter": {"status": "bogus"}}`:            "filter.status",
		`{"filter": {"status": ["failed", ""]}}`:     "filter.status",
		`{"filter": {"status": 3}}`:                  "filter.status",
		`{"filter": {"statuses": ["failed"]}}`:       "filter.statuses",
		`{"filter": {"integration": "a b"}}`:         "filter.integration",
		`{"filter": {"integration": 7}}`:             "filter.integration",
		`{"filter": {"since": "yesterday"}}`:         "filter.since",
		`{"filter": {"until": "-5m"}}`:               "filter.until",
		`{"filter": {"since": "1h", "until": "2h"}}`: "filter.until",
	} {
		r := e.do(t, req{Method: http.MethodPost, Path: "/v1/calls/replay", Key: e.producerKey, Body: body})
		requireError(t, r, http.StatusBadRequest, "invalid_field", field)
	}
	// null is as good as leaving a field out.
	r := e.do(t, req{Method: http.MethodPost, Path: "/v1/calls/replay", Key: e.producerKey,
		Body: `{"filter": {"status": null, "integration": null}, "limit": null, "dry_run": true}`})
	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)
	for _, body := range []string{``, `[`, `[]`, `null`, `"x"`} {
		r := e.do(t, req{Method: http.MethodPost, Path: "/v1/calls/replay", Key: e.producerKey, Body: body})
		requireError(t, r, http.StatusBadRequest, "invalid_json", "")
	}

	// The Go client names the same fields.
	client := e.tenantClient(t, "acme")
	for _, tc := range []struct {
		req   producer.ReplayRequest
		field string
	}{
		{producer.ReplayRequest{Limit: -1}, "limit"},
		{producer.ReplayRequest{Limit: producer.MaxReplayLimit + 1}, "limit"},
		{producer.ReplayRequest{Filter: tasks.Filter{Statuses: []tasks.Status{"done"}}}, "status"},
	} {
		_, err := client.ReplayMany(context.Background(), tc.req)
		var fe *tasks.FieldError
		require.ErrorAs(t, err, &fe)
		require.Equal(t, tc.field, fe.Field)
	}
}

// ReplayMany goes through the calls in pages (of 500): more than a page
// of calls is replayed once each, the limit counted across pages.
func TestReplayManyAcrossPages(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	client := e.tenantClient(t, "acme")
	const n = 505
	for i := range n {
		res, err := client.Enqueue(ctx, &tasks.Call{Integration: "httpbin", Method: "GET", Path: "/get"})
		require.NoError(t, err)
		if i%100 != 0 {
			e.finish(t, "acme", res.Record.CorrelationID, tasks.StatusFailed)
		}
	}
	const finished = n - 6

	dry, err := client.ReplayMany(ctx, producer.ReplayRequest{DryRun: true})
	require.NoError(t, err)
	require.Equal(t, finished, dry.Replayed)
	require.Equal(t, 6, dry.Skipped)

	res, err := client.ReplayMany(ctx, producer.ReplayRequest{Limit: 497})
	require.NoError(t, err)
	require.Equal(t, 497, res.Replayed)
	res2, err := client.ReplayMany(ctx, producer.ReplayRequest{Filter: tasks.Filter{Statuses: []tasks.Status{tasks.StatusFailed}}})
	require.NoError(t, err)
	require.Equal(t, finished-497, res2.Replayed)
	require.Equal(t, 497, res2.Skipped)

	// Each finished call was replayed once, and names its replay.
	seen := map[string]bool{}
	for _, c := range append(res.Calls, res2.Calls...) {
		require.False(t, seen[c.ReplayOf], "%s replayed twice", c.ReplayOf)
		seen[c.ReplayOf] = true
		rec, err := client.Get(ctx, c.ReplayOf)
		require.NoError(t, err)
		require.Equal(t, c.CorrelationID, rec.ReplayedBy)
	}
	require.Len(t, seen, finished)
	page, err := client.List(ctx, tasks.Filter{}, "", tasks.MaxListLimit)
	require.NoError(t, err)
	require.NotEmpty(t, page.NextCursor, "more than a page of calls")
	again, err := client.ReplayMany(ctx, producer.ReplayRequest{Filter: tasks.Filter{Statuses: []tasks.Status{tasks.StatusFailed}}})
	require.NoError(t, err)
	require.Zero(t, again.Replayed)
	require.Equal(t, finished, again.Skipped)
}
