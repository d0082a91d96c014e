// Package telemetry is callq's OpenTelemetry tracing and the queue-depth
// metrics of the API's /metrics.
//
// Tracing follows a call across the asynchronous hop: the W3C trace context
// (traceparent, tracestate) of the request that enqueues a call is kept
// with it (tasks.TraceContext, in the record and the task payload), and the
// worker's span of each attempt and of each webhook delivery is its child;
// the upstream request and the webhook delivery carry the span on in their
// own traceparent header. Setup exports spans over OTLP/HTTP when the
// standard OTEL_EXPORTER_OTLP_* variables name an endpoint, and makes
// nothing otherwise: a call that came with no trace context then costs
// nothing more than before (no span, no allocation, no Redis command), and
// one that came with one is passed on as it came.
//
// QueueCollector reports asynq's queue depths as Prometheus gauges, read
// from asynq's Inspector when /metrics is scraped.
package telemetry
