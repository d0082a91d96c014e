package producer_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
)

func withMetrics(m *producer.Metrics) setupOption {
	return func(c *setupConfig) { c.handler.Metrics = m }
}

func withTracerProvider(tp trace.TracerProvider) setupOption {
	return func(c *setupConfig) { c.handler.TracerProvider = tp }
}

const (
	incomingParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	incomingState  = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
)

// TestTraceparentKeptWithTheCall: without a TracerProvider the API keeps
// the request's traceparent and tracestate with the call as they came
// (shown on the record); a replay keeps the original's; an invalid
// traceparent is ignored, as the W3C recommendation says, and a call with
// none shows none.
func TestTraceparentKeptWithTheCall(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.post(t, call(map[string]any{"correlation_id": "traced-1"}), "traceparent", incomingParent, "tracestate", incomingState)
	require.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)
	rec := e.get(t, "traced-1").Record(t)
	require.Equal(t, &tasks.TraceContext{Parent: incomingParent, State: incomingState}, rec.Trace)

	e.finish(t, "acme", "traced-1", tasks.StatusSucceeded)
	a := replayed(t, e.replay(t, e.producerKey, "traced-1", nil), "traced-1")
	require.Equal(t, rec.Trace, e.get(t, a.CorrelationID).Record(t).Trace, "a replay keeps the call's trace")

	r = e.post(t, call(map[string]any{"correlation_id": "traced-bad"}), "traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01")
	require.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)
	require.Nil(t, e.get(t, "traced-bad").Record(t).Trace)
	r = e.post(t, call(map[string]any{"correlation_id": "untraced"}))
	require.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)
	body := e.get(t, "untraced").Body
	require.NotContains(t, string(body), `"trace"`)
}

// tracedSetup is setup with a TracerProvider whose spans are kept in
// memory, as they end.
func tracedSetup(t *testing.T) (*env, *tracetest.InMemoryExporter) {
	t.Helper()
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return setup(t, withTracerProvider(tp)), spans
}

