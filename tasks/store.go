package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/callq/callq/internal/rediskeys"
)

// Store errors.
var (
	// ErrNotFound: no record under that tenant and correlation ID (never
	// created, or expired after CALLQ_RESULT_TTL).
	ErrNotFound = errors.New("tasks: record not found")
	// ErrExists: Create found a record under that correlation ID already.
	// Create returns it as an *ExistsError.
	ErrExists = errors.New("tasks: record exists")
	// ErrFinished: the record is terminal and no longer changes. Begin and
	// Update return it as a *FinishedError; Write, which has no record to
	// give, returns it bare.
	ErrFinished = errors.New("tasks: record is finished")
	// ErrChanged: the record changed since it was read.
	ErrChanged = errors.New("tasks: record changed concurrently")
)

// ExistsError is Create's error when a record exists under the call's
// correlation ID; errors.Is(err, ErrExists) matches it.
type ExistsError struct {
	// Record is the existing record.
	Record *Record
	// Fingerprint is the fingerprint stored with it, to tell a retry of
	// the same call from another call under the same ID.
	Fingerprint string
}

func (e *ExistsError) Error() string { return ErrExists.Error() }

// Is reports whether target is ErrExists.
func (e *ExistsError) Is(target error) bool { return target == ErrExists }

// FinishedError is the error of Begin and Update on a terminal record;
// errors.Is(err, ErrFinished) matches it.
type FinishedError struct {
	// Record is the record as it finished.
	Record *Record
}

func (e *FinishedError) Error() string { return ErrFinished.Error() }

// Is reports whether target is ErrFinished.
func (e *FinishedError) Is(target error) bool { return target == ErrFinished }

// StoreConfig configures a Store.
type StoreConfig struct {
	// ResultTTL is how long a record lives after the call finishes.
	// Default 24h (CALLQ_RESULT_TTL).
	ResultTTL time.Duration
	// PendingTTL bounds the life of a record that never finishes (its task
	// lost with a flushed Redis, say). Default 7 days, plus the call's delay.
	PendingTTL time.Duration
}

// Defaults for StoreConfig.
const (
	DefaultResultTTL  = 24 * time.Hour
	DefaultPendingTTL = 7 * 24 * time.Hour
)

func (c *StoreConfig) validate() error {
	if c.ResultTTL < 0 {
		return errors.New("StoreConfig.ResultTTL must not be negative")
	}
	if c.PendingTTL < 0 {
		return errors.New("StoreConfig.PendingTTL must not be negative")
	}
	return nil
}

// Store keeps records in Redis. Each record is a hash: "rec" (the JSON of
// the record's summary as last written, Record.Summary: what a list reads),
// "full" (the JSON of the rest, {"response", "history"}, absent while the
// record has neither), "status" (authoritative, so a worker can mark an
// attempt running without rewriting the record), "run" (the attempt in
// progress), "fp" (the call's fingerprint), "v" (a version for
// compare-and-set), "call" (the call's task payload, for a replay) and "w"
// (set once someone waits for the call). Every change goes through a Lua
// script, so a terminal record is never overwritten and a finished call's
// waiters are notified in the same round trip as the write: only a call
// marked "w" is published, so the many calls nobody waits for cost no
// PUBLISH, and no delivery to every API process subscribed. The keys and
// the completion channel are internal/rediskeys's Record and DoneChannel.
type Store struct {
	rdb      redis.UniversalClient
	cfg      StoreConfig
	notifier *notifier

	// cluster says rdb is a Redis Cluster's client: a script cannot reach
	// asynq's keys from a record's (WriteDone).
	cluster bool

	mu    sync.Mutex
	added map[string]time.Time // see addDue
}

// NewStore returns a Store over rdb.
func NewStore(rdb redis.UniversalClient, cfg *StoreConfig) (*Store, error) {
	c := StoreConfig{}
	if cfg != nil {
		c = *cfg
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("tasks: %w", err)
	}
	if c.ResultTTL == 0 {
		c.ResultTTL = DefaultResultTTL
	}
	if c.PendingTTL == 0 {
		c.PendingTTL = DefaultPendingTTL
	}
	_, cluster := rdb.(*redis.ClusterClient)
	s := &Store{rdb: rdb, cfg: c, cluster: cluster, added: map[string]time.Time{}}
	s.notifier = newNotifier(rdb, rediskeys.DoneChannel)
	return s, nil
}

