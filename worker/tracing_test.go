package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mccutchen/go-httpbin/v2/httpbin"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/redistest"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

// Secrets the traced calls carry: a bearer token and a query parameter.
const (
	traceToken       = "tok-s3cr3t-in-the-credential-4711"
	traceQuerySecret = "q-s3cr3t-in-the-query-0815"
)

// traceEnv is a worker with its own redis-server, a go-httpbin upstream
// (integration "bin", bearer auth, credential "tok"; "limited", one
// request an hour) and loopback webhooks;
// tracer is nil for a worker without a TracerProvider.
type traceEnv struct {
	client  *producer.Client
	records *tasks.Store
	spans   *tracetest.InMemoryExporter
	tracer  *sdktrace.TracerProvider
}

func setupTrace(t *testing.T, traced bool) *traceEnv {
	t.Helper()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	up := httptest.NewServer(httpbin.New())
	t.Cleanup(up.Close)
	cat, err := tasks.ParseCatalog([]byte("integrations:\n  bin:\n    base_url: " + up.URL +
		"\n    auth: {type: bearer}\n    retry: {max_attempts: 2, initial_interval: 10ms, max_interval: 20ms}\n" +
		"  limited:\n    base_url: " + up.URL + "\n    rate_limit: {requests: 1, per: 1h}\n"))
	require.NoError(t, err)
	key, _ := auth.GenerateKey()
	ring, err := auth.ParseKeyring(key)
	require.NoError(t, err)
	creds, err := auth.NewStore(rdb, &auth.StoreConfig{Keyring: ring})
	require.NoError(t, err)
	_, err = creds.Put(context.Background(), "acme", "tok", "bin", map[string]string{"token": traceToken})
	require.NoError(t, err)
	records, err := tasks.NewStore(rdb, nil)
	require.NoError(t, err)
	t.Cleanup(func() { records.Close() })
	client, err := producer.NewClient(rdb, "acme", &producer.Config{Catalog: cat, Records: records,
		WebhooksEnabled: true, WebhookAllowPrivate: true})
	require.NoError(t, err)
	secrets, err := auth.ParseWebhookSecrets(webhookSecret)
	require.NoError(t, err)
	e := &traceEnv{client: client, records: records, spans: tracetest.NewInMemoryExporter()}
	// The test's spans and the worker's go to the same exporter, as they
	// would to one collector.
	e.tracer = sdktrace.NewTracerProvider(sdktrace.WithSyncer(e.spans))
	t.Cleanup(func() { _ = e.tracer.Shutdown(context.Background()) })
	log := zerolog.Nop()
	cfg := &worker.Config{Catalog: cat, Records: records, Credentials: creds, Keyring: ring,
		Concurrency: 4, Logger: &log, ShutdownTimeout: time.Second,
		WebhookSecrets: secrets, WebhookAllowPrivate: true}
	if traced {
		cfg.TracerProvider = e.tracer
	}
	w, err := worker.New(rdb, cfg)
	require.NoError(t, err)
	require.NoError(t, w.Start())
	t.Cleanup(w.Shutdown)
	return e
}

// call enqueues a call under ctx and waits for it to finish and for its
// webhook (if it has one) to be delivered.
func (e *traceEnv) call(t *testing.T, ctx context.Context, c *tasks.Call) *tasks.Record {
	t.Helper()
	c.CorrelationID = "trace-" + uid()
	_, err := e.client.Enqueue(ctx, c)
	require.NoError(t, err)
	var rec *tasks.Record
	require.Eventually(t, func() bool {
		rec, err = e.client.Get(context.Background(), c.CorrelationID)
		require.NoError(t, err)
		return rec.Status.Terminal() && (rec.Webhook == nil || rec.Webhook.Status != tasks.WebhookPending)
	}, 20*time.Second, 10*time.Millisecond)
	return rec
}

// echoedHeaders are the request headers go-httpbin's /headers answered.
func echoedHeaders(t *testing.T, rec *tasks.Record) map[string][]string {
	t.Helper()
	require.NotNil(t, rec.Response)
	var v struct{ Headers map[string][]string }
	require.NoError(t, json.Unmarshal(rec.Response.Body, &v), "%s", rec.Response.Body)
	return v.Headers
}

