package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/callq/callq/internal/flow"
	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/tasks"
)

// ReconcilerConfig configures a Reconciler.
type ReconcilerConfig struct {
	// Records is the record store. Required.
	Records *tasks.Store
	// Interval is how often the reconciler runs, and how long after its
	// created_at a call is first looked at: the producer creates a record
	// before it queues the call's task, so a younger record may not have
	// its task yet. The fleet's lease lasts three intervals. Default 1m
	// (CALLQ_RECONCILE_INTERVAL).
	Interval time.Duration
	// PageSize is how many unfinished records one read takes; the lease is
	// renewed between reads. Default 100.
	PageSize int
	// Name identifies this process in the lease, for an operator who reads
	// it (GET callq:reconcile:lease). Default hostname:pid.
	Name string
	// Logger receives a warning per call failed as lost and a debug line
	// per run. Default: a disabled logger.
	Logger *zerolog.Logger
	// Metrics counts the calls failed as lost (callq_calls_finished_total,
	// error_kind "lost") and the runs. Default: none.
	Metrics *Metrics
	// QueueShards and PreviousQueueShards say where a call's task is, as
	// Config's do: the reconciler looks where QueueShards puts it, then
	// where each previous count put it, before it counts the task gone.
	// Default 1 and none.
	QueueShards         int
	PreviousQueueShards []int
}

// Defaults for ReconcilerConfig.
const (
	DefaultReconcileInterval = time.Minute
	DefaultReconcilePageSize = 100
	// MinReconcileInterval is the shortest interval: the lease is kept in
	// whole milliseconds.
	MinReconcileInterval = 10 * time.Millisecond
)

// reconcileLeaseIntervals is the lease's length in intervals: the holder
// renews it every interval and between pages, so it lapses only when the
// holder stops or stalls, and another worker takes over within three
// intervals (3m on the default).
const reconcileLeaseIntervals = 3

// releaseTimeout bounds the lease's release when the reconciler stops.
const releaseTimeout = 2 * time.Second

func (c *ReconcilerConfig) validate() error {
	switch {
	case c.Records == nil:
		return errors.New("ReconcilerConfig.Records is required")
	case c.Interval < 0 || c.Interval > 0 && c.Interval < MinReconcileInterval:
		return fmt.Errorf("ReconcilerConfig.Interval must be 0 (the default) or at least %s", MinReconcileInterval)
	case c.PageSize < 0:
		return errors.New("ReconcilerConfig.PageSize must not be negative")
	}
	return nil
}

func (c *ReconcilerConfig) withDefaults() {
	if c.Interval == 0 {
		c.Interval = DefaultReconcileInterval
	}
	if c.PageSize == 0 {
		c.PageSize = DefaultReconcilePageSize
	}
	if c.Name == "" {
		c.Name = defaultName()
	}
	if c.Logger == nil {
		nop := zerolog.Nop()
		c.Logger = &nop
	}
}

// ErrLeaseHeld is RunOnce's error when another reconciler holds the fleet's
// lease.
var ErrLeaseHeld = errors.New("worker: another reconciler holds the lease")

// ReconcileReport is what one run did.
type ReconcileReport struct {
	// Tenants is how many tenants the run walked.
	Tenants int
	// Checked is how many unfinished calls, older than the interval, had
	// their asynq task looked up.
	Checked int
	// Lost is how many of them the run failed as lost.
	Lost int
	// Pruned is how many index entries of expired records it removed.
	Pruned int
	// Migrated is how many records it moved from where callq before the
	// calls index kept them (on the process's first run only).
	Migrated int
}