// Close stops the store's pub/sub subscription, if any.
func (s *Store) Close() error { return s.notifier.close() }

// ResultTTL is how long finished records live.
func (s *Store) ResultTTL() time.Duration { return s.cfg.ResultTTL }

// createScript's arguments are the summary, status, fingerprint, TTL,
// payload and index member, then the detail and the integration only when
// there are (a record created finished, a names key in KEYS[4]): Redis
// makes a Lua string of every argument of every call, about as costly as a
// command each.
var createScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then
  local v = redis.call('HMGET', KEYS[1], 'rec', 'full', 'status', 'run', 'fp', 'wh', 'rb')
  return {0, v[1], v[2] or '', v[3] or '', v[4] or '', v[5] or '', v[6] or '', v[7] or ''}
end
if (ARGV[7] or '') == '' then
  redis.call('HSET', KEYS[1], 'rec', ARGV[1], 'status', ARGV[2], 'fp', ARGV[3], 'v', 1, 'call', ARGV[5])
else
  redis.call('HSET', KEYS[1], 'rec', ARGV[1], 'full', ARGV[7], 'status', ARGV[2], 'fp', ARGV[3], 'v', 1, 'call', ARGV[5])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
for i = 2, 3 do redis.call('ZADD', KEYS[i], 0, ARGV[6]) end
if KEYS[4] then redis.call('SADD', KEYS[4], ARGV[8]) end
return {1}
`)

// Create stores a new record of a call with the given fingerprint, and the
// call's task payload, which a replay is made from. If a record exists
// under that correlation ID it returns an *ExistsError holding that record
// and its fingerprint. The record enters its shard's indexes in the same
// script, and its integration the shard's names when addDue says so.
func (s *Store) Create(ctx context.Context, rec *Record, fingerprint string, delay time.Duration, payload []byte) error {
	sum, full, err := encodeRecord(rec, false)
	if err != nil {
		return err
	}
	s.registerTenant(ctx, rec.Tenant)
	keys := createKeys(rec)
	names := namesKey(rec)
	addName := s.addDue(names, rec.Integration)
	if addName {
		keys = append(keys, names)
	}
	ttl := s.cfg.PendingTTL + delay
	args := []any{sum, string(rec.Status), fingerprint, ttl.Milliseconds(), payload, indexMember(rec.CreatedAt, rec.CorrelationID)}
	switch {
	case addName:
		args = append(args, full, rec.Integration)
	case full != nil:
		args = append(args, full)
	}
	res, err := createScript.Run(ctx, s.rdb, keys, args...).Slice()
	if addName && (err != nil || res[0].(int64) != 1) {
		s.forget(names, rec.Integration)
	}
	if err != nil {
		return fmt.Errorf("create record: %w", err)
	}
	if res[0].(int64) == 1 {
		return nil
	}
	existing, err := decodeRecord(true, res[1], res[2], res[3], res[4], res[6], res[7])
	if err != nil {
		return err
	}
	fp, _ := res[5].(string)
	return &ExistsError{Record: existing, Fingerprint: fp}
}

// Get returns a record.
func (s *Store) Get(ctx context.Context, tenant, id string) (*Record, error) {
	rec, _, err := s.get(ctx, tenant, id)
	return rec, err
}

// CreatedVersion is the version of a record as Create writes it: a write
// expecting it succeeds only if nothing changed the record since.
const CreatedVersion = 1

// GetVersion returns a record and its version, for a later Write.
func (s *Store) GetVersion(ctx context.Context, tenant, id string) (*Record, int64, error) {
	return s.get(ctx, tenant, id)
}

func (s *Store) get(ctx context.Context, tenant, id string) (*Record, int64, error) {
	key := rediskeys.Record(tenant, id)
	v, err := s.rdb.HMGet(ctx, key, "rec", "full", "status", "run", "v", "wh", "rb").Result()
	if err != nil {
		return nil, 0, fmt.Errorf("get record: %w", err)
	}
	if v[0] == nil && s.moveLegacy(ctx, tenant, id) {
		if v, err = s.rdb.HMGet(ctx, key, "rec", "full", "status", "run", "v", "wh", "rb").Result(); err != nil {
			return nil, 0, fmt.Errorf("get record: %w", err)
		}
	}
	if v[0] == nil {
		return nil, 0, ErrNotFound
	}
	rec, err := decodeRecord(true, v[0], v[1], v[2], v[3], v[5], v[6])
	if err != nil {
		return nil, 0, err
	}
	ver, _ := strconv.ParseInt(fmt.Sprint(v[4]), 10, 64)
	return rec, ver, nil
}

// RunMarker describes the attempt a worker is making, kept beside the record
// while it runs so a lost worker's attempt is not forgotten.
type RunMarker struct {
	Attempt   int       `json:"attempt"`
	StartedAt time.Time `json:"started_at"`
	Worker    string    `json:"worker,omitempty"`
}

// recordDetail is what a record holds beyond its summary: the hash's
// "full" field.
type recordDetail struct {
	Response *Response `json:"response"`
	History  []Attempt `json:"history"`
}

// storedSummary is a Record as the hash's "rec" field holds it: the same
// fields (a conversion from Record, so that the two cannot drift apart)
// with every empty one left out. Decoded into a Record, an absent field is
// the zero value it stood for; the API's JSON, which shows them as null or
// 0, is Record's own. A new record's summary is about a quarter shorter, a
// finished one's a tenth: fewer bytes for Redis to take, copy into Lua
// strings and keep.
type storedSummary struct {
	CorrelationID string        `json:"correlation_id"`
	Tenant        string        `json:"tenant"`
	Status        Status        `json:"status"`
	Integration   string        `json:"integration"`
	Method        string        `json:"method"`
	Path          string        `json:"path"`
	Credential    string        `json:"credential,omitempty"`
	Queue         string        `json:"queue,omitempty"`
	Attempts      int           `json:"attempts,omitempty"`
	MaxAttempts   int           `json:"max_attempts,omitempty"`
	Response      *Response     `json:"response,omitempty"`
	Error         *CallError    `json:"error,omitempty"`
	History       []Attempt     `json:"history,omitempty"`
	CreatedAt     time.Time     `json:"created_at"`
	StartedAt     *time.Time    `json:"started_at,omitempty"`
	CompletedAt   *time.Time    `json:"completed_at,omitempty"`
	NextAttemptAt *time.Time    `json:"next_attempt_at,omitempty"`
	Note          string        `json:"note,omitempty"`
	Webhook       *WebhookState `json:"webhook,omitempty"`
	ReplayOf      string        `json:"replay_of,omitempty"`
	ReplayedBy    string        `json:"replayed_by,omitempty"`
	Schedule      string        `json:"schedule,omitempty"`
	Trace         *TraceContext `json:"trace,omitempty"`
}

// encodeSummary is the JSON of rec's summary as the hash's "rec" field
// holds it.
func encodeSummary(rec *Record) ([]byte, error) {
	return marshal((*storedSummary)(rec.Summary()))
}

// encodeRecord returns the JSON of rec's summary and of its detail, the
// hash's "rec" and "full" fields. The detail is nil when rec has neither a
// response nor history (a new record), unless always is set.
func encodeRecord(rec *Record, always bool) (sum, full []byte, err error) {
	if sum, err = encodeSummary(rec); err != nil {
		return nil, nil, err
	}
	if always || rec.Response != nil || len(rec.History) > 0 {
		if full, err = marshal(recordDetail{Response: rec.Response, History: rec.History}); err != nil {
			return nil, nil, err
		}
	}
	return sum, full, nil
}

// decodeRecord assembles a record from its hash fields: the summary's JSON
// and, for the whole record, the detail's over it, overlaid with the
// authoritative status, the running attempt, the webhook state and the
// latest replay. A whole record without detail has an empty history.
func decodeRecord(whole bool, recv, fullv, statusv, runv, whv, rbv any) (*Record, error) {
	recs, _ := recv.(string)
	rec := &Record{}
	if err := unmarshal([]byte(recs), rec); err != nil {
		return nil, fmt.Errorf("decode record: %w", err)
	}
	if whole {
		if fulls, _ := fullv.(string); fulls != "" {
			rec.Response = nil // the detail's replaces the summary's
			if err := unmarshal([]byte(fulls), rec); err != nil {
				return nil, fmt.Errorf("decode record: %w", err)
			}
		}
		if rec.History == nil {
			rec.History = []Attempt{}
		}
	}
	if st, _ := statusv.(string); st != "" {
		rec.Status = Status(st)
	}
	if rec.Status != StatusRetrying {
		rec.Note = "" // the wait it explained is over (Begin marks running without rewriting rec)
	}
	if rec.Status == StatusRunning {
		rec.NextAttemptAt = nil // so is the wait itself
	}
	if runs, _ := runv.(string); runs != "" && rec.Status == StatusRunning {
		var run RunMarker
		if json.Unmarshal([]byte(runs), &run) == nil && rec.StartedAt == nil {
			t := run.StartedAt
			rec.StartedAt = &t
		}
	}
	if whs, _ := whv.(string); whs != "" {
		var wh WebhookState
		if json.Unmarshal([]byte(whs), &wh) == nil {
			rec.Webhook = &wh
		}
	}
	if rb, _ := rbv.(string); rb != "" {
		rec.ReplayedBy = rb
	}
	return rec, nil
}

var beginScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'rec', 'full', 'status', 'run', 'v', 'wh', 'rb')
if not v[1] then return {-1} end
local st = v[3]
if st == 'succeeded' or st == 'failed' or st == 'canceled' then
  return {0, v[1], v[2] or '', st, '', v[6] or '', v[7] or ''}
end
local ver = (tonumber(v[5]) or 0) + 1
redis.call('HSET', KEYS[1], 'status', 'running', 'run', ARGV[1], 'v', ver)
return {ver, v[1], v[2] or '', st, v[4] or ''}
`)