// spansNamed waits for n exported spans of that name and returns them, in
// the order they ended: a run's span ends after it wrote the record the
// test waited for.
func (e *traceEnv) spansNamed(t *testing.T, name string, n int) tracetest.SpanStubs {
	t.Helper()
	var out tracetest.SpanStubs
	require.Eventually(t, func() bool {
		out = nil
		for _, s := range e.spans.GetSpans() {
			if s.Name == name {
				out = append(out, s)
			}
		}
		return len(out) >= n
	}, 10*time.Second, 5*time.Millisecond, "%d %s spans ended", n, name)
	require.Len(t, out, n)
	return out
}

func attrs(s tracetest.SpanStub) map[string]string {
	m := map[string]string{}
	for _, kv := range s.Attributes {
		m[string(kv.Key)] = kv.Value.Emit()
	}
	return m
}

func traceparent(sc trace.SpanContext) string {
	return fmt.Sprintf("00-%s-%s-01", sc.TraceID(), sc.SpanID())
}

// TestTraceFollowsTheCall: the span a call is enqueued under is the parent
// of the worker's attempt span and of its webhook delivery's; go-httpbin
// sees the attempt span in its traceparent and the webhook receiver sees
// the delivery span; the spans carry the call's identifiers and outcome
// and neither the credential nor the query.
func TestTraceFollowsTheCall(t *testing.T) {
	t.Parallel()
	e := setupTrace(t, true)
	hook := newReceiver(t, 200)
	ctx, parent := e.tracer.Tracer("test").Start(context.Background(), "enqueue")
	rec := e.call(t, ctx, &tasks.Call{Integration: "bin", Method: "GET", Path: "/headers", Credential: "tok",
		Query: tasks.Query{"api_key": {traceQuerySecret}}, Webhook: &tasks.Webhook{URL: hook.URL + "/hook"}})
	parent.End()
	require.Equal(t, tasks.StatusSucceeded, rec.Status)
	require.Equal(t, tasks.WebhookDelivered, rec.Webhook.Status)
	psc := parent.SpanContext()
	require.NotNil(t, rec.Trace, "the record keeps the trace context")
	require.Equal(t, traceparent(psc), rec.Trace.Parent)

	attempts := e.spansNamed(t, "callq.attempt", 1)
	a := attempts[0]
	require.Equal(t, psc.TraceID(), a.SpanContext.TraceID(), "one trace across the async hop")
	require.Equal(t, psc.SpanID(), a.Parent.SpanID(), "the attempt is the enqueueing span's child")
	require.True(t, a.Parent.IsRemote())
	require.Equal(t, trace.SpanKindClient, a.SpanKind)
	got := attrs(a)
	require.Equal(t, "bin", got["callq.integration"])
	require.Equal(t, rec.CorrelationID, got["callq.correlation_id"])
	require.Equal(t, "1", got["callq.attempt"])
	require.Equal(t, "succeeded", got["callq.status"])
	require.Equal(t, "200", got["http.response.status_code"])
	require.NotContains(t, got, "callq.error_kind")

	// go-httpbin answered the headers it received: the attempt's span.
	require.Equal(t, []string{traceparent(a.SpanContext)}, echoedHeaders(t, rec)["Traceparent"])

	deliveries := e.spansNamed(t, "callq.webhook", 1)
	d := deliveries[0]
	require.Equal(t, psc.TraceID(), d.SpanContext.TraceID())
	require.Equal(t, psc.SpanID(), d.Parent.SpanID(), "the delivery is the call's child too")
	require.Equal(t, "200", attrs(d)["http.response.status_code"])
	got2 := hook.deliveries()
	require.Len(t, got2, 1)
	require.Equal(t, traceparent(d.SpanContext), got2[0].headers.Get("Traceparent"))

	// Nothing secret, and no URL, in what is exported.
	b, err := json.Marshal(e.spans.GetSpans())
	require.NoError(t, err)
	for _, s := range []string{traceToken, traceQuerySecret, "api_key", "Bearer", "/headers", "127.0.0.1"} {
		require.NotContains(t, string(b), s)
	}
}

// TestTraceSpanPerAttempt: a call that fails twice has two attempt spans,
// siblings under the enqueueing span, the first retrying and the second
// failed, both with their error kind.
func TestTraceSpanPerAttempt(t *testing.T) {
	t.Parallel()
	e := setupTrace(t, true)
	ctx, parent := e.tracer.Tracer("test").Start(context.Background(), "enqueue")
	rec := e.call(t, ctx, &tasks.Call{Integration: "bin", Method: "GET", Path: "/status/503", Credential: "tok"})
	parent.End()
	require.Equal(t, tasks.StatusFailed, rec.Status)
	attempts := e.spansNamed(t, "callq.attempt", 2)
	for i, a := range attempts {
		got := attrs(a)
		require.Equal(t, parent.SpanContext().SpanID(), a.Parent.SpanID())
		require.Equal(t, fmt.Sprint(i+1), got["callq.attempt"])
		require.Equal(t, "http_status", got["callq.error_kind"])
		require.Equal(t, "503", got["http.response.status_code"])
		require.Equal(t, "Error", a.Status.Code.String())
	}
	require.Equal(t, "retrying", attrs(attempts[0])["callq.status"])
	require.Equal(t, "failed", attrs(attempts[1])["callq.status"])
}

