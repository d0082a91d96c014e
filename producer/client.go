package producer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/tasks"
)

// Errors the client returns.
var (
	// ErrNotFound: no call under that correlation ID in this tenant.
	ErrNotFound = tasks.ErrNotFound
	// ErrConflict: the correlation ID is taken by a call with another payload.
	ErrConflict = errors.New("producer: correlation_id is already used by a different call")
	// ErrFinished: the call has finished and can no longer be canceled.
	ErrFinished = tasks.ErrFinished
	// ErrNotFinished: the call has not finished, so it has no webhook to redeliver yet.
	ErrNotFinished = errors.New("producer: the call has not finished")
	// ErrNoWebhook: the call was enqueued without a webhook.
	ErrNoWebhook = errors.New("producer: the call has no webhook")
	// ErrRedeliveryPending: a redelivery of the call's webhook is already
	// queued, running or being retried.
	ErrRedeliveryPending = errors.New("producer: a redelivery of the call's webhook is already pending")
)

// Config configures a Client.
type Config struct {
	// Catalog is the integration catalog calls are checked against. Required.
	Catalog *tasks.Catalog
	// Records is the record store. Default: a store with default settings
	// over the client's Redis.
	Records *tasks.Store
	// Limits bound what a call may carry. Default: tasks.Limits defaults.
	Limits *tasks.Limits
	// WebhooksEnabled accepts calls with a webhook. Set it when the workers
	// have CALLQ_WEBHOOK_SECRET; otherwise such calls are refused at enqueue
	// rather than accepted with a webhook nobody can sign.
	WebhooksEnabled bool
	// WebhookAllowPrivate accepts webhook URLs naming loopback, private or
	// link-local addresses (CALLQ_WEBHOOK_ALLOW_PRIVATE). The worker checks
	// the address it dials in any case; this refuses the obvious ones early.
	WebhookAllowPrivate bool
}

func (c *Config) validate() error {
	if c.Catalog == nil {
		return errors.New("Catalog is required.")
	}
	return nil
}

// Client enqueues and looks up the calls of one tenant. It is safe for
// concurrent use; make one per process and tenant and share it.
type Client struct {
	cfg       Config
	tenant    string
	asynq     *asynq.Client
	inspector *asynq.Inspector
	ownStore  bool
}

// NewClient returns a client of tenant's calls over rdb.
func NewClient(rdb redis.UniversalClient, tenant string, cfg *Config) (*Client, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	c := *cfg
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("producer: %w", err)
	}
	if err := auth.ValidateTenant(tenant); err != nil {
		return nil, fmt.Errorf("producer: %w", err)
	}
	own := false
	if c.Records == nil {
		s, err := tasks.NewStore(rdb, nil)
		if err != nil {
			return nil, err
		}
		c.Records, own = s, true
	}
	return &Client{
		cfg:       c,
		tenant:    tenant,
		asynq:     asynq.NewClientFromRedisClient(rdb),
		inspector: asynq.NewInspectorFromRedisClient(rdb),
		ownStore:  own,
	}, nil
}

// Tenant is the tenant this client works in.
func (c *Client) Tenant() string { return c.tenant }

// forTenant returns a view of c over another tenant, sharing its connections.
func (c *Client) forTenant(tenant string) *Client {
	cp := *c
	cp.tenant = tenant
	cp.ownStore = false
	return &cp
}