// Begun is a record as a worker found it when it began an attempt.
type Begun struct {
	// Record is the record before this attempt (status as it was).
	Record *Record
	// Version is the record's version; pass it to Write.
	Version int64
	// Lost is the marker of an attempt that was running when its worker
	// died (the record was still running when this attempt began).
	Lost *RunMarker
}

// Begin marks the call running for the attempt described by run, in one
// round trip. It returns a *FinishedError holding the record if the call is
// already terminal (canceled before it ran, say) and ErrNotFound if the
// record is gone.
func (s *Store) Begin(ctx context.Context, tenant, id string, run RunMarker) (*Begun, error) {
	mb, _ := json.Marshal(run)
	keys := []string{rediskeys.Record(tenant, id)}
	res, err := beginScript.Run(ctx, s.rdb, keys, mb).Slice()
	if err == nil && res[0].(int64) == -1 && s.moveLegacy(ctx, tenant, id) {
		res, err = beginScript.Run(ctx, s.rdb, keys, mb).Slice()
	}
	if err != nil {
		return nil, fmt.Errorf("begin attempt: %w", err)
	}
	ver := res[0].(int64)
	if ver == -1 {
		return nil, ErrNotFound
	}
	var wh, rb any
	if len(res) > 6 {
		wh, rb = res[5], res[6]
	}
	rec, err := decodeRecord(true, res[1], res[2], res[3], nil, wh, rb)
	if err != nil {
		return nil, err
	}
	if ver == 0 {
		return nil, &FinishedError{Record: rec}
	}
	b := &Begun{Record: rec, Version: ver}
	if runs, _ := res[4].(string); runs != "" && rec.Status == StatusRunning {
		var lost RunMarker
		if json.Unmarshal([]byte(runs), &lost) == nil {
			b.Lost = &lost
		}
	}
	return b, nil
}