// TestTraceContextPassedOnWithoutTracing: a worker with no TracerProvider
// makes no span, but passes the trace context a call came with on to the
// upstream as it came; a call that came with none carries none, and its
// record and payload hold no trace.
func TestTraceContextPassedOnWithoutTracing(t *testing.T) {
	t.Parallel()
	e := setupTrace(t, false)
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled, Remote: true,
	})
	ts, err := trace.ParseTraceState("vendor=opaque")
	require.NoError(t, err)
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), sc.WithTraceState(ts))
	rec := e.call(t, ctx, &tasks.Call{Integration: "bin", Method: "GET", Path: "/headers", Credential: "tok"})
	require.Equal(t, tasks.StatusSucceeded, rec.Status)
	want := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	require.Equal(t, &tasks.TraceContext{Parent: want, State: "vendor=opaque"}, rec.Trace)
	h := echoedHeaders(t, rec)
	require.Equal(t, []string{want}, h["Traceparent"])
	require.Equal(t, []string{"vendor=opaque"}, h["Tracestate"])

	plain := e.call(t, context.Background(), &tasks.Call{Integration: "bin", Method: "GET", Path: "/headers", Credential: "tok"})
	require.Nil(t, plain.Trace)
	require.NotContains(t, echoedHeaders(t, plain), "Traceparent")
	raw, err := json.Marshal(plain)
	require.NoError(t, err)
	require.NotContains(t, string(raw), `"trace"`, "no empty trace field is stored")
	require.Empty(t, e.spans.GetSpans(), "no TracerProvider, no spans")
}

// A call enqueued with no trace context has no trace field in its task's
// payload: the payload of every untraced call stays as it was.
func TestUntracedPayloadHasNoTraceField(t *testing.T) {
	t.Parallel()
	cat, err := tasks.ParseCatalog([]byte("integrations:\n  bin:\n    base_url: https://example.com\n"))
	require.NoError(t, err)
	c := &tasks.Call{Integration: "bin", Method: "GET", Path: "/x", CorrelationID: "p-1"}
	in, err := c.Normalize(cat, nil)
	require.NoError(t, err)
	rec := tasks.NewRecord("acme", c, in, time.Now())
	task, err := tasks.NewCallTask(rec, c, in)
	require.NoError(t, err)
	require.False(t, strings.Contains(string(task.Payload()), "trace"), "%s", task.Payload())
	rec.Trace = &tasks.TraceContext{Parent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	task, err = tasks.NewCallTask(rec, c, in)
	require.NoError(t, err)
	p, err := tasks.DecodePayload(task.Payload())
	require.NoError(t, err)
	require.Equal(t, rec.Trace, p.Trace)
}

// TestTraceHeldRun: a run that waits for a rate limit without an attempt
// has its span too, saying it was held and why.
func TestTraceHeldRun(t *testing.T) {
	t.Parallel()
	e := setupTrace(t, true)
	ctx, parent := e.tracer.Tracer("test").Start(context.Background(), "enqueue")
	defer parent.End()
	for i := range 2 {
		_, err := e.client.Enqueue(ctx, &tasks.Call{Integration: "limited", Method: "GET", Path: "/get",
			CorrelationID: fmt.Sprintf("held-%d-%s", i, uid())})
		require.NoError(t, err)
	}
	var held tracetest.SpanStub
	require.Eventually(t, func() bool {
		for _, s := range e.spans.GetSpans() {
			if attrs(s)["callq.outcome"] == "held" {
				held = s
				return true
			}
		}
		return false
	}, 20*time.Second, 5*time.Millisecond, "no held run's span")
	got := attrs(held)
	require.Equal(t, "retrying", got["callq.status"])
	require.Contains(t, got["callq.note"], "rate limit")
	require.NotContains(t, got, "callq.attempt", "no attempt was made")
	require.Equal(t, parent.SpanContext().SpanID(), held.Parent.SpanID())
}
