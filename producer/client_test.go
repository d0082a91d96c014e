package producer_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
)

func TestNewClientValidates(t *testing.T) {
	t.Parallel()
	e := setup(t)

	_, err := producer.NewClient(e.rdb, "acme", nil)
	require.Error(t, err, "a catalog is required")
	_, err = producer.NewClient(e.rdb, "acme", &producer.Config{})
	require.Error(t, err, "a catalog is required")
	for _, tenant := range []string{"", "Acme", "a:b", "a{b}", "-x"} {
		_, err = producer.NewClient(e.rdb, tenant, &producer.Config{Catalog: e.cat})
		require.Error(t, err, "tenant %q", tenant)
		_, err = e.prod.Tenant(tenant)
		require.Error(t, err, "tenant %q", tenant)
	}
	_, err = producer.New(e.rdb, &producer.Config{})
	require.Error(t, err, "a catalog is required")

	// Without Records the client makes (and closes) its own store.
	c, err := producer.NewClient(e.rdb, "acme", &producer.Config{Catalog: e.cat})
	require.NoError(t, err)
	require.Equal(t, "acme", c.Tenant())
	res, err := c.Enqueue(context.Background(), &tasks.Call{Integration: "httpbin", Method: "GET", Path: "/own"}, producer.WithCorrelationID("own-store"))
	require.NoError(t, err)
	require.Equal(t, "own-store", res.Record.CorrelationID)
	rec, err := e.records.Get(context.Background(), "acme", "own-store")
	require.NoError(t, err)
	require.Equal(t, "/own", rec.Path)
	require.NoError(t, c.Close())
}

func TestProducerTenantViewsShareIt(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()

	acme, err := e.prod.Tenant("acme")
	require.NoError(t, err)
	require.Equal(t, "acme", acme.Tenant())
	_, err = acme.Enqueue(ctx, &tasks.Call{Integration: "httpbin", Method: "GET", Path: "/view"}, producer.WithCorrelationID("view"))
	require.NoError(t, err)

	// A view has nothing of its own to close: the producer, and so the
	// API over it, keeps working after it.
	require.NoError(t, acme.Close())
	again, err := e.prod.Tenant("acme")
	require.NoError(t, err)
	rec, err := again.Get(ctx, "view")
	require.NoError(t, err)
	require.Equal(t, "/view", rec.Path)
	r := e.get(t, "view")
	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)

	// Each view works in its own tenant only.
	other, err := e.prod.Tenant("other")
	require.NoError(t, err)
	_, err = other.Get(ctx, "view")
	require.ErrorIs(t, err, producer.ErrNotFound)
}

func TestClientEnqueueWithOptions(t *testing.T) {
	t.Parallel()
	e := setup(t)
	c := e.tenantClient(t, "acme")
	ctx := context.Background()

	before := time.Now()
	res, err := c.Enqueue(ctx, &tasks.Call{Integration: "httpbin", Method: "POST", Path: "/post", Body: json.RawMessage(`{"a": 1}`)},
		producer.WithQueue("critical"), producer.WithDelay(time.Minute), producer.WithCorrelationID("opts"),
		producer.WithTimeout(10*time.Second), producer.WithCredential("cust-1"))
	require.NoError(t, err)
	require.False(t, res.Duplicate)
	rec := res.Record
	require.Equal(t, "opts", rec.CorrelationID)
	require.Equal(t, "acme", rec.Tenant)
	require.Equal(t, tasks.StatusQueued, rec.Status)
	require.Equal(t, "critical", rec.Queue)
	require.Equal(t, "cust-1", rec.Credential)
	require.NotNil(t, rec.NextAttemptAt)
	require.WithinDuration(t, before.Add(time.Minute), *rec.NextAttemptAt, 5*time.Second)

	// The task is scheduled on the critical queue, a minute out, carrying
	// the normalized call.
	info, err := e.taskInfo("acme", "critical", "opts")
	require.NoError(t, err)
	require.Equal(t, asynq.TaskStateScheduled, info.State)
	require.Equal(t, "critical", info.Queue)
	require.WithinDuration(t, before.Add(time.Minute), info.NextProcessAt, 5*time.Second)
	p, err := tasks.DecodePayload(info.Payload)
	require.NoError(t, err)
	require.Equal(t, "acme", p.Tenant)
	require.Equal(t, tasks.Duration(10*time.Second), p.Call.Timeout)
	require.Equal(t, tasks.Duration(time.Minute), p.Call.Delay)
	require.Equal(t, "critical", p.Call.Queue)
	require.Equal(t, "opts", p.Call.CorrelationID)
	require.JSONEq(t, `{"a":1}`, string(p.Call.Body))
	_, err = e.taskInfo("acme", "default", "opts")
	require.Error(t, err, "nothing on the default queue")

	// The record is the one the API shows.
	got, err := c.Get(ctx, "opts")
	require.NoError(t, err)
	require.Equal(t, "critical", got.Queue)

	// An option beyond the integration's max_timeout is a field error.
	_, err = c.Enqueue(ctx, &tasks.Call{Integration: "httpbin", Method: "GET", Path: "/x"}, producer.WithTimeout(time.Hour))
	var fe *tasks.FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "timeout", fe.Field)
	_, err = c.Enqueue(ctx, &tasks.Call{Integration: "httpbin", Method: "GET", Path: "/x"}, producer.WithQueue("nope"))
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "queue", fe.Field)
}

