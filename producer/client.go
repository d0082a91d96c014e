package producer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/callq/callq/internal/telemetry"
	"github.com/callq/callq/tasks"
)

// Errors the client returns.
var (
	// ErrNotFound: no call under that correlation ID in this tenant.
	ErrNotFound = tasks.ErrNotFound
	// ErrConflict: the correlation ID is taken by a call with another
	// payload. Enqueue returns it as a *ConflictError.
	ErrConflict = errors.New("producer: correlation_id is already used by a different call")
	// ErrFinished: the call has finished and can no longer be canceled.
	// Cancel returns it as a *FinishedError.
	ErrFinished = tasks.ErrFinished
	// ErrNotFinished: the call has not finished, so it has no webhook to
	// redeliver yet. RedeliverWebhook returns it as a *NotFinishedError.
	ErrNotFinished = errors.New("producer: the call has not finished")
	// ErrNoWebhook: the call was enqueued without a webhook.
	ErrNoWebhook = errors.New("producer: the call has no webhook")
	// ErrRedeliveryPending: a redelivery of the call's webhook is already
	// queued, running or being retried.
	ErrRedeliveryPending = errors.New("producer: a redelivery of the call's webhook is already pending")
)

// ConflictError is Enqueue's error when the correlation ID is taken by a
// call with another payload; errors.Is(err, ErrConflict) matches it.
type ConflictError struct {
	// Existing is the record of the call that holds the ID.
	Existing *tasks.Record
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("producer: correlation_id %q is already used by a different call", e.Existing.CorrelationID)
}

// Is reports whether target is ErrConflict.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// FinishedError is Cancel's error when the call has already finished;
// errors.Is(err, ErrFinished) matches it.
type FinishedError struct {
	// Record is the call's record, as it finished.
	Record *tasks.Record
}

func (e *FinishedError) Error() string {
	return fmt.Sprintf("producer: call %q has already finished (%s)", e.Record.CorrelationID, e.Record.Status)
}

// Is reports whether target is ErrFinished.
func (e *FinishedError) Is(target error) bool { return target == ErrFinished }

// NotFinishedError is RedeliverWebhook's error when the call has not
// finished; errors.Is(err, ErrNotFinished) matches it.
type NotFinishedError struct {
	// Record is the call's record as it stands.
	Record *tasks.Record
}

func (e *NotFinishedError) Error() string {
	return fmt.Sprintf("producer: call %q has not finished (%s)", e.Record.CorrelationID, e.Record.Status)
}

// Is reports whether target is ErrNotFinished.
func (e *NotFinishedError) Is(target error) bool { return target == ErrNotFinished }

// Client enqueues and looks up the calls of one tenant: a view of a
// Producer (Producer.Tenant), or a producer of its own (NewClient). It is
// safe for concurrent use.
type Client struct {
	p      *Producer
	tenant string
	own    bool // made by NewClient: Close closes p
}

// NewClient returns a client of tenant's calls over rdb: New and Tenant in
// one step, for a process that works in one tenant. Close it when done.
func NewClient(rdb redis.UniversalClient, tenant string, cfg *Config) (*Client, error) {
	p, err := New(rdb, cfg)
	if err != nil {
		return nil, err
	}
	c, err := p.Tenant(tenant)
	if err != nil {
		_ = p.Close()
		return nil, err
	}
	c.own = true
	return c, nil
}

// Tenant is the tenant this client works in.
func (c *Client) Tenant() string { return c.tenant }

// Close releases what NewClient opened. A client from Producer.Tenant has
// nothing of its own to close: close its Producer.
func (c *Client) Close() error {
	if c.own {
		return c.p.Close()
	}
	return nil
}

// Option adjusts one Enqueue.
type Option func(*tasks.Call)

// WithQueue sends the call to queue (one of CALLQ_QUEUES).
func WithQueue(queue string) Option { return func(c *tasks.Call) { c.Queue = queue } }

// WithDelay holds the call back for d before its first attempt.
func WithDelay(d time.Duration) Option { return func(c *tasks.Call) { c.Delay = tasks.Duration(d) } }

// WithCorrelationID sets the call's correlation ID (its idempotency key).
func WithCorrelationID(id string) Option { return func(c *tasks.Call) { c.CorrelationID = id } }

// WithTimeout sets the call's timeout, at most the integration's max_timeout.
func WithTimeout(d time.Duration) Option {
	return func(c *tasks.Call) { c.Timeout = tasks.Duration(d) }
}

// WithCredential names the credential to use.
func WithCredential(ref string) Option { return func(c *tasks.Call) { c.Credential = ref } }

// Enqueued is the answer to Enqueue.
type Enqueued struct {
	// Record is the call's record: new, or the existing one if Duplicate.
	Record *tasks.Record
	// Duplicate is true when a call with this correlation ID and the same
	// payload was already enqueued: a safe retry, nothing new was queued.
	Duplicate bool
}