// Reconciler fails the calls whose records say they have not finished but
// whose asynq task is gone (deleted or archived with asynq's own tools, or
// lost with Redis data), so that no record says queued or retrying
// forever. Each such call fails with error kind "lost", its webhook queued.
// On each run it also prunes the calls index of expired records and, on the
// process's first run, moves records written before the calls index.
//
// Every worker runs one (Config.ReconcileInterval); a Redis lease
// (rediskeys.ReconcileLease) lets one of the fleet run at a time. The
// holder keeps the lease from run to run and releases it when it stops.
type Reconciler struct {
	cfg       ReconcilerConfig
	rdb       redis.UniversalClient
	inspector *asynq.Inspector
	queue     *asynq.Client
	shards    *tasks.Sharding
	log       zerolog.Logger
	lease     *flow.Lease
	now       func() time.Time // the age cutoff's clock (tests move it)

	mu       sync.Mutex // one run at a time; guards lease and migrated
	migrated bool
}

// NewReconciler returns a Reconciler over rdb. It does not start it.
func NewReconciler(rdb redis.UniversalClient, cfg *ReconcilerConfig) (*Reconciler, error) {
	if cfg == nil {
		cfg = &ReconcilerConfig{}
	}
	c := *cfg
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	c.withDefaults()
	shards, err := tasks.NewSharding(c.QueueShards, c.PreviousQueueShards, "ReconcilerConfig.QueueShards")
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("worker: reading random bytes for the reconciler's lease token failed: %w", err)
	}
	return &Reconciler{
		cfg:       c,
		rdb:       rdb,
		inspector: asynq.NewInspectorFromRedisClient(rdb),
		queue:     asynq.NewClientFromRedisClient(rdb),
		shards:    shards,
		log:       c.Logger.With().Str("component", "reconciler").Logger(),
		lease: flow.NewLease(rdb, rediskeys.ReconcileLease, c.Name+"/"+hex.EncodeToString(b),
			reconcileLeaseIntervals*c.Interval, "the reconciler's lease"),
		now: time.Now,
	}, nil
}

// Run runs the reconciler every interval, the first time at once, until
// ctx ends; then it releases the lease, if it holds it, and returns.
func (r *Reconciler) Run(ctx context.Context) {
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		defer cancel()
		if err := r.Release(rctx); err != nil {
			r.log.Warn().Err(err).Msg("could not release the reconciler's lease; it lapses on its own")
		}
	}()
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := r.RunOnce(ctx); err != nil && !errors.Is(err, ErrLeaseHeld) && ctx.Err() == nil {
			r.log.Warn().Err(err).Msg("reconcile run did not complete; trying again next interval")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// RunOnce takes or renews the fleet's lease and makes one run. It returns
// ErrLeaseHeld, having done nothing, when another reconciler holds the
// lease. Errors of one tenant do not stop the others; they are returned
// together, with the report of what was done. The lease is kept after the
// run: Release gives it up.
func (r *Reconciler) RunOnce(ctx context.Context) (*ReconcileReport, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ok, err := r.lease.Hold(ctx)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	if !ok {
		return nil, ErrLeaseHeld
	}
	start := time.Now()
	rep, err := r.run(ctx)
	r.cfg.Metrics.reconciled(err == nil)
	r.log.Debug().Int("tenants", rep.Tenants).Int("checked", rep.Checked).Int("lost", rep.Lost).
		Int("pruned", rep.Pruned).Int("migrated", rep.Migrated).Int64("duration_ms", time.Since(start).Milliseconds()).
		AnErr("error", err).Msg("reconcile run")
	return rep, err
}

// Release gives up the lease if this reconciler holds it, so that another
// worker takes over at its next interval instead of after the lease lapses.
func (r *Reconciler) Release(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.lease.Release(ctx); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	return nil
}

// run is one run under the lease.
func (r *Reconciler) run(ctx context.Context) (*ReconcileReport, error) {
	rep := &ReconcileReport{}
	var errs []error
	if !r.migrated {
		n, err := r.cfg.Records.MigrateLegacy(ctx)
		rep.Migrated = n
		if err != nil {
			errs = append(errs, err)
		} else {
			r.migrated = true
		}
	}
	tenants, err := r.cfg.Records.Tenants(ctx)
	if err != nil {
		return rep, errors.Join(append(errs, err)...)
	}
	before := r.now().Add(-r.cfg.Interval)
	for _, tenant := range tenants {
		if err := r.lease.Keep(ctx); err != nil {
			return rep, errors.Join(append(errs, err)...)
		}
		rep.Tenants++
		err := r.reconcileTenant(ctx, tenant, before, rep)
		if errors.Is(err, flow.ErrLeaseLapsed) || ctx.Err() != nil {
			return rep, errors.Join(append(errs, err)...)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("tenant %q: %w", tenant, err))
		}
		n, err := r.cfg.Records.Prune(ctx, tenant)
		rep.Pruned += n
		if err != nil {
			errs = append(errs, fmt.Errorf("tenant %q: %w", tenant, err))
		}
	}
	return rep, errors.Join(errs...)
}

