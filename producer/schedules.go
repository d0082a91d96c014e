package producer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // a timezone valid on one host is valid on every host, zoneinfo installed or not

	"github.com/redis/go-redis/v9"
	"github.com/robfig/cron/v3"

	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/tasks"
)

// Schedule is a call enqueued again and again, when a cron expression says,
// in one tenant. Each firing enqueues the call through the same path as
// Enqueue, under a correlation ID derived from the schedule's ID and the
// firing's instant (ScheduleCorrelationID), so that no instant is fired
// twice; its record names the schedule (tasks.Record.Schedule).
type Schedule struct {
	// ID names the schedule in its tenant: ScheduleIDRule.
	ID string `json:"id"`
	// Cron says when the schedule fires: five fields (minute, hour, day of
	// month, month, day of week: "*/5 * * * *"), a descriptor (@yearly,
	// @monthly, @weekly, @daily, @midnight, @hourly), or "@every D" with D
	// a Go duration of whole seconds, at least MinScheduleInterval.
	Cron string `json:"cron"`
	// Timezone is the IANA time zone Cron is read in ("Europe/Paris").
	// Default UTC. @every ignores it.
	Timezone string `json:"timezone"`
	// Call is the call each firing enqueues, without a correlation ID.
	Call tasks.Call `json:"call"`

	// The fields below are the schedule's state: set by CreateSchedule,
	// PutSchedule, GetSchedule and ListSchedules, ignored by the first two.

	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// NextRunAt is the schedule's next instant after now (nil if it never
	// fires again). It fires then if a scheduler runs (SchedulerConfig).
	NextRunAt *time.Time `json:"next_run_at"`
	// LastRunAt is the instant of the last firing that enqueued its call
	// (the instant the schedule names, not when the scheduler got to it).
	LastRunAt *time.Time `json:"last_run_at"`
	// LastCorrelationID is the call that firing enqueued.
	LastCorrelationID *string `json:"last_correlation_id"`
	// LastError says why the latest firing enqueued no call (its call no
	// longer valid: an integration removed from the catalog, say), or which
	// firings were missed while no scheduler ran. A firing that enqueues
	// its call clears it, and so does a change of the schedule.
	LastError *string `json:"last_error"`
}