// Close releases what the client opened itself. The Redis client passed to
// NewClient is the caller's to close.
func (c *Client) Close() error {
	if c.ownStore {
		return c.cfg.Records.Close()
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
// set; with another payload it fails with ErrConflict. Invalid calls fail
// with a *tasks.FieldError. call is not modified.
func (c *Client) Enqueue(ctx context.Context, call *tasks.Call, opts ...Option) (*Enqueued, error) {
	cp := *call
	for _, o := range opts {
		o(&cp)
	}
	in, err := cp.Normalize(c.cfg.Catalog, c.cfg.Limits)
	if err != nil {
		return nil, err
	}
	if cp.Webhook != nil {
		if err := c.checkWebhook(cp.Webhook.URL); err != nil {
			return nil, err
		}
	}
	rec := tasks.NewRecord(c.tenant, &cp, in, time.Now())
	task, err := tasks.NewCallTask(c.tenant, &cp, in, rec.CreatedAt)
	if err != nil {
		return nil, err
	}
	fp := cp.Fingerprint()
	existing, existingFP, err := c.cfg.Records.Create(ctx, rec, fp, cp.Delay.D())
	switch {
	case errors.Is(err, tasks.ErrExists):
		if existingFP != fp {
			return &Enqueued{Record: existing}, ErrConflict
		}
		if existing.Status == tasks.StatusQueued {
			// A producer may have died between writing the record and
			// queueing its task; queue it again (asynq refuses a second
			// task with the same ID, so this cannot run the call twice).
			if task, err = tasks.NewCallTask(c.tenant, &cp, in, existing.CreatedAt); err != nil {
				return nil, err
			}
			if err := c.enqueueTask(ctx, task, &cp); err != nil {
				return nil, err
			}
		}
		return &Enqueued{Record: existing, Duplicate: true}, nil
	case err != nil:
		return nil, err
	}
	if err := c.enqueueTask(ctx, task, &cp); err != nil {
		// Nothing is queued: take the record back so it does not lie.
		_ = c.cfg.Records.Delete(context.WithoutCancel(ctx), c.tenant, cp.CorrelationID)
		return nil, err
	}
	return &Enqueued{Record: rec}, nil
}

func (c *Client) enqueueTask(ctx context.Context, task *asynq.Task, call *tasks.Call) error {
	// A live task under the call's ID is this call's own: nothing to do.
	_, err := c.enqueueOrReplace(ctx, task, call.Queue, tasks.TaskID(c.tenant, call.CorrelationID))
	return err
}

// enqueueOrReplace queues task under id. If a task holds id already, it
// answers false, unless that task is finished with (archived or completed:
// a leftover of an earlier call whose record expired, or a delivery asynq
// gave up on), which it replaces. asynq refuses a second live task under
// one ID atomically; replacing a finished one is two steps, which two
// concurrent callers may both take.
func (c *Client) enqueueOrReplace(ctx context.Context, task *asynq.Task, queue, id string) (bool, error) {
	_, err := c.asynq.EnqueueContext(ctx, task)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		info, ierr := c.inspector.GetTaskInfo(queue, id)
		if ierr != nil || info.State != asynq.TaskStateArchived && info.State != asynq.TaskStateCompleted {
			return false, nil
		}
		if derr := c.inspector.DeleteTask(queue, id); derr != nil {
			return false, fmt.Errorf("replace a stale task: %w", derr)
		}
		_, err = c.asynq.EnqueueContext(ctx, task)
	}
	if err != nil {
		return false, fmt.Errorf("enqueue: %w", err)
	}
	return true, nil
}

// Get returns the record of a call.
func (c *Client) Get(ctx context.Context, id string) (*tasks.Record, error) {
	if !tasks.ValidID(id) {
		return nil, ErrNotFound
	}
	rec, err := c.cfg.Records.Get(ctx, c.tenant, id)
	if err != nil {
		return nil, err
	}
	c.showRunning(rec)
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
	rec, err := c.cfg.Records.Wait(ctx, c.tenant, id)
	if rec != nil && err != nil {
		c.showRunning(rec)
	}
	return rec, err
}

// showRunning marks a queued record running when asynq holds its task
// active (tasks.CurrentStatus).
func (c *Client) showRunning(rec *tasks.Record) {
	rec.Status = tasks.CurrentStatus(rec, c.taskActive)
}

// taskActive reports whether a worker holds the call's task.
func (c *Client) taskActive(rec *tasks.Record) bool {
	info, err := c.inspector.GetTaskInfo(rec.Queue, tasks.TaskID(rec.Tenant, rec.CorrelationID))
	return err == nil && info.State == asynq.TaskStateActive
}

// Cancel cancels a call that has not finished: a queued or retrying call
// never runs again; a running one has its request aborted (the upstream may
// already have received it, and the record says so). A finished call
// returns its record with ErrFinished.
func (c *Client) Cancel(ctx context.Context, id string) (*tasks.Record, error) {
	if !tasks.ValidID(id) {
		return nil, ErrNotFound
	}
	wasRunning := false
	rec, err := c.cfg.Records.Update(ctx, c.tenant, id, func(r *tasks.Record) error {
		wasRunning = tasks.CurrentStatus(r, c.taskActive) == tasks.StatusRunning
		now := time.Now().UTC()
		msg := "canceled by request"
		if wasRunning {
			msg += " while an attempt was running; the upstream may have received that request"
		}
		r.Status, r.CompletedAt, r.NextAttemptAt = tasks.StatusCanceled, &now, nil
		r.Error = &tasks.CallError{Kind: tasks.KindCanceled, Message: msg}
		return nil
	})
	if err != nil {
		return rec, err
	}
	taskID := tasks.TaskID(c.tenant, id)
	if err := c.inspector.DeleteTask(rec.Queue, taskID); err != nil {
		// Active (or already gone): tell the worker running it to stop.
		// Whatever slips through cannot undo the cancel: a worker's write
		// over a terminal record is refused, and a retry reads the record
		// before it runs.
		_ = c.inspector.CancelProcessing(taskID)
	}
	if rec.Webhook != nil {
		task, err := tasks.NewWebhookTask(rec, false)
		if err == nil {
			_, err = c.asynq.EnqueueContext(ctx, task)
		}
		if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
			return rec, fmt.Errorf("the call is canceled but its webhook could not be queued: %w", err)
		}
	}
	return rec, nil
}