// TestAPIServerSpan: with a TracerProvider each request has a server span,
// the child of its traceparent, named by its route; a call enqueued in it
// keeps the server span's context, so the worker's spans are its children.
func TestAPIServerSpan(t *testing.T) {
	t.Parallel()
	e, spans := tracedSetup(t)
	r := e.post(t, call(map[string]any{"correlation_id": "served-1", "query": map[string]any{"token": "q-s3cr3t"}}),
		"traceparent", incomingParent)
	require.Equal(t, http.StatusAccepted, r.Status, "%s", r.Body)
	require.Equal(t, http.StatusOK, e.get(t, "served-1").Status)

	// A server span ends once its handler has answered: wait for both.
	var got tracetest.SpanStubs
	require.Eventually(t, func() bool { got = spans.GetSpans(); return len(got) >= 2 }, 10*time.Second, 5*time.Millisecond)
	require.Len(t, got, 2)
	post, get := got[0], got[1]
	if post.Name != "POST /v1/calls" {
		post, get = get, post
	}
	require.Equal(t, "POST /v1/calls", post.Name)
	require.Equal(t, trace.SpanKindServer, post.SpanKind)
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", post.SpanContext.TraceID().String())
	require.Equal(t, "00f067aa0ba902b7", post.Parent.SpanID().String())
	require.Equal(t, "GET /v1/calls/{id}", get.Name, "the route, not the path")
	var code int64
	for _, kv := range post.Attributes {
		if kv.Key == "http.response.status_code" {
			code = kv.Value.AsInt64()
		}
	}
	require.EqualValues(t, http.StatusAccepted, code)

	rec := e.get(t, "served-1").Record(t)
	require.Equal(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-"+post.SpanContext.SpanID().String()+"-01", rec.Trace.Parent)
	for _, s := range got {
		for _, kv := range s.Attributes {
			require.NotContains(t, kv.Value.Emit(), "q-s3cr3t")
			require.NotContains(t, kv.Value.Emit(), e.producerKey)
		}
	}
}

// TestAPIServerSpanMethodBounded: a method outside the standard set names
// the server span as _OTHER, as OpenTelemetry's HTTP conventions say: a
// client may send any token, and span names must stay few.
func TestAPIServerSpanMethodBounded(t *testing.T) {
	t.Parallel()
	e, spans := tracedSetup(t)
	r := e.do(t, req{Method: "BREW-4f1c9a", Path: "/v1/calls", Key: e.producerKey})
	require.Equal(t, http.StatusMethodNotAllowed, r.Status)
	var got tracetest.SpanStubs
	require.Eventually(t, func() bool { got = spans.GetSpans(); return len(got) >= 1 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, "_OTHER /v1/calls", got[0].Name)
	for _, kv := range got[0].Attributes {
		require.NotContains(t, kv.Value.Emit(), "BREW")
	}
}

// TestAPIMetrics: requests are counted by route pattern, method and code,
// a path no route serves as "unmatched"; calls the API queues by
// integration, an idempotent repeat not counted; and what is registered
// passes Prometheus' lint (promlint, the lint `promtool check metrics`
// runs; cmd/callq's process test runs promtool itself on /metrics).
func TestAPIMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := producer.NewMetrics(reg)
	require.NoError(t, err)
	e := setup(t, withMetrics(m))
	for range 2 {
		e.post(t, call(map[string]any{"correlation_id": "counted-1"}))
	}
	e.post(t, call(map[string]any{"correlation_id": "counted-2"}))
	e.post(t, call(map[string]any{"integration": "bearer", "correlation_id": "counted-3"}))
	e.post(t, call(map[string]any{"integration": "nope"}))
	e.get(t, "counted-1")
	e.get(t, "no-such-call")
	e.do(t, req{Method: http.MethodGet, Path: "/v1/nothing/here", Key: e.producerKey})
	e.do(t, req{Method: "BREW", Path: "/v1/calls", Key: e.producerKey})

	// A request is counted once its handler has answered: the last may
	// be counted a moment after its client has the answer.
	requireMetrics(t, reg, `
# HELP callq_calls_enqueued_total Calls the API queued (new ones; an idempotent repeat is not counted), by integration.
# TYPE callq_calls_enqueued_total counter
callq_calls_enqueued_total{integration="bearer"} 1
callq_calls_enqueued_total{integration="httpbin"} 2
# HELP callq_http_requests_total HTTP API requests answered, by route pattern (unmatched for a path no route serves), method and status code.
# TYPE callq_http_requests_total counter
callq_http_requests_total{code="200",method="GET",route="/v1/calls/{id}"} 1
callq_http_requests_total{code="200",method="POST",route="/v1/calls"} 1
callq_http_requests_total{code="202",method="POST",route="/v1/calls"} 3
callq_http_requests_total{code="400",method="POST",route="/v1/calls"} 1
callq_http_requests_total{code="404",method="GET",route="/v1/calls/{id}"} 1
callq_http_requests_total{code="404",method="GET",route="unmatched"} 1
callq_http_requests_total{code="405",method="other",route="/v1/calls"} 1
`, "callq_http_requests_total", "callq_calls_enqueued_total")
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	require.Empty(t, problems)
}

// TestUnavailableCounted: with its redis-server stopped the API answers
// 503, and each is counted. A 503 for another reason (connect without
// CALLQ_PUBLIC_URL, which anyone can ask for) is not an outage of Redis
// and is not counted as one.
func TestUnavailableCounted(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := producer.NewMetrics(reg)
	require.NoError(t, err)
	e := setup(t, withMetrics(m))
	r := e.do(t, req{Method: http.MethodGet, Path: "/connect/" + strings.Repeat("a", 43)})
	require.Equal(t, http.StatusServiceUnavailable, r.Status, "%s", r.Body)
	r = e.do(t, req{Method: http.MethodPost, Path: "/v1/connect/sessions", Key: e.adminKey,
		Body: map[string]any{"integration": "github", "credential": "c"}})
	require.Equal(t, http.StatusServiceUnavailable, r.Status, "%s", r.Body)
	requireMetrics(t, reg, `
# HELP callq_http_requests_total HTTP API requests answered, by route pattern (unmatched for a path no route serves), method and status code.
# TYPE callq_http_requests_total counter
callq_http_requests_total{code="503",method="GET",route="/connect/{token}"} 1
callq_http_requests_total{code="503",method="POST",route="/v1/connect/sessions"} 1
`, "callq_http_requests_total")
	e.srv.Kill(t)
	r = e.post(t, call(nil))
	require.Equal(t, http.StatusServiceUnavailable, r.Status, "%s", r.Body)
	r = e.get(t, "some-call")
	require.Equal(t, http.StatusServiceUnavailable, r.Status, "%s", r.Body)
	requireMetrics(t, reg, `
# HELP callq_http_unavailable_total HTTP API requests answered 503 because Redis could not be reached.
# TYPE callq_http_unavailable_total counter
callq_http_unavailable_total 2
`, "callq_http_unavailable_total")
}

// requireMetrics waits for reg's metrics of those names to be want.
func requireMetrics(t *testing.T, reg *prometheus.Registry, want string, names ...string) {
	t.Helper()
	var err error
	// assert, not require: on a timeout the comparison's diff is the news.
	assert.Eventually(t, func() bool {
		err = testutil.GatherAndCompare(reg, strings.NewReader(want), names...)
		return err == nil
	}, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, err)
}
