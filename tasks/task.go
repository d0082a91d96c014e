package tasks

import (
	"fmt"
	"time"

	"github.com/hibiken/asynq"
)

// TypeCall is the asynq task type of a call to execute.
const TypeCall = "call:execute"

// spareRetries is how many asynq retries a call task has beyond its attempts.
const spareRetries = 5

// Payload is the asynq task payload of a call: the normalized call and the
// tenant it belongs to.
type Payload struct {
	Tenant string `json:"tenant"`
	Call   Call   `json:"call"`
	// CreatedAt is the record's created_at, so a worker can rebuild the
	// record of a first attempt without reading it.
	CreatedAt time.Time `json:"created_at,omitzero"`
	// ReplayOf is the call this one replays (Record.ReplayOf).
	ReplayOf string `json:"replay_of,omitempty"`
	// Schedule is the schedule whose firing made the call (Record.Schedule).
	Schedule string `json:"schedule,omitempty"`
	// Trace is the W3C trace context the call was enqueued under
	// (Record.Trace): every attempt's span is its child, and a replay made
	// from this stored payload keeps it. Absent when there was none.
	Trace *TraceContext `json:"trace,omitempty"`
}

// TraceContext is a W3C trace context (https://www.w3.org/TR/trace-context/)
// as the headers carry it, kept with a call so that the worker's spans,
// made after the asynchronous hop, join the trace of the request that
// enqueued it. internal/telemetry reads and writes it.
type TraceContext struct {
	// Parent is the traceparent header: version, trace ID, parent span ID
	// and flags ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").
	Parent string `json:"traceparent"`
	// State is the tracestate header, vendor data passed on as received.
	State string `json:"tracestate,omitempty"`
}

// TaskID is the asynq task ID of a call: unique per tenant and correlation
// ID, so asynq itself refuses a second task for the same call.
func TaskID(tenant, correlationID string) string { return tenant + ":" + correlationID }

// NewCallTask builds the asynq task of a normalized call, whose record is
// rec (its tenant, created_at, replay_of, schedule and trace travel with the
// call). asynq keeps timeouts in whole seconds, so the task's deadline is
// set well above the call's own, which the worker enforces with its own
// context.
func NewCallTask(rec *Record, c *Call, in *Integration) (*asynq.Task, error) {
	b, err := marshal(Payload{Tenant: rec.Tenant, Call: *c, CreatedAt: rec.CreatedAt.UTC(), ReplayOf: rec.ReplayOf,
		Schedule: rec.Schedule, Trace: rec.Trace})
	if err != nil {
		return nil, fmt.Errorf("encode call: %w", err)
	}
	policy := in.Retry.Merge(c.Retry)
	timeout := in.EffectiveTimeout(c.Timeout.D())
	opts := []asynq.Option{
		asynq.TaskID(TaskID(rec.Tenant, c.CorrelationID)),
		asynq.Queue(c.Queue),
		// Spare retries: runs that make no attempt (Redis unreachable) or
		// lose theirs count with asynq too, and the worker, not asynq,
		// decides when attempts run out, so it can write the record's
		// final state; it also fails the call when these are spent.
		asynq.MaxRetry(policy.MaxAttempts + spareRetries),
		// Room for two requests (an oauth2 resend after a 401) and two
		// token requests; the worker bounds each request itself.
		asynq.Timeout(2*timeout.Truncate(time.Second) + 30*time.Second),
	}
	if c.Delay > 0 {
		opts = append(opts, asynq.ProcessIn(c.Delay.D()))
	}
	return asynq.NewTask(TypeCall, b, opts...), nil
}

// DecodePayload reads a call task's payload.
func DecodePayload(b []byte) (*Payload, error) {
	var p Payload
	if err := unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("decode call payload: %w", err)
	}
	return &p, nil
}
