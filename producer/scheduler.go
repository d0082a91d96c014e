package producer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/callq/callq/internal/flow"
	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/tasks"
)

// SchedulerConfig configures a Scheduler.
type SchedulerConfig struct {
	// Interval is how often the scheduler renews (or tries to take) the
	// fleet's lease and looks for changed schedules; it also wakes at each
	// schedule's next instant. Default 1s.
	Interval time.Duration
	// Lease is how long the fleet's lease outlives its holder's last
	// renewal: when the scheduler holding it dies, another takes over
	// within Lease plus an Interval. At least twice Interval. Default 5s.
	Lease time.Duration
	// CatchUp is how late a firing may be made. Of the instants that came
	// while no scheduler ran (every worker down, or during a takeover),
	// only the latest is fired, and only if it is at most CatchUp old: a
	// scheduler never fires a backlog. Default 5m.
	CatchUp time.Duration
	// Resync is how often the holder reads every schedule again though no
	// change was announced (rediskeys.ScheduleVersion). Default 1m.
	Resync time.Duration
	// Name identifies this process in the lease (GET callq:sched:lease).
	// Default hostname:pid.
	Name string
	// Logger receives a line when this process takes or loses the lease,
	// one per firing (debug) and one per firing that enqueued no call or
	// instants passed over (warn). A firing Redis refuses is tried at each
	// pass while due, and said once (warn; then debug) until it is made
	// (info). Default: a disabled logger.
	Logger *zerolog.Logger
}

// Defaults for SchedulerConfig.
const (
	DefaultSchedulerInterval = time.Second
	DefaultSchedulerLease    = 5 * time.Second
	DefaultScheduleCatchUp   = 5 * time.Minute
	DefaultSchedulerResync   = time.Minute
	// minSchedulerInterval: the lease is kept in whole milliseconds.
	minSchedulerInterval = 10 * time.Millisecond
)

func (c *SchedulerConfig) validate() error {
	switch {
	case c.Interval < 0 || c.Interval > 0 && c.Interval < minSchedulerInterval:
		return fmt.Errorf("SchedulerConfig.Interval must be 0 (the default) or at least %s", minSchedulerInterval)
	case c.Lease < 0:
		return errors.New("SchedulerConfig.Lease must not be negative")
	case c.CatchUp < 0:
		return errors.New("SchedulerConfig.CatchUp must not be negative")
	case c.Resync < 0:
		return errors.New("SchedulerConfig.Resync must not be negative")
	}
	return nil
}

