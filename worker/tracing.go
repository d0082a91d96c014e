package worker

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/callq/callq/internal/telemetry"
	"github.com/callq/callq/tasks"
)

// Span names and attribute keys of the worker's spans. Their values are
// the call's identifiers and outcome: never a credential, a header, a body
// or the URL (whose query may carry a secret).
const (
	spanAttempt  = "callq.attempt"
	spanDelivery = "callq.webhook"

	attrIntegration   = attribute.Key("callq.integration")
	attrCorrelationID = attribute.Key("callq.correlation_id")
	attrQueue         = attribute.Key("callq.queue")
	attrAttempt       = attribute.Key("callq.attempt")
	attrStatus        = attribute.Key("callq.status")
	attrOutcome       = attribute.Key("callq.outcome")
	attrErrorKind     = attribute.Key("callq.error_kind")
	attrNote          = attribute.Key("callq.note")
	attrMethod        = attribute.Key("http.request.method")
	attrHTTPStatus    = attribute.Key("http.response.status_code")
)

// traced says whether a run of p's task makes a span: when tracing is on,
// or the call came with a trace context to pass on. Otherwise the run
// touches nothing of OpenTelemetry.
func (w *Worker) traced(tc *tasks.TraceContext) bool { return w.tracing || tc != nil }

// startAttempt starts the span of a run of p's task, the child of the
// trace context p was enqueued under. Its attributes are completed by
// traceAttempt, or by traceHold when the run waits without an attempt.
func (w *Worker) startAttempt(ctx context.Context, p *tasks.Payload) (context.Context, trace.Span) {
	return w.tracer.Start(telemetry.WithParent(ctx, p.Trace), spanAttempt, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attrIntegration.String(p.Call.Integration), attrCorrelationID.String(p.Call.CorrelationID),
			attrQueue.String(p.Call.Queue), attrMethod.String(p.Call.Method)))
}

// traceAttempt records the run's verdict on its span, if it has one that
// records.
func traceAttempt(ctx context.Context, d decision, v verdict) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(attrStatus.String(string(v.status)), attrOutcome.String(v.outcome()))
	if d.attempt > 0 {
		span.SetAttributes(attrAttempt.Int(d.attempt))
	}
	if d.out.response != nil {
		span.SetAttributes(attrHTTPStatus.Int(d.out.response.Status))
	}
	kind := tasks.ErrorKind("")
	switch {
	case d.out.err != nil:
		kind = d.out.err.Kind
	case v.err != nil:
		kind = v.err.Kind
	}
	if kind != "" {
		// The kind only: the message may quote the upstream.
		span.SetAttributes(attrErrorKind.String(string(kind)))
		span.SetStatus(codes.Error, string(kind))
	}
}

// traceHold records on the run's span that the call waits without an
// attempt (a rate limit, a concurrency cap, an open circuit).
func traceHold(ctx context.Context, h *heldBack) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(attrStatus.String(string(tasks.StatusRetrying)), attrOutcome.String("held"), attrNote.String(h.note))
}

// startDelivery starts the span of a webhook delivery, the child of the
// call's trace context.
func (w *Worker) startDelivery(ctx context.Context, p *tasks.WebhookPayload, attempt int) (context.Context, trace.Span) {
	return w.tracer.Start(telemetry.WithParent(ctx, p.Trace), spanDelivery, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attrCorrelationID.String(p.CorrelationID), attrAttempt.Int(attempt), attrMethod.String("POST")))
}

// traceDelivery records a delivery's answer on its span.
func traceDelivery(ctx context.Context, status int, err error) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	if status > 0 {
		span.SetAttributes(attrHTTPStatus.Int(status))
	}
	if err != nil || status < 200 || status > 299 {
		span.SetStatus(codes.Error, "not delivered")
	}
}