func TestClientEnqueueDoesNotModifyTheCall(t *testing.T) {
	t.Parallel()
	e := setup(t)
	c := e.tenantClient(t, "acme")

	text := "hello"
	mk := func() *tasks.Call {
		return &tasks.Call{
			Integration: "httpbin",
			Method:      " post ",
			Path:        "/post",
			Query:       tasks.Query{"a": {"1", "2"}},
			Headers:     map[string]string{"X-A": "b"},
			Body:        json.RawMessage("{ \"spaced\" : [ 1, 2 ] }"),
			Retry:       &tasks.RetryPolicy{MaxAttempts: 2},
		}
	}
	call := mk()
	res, err := c.Enqueue(context.Background(), call, producer.WithQueue("low"), producer.WithCorrelationID("pure"),
		producer.WithDelay(time.Second), producer.WithTimeout(time.Second))
	require.NoError(t, err)
	require.Equal(t, mk(), call, "Enqueue changed the caller's call")
	require.Equal(t, "POST", res.Record.Method, "the record holds the normalized call")
	require.Equal(t, 2, res.Record.MaxAttempts)

	// Nor does it fill in a generated ID or defaults on a call without them.
	plain := &tasks.Call{Integration: "bearer", Method: "GET", Path: "/me", BodyText: &text}
	res, err = c.Enqueue(context.Background(), plain)
	require.NoError(t, err)
	require.NotEmpty(t, res.Record.CorrelationID)
	require.Equal(t, "bearer-default", res.Record.Credential)
	require.Equal(t, &tasks.Call{Integration: "bearer", Method: "GET", Path: "/me", BodyText: &text}, plain)
	require.Equal(t, "hello", text)
}

func TestClientEnqueueDuplicateAndConflict(t *testing.T) {
	t.Parallel()
	e := setup(t)
	c := e.tenantClient(t, "acme")
	ctx := context.Background()
	mk := func(path string) *tasks.Call { return &tasks.Call{Integration: "httpbin", Method: "GET", Path: path} }

	first, err := c.Enqueue(ctx, mk("/a"), producer.WithCorrelationID("dup"))
	require.NoError(t, err)
	require.False(t, first.Duplicate)

	again, err := c.Enqueue(ctx, mk("/a"), producer.WithCorrelationID("dup"))
	require.NoError(t, err)
	require.True(t, again.Duplicate)
	require.Equal(t, "dup", again.Record.CorrelationID)
	require.True(t, first.Record.CreatedAt.Equal(again.Record.CreatedAt))

	// Setting the ID on the call or through the option is the same call.
	viaField := mk("/a")
	viaField.CorrelationID = "dup"
	again, err = c.Enqueue(ctx, viaField)
	require.NoError(t, err)
	require.True(t, again.Duplicate)

	refused, err := c.Enqueue(ctx, mk("/b"), producer.WithCorrelationID("dup"))
	require.ErrorIs(t, err, producer.ErrConflict)
	require.Nil(t, refused)
	var conflict *producer.ConflictError
	require.ErrorAs(t, err, &conflict)
	require.Equal(t, "/a", conflict.Existing.Path, "the error holds the record that has the ID")
	require.Equal(t, `producer: correlation_id "dup" is already used by a different call`, err.Error())
	_, err = c.Enqueue(ctx, mk("/a"), producer.WithCorrelationID("dup"), producer.WithQueue("low"))
	require.ErrorIs(t, err, producer.ErrConflict)

	// Exactly one task, and the record is the first call's.
	require.Equal(t, 1, e.queueSize(t, "default"))
	rec, err := c.Get(ctx, "dup")
	require.NoError(t, err)
	require.Equal(t, "/a", rec.Path)

	// Another tenant's client sees none of it and may use the same ID.
	other := e.tenantClient(t, "other")
	_, err = other.Get(ctx, "dup")
	require.ErrorIs(t, err, producer.ErrNotFound)
	res, err := other.Enqueue(ctx, mk("/b"), producer.WithCorrelationID("dup"))
	require.NoError(t, err)
	require.False(t, res.Duplicate)
}