func (c *SchedulerConfig) withDefaults() error {
	if c.Interval == 0 {
		c.Interval = DefaultSchedulerInterval
	}
	if c.Lease == 0 {
		c.Lease = max(DefaultSchedulerLease, 5*c.Interval)
	}
	if c.Lease < 2*c.Interval {
		return fmt.Errorf("SchedulerConfig.Lease (%s) must be at least twice Interval (%s): the holder renews it every Interval", c.Lease, c.Interval)
	}
	if c.CatchUp == 0 {
		c.CatchUp = DefaultScheduleCatchUp
	}
	if c.Resync == 0 {
		c.Resync = DefaultSchedulerResync
	}
	if c.Name == "" {
		host, _ := os.Hostname()
		c.Name = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	if c.Logger == nil {
		nop := zerolog.Nop()
		c.Logger = &nop
	}
	return nil
}

// ErrSchedulerLeaseHeld is RunOnce's error when another scheduler holds the
// fleet's lease.
var ErrSchedulerLeaseHeld = errors.New("producer: another scheduler holds the lease")

// SchedulerReport is what one pass did.
type SchedulerReport struct {
	// Schedules is how many schedules the pass looked at.
	Schedules int
	// Fired is how many firings enqueued their call (or found it
	// enqueued by another scheduler already).
	Fired int
	// Failed is how many firings enqueued no call: their call is no longer
	// valid (see Schedule.LastError), or Redis failed (then the firing is
	// tried again at the next pass).
	Failed int
	// Missed is how many schedules had instants passed over.
	Missed int
}

// Scheduler fires every tenant's schedules: at each instant a schedule
// names, it enqueues the schedule's call through the producer, as
// Client.Enqueue does (record, index, webhook, queue), under
// ScheduleCorrelationID. Any number of processes may run one: a Redis lease
// (rediskeys.SchedulerLease) lets one fire at a time, and another takes
// over within the lease when it dies. The derived correlation ID makes a
// firing of one instant by two schedulers (a holder that stalled past its
// lease, say) or by a restarted one a duplicate, which queues nothing.
//
// Missed instants (every scheduler down, or a takeover) are not fired as a
// backlog: only the latest, if at most SchedulerConfig.CatchUp late.
type Scheduler struct {
	p     *Producer
	cfg   SchedulerConfig
	log   zerolog.Logger
	lease *flow.Lease
	now   func() time.Time // the firings' clock (tests move it)

	mu       sync.Mutex // one pass at a time; guards lease and the fields below
	loaded   bool       // entries are read (since the lease was taken)
	version  string     // rediskeys.ScheduleVersion when they were
	loadedAt time.Time
	entries  map[scheduleKey]*scheduleEntry
	wake     time.Time // the earliest next instant of the entries
}

type scheduleKey struct{ tenant, id string }

// scheduleEntry is a schedule as the holder keeps it between passes.
type scheduleEntry struct {
	def    *scheduleDef
	spec   *cronSpec
	cursor time.Time // the last instant fired or passed over, or the change
	// failing is the instant whose firing Redis refused, as said at warn:
	// the next passes try it again, and say so at debug only.
	failing time.Time
}

// NewScheduler returns a Scheduler firing the schedules p's clients store.
// It does not start it.
func NewScheduler(p *Producer, cfg *SchedulerConfig) (*Scheduler, error) {
	if p == nil {
		return nil, errors.New("producer: NewScheduler needs a Producer")
	}
	if cfg == nil {
		cfg = &SchedulerConfig{}
	}
	c := *cfg
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("producer: %w", err)
	}
	if err := c.withDefaults(); err != nil {
		return nil, fmt.Errorf("producer: %w", err)
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("producer: reading random bytes for the scheduler's lease token failed: %w", err)
	}
	return &Scheduler{
		p:     p,
		cfg:   c,
		log:   c.Logger.With().Str("component", "scheduler").Logger(),
		lease: flow.NewLease(p.rdb, rediskeys.SchedulerLease, c.Name+"/"+hex.EncodeToString(b), c.Lease, "the scheduler's lease"),
		now:   time.Now,
	}, nil
}

// Run makes a pass every Interval, and at each schedule's next instant,
// until ctx ends; then it releases the lease, if it holds it, and returns.
func (s *Scheduler) Run(ctx context.Context) {
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if err := s.Release(rctx); err != nil {
			s.log.Warn().Err(err).Msg("could not release the scheduler's lease; it lapses on its own")
		}
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	failing := false // a pass failed: say so once, not every Interval, and say when it ends
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		_, err := s.RunOnce(ctx)
		switch {
		case ctx.Err() != nil:
		case err != nil && !errors.Is(err, ErrSchedulerLeaseHeld):
			if !failing {
				s.log.Warn().Err(err).Msg("scheduler pass did not complete; trying again every interval")
			}
			failing = true
		case failing:
			s.log.Info().Msg("scheduler passes complete again")
			failing = false
		}
		timer.Reset(s.nextWait())
	}
}

// nextWait is how long Run sleeps: an Interval, or less when a schedule's
// next instant comes sooner.
func (s *Scheduler) nextWait() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	wait := s.cfg.Interval
	if s.lease.Held() && !s.wake.IsZero() {
		// Just past the instant: a pass at the instant itself would find
		// it not yet due on a clock a hair behind.
		wait = min(wait, max(time.Until(s.wake)+5*time.Millisecond, time.Millisecond))
	}
	return wait
}

// RunOnce takes or renews the fleet's lease and makes one pass: it reads
// the schedules again if they changed, then fires what is due. It returns
// ErrSchedulerLeaseHeld, having done nothing, when another scheduler holds
// the lease. The lease is kept after the pass: Release gives it up.
func (s *Scheduler) RunOnce(ctx context.Context) (*SchedulerReport, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rep := &SchedulerReport{}
	was := s.lease.Held()
	ok, err := s.lease.Hold(ctx)
	if err != nil {
		return rep, err
	}
	if !ok {
		if was {
			s.log.Warn().Str("name", s.cfg.Name).Msg("lost the scheduler's lease; another process fires the schedules")
		}
		return rep, ErrSchedulerLeaseHeld
	}
	if !was {
		// Another scheduler may have fired since this one last held the
		// lease: what it remembers is stale.
		s.log.Info().Str("name", s.cfg.Name).Int64("lease_ms", s.cfg.Lease.Milliseconds()).Msg("took the scheduler's lease; this process fires the fleet's schedules")
		s.loaded, s.entries = false, nil
	}
	if err := s.sync(ctx); err != nil {
		return rep, err
	}
	return rep, s.pass(ctx, rep)
}

