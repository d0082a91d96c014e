package telemetry_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"

	"github.com/callq/callq/internal/redistest"
	"github.com/callq/callq/internal/telemetry"
	"github.com/callq/callq/tasks"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// Tracing is on only when an OTLP endpoint is named, and not turned off.
func TestSetup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		vars map[string]string
		on   bool
	}{
		{"nothing set", nil, false},
		{"endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, true},
		{"traces endpoint", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, true},
		{"sdk disabled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"}, false},
		{"exporter none", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"}, false},
		{"http/protobuf", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, true},
	} {
		tr, err := telemetry.Setup(ctx, &telemetry.Config{Getenv: env(tc.vars)})
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.on, tr.Provider() != nil, tc.name)
		require.NoError(t, tr.Shutdown(ctx), tc.name)
	}
	_, err := telemetry.Setup(ctx, &telemetry.Config{Getenv: env(map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})})
	require.ErrorIs(t, err, telemetry.ErrProtocol)
	require.ErrorContains(t, err, "OTEL_EXPORTER_OTLP_PROTOCOL")
}

// The trace context goes from a context to a call and back, and into
// headers, only when there is one.
// (Not parallel: AllocsPerRun.)
func TestPropagation(t *testing.T) {
	ctx := context.Background()
	require.Nil(t, telemetry.FromContext(ctx))
	h := http.Header{}
	telemetry.Inject(ctx, h)
	require.Empty(t, h)
	require.Equal(t, ctx, telemetry.Extract(ctx, h), "no traceparent: the context as it was")
	require.Equal(t, ctx, telemetry.WithParent(ctx, nil))

	h.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	h.Set("tracestate", "rojo=00f067aa0ba902b7")
	tc := telemetry.FromContext(telemetry.Extract(ctx, h))
	require.Equal(t, &tasks.TraceContext{Parent: h.Get("traceparent"), State: "rojo=00f067aa0ba902b7"}, tc)
	out := http.Header{}
	telemetry.Inject(telemetry.WithParent(ctx, tc), out)
	require.Equal(t, h, out)
	require.True(t, trace.SpanContextFromContext(telemetry.WithParent(ctx, tc)).IsRemote())

	// A tracestate the request held already (a call's own header) does
	// not ride along with a traceparent that has none.
	out = http.Header{"Tracestate": {"other=vendor"}, "Traceparent": {"00-11111111111111111111111111111111-2222222222222222-01"}}
	telemetry.Inject(telemetry.WithParent(ctx, &tasks.TraceContext{Parent: tc.Parent}), out)
	require.Equal(t, http.Header{"Traceparent": {tc.Parent}}, out)

	h.Set("traceparent", "not-a-traceparent")
	require.Nil(t, telemetry.FromContext(telemetry.Extract(ctx, h)), "an invalid one is ignored")
	// The cost of an untraced call: nothing.
	untraced := http.Header{"Content-Type": {"application/json"}}
	require.Zero(t, testing.AllocsPerRun(100, func() {
		telemetry.Inject(ctx, out)
		_ = telemetry.FromContext(ctx)
		_ = telemetry.Extract(ctx, untraced)
	}))
}

// The collector reports each asynq queue's depths by state as gauges that
// pass Prometheus' lint, and callq_queue_stats_up 0, not a failed scrape,
// when Redis is gone.
func TestQueueCollector(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	q := asynq.NewClientFromRedisClient(rdb)
	for i := range 3 {
		_, err := q.Enqueue(asynq.NewTask("t", nil), asynq.Queue("default"), asynq.TaskID(string(rune('a'+i))))
		require.NoError(t, err)
	}
	_, err := q.Enqueue(asynq.NewTask("t", nil), asynq.Queue("low"), asynq.ProcessIn(time.Hour))
	require.NoError(t, err)

	_, err = telemetry.NewQueueCollector(rdb, &telemetry.QueueCollectorConfig{Timeout: -1})
	require.ErrorContains(t, err, "QueueCollectorConfig.Timeout must not be negative")
	c, err := telemetry.NewQueueCollector(rdb, &telemetry.QueueCollectorConfig{Timeout: 500 * time.Millisecond})
	require.NoError(t, err)
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP callq_queue_stats_up Whether the last scrape could read the asynq queues' depths (1) or not (0: Redis unreachable or slower than the timeout).
# TYPE callq_queue_stats_up gauge
callq_queue_stats_up 1
# HELP callq_queue_tasks Tasks in an asynq queue, by queue and state (pending, active, scheduled, retry, archived), read from asynq when scraped.
# TYPE callq_queue_tasks gauge
callq_queue_tasks{queue="default",state="active"} 0
callq_queue_tasks{queue="default",state="archived"} 0
callq_queue_tasks{queue="default",state="pending"} 3
callq_queue_tasks{queue="default",state="retry"} 0
callq_queue_tasks{queue="default",state="scheduled"} 0
callq_queue_tasks{queue="low",state="active"} 0
callq_queue_tasks{queue="low",state="archived"} 0
callq_queue_tasks{queue="low",state="pending"} 0
callq_queue_tasks{queue="low",state="retry"} 0
callq_queue_tasks{queue="low",state="scheduled"} 1
`)))
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	require.Empty(t, problems)

	srv.Kill(t)
	start := time.Now()
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP callq_queue_stats_up Whether the last scrape could read the asynq queues' depths (1) or not (0: Redis unreachable or slower than the timeout).
# TYPE callq_queue_stats_up gauge
callq_queue_stats_up 0
`)))
	require.Less(t, time.Since(start), 5*time.Second, "the scrape waits the timeout at most")
}

// A tracestate kept with a call is at most MaxTraceState bytes: a valid
// one may be 16 KiB. Members over 128 bytes go first, then from the end,
// as the W3C recommendation says; a short one is kept as it came.
func TestTraceStateBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	state := func(members ...string) string { return strings.Join(members, ",") }
	member := func(key string, n int) string { return key + "=" + strings.Repeat("v", n-len(key)-1) }
	kept := func(ts string) string {
		h := http.Header{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, "Tracestate": {ts}}
		tc := telemetry.FromContext(telemetry.Extract(ctx, h))
		require.NotNil(t, tc)
		return tc.State
	}
	var big []string
	for i := range 32 {
		big = append(big, member("k"+strings.Repeat("x", 250)+string(rune('a'+i%26))+string(rune('a'+i/26)), 513))
	}
	require.Greater(t, len(state(big...)), 16000)
	require.Empty(t, kept(state(big...)), "every member is over 128 bytes")

	short := state(member("a", 100), member("b", 100), member("c", 100), member("d", 100), member("e", 100))
	require.Equal(t, short, kept(short), "504 bytes: kept")
	require.Equal(t, short,
		kept(state(member("a", 100), member("long", 200), member("b", 100), member("c", 100), member("d", 100), member("e", 100), member("f", 100))),
		"the long member goes first, then the last")
	var many []string
	for i := range 32 {
		many = append(many, member("k"+string(rune('a'+i%26))+string(rune('a'+i/26)), 20))
	}
	require.Equal(t, state(many[:24]...), kept(state(many...)), "671 bytes: the last 8 go")
}