// writeScript's arguments are the summary, status, TTL, expected version
// and detail (empty: keep the stored one), then, for a terminal write (the
// index keys in KEYS[2] and KEYS[3]), the index member and the completion
// message: a write that is not terminal passes neither (see createScript).
// A terminal write that also ends the call's asynq task (WriteDone) passes
// asynq's Done keys in KEYS[4..8] (rediskeys.AsynqDoneKeys) and the task ID,
// the day count's expiry and the largest int64 after the rest: the script
// then does what asynq's Done does, once the record is written, and
// returns 2; 1 when the task was no longer active (asynq's recoverer took it
// back, and asynq ends it as it would).
var writeScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'status', 'v', 'w')
if not v[1] then return -1 end
if v[1] == 'succeeded' or v[1] == 'failed' or v[1] == 'canceled' then return 0 end
if ARGV[4] ~= '' and v[2] ~= ARGV[4] then return -2 end
-- 'run' is emptied rather than deleted: one command instead of two. One
-- HSET either way: with no detail the stored one stands (WriteSummary).
local ver = (tonumber(v[2]) or 0) + 1
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'rec', ARGV[1], 'full', ARGV[5], 'status', ARGV[2], 'run', '', 'v', ver)
else
  redis.call('HSET', KEYS[1], 'rec', ARGV[1], 'status', ARGV[2], 'run', '', 'v', ver)
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if #KEYS > 1 then
  redis.call('ZREM', KEYS[2], ARGV[6])
  redis.call('ZADD', KEYS[3], 0, ARGV[6])
  -- Published only when a waiter marked the call (waitScript): it is
  -- read with the status, so the check costs no command.
  if v[3] then redis.call('PUBLISH', '` + rediskeys.DoneChannel + `', ARGV[7]) end
