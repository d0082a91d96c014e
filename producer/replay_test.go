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