// Release gives up the lease if this scheduler holds it, so that another
// takes over at its next Interval instead of when the lease lapses.
func (s *Scheduler) Release(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.lease.Release(ctx); err != nil {
		return fmt.Errorf("producer: %w", err)
	}
	return nil
}

// sync reads every schedule again when they are not read yet, when a
// change was announced, or Resync after the last read.
func (s *Scheduler) sync(ctx context.Context) error {
	rdb := s.p.rdb
	version, err := rdb.Get(ctx, rediskeys.ScheduleVersion).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("producer: read the schedules' version: %w", err)
	}
	if s.loaded && version == s.version && time.Since(s.loadedAt) < s.cfg.Resync {
		return nil
	}
	tenants, err := rdb.SMembers(ctx, rediskeys.ScheduleTenants).Result()
	if err != nil {
		return fmt.Errorf("producer: read the tenants with schedules: %w", err)
	}
	// One round trip for every tenant (per node, on a cluster).
	pipe := rdb.Pipeline()
	reads := make([][2]*redis.MapStringStringCmd, len(tenants))
	for i, tenant := range tenants {
		reads[i] = [2]*redis.MapStringStringCmd{pipe.HGetAll(ctx, rediskeys.Schedules(tenant)), pipe.HGetAll(ctx, rediskeys.ScheduleState(tenant))}
	}
	if len(tenants) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("producer: read the schedules: %w", err)
		}
	}
	entries := make(map[scheduleKey]*scheduleEntry, len(s.entries))
	for i, tenant := range tenants {
		defs, state := reads[i][0].Val(), reads[i][1].Val()
		for id, raw := range defs {
			k := scheduleKey{tenant, id}
			d, err := decodeScheduleDef(tenant, id, raw)
			if err != nil {
				s.log.Error().Err(err).Msg("schedule not fired")
				continue
			}
			spec, err := parseCron(d.Cron, d.Timezone)
			if err != nil {
				s.log.Error().Err(err).Str("tenant", tenant).Str("schedule", id).Msg("schedule not fired: its cron expression no longer parses")
				continue
			}
			e := &scheduleEntry{def: d, spec: spec, cursor: scheduleCursor(d, lastRun(state[id]))}
			if old := s.entries[k]; old != nil && old.def.UpdatedAt.Equal(d.UpdatedAt) {
				if old.cursor.After(e.cursor) {
					// Instants passed over are not written as a last run.
					e.cursor = old.cursor
				}
				e.failing = old.failing
			}
			entries[k] = e
		}
	}
	s.entries, s.version, s.loaded, s.loadedAt = entries, version, true, time.Now()
	s.log.Debug().Int("tenants", len(tenants)).Int("schedules", len(entries)).Msg("read the schedules")
	return nil
}

// pass fires what is due.
func (s *Scheduler) pass(ctx context.Context, rep *SchedulerReport) error {
	s.wake = time.Time{}
	now := s.now()
	for k, e := range s.entries {
		if err := s.lease.Keep(ctx); err != nil {
			if errors.Is(err, flow.ErrLeaseLapsed) {
				s.log.Warn().Str("name", s.cfg.Name).Msg("the scheduler's lease lapsed during a pass; another process fires the schedules")
			}
			return err
		}
		rep.Schedules++
		s.fire(ctx, k, e, rep)
		// An instant still due (Redis failed) waits for the next Interval.
		if next := e.spec.next(e.cursor); next.After(now) && (s.wake.IsZero() || next.Before(s.wake)) {
			s.wake = next
		}
	}
	return nil
}

// setScheduleStateScript writes a firing's outcome, if the schedule still
// exists (a deleted one gets no state back): the last run (ARGV[2], Unix
// seconds, kept if an earlier one: two schedulers may write out of order)
// and the error (ARGV[3]; "" clears it).
var setScheduleStateScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
if ARGV[2] ~= '' then
  local old = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') or 0
  if tonumber(ARGV[2]) > old then redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) end