end
if #KEYS > 3 then
  -- asynq's Done (v0.26), but for its errors: a task no longer active is
  -- left to asynq.
  if redis.call('LREM', KEYS[4], 0, ARGV[8]) == 0 then return 1 end
  redis.call('ZREM', KEYS[5], ARGV[8])
  redis.call('DEL', KEYS[6])
  if redis.call('INCR', KEYS[7]) == 1 then redis.call('EXPIREAT', KEYS[7], ARGV[9]) end
  if tonumber(redis.call('GET', KEYS[8])) == tonumber(ARGV[10]) then
    redis.call('SET', KEYS[8], 1)
  else
    redis.call('INCR', KEYS[8])
  end
  return 2
end
return 1
`)

// Write replaces the record, unless it is terminal (ErrFinished), gone
// (ErrNotFound) or, when version is not zero, changed since that version
// (ErrChanged). A terminal write sets the result TTL, moves the call from
// its shard's open index to its status's, and wakes waiters (Wait): it
// publishes only the completion of a call someone waits for.
func (s *Store) Write(ctx context.Context, rec *Record, version int64) error {
	_, err := s.write(ctx, rec, version, true, nil)
	return err
}

// AsynqTask names the asynq task of a call's run: its queue and ID, as
// asynq.GetQueueName and asynq.GetTaskID give them to the handler.
type AsynqTask struct {
	Queue, ID string
}

// asynqStatsTTL is how long asynq keeps a day's processed count (its
// internal/rdb statsTTL).
const asynqStatsTTL = 90 * 24 * time.Hour

// WriteDone is Write of a terminal record that also ends the run's asynq
// task as asynq's Done would (off its active list and lease set, its hash
// deleted, counted processed), in the same script: the record says the
// call finished exactly when its task stops being active, and the task
// costs no round trip of its own. done says the task was ended; it is not
// when the task was no longer active (asynq's recoverer took it back), or
// on Redis Cluster, where the task's keys are in another slot than the
// record's and WriteDone is Write.
func (s *Store) WriteDone(ctx context.Context, rec *Record, version int64, task AsynqTask) (done bool, err error) {
	if !rec.Status.Terminal() {
		return false, fmt.Errorf("tasks: WriteDone of a record that is %s, not terminal", rec.Status)
	}
	if s.cluster {
		return false, s.Write(ctx, rec, version)
	}
	return s.write(ctx, rec, version, true, &task)
}

// WriteSummary is Write of a record whose detail (response and history) is
// the one stored: it writes the rest, and leaves the detail as it is. A
// change of status alone (a call held back by a gate, every second or two
// while it waits) then does not send a response of up to a megabyte to
// Redis each time. It must not be given a record whose history or response
// changed since it was read.
func (s *Store) WriteSummary(ctx context.Context, rec *Record, version int64) error {
	_, err := s.write(ctx, rec, version, false, nil)
	return err
}

// write is Write, WriteSummary and WriteDone; done says task was ended.
func (s *Store) write(ctx context.Context, rec *Record, version int64, detail bool, task *AsynqTask) (done bool, err error) {
	var sum, full []byte
	if detail {
		sum, full, err = encodeRecord(rec, true)
	} else {
		sum, err = encodeSummary(rec) // the detail stored stands
	}
	if err != nil {
		return false, err
	}
	ttl := s.cfg.PendingTTL
	keys := []string{rediskeys.Record(rec.Tenant, rec.CorrelationID)}
	if rec.Status.Terminal() {
		ttl = s.cfg.ResultTTL
		shard := rediskeys.Shard(rec.CorrelationID)
		keys = append(keys, rediskeys.Index(rec.Tenant, shard, rediskeys.IndexOpen),
			rediskeys.Index(rec.Tenant, shard, rediskeys.IndexStatus(string(rec.Status), "")))
	} else if rec.NextAttemptAt != nil {
		ttl += time.Until(*rec.NextAttemptAt)
	}
	ver := ""
	if version != 0 {
		ver = strconv.FormatInt(version, 10)
	}
	args := []any{sum, string(rec.Status), ttl.Milliseconds(), ver, full}
	if len(keys) > 1 {
		args = append(args, indexMember(rec.CreatedAt, rec.CorrelationID), rec.Tenant+":"+rec.CorrelationID)
		if task != nil {
			now := time.Now()
			keys = append(keys, rediskeys.AsynqDoneKeys(task.Queue, task.ID, now)...)
			args = append(args, task.ID, now.Add(asynqStatsTTL).Unix(), int64(math.MaxInt64))
		}
	}
	n, err := writeScript.Run(ctx, s.rdb, keys, args...).Int()
	if err == nil && n == -1 && s.moveLegacy(ctx, rec.Tenant, rec.CorrelationID) {
		n, err = writeScript.Run(ctx, s.rdb, keys, args...).Int()
	}
	if err != nil {
		return false, fmt.Errorf("write record: %w", err)
	}
	switch n {
	case -1:
		return false, ErrNotFound
	case 0:
		return false, ErrFinished
	case -2:
		return false, ErrChanged
	}
	return n == 2, nil
}

// Update reads the record, applies fn and writes it back if nothing changed
// in between, trying again a few times if something did. fn returning an
// error aborts the update with that error. A record that is or becomes
// terminal is left alone: a *FinishedError holding it as it finished.
func (s *Store) Update(ctx context.Context, tenant, id string, fn func(*Record) error) (*Record, error) {
	for range 10 {
		rec, ver, err := s.get(ctx, tenant, id)
		if err != nil {
			return nil, err
		}
		if rec.Status.Terminal() {
			return nil, &FinishedError{Record: rec}
		}
		if err := fn(rec); err != nil {
			return nil, err
		}
		switch err := s.Write(ctx, rec, ver); {
		case errors.Is(err, ErrChanged):
			continue
		case errors.Is(err, ErrFinished):
			cur, gerr := s.Get(ctx, tenant, id)
			if gerr != nil {
				return nil, gerr
			}
			return nil, &FinishedError{Record: cur}
		case err != nil:
			return nil, err
		}
		return rec, nil
	}
	return nil, ErrChanged
}

var webhookScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'wh', ARGV[1])
return 1
`)