func TestClientEnqueueFieldErrors(t *testing.T) {
	t.Parallel()
	e := setup(t)
	c := e.tenantClient(t, "acme")
	ctx := context.Background()

	for want, call := range map[string]*tasks.Call{
		"integration":    {Method: "GET", Path: "/x"},
		"method":         {Integration: "httpbin", Method: "BREW", Path: "/x"},
		"path":           {Integration: "httpbin", Method: "GET", Path: "//evil.com"},
		"correlation_id": {Integration: "httpbin", Method: "GET", Path: "/x", CorrelationID: "no spaces"},
		"delay":          {Integration: "httpbin", Method: "GET", Path: "/x", Delay: tasks.Duration(-time.Second)},
		"headers.Host":   {Integration: "httpbin", Method: "GET", Path: "/x", Headers: map[string]string{"Host": "evil.com"}},
		"body":           {Integration: "httpbin", Method: "POST", Path: "/x", Body: json.RawMessage(`{"a":`)},
	} {
		_, err := c.Enqueue(ctx, call)
		var fe *tasks.FieldError
		require.ErrorAs(t, err, &fe, want)
		require.Equal(t, want, fe.Field)
		require.NotEmpty(t, fe.Message)
		require.False(t, errors.Is(err, tasks.ErrTooLarge), want)
	}

	// Size limits are field errors too, and match ErrTooLarge.
	small, err := producer.NewClient(e.rdb, "acme", &producer.Config{Catalog: e.cat, Records: e.records, Limits: &tasks.Limits{MaxRequestBytes: 8}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = small.Close() })
	text := "more than eight bytes"
	_, err = small.Enqueue(ctx, &tasks.Call{Integration: "httpbin", Method: "POST", Path: "/x", BodyText: &text})
	var fe *tasks.FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "body_text", fe.Field)
	require.True(t, fe.TooLarge)
	require.ErrorIs(t, err, tasks.ErrTooLarge)

	require.Zero(t, e.queueSize(t, "default"), "nothing was queued")
}

func TestClientGetAndWait(t *testing.T) {
	t.Parallel()
	e := setup(t)
	c := e.tenantClient(t, "acme")
	ctx := context.Background()

	for _, id := range []string{"unknown", "", "bad id", "a/b"} {
		_, err := c.Get(ctx, id)
		require.ErrorIs(t, err, producer.ErrNotFound, "%q", id)
		_, err = c.Wait(ctx, id)
		require.ErrorIs(t, err, producer.ErrNotFound, "%q", id)
		_, err = c.Cancel(ctx, id)
		require.ErrorIs(t, err, producer.ErrNotFound, "%q", id)
	}

	_, err := c.Enqueue(ctx, &tasks.Call{Integration: "httpbin", Method: "GET", Path: "/x"}, producer.WithCorrelationID("w1"))
	require.NoError(t, err)

	// A wait that runs out answers the record as it stands with ctx's error.
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	start := time.Now()
	rec, err := c.Wait(wctx, "w1")
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NotNil(t, rec)
	require.Equal(t, tasks.StatusQueued, rec.Status)
	require.GreaterOrEqual(t, time.Since(start), 250*time.Millisecond)

	// A wait that sees the call finish answers the terminal record.
	errc := make(chan error, 1)
	go func() {
		time.Sleep(200 * time.Millisecond)
		errc <- e.complete(ctx, "acme", "w1", tasks.StatusFailed)
	}()
	wctx, cancel = context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rec, err = c.Wait(wctx, "w1")
	require.NoError(t, err, "woken by the completion, not by the deadline")
	require.NoError(t, <-errc)
	require.Equal(t, tasks.StatusFailed, rec.Status)

	got, err := c.Get(ctx, "w1")
	require.NoError(t, err)
	require.Equal(t, tasks.StatusFailed, got.Status)

	// Cancel on a finished call: ErrFinished, with the record in the error.
	rec, err = c.Cancel(ctx, "w1")
	require.ErrorIs(t, err, producer.ErrFinished)
	require.Nil(t, rec)
	var finished *producer.FinishedError
	require.ErrorAs(t, err, &finished)
	require.NotNil(t, finished.Record)
	require.Equal(t, tasks.StatusFailed, finished.Record.Status)
	require.Equal(t, `producer: call "w1" has already finished (failed)`, err.Error())
}