end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[1] .. ':error', ARGV[3])
else
  redis.call('HDEL', KEYS[2], ARGV[1] .. ':error')
end
return 1
`)

func (s *Scheduler) setState(ctx context.Context, k scheduleKey, run time.Time, msg string) error {
	runArg := ""
	if !run.IsZero() {
		runArg = strconv.FormatInt(run.Unix(), 10)
	}
	return setScheduleStateScript.Run(ctx, s.p.rdb, []string{rediskeys.Schedules(k.tenant), rediskeys.ScheduleState(k.tenant)},
		k.id, runArg, msg).Err()
}

// fire makes the firing due of one schedule, if any.
func (s *Scheduler) fire(ctx context.Context, k scheduleKey, e *scheduleEntry, rep *SchedulerReport) {
	f := e.spec.due(e.cursor, s.now(), s.cfg.CatchUp)
	if f.at.IsZero() && f.missed.IsZero() {
		return
	}
	log := s.log.With().Str("tenant", k.tenant).Str("schedule", k.id).Logger()
	if !f.missed.IsZero() {
		rep.Missed++
		stamp := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
		if f.at.IsZero() {
			msg := fmt.Sprintf("the firings due from %s to %s were not made: no scheduler ran then, and a firing is made at most %s late", stamp(f.missed), stamp(f.cursor), s.cfg.CatchUp)
			log.Warn().Str("error", msg).Msg("schedule's firings missed")
			if err := s.setState(ctx, k, time.Time{}, msg); err != nil {
				log.Warn().Err(err).Msg("could not record the schedule's missed firings")
			}
			e.cursor = f.cursor
			return
		}
		log.Warn().Time("from", f.missed).Time("fired", f.at).Msg("schedule's firings missed while no scheduler ran; firing the latest only")
	}
	call := e.def.Call
	call.CorrelationID = ScheduleCorrelationID(k.id, f.at)
	log = log.With().Str("correlation_id", call.CorrelationID).Time("instant", f.at).Logger()
	// The queue is the one the API accepted (checkSchedule): this worker
	// may take others.
	res, err := s.p.tenant(k.tenant).enqueue(ctx, &call, origin{schedule: k.id, queue: e.def.Call.Queue})
	var fe *tasks.FieldError
	var conflict *ConflictError
	var msg string
	switch {
	case errors.As(err, &fe):
		fe = scheduleField(fe).(*tasks.FieldError)
		msg = fmt.Sprintf("the firing at %s enqueued no call: %s: %s", f.at.UTC().Format(time.RFC3339), fe.Field, fe.Message)
	case errors.As(err, &conflict) && conflict.Existing.Schedule == k.id:
		// This schedule's own firing of the instant, made by a scheduler
		// whose catalog filled in another default (a deploy under way):
		// fired already.
		res = &Enqueued{Record: conflict.Existing, Duplicate: true}
	case errors.As(err, &conflict):
		msg = fmt.Sprintf("the firing at %s enqueued no call: its correlation_id %q is held by a call this schedule did not make", f.at.UTC().Format(time.RFC3339), call.CorrelationID)
	case err != nil:
		// Redis, most likely: the instant stays due, and the next pass
		// tries it again while it is within the catch-up window. Said
		// once: a pass runs every Interval, for each schedule due.
		rep.Failed++
		level := zerolog.WarnLevel
		if e.failing.Equal(f.at) {
			level = zerolog.DebugLevel
		}
		e.failing = f.at
		log.WithLevel(level).Err(err).Msg("schedule's firing failed; trying again at each pass while it is due")
		return
	}
	failed := e.failing.Equal(f.at)
	e.failing = time.Time{}
	e.cursor = f.at
	if msg != "" {
		rep.Failed++
		log.Warn().Str("error", msg).Msg("schedule's firing enqueued no call")
		if err := s.setState(ctx, k, time.Time{}, msg); err != nil {
			log.Warn().Err(err).Msg("could not record the schedule's failed firing")
		}
		return
	}
	rep.Fired++
	switch {
	case failed:
		log.Info().Bool("duplicate", res.Duplicate).Msg("schedule fired after failing")
	case res.Duplicate:
		log.Debug().Msg("schedule's firing was made already")
	default:
		log.Debug().Msg("schedule fired")
	}
	if err := s.setState(ctx, k, f.at, ""); err != nil {
		log.Warn().Err(err).Msg("could not record the schedule's last run; the call is enqueued")
	}
}