// SetWebhook records the delivery state of a call's webhook. The record may
// have expired meanwhile (deliveries are retried for about a day): then
// there is nothing to update and it returns ErrNotFound.
func (s *Store) SetWebhook(ctx context.Context, tenant, id string, state *WebhookState) error {
	b, err := json.Marshal(state)
	if err != nil {
		return err
	}
	keys := []string{rediskeys.Record(tenant, id)}
	n, err := webhookScript.Run(ctx, s.rdb, keys, b).Int()
	if err == nil && n == 0 && s.moveLegacy(ctx, tenant, id) {
		n, err = webhookScript.Run(ctx, s.rdb, keys, b).Int()
	}
	if err != nil {
		return fmt.Errorf("write webhook state: %w", err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

var swapWebhookScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if (redis.call('HGET', KEYS[1], 'wh') or '') ~= ARGV[1] then return -2 end
redis.call('HSET', KEYS[1], 'wh', ARGV[2])
return 1
`)

// ReplaceWebhook runs queue and then records state as the call's webhook
// state, unless the state changed after queue began: a delivery queue made
// may already have written its outcome, which state must not overwrite.
// It returns queue's error, without writing, or ErrNotFound.
func (s *Store) ReplaceWebhook(ctx context.Context, tenant, id string, state *WebhookState, queue func() error) error {
	b, err := json.Marshal(state)
	if err != nil {
		return err
	}
	key := rediskeys.Record(tenant, id)
	prev, err := s.rdb.HGet(ctx, key, "wh").Result()
	if errors.Is(err, redis.Nil) && s.moveLegacy(ctx, tenant, id) {
		prev, err = s.rdb.HGet(ctx, key, "wh").Result()
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read webhook state: %w", err)
	}
	if err := queue(); err != nil {
		return err
	}
	n, err := swapWebhookScript.Run(ctx, s.rdb, []string{key}, prev, b).Int()
	if err != nil {
		return fmt.Errorf("write webhook state: %w", err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

var deleteScript = redis.NewScript(`
redis.call('DEL', KEYS[1])
for i = 2, #KEYS do redis.call('ZREM', KEYS[i], ARGV[1]) end
return 1
`)

// Delete removes a record (used to undo a Create whose task could not be
// enqueued) and its index entries: left, they would count in Count until
// Prune reached them, which may be a day later.
func (s *Store) Delete(ctx context.Context, tenant, id string) error {
	key := rediskeys.Record(tenant, id)
	sum, err := s.rdb.HGet(ctx, key, "rec").Result()
	if errors.Is(err, redis.Nil) {
		return s.rdb.Del(ctx, key).Err()
	}
	if err != nil {
		return fmt.Errorf("delete record: %w", err)
	}
	rec, err := decodeRecord(false, sum, nil, nil, nil, nil, nil)
	if err != nil {
		return err
	}
	rec.Tenant, rec.CorrelationID = tenant, id
	keys := createKeys(rec)
	if err := deleteScript.Run(ctx, s.rdb, keys, indexMember(rec.CreatedAt, id)).Err(); err != nil {
		return fmt.Errorf("delete record: %w", err)
	}
	return nil
}

var waitScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'rec', 'full', 'status', 'run', 'wh', 'rb')
if not v[1] then return {0} end
local st = v[3]
if st ~= 'succeeded' and st ~= 'failed' and st ~= 'canceled' then redis.call('HSET', KEYS[1], 'w', 1) end
return {1, v[1], v[2] or '', st or '', v[4] or '', v[5] or '', v[6] or ''}
`)

// getWaited is Get, marking an unfinished call as waited for in the same
// script: its terminal write (writeScript) then publishes its completion.
// The mark and the read are one step, so a write either comes after the
// mark (and publishes) or before the read (which sees it terminal).
func (s *Store) getWaited(ctx context.Context, tenant, id string) (*Record, error) {
	keys := []string{rediskeys.Record(tenant, id)}
	res, err := waitScript.Run(ctx, s.rdb, keys).Slice()
	if err == nil && res[0].(int64) == 0 && s.moveLegacy(ctx, tenant, id) {
		res, err = waitScript.Run(ctx, s.rdb, keys).Slice()
	}
	if err != nil {
		return nil, fmt.Errorf("get record: %w", err)
	}
	if res[0].(int64) == 0 {
		return nil, ErrNotFound
	}
	return decodeRecord(true, res[1], res[2], res[3], res[4], res[5], res[6])
}

// Wait returns the record once it is terminal, or ctx's error (with the
// record as it stands) when ctx ends first. It is woken by pub/sub, not by
// polling: it subscribes, then marks the call waited for (getWaited), so
// that its terminal write publishes.
func (s *Store) Wait(ctx context.Context, tenant, id string) (*Record, error) {
	w, err := s.notifier.subscribe(ctx, tenant+":"+id)
	if err != nil {
		return nil, expired(ctx, err)
	}
	defer s.notifier.unsubscribe(w)
	rec, err := s.getWaited(ctx, tenant, id)
	if err != nil {
		return nil, expired(ctx, err)
	}
	for !rec.Status.Terminal() {
		select {
		case <-w.ch:
		case <-ctx.Done():
			return rec, ctx.Err()
		}
		// A wake-up may come from a lost connection (every waiter reads its
		// record again then); while Redis is away, keep the last record
		// read and wait on, rather than fail a waiter an outage would not.
		switch cur, err := s.Get(ctx, tenant, id); {
		case err == nil:
			rec = cur
		case errors.Is(err, ErrNotFound):
			return nil, err
		default:
			select {
			case w.ch <- struct{}{}: // read again shortly
			default:
			}
			select {
			case <-time.After(250 * time.Millisecond):
			case <-ctx.Done():
				return rec, ctx.Err()
			}
		}
	}
	return rec, nil
}

// expired returns ctx's error in place of err when ctx has ended or its
// deadline has passed: a Redis read given that deadline times out ("i/o
// timeout") a moment before the context reports it, and a caller told so
// would take the store for unreachable when only the wait ran out.
func expired(ctx context.Context, err error) error {
	if errors.Is(err, ErrNotFound) {
		return err
	}
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return err
}

// notifier holds one subscription to the completion channel per process and
// hands each message to the local waiters of that call. One shared
// subscription costs no round trip per wait and cannot miss a completion
// between subscribing and reading the record.
type notifier struct {
	rdb     redis.UniversalClient
	channel string

	mu      sync.Mutex
	sub     *subscription // nil until the first wait, and after a failed attempt
	closed  bool
	waiters map[string]map[*waiter]struct{}
}

type waiter struct {
	key string
	ch  chan struct{}
}

func newNotifier(rdb redis.UniversalClient, channel string) *notifier {
	return &notifier{rdb: rdb, channel: channel, waiters: map[string]map[*waiter]struct{}{}}
}

func (n *notifier) subscribe(ctx context.Context, key string) (*waiter, error) {
	if err := n.start(ctx); err != nil {
		return nil, err
	}
	w := &waiter{key: key, ch: make(chan struct{}, 1)}
	n.mu.Lock()
	if n.waiters[key] == nil {
		n.waiters[key] = map[*waiter]struct{}{}
	}
	n.waiters[key][w] = struct{}{}
	n.mu.Unlock()
	return w, nil
}

func (n *notifier) unsubscribe(w *waiter) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.waiters[w.key], w)
	if len(n.waiters[w.key]) == 0 {
		delete(n.waiters, w.key)
	}
}

