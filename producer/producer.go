package producer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/flow"
	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/tasks"
)

// Config configures a Producer.
type Config struct {
	// Catalog is the integration catalog calls are checked against. Required.
	Catalog *tasks.Catalog
	// Records is the record store. Default: a store with default settings
	// over the producer's Redis.
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
	// MaxSchedules bounds a tenant's schedules. Default 100
	// (DefaultMaxSchedules).
	MaxSchedules int
	// MaxScheduleBytes bounds a schedule's call, as JSON: the fleet's
	// scheduler holds every schedule in memory. Default 64 KiB
	// (DefaultMaxScheduleBytes).
	MaxScheduleBytes int
	// QueueShards splits every logical queue (a call's queue, and the
	// webhook queue) into this many asynq queues, a call's task going to
	// the one its correlation ID hashes to (tasks.Sharding), so that a
	// Redis Cluster spreads a queue's work over its masters. Default 1
	// (CALLQ_QUEUE_SHARDS): each logical queue is the asynq queue of its
	// name. At most tasks.MaxQueueShards. The workers must have the same.
	QueueShards int
	// PreviousQueueShards are the QueueShards the deployment ran with
	// before a change (CALLQ_PREVIOUS_QUEUE_SHARDS): a call's task not
	// found where QueueShards puts it (to cancel it, or to show it
	// running) is looked for where these put it. Default none.
	PreviousQueueShards []int
}

func (c *Config) validate() error {
	switch {
	case c.Catalog == nil:
		return errors.New("Config.Catalog is required")
	case c.MaxSchedules < 0:
		return errors.New("Config.MaxSchedules must not be negative")
	case c.MaxScheduleBytes < 0:
		return errors.New("Config.MaxScheduleBytes must not be negative")
	}
	if c.Limits != nil {
		for _, q := range c.Limits.Queues {
			if err := tasks.ValidQueueName(q); err != nil {
				return fmt.Errorf("Config.Limits.Queues: %w", err)
			}
		}
	}
	return nil
}

// Producer holds what every tenant's calls share: the catalog, the record
// store and the connections to asynq. It works in no tenant itself; Tenant
// returns a Client that does. It is safe for concurrent use; make one per
// process and share it.
type Producer struct {
	cfg       Config
	rdb       redis.UniversalClient
	asynq     *asynq.Client
	inspector *asynq.Inspector
	shards    *tasks.Sharding // nil: one asynq queue per logical queue
	ownStore  bool
	// circuits and slots read the state of the flow control that
	// Integrations shows.
	circuits *flow.Circuits
	slots    *flow.Slots
}

// New returns a producer over rdb.
func New(rdb redis.UniversalClient, cfg *Config) (*Producer, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	c := *cfg
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("producer: %w", err)
	}
	shards, err := tasks.NewSharding(c.QueueShards, c.PreviousQueueShards, "Config.QueueShards")
	if err != nil {
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
	slots, err := flow.NewSlots(rdb, nil)
	if err != nil {
		return nil, fmt.Errorf("producer: %w", err)
	}
	return &Producer{
		cfg:       c,
		rdb:       rdb,
		asynq:     asynq.NewClientFromRedisClient(rdb),
		inspector: asynq.NewInspectorFromRedisClient(rdb),
		shards:    shards,
		ownStore:  own,
		circuits:  flow.NewCircuits(rdb, nil),
		slots:     slots,
	}, nil
}

// Tenant returns a client of tenant's calls. The client shares p's
// connections: making one costs nothing, and it needs no Close.
func (p *Producer) Tenant(tenant string) (*Client, error) {
	if err := auth.ValidateTenant(tenant); err != nil {
		return nil, fmt.Errorf("producer: %w", err)
	}
	return p.tenant(tenant), nil
}

// tenant is Tenant for a name already validated (an API key's).
func (p *Producer) tenant(tenant string) *Client {
	return &Client{p: p, tenant: tenant}
}

// Close releases what the producer opened itself. The Redis client passed
// to New is the caller's to close.
func (p *Producer) Close() error {
	if p.ownStore {
		return p.cfg.Records.Close()
	}
	return nil
}

// catalog is the catalog calls are checked against.
func (p *Producer) catalog() *tasks.Catalog { return p.cfg.Catalog }

// maxRequestBytes bounds a call's body (tasks.Limits.MaxRequestBytes).
func (p *Producer) maxRequestBytes() int64 {
	if l := p.cfg.Limits; l != nil && l.MaxRequestBytes > 0 {
		return l.MaxRequestBytes
	}
	return tasks.DefaultMaxRequestBytes
}