// reconcileTenant checks tenant's unfinished calls created before before,
// a page at a time.
func (r *Reconciler) reconcileTenant(ctx context.Context, tenant string, before time.Time, rep *ReconcileReport) error {
	cursor := ""
	for {
		recs, next, err := r.cfg.Records.Unfinished(ctx, tenant, before, cursor, r.cfg.PageSize)
		if err != nil {
			return err
		}
		for _, rec := range recs {
			if err := ctx.Err(); err != nil {
				return err
			}
			rep.Checked++
			if r.check(ctx, rec) {
				rep.Lost++
			}
		}
		if next == "" {
			return nil
		}
		if err := r.lease.Keep(ctx); err != nil {
			return err
		}
		cursor = next
	}
}

// check looks up an unfinished call's task and fails the call if the task
// is gone, archived or completed. A queued record whose task is active is a
// first attempt running (tasks.FirstRun): its task exists, so it is left
// alone like every other call whose task exists. It reports whether it
// failed the call.
func (r *Reconciler) check(ctx context.Context, rec *tasks.Record) bool {
	queue, info, err := r.findTask(rec)
	var found string
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		found = fmt.Sprintf("the call's task is gone from asynq queue %q (deleted, or lost with Redis data); the call was not finished", queue)
	case err != nil:
		r.log.Warn().Err(err).Str("correlation_id", rec.CorrelationID).Str("tenant", rec.Tenant).
			Msg("could not look up the call's asynq task; it is checked again next run")
		return false
	case info.State == asynq.TaskStateArchived:
		found = fmt.Sprintf("the call's task was archived in asynq queue %q (with asynq's tools, or its retries ran out); the call was not finished", queue)
	case info.State == asynq.TaskStateCompleted:
		found = fmt.Sprintf("the call's task is completed in asynq queue %q, but the call's record was never finished", queue)
	default:
		return false
	}
	return r.fail(ctx, rec, queue, found)
}

// findTask looks up the task of rec's call in the asynq queue the sharding
// puts it, then where each previous shard count put it, and answers the
// first it finds, with its queue. When it is nowhere, the error is asynq's
// not-found one and the queue is the one the current count names.
func (r *Reconciler) findTask(rec *tasks.Record) (string, *asynq.TaskInfo, error) {
	id := tasks.TaskID(rec.Tenant, rec.CorrelationID)
	queue := r.shards.Queue(rec.Queue, rec.CorrelationID)
	info, err := r.inspector.GetTaskInfo(queue, id)
	if !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
		return queue, info, err
	}
	for _, q := range r.shards.Earlier(rec.Queue, rec.CorrelationID) {
		info, err2 := r.inspector.GetTaskInfo(q, id)
		if !errors.Is(err2, asynq.ErrTaskNotFound) && !errors.Is(err2, asynq.ErrQueueNotFound) {
			return q, info, err2
		}
	}
	if q, info, err2 := r.findElsewhere(rec, id, queue); q != "" {
		return q, info, err2
	}
	return queue, nil, err
}