// Enqueue validates call and queues it. Enqueueing the same correlation ID
// with the same payload again returns the existing record with Duplicate
// set; with another payload it fails with a *ConflictError holding the
// existing record. Invalid calls fail with a *tasks.FieldError. call is not
// modified. The trace context of ctx's span, if it has one, is kept with
// the call (Record.Trace): the worker's spans of its attempts are its
// children.
func (c *Client) Enqueue(ctx context.Context, call *tasks.Call, opts ...Option) (*Enqueued, error) {
	cp := *call
	for _, o := range opts {
		o(&cp)
	}
	return c.enqueue(ctx, &cp, origin{})
}

// origin is where a call enqueued other than by Enqueue comes from: the
// call it replays, or the schedule whose firing it is. A call enqueued
// again under its correlation ID must come from the same origin, else its
// ID is another call's (a *ConflictError).
type origin struct {
	replayOf string
	schedule string
	// queue is a queue accepted already, whatever this process's
	// Limits.Queues: the API's when it stored the schedule firing the call.
	queue string
	// trace is the trace context of the call replayed, kept by its replay
	// unless the replay is made under a trace of its own.
	trace *tasks.TraceContext
}

// enqueue is Enqueue of cp, which it may modify, made from o.
func (c *Client) enqueue(ctx context.Context, cp *tasks.Call, o origin) (*Enqueued, error) {
	lim := c.p.cfg.Limits
	if o.queue != "" && cp.Queue == o.queue {
		l := tasks.Limits{}
		if lim != nil {
			l = *lim
		}
		if len(l.Queues) == 0 {
			l.Queues = tasks.DefaultQueues()
		}
		l.Queues = append(slices.Clip(l.Queues), o.queue)
		lim = &l
	}
	in, err := cp.Normalize(c.p.cfg.Catalog, lim)
	if err != nil {
		return nil, err
	}
	if cp.Webhook != nil {
		if err := c.p.checkWebhook(cp.Webhook.URL); err != nil {
			return nil, err
		}
	}
	rec := tasks.NewRecord(c.tenant, cp, in, time.Now())
	rec.ReplayOf, rec.Schedule, rec.Trace = o.replayOf, o.schedule, o.trace
	if tc := telemetry.FromContext(ctx); tc != nil {
		rec.Trace = tc
	}
	task, err := tasks.NewCallTask(rec, cp, in)
	if err != nil {
		return nil, err
	}
	fp := cp.Fingerprint()
	err = c.p.cfg.Records.Create(ctx, rec, fp, cp.Delay.D(), task.Payload())
	var exists *tasks.ExistsError
	switch {
	case errors.As(err, &exists):
		existing := exists.Record
		if exists.Fingerprint != fp || existing.ReplayOf != o.replayOf || existing.Schedule != o.schedule {
			return nil, &ConflictError{Existing: existing}
		}
		if existing.Status == tasks.StatusQueued {
			// A producer may have died between writing the record and
			// queueing its task; queue it again. asynq refuses a second
			// live task with the same ID; and the task goes without the
			// record's created_at, so that its worker reads the record
			// before the request rather than take it for the call's first
			// run (tasks.Payload.FirstRun): a first run that finished
			// between this read and this enqueue left no task to refuse
			// it, but leaves a finished record, which Begin refuses.
			resume := *existing
			resume.CreatedAt = time.Time{}
			if task, err = tasks.NewCallTask(&resume, cp, in); err != nil {
				return nil, err
			}
			// A task queued before a change of the queue shards is in
			// another asynq queue, where asynq cannot refuse this one.
			if live, err := c.p.liveEarlier(existing.Queue, existing.CorrelationID, tasks.TaskID(existing.Tenant, existing.CorrelationID)); err != nil || live {
				if err != nil {
					return nil, err
				}
				return &Enqueued{Record: existing, Duplicate: true}, nil
			}
			if err := c.enqueueTask(ctx, task, cp); err != nil {
				return nil, err
			}
		}
		return &Enqueued{Record: existing, Duplicate: true}, nil
	case err != nil:
		return nil, err
	}
	if err := c.enqueueTask(ctx, task, cp); err != nil {
		// Nothing is queued: take the record back so it does not lie.
		_ = c.p.cfg.Records.Delete(context.WithoutCancel(ctx), c.tenant, cp.CorrelationID)
		return nil, err
	}
	return &Enqueued{Record: rec}, nil
}

func (c *Client) enqueueTask(ctx context.Context, task *asynq.Task, call *tasks.Call) error {
	// A live task under the call's ID is this call's own: nothing to do.
	_, err := c.p.enqueueOrReplace(ctx, task, call.Queue, call.CorrelationID, tasks.TaskID(c.tenant, call.CorrelationID))
	return err
}

