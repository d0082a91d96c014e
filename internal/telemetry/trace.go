package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/callq/callq/tasks"
)

// Config configures Setup.
type Config struct {
	// ServiceName is the service.name of callq's spans unless
	// OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES set it. Default
	// "callq".
	ServiceName string
	// Getenv reads the environment. Default os.Getenv. The OTLP exporter
	// reads its own variables (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, ...)
	// from the process's environment whatever this says.
	Getenv func(string) string
}

// ErrProtocol is returned by Setup when OTEL_EXPORTER_OTLP_PROTOCOL (or
// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL) asks for a protocol callq does not
// export with: only http/protobuf is built in.
var ErrProtocol = errors.New("telemetry: only the http/protobuf OTLP protocol is supported")

// Tracing is what Setup made: a tracer provider exporting over OTLP/HTTP,
// or none.
type Tracing struct {
	provider *sdktrace.TracerProvider // nil: tracing is off
}

// Setup makes callq's tracer provider. Tracing is on when
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set,
// unless OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none; spans are then
// batched (OTEL_BSP_* tune it) and sampled as OTEL_TRACES_SAMPLER says
// (default: parentbased_always_on). Otherwise the Tracing is off and makes
// nothing. Shutdown flushes what is left.
func Setup(ctx context.Context, cfg *Config) (*Tracing, error) {
	c := Config{}
	if cfg != nil {
		c = *cfg
	}
	if c.ServiceName == "" {
		c.ServiceName = "callq"
	}
	if c.Getenv == nil {
		c.Getenv = os.Getenv
	}
	if !enabled(c.Getenv) {
		return &Tracing{}, nil
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := c.Getenv(name); p != "" {
			if p != "http/protobuf" {
				return nil, fmt.Errorf("%s=%q: %w", name, p, ErrProtocol)
			}
			break
		}
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTLP exporter: %w", err)
	}
	// Later detectors win: the environment's service.name over ours.
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", c.ServiceName)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(),
	)
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	return &Tracing{provider: sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))}, nil
}

func enabled(getenv func(string) string) bool {
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") || strings.EqualFold(getenv("OTEL_TRACES_EXPORTER"), "none") {
		return false
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Provider is the tracer provider to give the API and the worker, or nil
// when tracing is off.
func (t *Tracing) Provider() trace.TracerProvider {
	if t == nil || t.provider == nil {
		return nil
	}
	return t.provider
}

// Shutdown exports the spans not exported yet and stops the exporter.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil || t.provider == nil {
		return nil
	}
	return t.provider.Shutdown(ctx)
}

// propagator reads and writes the W3C traceparent and tracestate headers.
var propagator = propagation.TraceContext{}

// FromContext is the trace context of ctx's span, to keep with a call
// enqueued under ctx; nil when ctx has none (no allocation then).
func FromContext(ctx context.Context) *tasks.TraceContext {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	c := propagation.MapCarrier{}
	propagator.Inject(ctx, c)
	return &tasks.TraceContext{Parent: c["traceparent"], State: boundState(c["tracestate"])}
}

// MaxTraceState bounds the tracestate kept with a call, in bytes: the 512
// characters the W3C recommendation asks platforms to propagate at least.
// A valid tracestate may be some 16 KiB (32 members of 256-byte keys and
// values), and a call keeps it in its record, its task and its webhook's.
const MaxTraceState = 512

// boundState truncates the valid tracestate s to MaxTraceState bytes as
// the W3C recommendation says: members over 128 bytes go first, then
// members from the end.
func boundState(s string) string {
	if len(s) <= MaxTraceState {
		return s
	}
	members := strings.Split(s, ",")
	n := len(s)
	drop := func(i int) {
		n -= len(members[i]) + 1 // and its comma
		members = append(members[:i], members[i+1:]...)
	}
	for i := len(members) - 1; i >= 0 && n > MaxTraceState; i-- {
		if len(members[i]) > 128 {
			drop(i)
		}
	}
	for n > MaxTraceState {
		drop(len(members) - 1)
	}
	return strings.Join(members, ",")
}

// WithParent returns ctx with tc as its remote parent: spans started under
// it are tc's children, and Inject passes tc on. A nil or invalid tc leaves
// ctx as it is.
func WithParent(ctx context.Context, tc *tasks.TraceContext) context.Context {
	if tc == nil {
		return ctx
	}
	return propagator.Extract(ctx, propagation.MapCarrier{"traceparent": tc.Parent, "tracestate": tc.State})
}

// Extract returns ctx with the trace context of an incoming request's
// headers as its remote parent; ctx as it is when h has no traceparent.
// An invalid traceparent is ignored, as the W3C recommendation says.
func Extract(ctx context.Context, h http.Header) context.Context {
	if _, ok := h["Traceparent"]; !ok {
		return ctx
	}
	return propagator.Extract(ctx, propagation.HeaderCarrier(h))
}

// Inject sets the traceparent and tracestate headers of an outgoing
// request to ctx's span, replacing any h held (a tracestate of another
// trace must not ride along with this one's traceparent when this one has
// none); it does nothing (and allocates nothing) when ctx has no span.
func Inject(ctx context.Context, h http.Header) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	h.Del("Tracestate")
	propagator.Inject(ctx, propagation.HeaderCarrier(h))
}