// findElsewhere looks for the task id of rec's call in the asynq queues of
// rec's queue that no shard count the reconciler knows names: a count the
// deployment ran with and this process was not told of (a change of
// CALLQ_QUEUE_SHARDS without CALLQ_PREVIOUS_QUEUE_SHARDS, or an API on
// another count than the workers). A task waiting there is not lost: it
// runs once a worker serves its queue, and a first attempt makes its
// request before it reads the record, so failing the call would be undone
// by the request it says never happened. It answers the first queue that
// holds the task live (or that could not be read), and "" when none does.
// Only a call whose task is missing where it belongs pays for it.
func (r *Reconciler) findElsewhere(rec *tasks.Record, id, current string) (string, *asynq.TaskInfo, error) {
	names, err := r.inspector.Queues()
	if err != nil {
		return current, nil, err
	}
	earlier := r.shards.Earlier(rec.Queue, rec.CorrelationID)
	for _, q := range names {
		if q == current || rediskeys.LogicalQueue(q) != rec.Queue || slices.Contains(earlier, q) {
			continue
		}
		info, err := r.inspector.GetTaskInfo(q, id)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		case err != nil:
			return q, nil, err
		case info.State != asynq.TaskStateArchived && info.State != asynq.TaskStateCompleted:
			r.log.Warn().Str("correlation_id", rec.CorrelationID).Str("tenant", rec.Tenant).Str("asynq_queue", q).
				Stringer("queue_shards", r.shards).
				Msg("a call's task waits in an asynq queue of another queue shard count, which this process was not told of; add that count to CALLQ_PREVIOUS_QUEUE_SHARDS so that workers serve it")
			return q, info, nil
		}
	}
	return "", nil, nil
}

// errOtherCall: the record under the ID is another call's (the lost one's
// expired and the ID was used again).
var errOtherCall = errors.New("the record is another call's")

// fail fails a lost call, unless it finished meanwhile, and queues its
// webhook.
func (r *Reconciler) fail(ctx context.Context, lost *tasks.Record, queue, found string) bool {
	log := r.log.With().Str("correlation_id", lost.CorrelationID).Str("tenant", lost.Tenant).
		Str("integration", lost.Integration).Str("queue", lost.Queue).Logger()
	now := time.Now().UTC()
	rec, err := r.cfg.Records.Update(ctx, lost.Tenant, lost.CorrelationID, func(cur *tasks.Record) error {
		if !cur.CreatedAt.Equal(lost.CreatedAt) {
			return errOtherCall
		}
		cur.Status, cur.CompletedAt, cur.NextAttemptAt = tasks.StatusFailed, &now, nil
		cur.Error = &tasks.CallError{Kind: tasks.KindLost, Message: found}
		return nil
	})
	var finished *tasks.FinishedError
	switch {
	case errors.As(err, &finished), errors.Is(err, tasks.ErrNotFound), errors.Is(err, errOtherCall):
		log.Debug().Msg("call finished or expired while the reconciler looked at it; left alone")
		return false
	case err != nil:
		log.Warn().Err(err).Msg("could not fail a lost call; it is checked again next run")
		return false
	}
	log.Warn().Str("was", string(lost.Status)).Str("error", found).Msg("call failed as lost")
	r.cfg.Metrics.finished(rec)
	// An archived (or completed) task left in place could be run again
	// with asynq's tools, and a first attempt makes its request before it
	// reads the record: the call would be made while its record says
	// failed. So it goes, as a canceled call's does; a task run again
	// meanwhile is told to stop.
	taskID := tasks.TaskID(rec.Tenant, rec.CorrelationID)
	if err := r.inspector.DeleteTask(queue, taskID); err != nil &&
		!errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
		if cerr := r.inspector.CancelProcessing(taskID); cerr != nil {
			log.Error().Err(errors.Join(err, cerr)).Msg("the call failed as lost, but its asynq task could not be deleted")
		}
	}
	if err := enqueueWebhook(context.WithoutCancel(ctx), r.queue, r.shards, rec); err != nil {
		log.Error().Err(err).Msg("the call failed as lost, but its webhook could not be queued")
	}
	return true
}

// defaultName is a process's name in records of lost attempts and in the
// reconciler's lease: hostname:pid.
func defaultName() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s:%d", host, os.Getpid())
}