// scheduleDef is a schedule as stored: what its tenant set.
type scheduleDef struct {
	ID        string     `json:"id"`
	Cron      string     `json:"cron"`
	Timezone  string     `json:"timezone"`
	Call      tasks.Call `json:"call"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
}

// Schedule limits and rules.
const (
	// ScheduleIDRule says, for error messages, what a schedule ID may be.
	ScheduleIDRule = "1 to 64 characters of A-Z a-z 0-9 . _ -, beginning with a letter or digit"
	// MinScheduleInterval is the shortest @every.
	MinScheduleInterval = time.Second
	// DefaultMaxSchedules bounds a tenant's schedules (Config.MaxSchedules).
	DefaultMaxSchedules = 100
	// DefaultMaxScheduleBytes bounds a schedule's call, as JSON
	// (Config.MaxScheduleBytes).
	DefaultMaxScheduleBytes = 64 << 10
	// ScheduleCorrelationPrefix begins the correlation ID of every call a
	// schedule's firing enqueues.
	ScheduleCorrelationPrefix = "sched-"
	maxCronBytes              = 128
	maxTimezoneBytes          = 64
)

// Errors of the schedule methods.
var (
	// ErrScheduleNotFound: no schedule under that ID in this tenant.
	ErrScheduleNotFound = errors.New("producer: no such schedule")
	// ErrScheduleExists: CreateSchedule found a schedule under the ID.
	ErrScheduleExists = errors.New("producer: a schedule with this id already exists")
	// ErrTooManySchedules: the tenant has Config.MaxSchedules schedules
	// already, so a new one is refused.
	ErrTooManySchedules = errors.New("producer: the tenant has as many schedules as it may")
)

// A schedule ID is a correlation ID's part (ScheduleCorrelationID): it
// fits auth.IDRule with room for the prefix and the instant. No ":" (the
// state hash's "<id>:error" fields rely on it).
var scheduleIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidScheduleID reports whether id follows ScheduleIDRule.
func ValidScheduleID(id string) bool { return scheduleIDPattern.MatchString(id) }

// ScheduleCorrelationID is the correlation ID of the call the firing of
// schedule id at instant at enqueues: "sched-<id>-<Unix seconds>". Records
// are the tenant's own, so the tenant is in the record's key rather than in
// the ID. Two schedulers, or one restarted, that fire the same instant make
// the same ID, and the second enqueue is a duplicate of the first: it
// queues nothing.
func ScheduleCorrelationID(id string, at time.Time) string {
	return ScheduleCorrelationPrefix + id + "-" + strconv.FormatInt(at.Unix(), 10)
}

// cronParser reads Schedule.Cron but for @every: five fields and
// descriptors; no seconds field, so a cron expression fires at most once a
// minute.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// cronSpec is a parsed Schedule.Cron in its timezone.
type cronSpec struct {
	sched cron.Schedule
	// every is @every's interval: instants are the schedule's anchor (its
	// change, then each firing) plus multiples of it. Zero for a cron
	// expression, whose instants are the wall clock's.
	every time.Duration
	// fixedHours is set for a cron expression that names its hours ("30 2
	// * * *", not "*/5 * * * *"): when the clocks go back, the wall times
	// of the hour they repeat fire once, not twice (see next).
	fixedHours bool
	loc        *time.Location
}

// allHours is the Hour field of a SpecSchedule that fires every hour, with
// or without the bit robfig/cron sets for a "*".
const allHours = 1<<24 - 1

// parseCron reads a schedule's cron expression in its timezone; errors are
// *tasks.FieldError naming "cron" or "timezone".
func parseCron(expr, tz string) (*cronSpec, error) {
	if tz == "" {
		tz = "UTC"
	}
	if len(tz) > maxTimezoneBytes || tz == "Local" || strings.ContainsAny(tz, "\x00\\") {
		return nil, &tasks.FieldError{Field: "timezone", Message: fmt.Sprintf("%q is not an IANA time zone such as Europe/Paris or UTC", tz)}
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, &tasks.FieldError{Field: "timezone", Message: fmt.Sprintf("%q is not an IANA time zone such as Europe/Paris or UTC", tz)}
	}
	bad := func(format string, args ...any) error {
		return &tasks.FieldError{Field: "cron", Message: fmt.Sprintf(format, args...)}
	}
	expr = strings.TrimSpace(expr)
	switch {
	case expr == "":
		return nil, bad("is required: five fields such as \"*/5 * * * *\", a descriptor such as @hourly, or @every 30s")
	case len(expr) > maxCronBytes:
		return nil, bad("is longer than %d bytes", maxCronBytes)
	case strings.HasPrefix(expr, "TZ=") || strings.HasPrefix(expr, "CRON_TZ="):
		return nil, bad("must not name a time zone; give it in timezone")
	}
	if rest, ok := strings.CutPrefix(expr, "@every "); ok {
		d, err := time.ParseDuration(strings.TrimSpace(rest))
		switch {
		case err != nil:
			return nil, bad("@every takes a Go duration such as 30s or 1h30m, not %q", strings.TrimSpace(rest))
		case d < MinScheduleInterval:
			return nil, bad("@every must be at least %s", MinScheduleInterval)
		case d%time.Second != 0:
			return nil, bad("@every must be a whole number of seconds")
		}
		return &cronSpec{sched: cron.Every(d), every: d}, nil
	}
	sched, err := cronParser.Parse(expr)
	if err != nil {
		return nil, bad("is not a cron expression (%v): want five fields (minute hour day-of-month month day-of-week) such as \"*/5 * * * *\", a descriptor (@yearly, @monthly, @weekly, @daily, @midnight, @hourly) or @every 30s", err)
	}
	spec, ok := sched.(*cron.SpecSchedule)
	if !ok {
		return nil, bad("is not a cron expression callq reads")
	}
	spec.Location = loc
	if spec.Next(time.Now()).IsZero() {
		return nil, bad("never fires: no date in the next five years matches it")
	}
	return &cronSpec{sched: spec, loc: loc, fixedHours: spec.Hour&allHours != allHours}, nil
}

// next is the first instant after t. robfig/cron reads the expression on
// the wall clock of the schedule's zone, and so fires a wall time the
// clocks repeat (when they go back) twice, and one they skip (when they go
// forward) not at all that day. For an expression that names its hours,
// the repeat is dropped: "30 2 * * *" in Europe/Paris fires once on the
// night the clocks go back, as cron does; an hourly or more frequent
// expression fires at each real hour. The skipped wall time stays skipped.
func (s *cronSpec) next(t time.Time) time.Time {
	for {
		n := s.sched.Next(t)
		if n.IsZero() || !s.fixedHours || !repeatedWallTime(n, s.loc) {
			return n
		}
		t = n
	}
}

// repeatedWallTime reports whether t's wall clock in loc came once already,
// in the hour (or half hour, or two) the clocks repeat when they go back.
func repeatedWallTime(t time.Time, loc *time.Location) bool {
	w := t.In(loc)
	for _, d := range []time.Duration{30 * time.Minute, time.Hour, 2 * time.Hour} {
		u := t.Add(-d).In(loc)
		if u.Day() == w.Day() && u.Hour() == w.Hour() && u.Minute() == w.Minute() && u.Second() == w.Second() {
			return true
		}
	}
	return false
}

// nextAfter is the first instant after now, counting from cursor (the
// schedule's last firing or change, whichever is later).
func (s *cronSpec) nextAfter(cursor, now time.Time) time.Time {
	if s.every > 0 {
		if now.Before(cursor) {
			return cursor.Add(s.every)
		}
		return cursor.Add((now.Sub(cursor)/s.every + 1) * s.every)
	}
	if now.Before(cursor) {
		now = cursor
	}
	return s.next(now)
}

// firing is what a look at a schedule at some instant finds due.
type firing struct {
	// at is the instant to fire; zero when none is.
	at time.Time
	// missed is the first instant passed over (due while no scheduler
	// ran, and not the latest, or more than the catch-up window late);
	// zero when none was.
	missed time.Time
	// cursor is where the next look starts: at, or the last instant
	// passed over.
	cursor time.Time
}

// due says what is due at now for a schedule last fired (or changed) at
// cursor: of the instants after cursor and up to now, only the latest is
// fired, and only if it is at most window old. An instant is never fired
// twice from one cursor, and never a backlog.
func (s *cronSpec) due(cursor, now time.Time, window time.Duration) firing {
	first := s.next(cursor)
	if first.IsZero() || first.After(now) {
		return firing{cursor: cursor}
	}
	var latest time.Time
	if s.every > 0 {
		latest = cursor.Add(now.Sub(cursor) / s.every * s.every)
	} else {
		from := cursor
		if now.Sub(first) > window {
			// Instants older than the window are passed over anyway:
			// start the walk there, not at a cursor days old.
			from = now.Add(-window - time.Second)
		}
		for t := s.next(from); !t.IsZero() && !t.After(now); t = s.next(t) {
			latest = t
		}
	}
	if !latest.IsZero() && now.Sub(latest) <= window {
		f := firing{at: latest, cursor: latest}
		if latest.After(first) {
			f.missed = first
		}
		return f
	}
	f := firing{missed: first, cursor: latest}
	if latest.IsZero() {
		f.cursor = now.Truncate(time.Second) // no instant in the window: none up to now either
	}
	return f
}

// scheduleField prefixes the field of a call's FieldError with "call.".
func scheduleField(err error) error {
	var fe *tasks.FieldError
	if errors.As(err, &fe) {
		return &tasks.FieldError{Field: "call." + fe.Field, Message: fe.Message, TooLarge: fe.TooLarge}
	}
	return err
}

// checkSchedule validates s as its firings' calls will be, and returns its
// parsed cron expression and the call to store: as given, but for its
// method upper-cased, its body compacted and its queue filled in. The
// queue is this API's to accept (its CALLQ_QUEUES and their default): the
// worker whose scheduler fires the call may take other queues (a pool of
// its own), so a firing keeps it (origin.queue). Credential defaults are
// not filled in: a firing takes the catalog's of its time.
func (p *Producer) checkSchedule(s *Schedule) (*cronSpec, *tasks.Call, error) {
	if !ValidScheduleID(s.ID) {
		return nil, nil, &tasks.FieldError{Field: "id", Message: "must be " + ScheduleIDRule}
	}
	spec, err := parseCron(s.Cron, s.Timezone)
	if err != nil {
		return nil, nil, err
	}
	if s.Call.CorrelationID != "" {
		return nil, nil, &tasks.FieldError{Field: "call.correlation_id",
			Message: "must be left out: each firing's is derived from the schedule (" + ScheduleCorrelationPrefix + "<id>-<unix seconds>)"}
	}
	cp := s.Call
	cp.CorrelationID = ScheduleCorrelationID(s.ID, time.Now())
	if _, err := cp.Normalize(p.cfg.Catalog, p.cfg.Limits); err != nil {
		return nil, nil, scheduleField(err)
	}
	if cp.Webhook != nil {
		if err := p.checkWebhook(cp.Webhook.URL); err != nil {
			return nil, nil, scheduleField(err)
		}
	}
	stored := s.Call
	stored.Method, stored.Body, stored.Queue = cp.Method, cp.Body, cp.Queue
	b, err := json.Marshal(&stored)
	if err != nil {
		return nil, nil, err
	}
	if len(b) > p.maxScheduleBytes() {
		return nil, nil, &tasks.FieldError{Field: "call", TooLarge: true,
			Message: fmt.Sprintf("is %d bytes as JSON, more than a schedule's limit of %d", len(b), p.maxScheduleBytes())}
	}
	return spec, &stored, nil
}

func (p *Producer) maxSchedules() int {
	if p.cfg.MaxSchedules > 0 {
		return p.cfg.MaxSchedules
	}
	return DefaultMaxSchedules
}

func (p *Producer) maxScheduleBytes() int {
	if p.cfg.MaxScheduleBytes > 0 {
		return p.cfg.MaxScheduleBytes
	}
	return DefaultMaxScheduleBytes
}

// putScheduleScript writes a schedule if the one stored is still the one
// read before (ARGV[3], "" for none), within the tenant's limit, and
// clears its last error. It answers 0 (created), 1 (replaced), -1 (changed
// meanwhile: read it again) or -2 (the tenant is at its limit).
var putScheduleScript = redis.NewScript(`
local old = redis.call('HGET', KEYS[1], ARGV[1])
if (old or '') ~= ARGV[3] then return -1 end
if not old and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return -2 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[1] .. ':error')
if old then return 1 end
return 0
`)

// deleteScheduleScript deletes a schedule and its state; it answers 1 if
// there was a schedule.
var deleteScheduleScript = redis.NewScript(`
local n = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1], ARGV[1] .. ':error')
return n
`)

// CreateSchedule validates s as its calls will be (a *tasks.FieldError
// naming "id", "cron", "timezone" or "call.<field>"; a call with a
// correlation ID is refused) and stores it. It fails with
// ErrScheduleExists if the tenant has a schedule under s.ID, and
// ErrTooManySchedules at the tenant's limit (Config.MaxSchedules). It
// returns the schedule as stored, with its next_run_at. The fleet's
// scheduler takes it up within a second or two.
func (c *Client) CreateSchedule(ctx context.Context, s *Schedule) (*Schedule, error) {
	out, _, err := c.putSchedule(ctx, s, true)
	return out, err
}

// PutSchedule is CreateSchedule that replaces a schedule under s.ID
// instead of failing; created says which it did. A replaced schedule keeps
// its created_at and last run; its last error is cleared, and its next
// instants are counted from the change (for @every, the change plus the
// interval).
func (c *Client) PutSchedule(ctx context.Context, s *Schedule) (sched *Schedule, created bool, err error) {
	return c.putSchedule(ctx, s, false)
}

func (c *Client) putSchedule(ctx context.Context, s *Schedule, createOnly bool) (*Schedule, bool, error) {
	_, call, err := c.p.checkSchedule(s)
	if err != nil {
		return nil, false, err
	}
	rdb := c.p.rdb
	keys := []string{rediskeys.Schedules(c.tenant), rediskeys.ScheduleState(c.tenant)}
	// The tenant joins the set first: a crash before the schedule is
	// written leaves a tenant with nothing to read, never a schedule the
	// scheduler does not see.
	if err := rdb.SAdd(ctx, rediskeys.ScheduleTenants, c.tenant).Err(); err != nil {
		return nil, false, fmt.Errorf("producer: store schedule %q: %w", s.ID, err)
	}
	for range 5 {
		old, err := rdb.HGet(ctx, keys[0], s.ID).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, false, fmt.Errorf("producer: store schedule %q: %w", s.ID, err)
		}
		now := time.Now().UTC()
		def := scheduleDef{ID: s.ID, Cron: strings.TrimSpace(s.Cron), Timezone: s.Timezone, Call: *call, CreatedAt: now, UpdatedAt: now}
		if def.Timezone == "" {
			def.Timezone = "UTC"
		}
		if old != "" {
			if createOnly {
				return nil, false, ErrScheduleExists
			}
			var prev scheduleDef
			if json.Unmarshal([]byte(old), &prev) == nil && !prev.CreatedAt.IsZero() {
				def.CreatedAt = prev.CreatedAt
			}
		}
		b, err := json.Marshal(&def)
		if err != nil {
			return nil, false, err
		}
		n, err := putScheduleScript.Run(ctx, rdb, keys, s.ID, b, old, c.p.maxSchedules()).Int()
		switch {
		case err != nil:
			return nil, false, fmt.Errorf("producer: store schedule %q: %w", s.ID, err)
		case n == -1:
			continue // changed between the read and the write
		case n == -2:
			return nil, false, fmt.Errorf("%w: tenant %q has %d schedules, the limit; delete one first", ErrTooManySchedules, c.tenant, c.p.maxSchedules())
		}
		c.p.schedulesChanged(ctx)
		out, err := c.GetSchedule(ctx, s.ID)
		if errors.Is(err, ErrScheduleNotFound) {
			// Deleted since: answer what was written.
			out, err = makeSchedule(&def, "", "", time.Now()), nil
		}
		return out, n == 0, err
	}
	return nil, false, fmt.Errorf("producer: store schedule %q: it kept changing while being written; try again", s.ID)
}

// schedulesChanged tells the scheduler to read the schedules again. The
// change itself is stored; should this fail, the scheduler finds it at its
// next full read (SchedulerConfig.Resync) instead, so it is not an error.
func (p *Producer) schedulesChanged(ctx context.Context) {
	_ = p.rdb.Incr(context.WithoutCancel(ctx), rediskeys.ScheduleVersion).Err()
}

// GetSchedule returns a schedule of the tenant, with its state, or
// ErrScheduleNotFound.
func (c *Client) GetSchedule(ctx context.Context, id string) (*Schedule, error) {
	if !ValidScheduleID(id) {
		return nil, ErrScheduleNotFound
	}
	pipe := c.p.rdb.Pipeline()
	def := pipe.HGet(ctx, rediskeys.Schedules(c.tenant), id)
	state := pipe.HMGet(ctx, rediskeys.ScheduleState(c.tenant), id, id+":error")
	_, err := pipe.Exec(ctx)
	if errors.Is(err, redis.Nil) {
		return nil, ErrScheduleNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("producer: read schedule %q: %w", id, err)
	}
	d, err := decodeScheduleDef(c.tenant, id, def.Val())
	if err != nil {
		return nil, err
	}
	v := state.Val()
	run, _ := v[0].(string)
	msg, _ := v[1].(string)
	return makeSchedule(d, run, msg, time.Now()), nil
}

// ListSchedules returns the tenant's schedules, with their state, by ID.
func (c *Client) ListSchedules(ctx context.Context) ([]*Schedule, error) {
	defs, state, err := readTenantSchedules(ctx, c.p.rdb, c.tenant)
	if err != nil {
		return nil, err
	}
	out := make([]*Schedule, 0, len(defs))
	now := time.Now()
	for id, raw := range defs {
		d, err := decodeScheduleDef(c.tenant, id, raw)
		if err != nil {
			return nil, err
		}
		out = append(out, makeSchedule(d, state[id], state[id+":error"], now))
	}
	slices.SortFunc(out, func(a, b *Schedule) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// DeleteSchedule deletes a schedule of the tenant and its state, or fails
// with ErrScheduleNotFound. The scheduler stops firing it within a second
// or two; a firing under way then may still enqueue its call.
func (c *Client) DeleteSchedule(ctx context.Context, id string) error {
	if !ValidScheduleID(id) {
		return ErrScheduleNotFound
	}
	n, err := deleteScheduleScript.Run(ctx, c.p.rdb,
		[]string{rediskeys.Schedules(c.tenant), rediskeys.ScheduleState(c.tenant)}, id).Int()
	if err != nil {
		return fmt.Errorf("producer: delete schedule %q: %w", id, err)
	}
	if n == 0 {
		return ErrScheduleNotFound
	}
	c.p.schedulesChanged(ctx)
	return nil
}

// readTenantSchedules reads a tenant's schedules and their state in one
// round trip (one slot).
func readTenantSchedules(ctx context.Context, rdb redis.UniversalClient, tenant string) (defs, state map[string]string, err error) {
	pipe := rdb.Pipeline()
	d := pipe.HGetAll(ctx, rediskeys.Schedules(tenant))
	s := pipe.HGetAll(ctx, rediskeys.ScheduleState(tenant))
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, nil, fmt.Errorf("producer: read the schedules of tenant %q: %w", tenant, err)
	}
	return d.Val(), s.Val(), nil
}

func decodeScheduleDef(tenant, id, raw string) (*scheduleDef, error) {
	var d scheduleDef
	if err := json.Unmarshal([]byte(raw), &d); err != nil {
		return nil, fmt.Errorf("producer: schedule %q of tenant %q is corrupt in Redis: %w", id, tenant, err)
	}
	if d.ID != id {
		return nil, fmt.Errorf("producer: schedule %q of tenant %q is corrupt in Redis: it names id %q", id, tenant, d.ID)
	}
	return &d, nil
}

// lastRun reads the state's "<id>" field: the Unix second of the last
// firing; zero if none.
func lastRun(v string) time.Time {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}
	}
	return time.Unix(n, 0).UTC()
}

// scheduleCursor is where a schedule's instants are counted from: its last
// firing, or its last change if that came later.
func scheduleCursor(d *scheduleDef, last time.Time) time.Time {
	c := d.UpdatedAt.Truncate(time.Second)
	if last.After(c) {
		c = last
	}
	return c.UTC()
}

// makeSchedule is a stored schedule with its state, as at now.
func makeSchedule(d *scheduleDef, run, lastError string, now time.Time) *Schedule {
	s := &Schedule{ID: d.ID, Cron: d.Cron, Timezone: d.Timezone, Call: d.Call, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt}
	last := lastRun(run)
	if !last.IsZero() {
		cid := ScheduleCorrelationID(d.ID, last)
		s.LastRunAt, s.LastCorrelationID = &last, &cid
	}
	if lastError != "" {
		s.LastError = &lastError
	}
	if spec, err := parseCron(d.Cron, d.Timezone); err == nil {
		if next := spec.nextAfter(scheduleCursor(d, last), now); !next.IsZero() {
			next = next.UTC()
			s.NextRunAt = &next
		}
	}
	return s
}