func TestClientCancelRemovesTheScheduledTask(t *testing.T) {
	t.Parallel()
	e := setup(t)
	c := e.tenantClient(t, "acme")
	ctx := context.Background()

	_, err := c.Enqueue(ctx, &tasks.Call{Integration: "httpbin", Method: "GET", Path: "/later"},
		producer.WithCorrelationID("later"), producer.WithDelay(time.Hour), producer.WithQueue("low"))
	require.NoError(t, err)
	info, err := e.taskInfo("acme", "low", "later")
	require.NoError(t, err)
	require.Equal(t, asynq.TaskStateScheduled, info.State)

	rec, err := c.Cancel(ctx, "later")
	require.NoError(t, err)
	require.Equal(t, tasks.StatusCanceled, rec.Status)
	require.Equal(t, tasks.KindCanceled, rec.Error.Kind)
	require.Nil(t, rec.NextAttemptAt)
	require.NotNil(t, rec.CompletedAt)

	_, err = e.taskInfo("acme", "low", "later")
	require.ErrorIs(t, err, asynq.ErrTaskNotFound)
	q, err := e.inspector.GetQueueInfo("low")
	require.NoError(t, err)
	require.Zero(t, q.Scheduled)

	got, err := c.Get(ctx, "later")
	require.NoError(t, err)
	require.Equal(t, tasks.StatusCanceled, got.Status)

	_, err = c.Cancel(ctx, "later")
	require.ErrorIs(t, err, producer.ErrFinished)
	var finished *producer.FinishedError
	require.ErrorAs(t, err, &finished)
	require.Equal(t, tasks.StatusCanceled, finished.Record.Status)

	// A worker that picked the task up anyway would find it finished.
	_, err = e.records.Begin(ctx, "acme", "later", tasks.RunMarker{Attempt: 1, StartedAt: time.Now()})
	require.ErrorIs(t, err, tasks.ErrFinished)
}

func TestClientCancelRetryingCall(t *testing.T) {
	t.Parallel()
	e := setup(t)
	c := e.tenantClient(t, "acme")
	ctx := context.Background()

	_, err := c.Enqueue(ctx, &tasks.Call{Integration: "httpbin", Method: "GET", Path: "/x"}, producer.WithCorrelationID("retrying"))
	require.NoError(t, err)
	// A worker made an attempt and scheduled another.
	b, err := e.records.Begin(ctx, "acme", "retrying", tasks.RunMarker{Attempt: 1, StartedAt: time.Now()})
	require.NoError(t, err)
	next := time.Now().Add(time.Minute).UTC()
	rec := b.Record
	rec.Status, rec.Attempts, rec.NextAttemptAt = tasks.StatusRetrying, 1, &next
	require.NoError(t, e.records.Write(ctx, rec, b.Version))

	rec, err = c.Cancel(ctx, "retrying")
	require.NoError(t, err)
	require.Equal(t, tasks.StatusCanceled, rec.Status)
	require.Nil(t, rec.NextAttemptAt)
	require.Equal(t, 1, rec.Attempts, "the attempt made is kept")

	// A running call is canceled too, and the record says the upstream may
	// have received the request.
	_, err = c.Enqueue(ctx, &tasks.Call{Integration: "httpbin", Method: "GET", Path: "/x"}, producer.WithCorrelationID("running"))
	require.NoError(t, err)
	_, err = e.records.Begin(ctx, "acme", "running", tasks.RunMarker{Attempt: 1, StartedAt: time.Now()})
	require.NoError(t, err)
	rec, err = c.Cancel(ctx, "running")
	require.NoError(t, err)
	require.Equal(t, tasks.StatusCanceled, rec.Status)
	require.Contains(t, rec.Error.Message, "may have received")
}