// subscribeTimeout bounds the wait for Redis to confirm the subscription.
// It is the subscription's own, not its first waiter's: a waiter with a
// short deadline must not fail the subscription others wait on.
const subscribeTimeout = 10 * time.Second

// subscription is one attempt at subscribing to the completion channel.
type subscription struct {
	ps    *redis.PubSub
	ready chan struct{} // closed when Redis confirmed or the attempt failed
	err   error         // why it failed; set before ready is closed
	done  chan struct{} // closed when its loop has returned
}

// start subscribes once and waits for Redis to confirm, so that every
// completion published after the caller reads the record reaches it. The
// caller stops waiting when ctx ends; the subscription goes on without it.
func (n *notifier) start(ctx context.Context) error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return errors.New("subscribe to completions: the store is closed")
	}
	sub := n.sub
	if sub == nil {
		sub = &subscription{
			ps:    n.rdb.Subscribe(context.WithoutCancel(ctx), n.channel),
			ready: make(chan struct{}),
			done:  make(chan struct{}),
		}
		n.sub = sub
		go n.run(sub)
	}
	n.mu.Unlock()
	select {
	case <-sub.ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	if sub.err != nil {
		return fmt.Errorf("subscribe to completions: %w", sub.err)
	}
	return nil
}

// run waits for the subscription's confirmation, then hands out messages
// until the subscription is closed. A failed subscription is forgotten, so
// that the next waiter tries again.
func (n *notifier) run(sub *subscription) {
	defer close(sub.done)
	ctx, cancel := context.WithTimeout(context.Background(), subscribeTimeout)
	_, err := sub.ps.Receive(ctx)
	cancel()
	if err != nil {
		_ = sub.ps.Close()
		n.mu.Lock()
		if n.sub == sub {
			n.sub = nil
		}
		n.mu.Unlock()
		sub.err = err
		close(sub.ready)
		return
	}
	close(sub.ready)
	n.loop(sub.ps)
}

func (n *notifier) loop(ps *redis.PubSub) {
	for {
		msg, err := ps.Receive(context.Background())
		if err != nil {
			if errors.Is(err, redis.ErrClosed) {
				return
			}
			// go-redis reconnects and resubscribes on the next Receive;
			// completions published meanwhile were missed, so every waiter
			// reads its record again.
			n.wakeAll()
			time.Sleep(50 * time.Millisecond)
			continue
		}
		switch m := msg.(type) {
		case *redis.Message:
			n.wake(m.Payload)
		case *redis.Subscription:
			n.wakeAll() // a resubscription after a reconnect
		}
	}
}

func (n *notifier) wake(key string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for w := range n.waiters[key] {
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
}

func (n *notifier) wakeAll() {
	n.mu.Lock()
	keys := make([]string, 0, len(n.waiters))
	for k := range n.waiters {
		keys = append(keys, k)
	}
	n.mu.Unlock()
	for _, k := range keys {
		n.wake(k)
	}
}

func (n *notifier) close() error {
	n.mu.Lock()
	sub := n.sub
	n.closed = true
	n.mu.Unlock()
	if sub == nil {
		return nil
	}
	err := sub.ps.Close()
	<-sub.done
	return err
}