// enqueueOrReplace queues task, of the call (or webhook) callID in the
// logical queue queue, under the task ID id, in the asynq queue the
// sharding puts it. If a task holds id already there, it answers false,
// unless that task is finished with (archived or completed: a leftover of
// an earlier call whose record expired, or a delivery asynq gave up on),
// which it replaces. asynq refuses a second live task under one ID in a
// queue atomically; replacing a finished one is two steps, which two
// concurrent callers may both take.
func (p *Producer) enqueueOrReplace(ctx context.Context, task *asynq.Task, queue, callID, id string) (bool, error) {
	opts := p.shards.EnqueueOptions(queue, callID)
	_, err := p.asynq.EnqueueContext(ctx, task, opts...)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		aq := p.shards.Queue(queue, callID)
		info, ierr := p.inspector.GetTaskInfo(aq, id)
		if ierr != nil || info.State != asynq.TaskStateArchived && info.State != asynq.TaskStateCompleted {
			return false, nil
		}
		if derr := p.inspector.DeleteTask(aq, id); derr != nil {
			return false, fmt.Errorf("replace a stale task: %w", derr)
		}
		_, err = p.asynq.EnqueueContext(ctx, task, opts...)
	}
	if err != nil {
		return false, fmt.Errorf("enqueue: %w", err)
	}
	return true, nil
}

// findTask looks up the task of rec's call where the sharding puts it,
// then where the previous shard counts put it, and answers the first
// found. The error is asynq's ErrTaskNotFound or ErrQueueNotFound when it
// is nowhere.
func (p *Producer) findTask(rec *tasks.Record) (*asynq.TaskInfo, error) {
	id := tasks.TaskID(rec.Tenant, rec.CorrelationID)
	info, err := p.inspector.GetTaskInfo(p.shards.Queue(rec.Queue, rec.CorrelationID), id)
	if err == nil || !notFound(err) {
		return info, err
	}
	for _, q := range p.shards.Earlier(rec.Queue, rec.CorrelationID) {
		if info, err2 := p.inspector.GetTaskInfo(q, id); err2 == nil || !notFound(err2) {
			return info, err2
		}
	}
	return nil, err
}

// deleteTask deletes the task of rec's call from wherever findTask would
// find it, and reports whether it did (false: active, or nowhere).
func (p *Producer) deleteTask(rec *tasks.Record) bool {
	id := tasks.TaskID(rec.Tenant, rec.CorrelationID)
	if p.inspector.DeleteTask(p.shards.Queue(rec.Queue, rec.CorrelationID), id) == nil {
		return true
	}
	earlier := p.shards.Earlier(rec.Queue, rec.CorrelationID)
	for _, q := range earlier {
		if p.inspector.DeleteTask(q, id) == nil {
			return true
		}
	}
	// Queued under a shard count this process was not told of
	// (CALLQ_PREVIOUS_QUEUE_SHARDS dropped too early, or another count on
	// the API that queued it): left there, the task would make its request
	// once a worker serves its queue, whatever the record says. Only a
	// cancel that found no task to delete (a running call's) pays this.
	names, err := p.inspector.Queues()
	if err != nil {
		return false
	}
	current := p.shards.Queue(rec.Queue, rec.CorrelationID)
	for _, q := range names {
		if q == current || rediskeys.LogicalQueue(q) != rec.Queue || slices.Contains(earlier, q) {
			continue
		}
		if p.inspector.DeleteTask(q, id) == nil {
			return true
		}
	}
	return false
}

// liveEarlier reports whether the task id of the call (or webhook) callID
// in the logical queue queue is live (not archived nor completed) where a
// previous shard count put it: there, asynq cannot refuse a second task
// under id queued where the current count puts it.
func (p *Producer) liveEarlier(queue, callID, id string) (bool, error) {
	for _, q := range p.shards.Earlier(queue, callID) {
		info, err := p.inspector.GetTaskInfo(q, id)
		switch {
		case notFound(err):
		case err != nil:
			return false, fmt.Errorf("look for the task in asynq queue %q: %w", q, err)
		case info.State != asynq.TaskStateArchived && info.State != asynq.TaskStateCompleted:
			return true, nil
		}
	}
	return false, nil
}

// notFound reports asynq's answer for a task, or a queue, that is not there.
func notFound(err error) bool {
	return errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound)
}

// showRunning marks a queued record running when asynq holds its task
// active (tasks.CurrentStatus).
func (p *Producer) showRunning(rec *tasks.Record) {
	rec.Status = tasks.CurrentStatus(rec, p.taskActive)
}

// taskActive reports whether a worker holds the call's task.
func (p *Producer) taskActive(rec *tasks.Record) bool {
	info, err := p.findTask(rec)
	return err == nil && info.State == asynq.TaskStateActive
}

// checkWebhook refuses webhook URLs callq will not deliver to.
func (p *Producer) checkWebhook(raw string) error {
	if !p.cfg.WebhooksEnabled {
		return &tasks.FieldError{Field: "webhook", Message: "webhooks are not configured on this callq (CALLQ_WEBHOOK_SECRET is not set)"}
	}
	if p.cfg.WebhookAllowPrivate {
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