// Get returns the record of a call.
func (c *Client) Get(ctx context.Context, id string) (*tasks.Record, error) {
	if !tasks.ValidID(id) {
		return nil, ErrNotFound
	}
	rec, err := c.p.cfg.Records.Get(ctx, c.tenant, id)
	if err != nil {
		return nil, err
	}
	c.p.showRunning(rec)
	return rec, nil
}

// Wait returns the record once the call has finished. When ctx ends first
// it returns the record as it stands with ctx's error (the record is nil if
// ctx ended before it was read). When ctx's deadline passes, the error is
// context.DeadlineExceeded even if a Redis read timed out at that deadline
// first; any other error means Redis failed.
func (c *Client) Wait(ctx context.Context, id string) (*tasks.Record, error) {
	if !tasks.ValidID(id) {
		return nil, ErrNotFound
	}
	rec, err := c.p.cfg.Records.Wait(ctx, c.tenant, id)
	if rec != nil && err != nil {
		c.p.showRunning(rec)
	}
	return rec, err
}

// Cancel cancels a call that has not finished: a queued or retrying call
// never runs again; a running one has its request aborted (the upstream may
// already have received it, and the record says so). A finished call
// fails with a *FinishedError holding its record.
func (c *Client) Cancel(ctx context.Context, id string) (*tasks.Record, error) {
	if !tasks.ValidID(id) {
		return nil, ErrNotFound
	}
	wasRunning := false
	rec, err := c.p.cfg.Records.Update(ctx, c.tenant, id, func(r *tasks.Record) error {
		wasRunning = tasks.CurrentStatus(r, c.p.taskActive) == tasks.StatusRunning
		now := time.Now().UTC()
		msg := "canceled by request"
		if wasRunning {
			msg += " while an attempt was running; the upstream may have received that request"
		}
		r.Status, r.CompletedAt, r.NextAttemptAt = tasks.StatusCanceled, &now, nil
		r.Error = &tasks.CallError{Kind: tasks.KindCanceled, Message: msg}
		return nil
	})
	var finished *tasks.FinishedError
	if errors.As(err, &finished) {
		return nil, &FinishedError{Record: finished.Record}
	}
	if err != nil {
		return nil, err
	}
	if !c.p.deleteTask(rec) {
		// Active (or already gone): tell the worker running it to stop.
		// Whatever slips through cannot undo the cancel: a worker's write
		// over a terminal record is refused, and a retry reads the record
		// before it runs.
		_ = c.p.inspector.CancelProcessing(tasks.TaskID(c.tenant, id))
	}
	if rec.Webhook != nil {
		task, err := tasks.NewWebhookTask(rec, false)
		if err == nil {
			_, err = c.p.asynq.EnqueueContext(ctx, task, c.p.shards.EnqueueOptions(tasks.WebhookQueue, rec.CorrelationID)...)
		}
		if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
			return rec, fmt.Errorf("the call is canceled but its webhook could not be queued: %w", err)
		}
	}
	return rec, nil
}

// RedeliverWebhook queues a fresh delivery of a finished call's webhook,
// with the same webhook-id and body as the first, and returns the record
// with its webhook block pending. It fails with ErrNoWebhook for a call
// enqueued without one, a *NotFinishedError holding the record for a call
// that has not finished, and ErrRedeliveryPending while an earlier
// redelivery is queued, running or being retried: asynq's task ID
// (tasks.WebhookTaskID) makes that check and the queueing one step, so of
// two concurrent requests exactly one queues.
func (c *Client) RedeliverWebhook(ctx context.Context, id string) (*tasks.Record, error) {
	rec, err := c.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	switch {
	case rec.Webhook == nil:
		return nil, ErrNoWebhook
	case !rec.Status.Terminal():
		return nil, &NotFinishedError{Record: rec}
	}
	task, err := tasks.NewWebhookTask(rec, true)
	if err != nil {
		return nil, err
	}
	pending := &tasks.WebhookState{URL: rec.Webhook.URL, Status: tasks.WebhookPending}
	err = c.p.cfg.Records.ReplaceWebhook(ctx, c.tenant, id, pending, func() error {
		id := tasks.WebhookTaskID(rec, true)
		// A redelivery queued before a change of the queue shards waits in
		// another asynq queue, where asynq cannot refuse this one.
		if live, err := c.p.liveEarlier(tasks.WebhookQueue, rec.CorrelationID, id); err != nil || live {
			if err == nil {
				err = ErrRedeliveryPending
			}
			return err
		}
		queued, err := c.p.enqueueOrReplace(ctx, task, tasks.WebhookQueue, rec.CorrelationID, id)
		if err == nil && !queued {
			return ErrRedeliveryPending
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	rec.Webhook = pending
	return rec, nil
}
