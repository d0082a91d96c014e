package producer_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/tasks"
)

func TestGetCallNotFound(t *testing.T) {
	t.Parallel()
	e := setup(t)

	for _, id := range []string{
		"unknown",
		"bad%20id",               // a space
		"bad%2Fid",               // a slash, encoded
		"%C3%A9t%C3%A9",          // non-ASCII
		"%00",                    // NUL
		strings.Repeat("a", 129), // too long
		"a%7B%7Db",               // braces
		"acme:unknown",           // looks like a task ID
		"%2A",                    // a glob
	} {
		requireError(t, e.get(t, id), http.StatusNotFound, "not_found", "")
		requireError(t, e.get(t, id+"?wait=1s"), http.StatusNotFound, "not_found", "")
		requireError(t, e.do(t, req{Method: http.MethodDelete, Path: "/v1/calls/" + id, Key: e.producerKey}), http.StatusNotFound, "not_found", "")
	}
}

func TestGetCallWaitParameter(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.post(t, call(map[string]any{"correlation_id": "w"}))
	require.Equal(t, http.StatusAccepted, r.Status)

	for _, wait := range []string{"bad", "61s", "2m", "-1s", "61", "-1", "1x", "10s%20", "1e400"} {
		requireError(t, e.get(t, "w?wait="+wait), http.StatusBadRequest, "invalid_field", "wait")
	}
	// 0 and 60s are in range; 0 answers at once.
	r = e.get(t, "w?wait=0s")
	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)
	require.Equal(t, tasks.StatusQueued, r.Record(t).Status)
}

func TestGetCallWaitRunsOutWithTheQueuedRecord(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.post(t, call(map[string]any{"correlation_id": "slow"}))
	require.Equal(t, http.StatusAccepted, r.Status)

	for _, wait := range []string{"300ms", "0.3"} {
		start := time.Now()
		r = e.get(t, "slow?wait="+wait)
		elapsed := time.Since(start)
		require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)
		rec := r.Record(t)
		require.Equal(t, tasks.StatusQueued, rec.Status)
		require.Equal(t, "slow", rec.CorrelationID)
		require.GreaterOrEqual(t, elapsed, 250*time.Millisecond, "it waited")
	}
}

func TestGetCallWaitReturnsWhenTheCallFinishes(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.post(t, call(map[string]any{"correlation_id": "done-soon"}))
	require.Equal(t, http.StatusAccepted, r.Status)

	// A worker finishes the call while the request waits.
	errc := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		errc <- e.complete(context.Background(), "acme", "done-soon", tasks.StatusSucceeded)
	}()
	r = e.get(t, "done-soon?wait=10s")
	require.NoError(t, <-errc)

	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)
	rec := r.Record(t)
	require.Equal(t, tasks.StatusSucceeded, rec.Status)
	require.Equal(t, 1, rec.Attempts)
	require.NotNil(t, rec.Response)
	require.Equal(t, 200, rec.Response.Status)
	require.NotNil(t, rec.CompletedAt)
	// Succeeded: woken by the completion (a wait that ran out would answer
	// the record it read first, queued).

	// A finished call answers at once, whatever the wait.
	start := time.Now()
	r = e.get(t, "done-soon?wait=60s")
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, tasks.StatusSucceeded, r.Record(t).Status)
	require.Less(t, time.Since(start), 30*time.Second, "answered before the 60s wait ran out")
}