// RedeliverWebhook queues a fresh delivery of a finished call's webhook,
// with the same webhook-id and body as the first. It returns
// ErrRedeliveryPending while an earlier redelivery is queued, running or
// being retried: asynq's task ID (tasks.WebhookTaskID) makes that check and
// the queueing one step, so of two concurrent requests exactly one queues.
func (c *Client) RedeliverWebhook(ctx context.Context, id string) (*tasks.Record, error) {
	rec, err := c.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	switch {
	case rec.Webhook == nil:
		return rec, ErrNoWebhook
	case !rec.Status.Terminal():
		return rec, ErrNotFinished
	}
	task, err := tasks.NewWebhookTask(rec, true)
	if err != nil {
		return nil, err
	}
	pending := &tasks.WebhookState{URL: rec.Webhook.URL, Status: tasks.WebhookPending}
	err = c.cfg.Records.ReplaceWebhook(ctx, c.tenant, id, pending, func() error {
		queued, err := c.enqueueOrReplace(ctx, task, tasks.WebhookQueue, tasks.WebhookTaskID(rec, true))
		if err == nil && !queued {
			return ErrRedeliveryPending
		}
		return err
	})
	if err != nil {
		return rec, err
	}
	rec.Webhook = pending
	return rec, nil
}

// checkWebhook refuses webhook URLs callq will not deliver to.
func (c *Client) checkWebhook(raw string) error {
	if !c.cfg.WebhooksEnabled {
		return &tasks.FieldError{Field: "webhook", Message: "webhooks are not configured on this callq (CALLQ_WEBHOOK_SECRET is not set)"}
	}
	if c.cfg.WebhookAllowPrivate {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return &tasks.FieldError{Field: "webhook.url", Message: "is not a valid URL"}
	}
	host := u.Hostname()
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		host = "127.0.0.1"
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if err := tasks.CheckWebhookAddr(ip); err != nil {
			return &tasks.FieldError{Field: "webhook.url", Message: err.Error()}
		}
	}
	return nil
}