func TestGetCallManyWaitersAreAllWoken(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.post(t, call(map[string]any{"correlation_id": "fan-out"}))
	require.Equal(t, http.StatusAccepted, r.Status)

	const n = 8
	type answer struct {
		status int
		rec    *tasks.Record
		err    error
	}
	answers := make(chan answer, n)
	for range n {
		go func() {
			hr, err := http.NewRequest(http.MethodGet, e.url+"/v1/calls/fan-out?wait=10s", nil)
			if err != nil {
				answers <- answer{err: err}
				return
			}
			hr.Header.Set("Authorization", "Bearer "+e.producerKey)
			res, err := http.DefaultClient.Do(hr)
			if err != nil {
				answers <- answer{err: err}
				return
			}
			defer res.Body.Close()
			var rec tasks.Record
			err = json.NewDecoder(res.Body).Decode(&rec)
			answers <- answer{status: res.StatusCode, rec: &rec, err: err}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	e.finish(t, "acme", "fan-out", tasks.StatusFailed)
	for range n {
		a := <-answers
		require.NoError(t, a.err)
		require.Equal(t, http.StatusOK, a.status)
		require.Equal(t, tasks.StatusFailed, a.rec.Status, "woken by the completion, not run out")
	}
}

func TestCancelQueuedCall(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.post(t, call(map[string]any{"correlation_id": "to-cancel"}))
	require.Equal(t, http.StatusAccepted, r.Status)
	_, err := e.taskInfo("acme", "default", "to-cancel")
	require.NoError(t, err)

	del := func() *resp {
		return e.do(t, req{Method: http.MethodDelete, Path: "/v1/calls/to-cancel", Key: e.producerKey})
	}
	r = del()
	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)
	rec := r.Record(t)
	require.Equal(t, tasks.StatusCanceled, rec.Status)
	require.NotNil(t, rec.Error)
	require.Equal(t, tasks.KindCanceled, rec.Error.Kind)
	require.NotEmpty(t, rec.Error.Message)
	require.NotNil(t, rec.CompletedAt)
	require.Nil(t, rec.NextAttemptAt)

	// The task is gone from asynq: it never runs.
	_, err = e.taskInfo("acme", "default", "to-cancel")
	require.ErrorIs(t, err, asynq.ErrTaskNotFound)

	// GET shows it canceled; cancelling again is a conflict.
	require.Equal(t, tasks.StatusCanceled, e.get(t, "to-cancel").Record(t).Status)
	requireError(t, del(), http.StatusConflict, "conflict", "")

	// Enqueueing the same call again is a safe retry: it answers the
	// canceled record and queues nothing.
	r = e.post(t, call(map[string]any{"correlation_id": "to-cancel"}))
	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)
	require.Equal(t, tasks.StatusCanceled, r.Record(t).Status)
	_, err = e.taskInfo("acme", "default", "to-cancel")
	require.ErrorIs(t, err, asynq.ErrTaskNotFound)

	// A waiter on a canceled call answers at once.
	start := time.Now()
	r = e.get(t, "to-cancel?wait=60s")
	require.Equal(t, http.StatusOK, r.Status)
	require.Less(t, time.Since(start), 30*time.Second, "answered before the 60s wait ran out")
}

func TestCancelWakesAWaiter(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.post(t, call(map[string]any{"correlation_id": "wake-on-cancel", "delay": "1m"}))
	require.Equal(t, http.StatusAccepted, r.Status)

	done := make(chan *resp, 1)
	go func() {
		hr, _ := http.NewRequest(http.MethodGet, e.url+"/v1/calls/wake-on-cancel?wait=10s", nil)
		hr.Header.Set("Authorization", "Bearer "+e.producerKey)
		res, err := http.DefaultClient.Do(hr)
		if err != nil {
			done <- &resp{Status: -1, Body: []byte(err.Error())}
			return
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		done <- &resp{Status: res.StatusCode, Header: res.Header, Body: b}
	}()
	time.Sleep(300 * time.Millisecond)
	r = e.do(t, req{Method: http.MethodDelete, Path: "/v1/calls/wake-on-cancel", Key: e.producerKey})
	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)

	got := <-done
	require.Equal(t, http.StatusOK, got.Status, "body: %s", got.Body)
	require.Equal(t, tasks.StatusCanceled, got.Record(t).Status, "woken by the cancel, not run out")

	// The scheduled task is gone too.
	_, err := e.taskInfo("acme", "default", "wake-on-cancel")
	require.ErrorIs(t, err, asynq.ErrTaskNotFound)
}

func TestCancelFinishedCallIsAConflict(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.post(t, call(map[string]any{"correlation_id": "finished"}))
	require.Equal(t, http.StatusAccepted, r.Status)
	e.finish(t, "acme", "finished", tasks.StatusSucceeded)

	r = e.do(t, req{Method: http.MethodDelete, Path: "/v1/calls/finished", Key: e.producerKey})
	requireError(t, r, http.StatusConflict, "conflict", "")
	require.Contains(t, string(r.Body), "succeeded")
	require.Equal(t, tasks.StatusSucceeded, e.get(t, "finished").Record(t).Status, "the record is unchanged")
}
