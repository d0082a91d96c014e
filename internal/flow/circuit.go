package flow

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/internal/watch"
	"github.com/callq/callq/tasks"
)

// State is a circuit's state.
type State string

// A circuit's states. A closed circuit lets calls through and counts their
// failures; an open one holds them until its cooldown has passed; a
// half-open one lets one probe call through and holds the rest until the
// probe's outcome closes or opens it.
const (
	Closed   State = "closed"
	Open     State = "open"
	HalfOpen State = "half_open"
)

// Gauge is the state as a number, for a Prometheus gauge: 0 closed, 1
// half-open, 2 open. The worse of two states is the greater.
func (s State) Gauge() float64 {
	switch s {
	case Open:
		return 2
	case HalfOpen:
		return 1
	}
	return 0
}

// Result is what an attempt tells a circuit about its upstream.
type Result int

const (
	// Neutral says nothing of the upstream: no request was made (a later
	// gate held the call, the credential could not be read), or it was
	// interrupted (canceled, drained), or it failed for a reason of its own
	// (a TLS verification error).
	Neutral Result = iota
	// Answered is an answer that is not a failure: a 2xx, a 3xx, or a 4xx
	// but 429. It ends a run of failures.
	Answered
	// Failed is a retryable failure of the upstream: a connection error, a
	// timeout, a 5xx or a 429.
	Failed
)

func (r Result) arg() string {
	switch r {
	case Answered:
		return "a"
	case Failed:
		return "f"
	}
	return "n"
}

// Circuit is one circuit breaker: a tenant's calls to an integration, or
// with one credential when the integration's breaker is per credential.
// Each tenant has its own circuits: one tenant's failures (a revoked key, a
// flood of bad requests) never hold another's calls.
type Circuit struct {
	Tenant      string
	Integration string
	// Credential is the calls' credential ("" for none); it is ignored
	// unless Breaker is per credential.
	Credential string
	// Breaker is the integration's circuit_breaker. Required.
	Breaker *tasks.CircuitBreaker

	k string // key's answer, once asked
}

func (c *Circuit) key() string {
	if c.k == "" {
		c.k = rediskeys.Circuit(c.Tenant, c.Integration, c.Breaker.PerCredential(), c.Credential)
	}
	return c.k
}

// member is the circuit's name in the tenant's set of per-credential
// circuits not closed, or "" for a circuit per integration (not in it).
func (c *Circuit) member() string {
	if !c.Breaker.PerCredential() {
		return ""
	}
	return rediskeys.CircuitMember(c.Integration, c.Credential)
}

// Circuits keeps circuit breakers' state in Redis, shared by the fleet:
// one hash per circuit (rediskeys.Circuit), changed only by two scripts,
// Check before a call and Report after it, each one round trip on the
// tenant's slot. A circuit that is closed with no failure counted has no
// hash at all. Times are Redis's (TIME), so the workers' clocks need not
// agree. Circuits is safe for concurrent use.
//
// With CircuitsConfig.Remember, and Watch running, Check answers from
// memory for a circuit it lately found closed with no failure counted (the
// usual state of a healthy integration), so such calls make no round trip
// at all; every opening is published (rediskeys.CircuitChannel), and Watch
// forgets what it remembered when it hears one.
type Circuits struct {
	rdb    redis.UniversalClient
	memory time.Duration // CircuitsConfig.Remember

	mu sync.Mutex
	// quiet maps the key of a circuit Check found closed with no failure
	// counted to when that answer stops being trusted.
	quiet map[string]time.Time
	// gen counts forget-alls: an answer read from Redis before one is not
	// remembered after it.
	gen uint64
	// live says Watch is subscribed: without it an opening elsewhere would
	// go unheard, so nothing is remembered.
	live bool
	// answered maps the key of a circuit to the last answer this process
	// saw from its upstream without reporting it (Answered), and the
	// circuit's window, past which it no longer matters.
	answered map[string]answer
}

// answer is an unreported answer of a circuit's upstream (Answered).
type answer struct {
	at     time.Time // monotonic
	window time.Duration
}

// CircuitsConfig configures Circuits.
type CircuitsConfig struct {
	// Remember is how long Check may answer from memory for a circuit it
	// found closed with no failure counted, while Watch runs. An opening
	// anywhere in the fleet ends it within the time a published message
	// takes, a failure this process reports at once; Remember bounds the
	// rest (a message lost while the subscription reconnects is covered by
	// forgetting everything then). Default 0: Check asks Redis every time.
	Remember time.Duration
}

// NewCircuits returns the circuit breakers kept in rdb.
func NewCircuits(rdb redis.UniversalClient, cfg *CircuitsConfig) *Circuits {
	if cfg == nil {
		cfg = &CircuitsConfig{}
	}
	return &Circuits{rdb: rdb, memory: max(cfg.Remember, 0), quiet: map[string]time.Time{}, answered: map[string]answer{}}
}

// idleKeep is how long an open or half-open circuit nobody calls is kept
// after its cooldown: it then closes by expiring, rather than stay in Redis
// for good once its integration or credential is gone.
const idleKeep = 24 * time.Hour

// probeRecheck bounds how long a call held by a half-open circuit waits
// before it checks again: probes are usually quick, and the calls should
// follow soon after one closes the circuit.
const probeRecheck = time.Second

// The hash's fields:
//
//	s   "open" or "half"; absent: closed
//	n   consecutive failures counted (closed: within the window)
//	ts  closed: the times (ms) of those failures, oldest first, space-separated
//	at  open, half: when it opened (ms)
//	np  open, half: when its probe may go (ms)
//	pt  half: the probe's token
//	pe  half: when the probe's lease ends (ms); 0 once the probe said nothing
//
// checkScript lets a call through or says how long to wait. KEYS[1] the
// hash. ARGV[1] the probe's lease (ms), ARGV[2] the token of a probe this
// call would be, ARGV[3] how long to keep an open circuit (ms). It answers
// {code, failures, opened_at, next_probe_at, wait}; code 0 closed (go), 1
// half-open with a probe under way (wait), 2 open (wait), 3 this call is
// the probe and the circuit just became half-open, 4 this call is the probe
// in place of one whose lease ended.
var checkScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 's', 'n', 'at', 'np', 'pe')
if not v[1] then
  return {0, tonumber(v[2]) or 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n, at, np = tonumber(v[2]), tonumber(v[3]), tonumber(v[4])
if v[1] == 'open' then
  if now < np then
    return {2, n, at, np, np - now}
  end
  redis.call('HSET', KEYS[1], 's', 'half', 'pt', ARGV[2], 'pe', now + tonumber(ARGV[1]))
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {3, n, at, np, 0}
end
local pe = tonumber(v[5]) or 0
if now >= pe then
  redis.call('HSET', KEYS[1], 'pt', ARGV[2], 'pe', now + tonumber(ARGV[1]))
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {4, n, at, np, 0}
end
return {1, n, at, np, pe - now}
`)

// reportScript counts an attempt's result. KEYS[1] the hash, KEYS[2] the
// tenant's set of per-credential circuits not closed. ARGV[1] the result
// ("a" answered, "f" failed, "n" neutral), ARGV[2] the probe's token ("" if
// the call was not the probe), ARGV[3] the failures that open the circuit,
// ARGV[4] the window (ms), ARGV[5] the cooldown (ms), ARGV[6] the circuit's
// member of KEYS[2] ("" for a circuit per integration), ARGV[7] how long
// to keep an open circuit (ms), ARGV[8] the channel an opening is published
// on (rediskeys.CircuitChannel: a channel is not a key), ARGV[9] how long
// ago (ms) the reporting process last saw an answer it did not report
// (Answered; -1 for none): failures counted before that answer are not in
// a run with this one. It answers {code, failures, opened_at,
// next_probe_at}: code 0 no change, 1 closed (the probe answered), 2 opened
// again (the probe failed), 3 opened (failures enough in the window).
//
// A report is stale, and changes nothing, when the circuit has moved since
// its call was let through: a call let through while the circuit was
// closed reports to a closed circuit only, and a probe to the half-open
// circuit whose token it holds only.
var reportScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 's', 'n', 'ts', 'pt')
local res, probe = ARGV[1], ARGV[2]
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function open(n, code)
  local at = now()
  local np = at + tonumber(ARGV[5])
  redis.call('HSET', KEYS[1], 's', 'open', 'n', n, 'at', at, 'np', np)
  redis.call('HDEL', KEYS[1], 'ts', 'pt', 'pe')
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
  if ARGV[6] ~= '' then
    redis.call('SADD', KEYS[2], ARGV[6])
  end
  redis.call('PUBLISH', ARGV[8], KEYS[1])
  return {code, n, at, np}
end
if probe ~= '' then
  if v[1] ~= 'half' or v[4] ~= probe then
    return {0}
  end
  if res == 'a' then
    redis.call('DEL', KEYS[1])
    if ARGV[6] ~= '' then
      redis.call('SREM', KEYS[2], ARGV[6])
    end
    return {1, 0}
  end
  if res == 'f' then
    return open((tonumber(v[2]) or 0) + 1, 2)
  end
  redis.call('HSET', KEYS[1], 'pe', 0)
  return {0}
end
if v[1] then
  return {0}
end
if res == 'a' then
  if v[2] then
    redis.call('DEL', KEYS[1])
  end
  return {0}
end
if res ~= 'f' then
  return {0}
end
local t = now()
local window, failures = tonumber(ARGV[4]), tonumber(ARGV[3])
local since = tonumber(ARGV[9]) or -1
local kept = {}
for w in string.gmatch(v[3] or '', '%d+') do
  local at = tonumber(w)
  if t - at <= window and (since < 0 or at > t - since) then
    kept[#kept + 1] = w
  end
end
kept[#kept + 1] = string.format('%d', t)
while #kept > failures do
  table.remove(kept, 1)
end
if #kept >= failures then
  return open(#kept, 3)
end
redis.call('HSET', KEYS[1], 'n', #kept, 'ts', table.concat(kept, ' '))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {0, #kept}
`)

// Ticket is Check's answer.
type Ticket struct {
	// Go says the call may be sent. Otherwise it waits Wait and checks
	// again.
	Go bool
	// Probe is the token of the half-open circuit's one probe, when this
	// call is it: Report must be given it.
	Probe string
	// State is the circuit's state once the check was made: a call that
	// goes as the probe sees HalfOpen.
	State State
	// Failures is the consecutive failures counted: in a closed circuit,
	// within the window; in an open one, those that opened it and the
	// failed probes since.
	Failures int
	// OpenedAt is when the circuit opened (zero when closed).
	OpenedAt time.Time
	// NextProbeAt is when an open circuit lets its probe through.
	NextProbeAt time.Time
	// Wait is how long a held call waits before it checks again.
	Wait time.Duration
	// HalfOpened says this check moved the circuit from open to half-open,
	// this call being the probe.
	HalfOpened bool
}

// Quiet says the circuit was closed with no failure counted: an attempt
// that does not fail has nothing to tell it, and need not Report.
func (t Ticket) Quiet() bool { return t.State == Closed && t.Failures == 0 }

// Check asks whether a call may go through c: yes while c is closed; no
// while it is open and its cooldown runs, or while another call probes it;
// yes, as the probe, when the cooldown has passed or the probe's lease
// ended. lease bounds how long the probe may take before another call
// probes in its place (a worker that died with it does not wedge the
// circuit). One round trip, a script reading (and, for a probe, writing)
// the circuit's hash; none when the circuit is remembered quiet
// (CircuitsConfig.Remember).
func (cs *Circuits) Check(ctx context.Context, c *Circuit, lease time.Duration) (Ticket, error) {
	key := c.key()
	gen, known := cs.recall(key)
	if known {
		return Ticket{Go: true, State: Closed}, nil
	}
	token := strconv.FormatUint(rand.Uint64(), 36)
	keep := c.Breaker.Cooldown.D() + lease + idleKeep
	v, err := checkScript.Run(ctx, cs.rdb, []string{key}, lease.Milliseconds(), token, keep.Milliseconds()).Int64Slice()
	if err != nil {
		return Ticket{}, fmt.Errorf("circuit breaker: %w", err)
	}
	if len(v) == 2 && v[0] == 0 {
		if v[1] == 0 {
			cs.remember(key, gen)
		}
		return Ticket{Go: true, State: Closed, Failures: int(v[1])}, nil
	}
	if len(v) != 5 {
		return Ticket{}, fmt.Errorf("circuit breaker: unexpected answer %v", v)
	}
	t := Ticket{Failures: int(v[1]), OpenedAt: time.UnixMilli(v[2]).UTC(), NextProbeAt: time.UnixMilli(v[3]).UTC(),
		Wait: time.Duration(v[4]) * time.Millisecond}
	switch v[0] {
	case 1:
		t.State, t.Wait = HalfOpen, min(t.Wait, probeRecheck)
	case 2:
		t.State = Open
	case 3, 4:
		t.Go, t.Probe, t.State, t.HalfOpened = true, token, HalfOpen, v[0] == 3
	default:
		return Ticket{}, fmt.Errorf("circuit breaker: unexpected answer %v", v)
	}
	return t, nil
}

// Change is a change of a circuit's state that a Report made.
type Change struct {
	From, To State
	// Failures is the consecutive failures counted when it opened.
	Failures int
	// OpenedAt and NextProbeAt are when it opened and when its probe may
	// go (zero when it closed).
	OpenedAt, NextProbeAt time.Time
}

// Report tells c the result of a call Check let through, probe being the
// ticket's Probe. It returns the change of state it made, if any: a closed
// circuit opens after its breaker's Failures failures within its Window,
// with no answer between them; a half-open one closes when its probe
// answers and opens again when it fails; a probe that says nothing
// (Neutral) lets the next call probe at once. One round trip.
func (cs *Circuits) Report(ctx context.Context, c *Circuit, probe string, r Result) (*Change, error) {
	b := c.Breaker
	key := c.key()
	since := int64(-1)
	if r == Failed {
		cs.forget(key) // it counts a failure now: not quiet
		since = cs.answeredAgo(key)
	}
	keep := b.Cooldown.D() + idleKeep
	v, err := reportScript.Run(ctx, cs.rdb, []string{key, rediskeys.Circuits(c.Tenant)},
		r.arg(), probe, b.Failures, b.Window.D().Milliseconds(), b.Cooldown.D().Milliseconds(), c.member(), keep.Milliseconds(),
		rediskeys.CircuitChannel, since).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("circuit breaker: %w", err)
	}
	if len(v) == 0 {
		return nil, errors.New("circuit breaker: empty answer")
	}
	switch v[0] {
	case 0:
		return nil, nil
	case 1:
		return &Change{From: HalfOpen, To: Closed}, nil
	case 2, 3:
		if len(v) != 4 {
			return nil, fmt.Errorf("circuit breaker: unexpected answer %v", v)
		}
		from := Closed
		if v[0] == 2 {
			from = HalfOpen
		}
		return &Change{From: from, To: Open, Failures: int(v[1]),
			OpenedAt: time.UnixMilli(v[2]).UTC(), NextProbeAt: time.UnixMilli(v[3]).UTC()}, nil
	}
	return nil, fmt.Errorf("circuit breaker: unexpected answer %v", v)
}

// Answered notes, in this process only, that a call let through c got an
// answer its caller does not Report: one let through while c was quiet
// (Ticket.Quiet) has nothing to tell Redis, unless a failure was counted
// since it was let through. This process's next failure reported to c
// carries the note, so that the failures counted before the answer are
// not taken for a run with this one. No round trip.
func (cs *Circuits) Answered(c *Circuit) {
	key, window := c.key(), c.Breaker.Window.D()
	now := time.Now()
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if _, ok := cs.answered[key]; !ok && len(cs.answered) >= maxRemembered {
		for k, a := range cs.answered {
			if now.Sub(a.at) > a.window {
				delete(cs.answered, k) // no failure before it is in its window
			}
		}
		if len(cs.answered) >= maxRemembered {
			return
		}
	}
	cs.answered[key] = answer{at: now, window: window}
}

// answeredAgo is how long ago (ms) key's circuit was last Answered, or -1.
func (cs *Circuits) answeredAgo(key string) int64 {
	cs.mu.Lock()
	a, ok := cs.answered[key]
	cs.mu.Unlock()
	if !ok {
		return -1
	}
	return time.Since(a.at).Milliseconds()
}

// recall says whether key's circuit is remembered quiet, and the
// generation to remember it under if it is not.
func (cs *Circuits) recall(key string) (gen uint64, quiet bool) {
	if cs.memory == 0 {
		return 0, false
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	until, ok := cs.quiet[key]
	return cs.gen, cs.live && ok && time.Now().Before(until)
}

// maxRemembered bounds the circuits remembered at once; past it the
// expired ones are swept.
const maxRemembered = 4096

// remember notes key's circuit quiet, read from Redis at generation gen.
func (cs *Circuits) remember(key string, gen uint64) {
	if cs.memory == 0 {
		return
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if !cs.live || cs.gen != gen {
		return // an opening may have been heard since the read
	}
	now := time.Now()
	if _, ok := cs.quiet[key]; !ok && len(cs.quiet) >= maxRemembered {
		for k, until := range cs.quiet {
			if !now.Before(until) {
				delete(cs.quiet, k)
			}
		}
		if len(cs.quiet) >= maxRemembered {
			return
		}
	}
	cs.quiet[key] = now.Add(cs.memory)
}

func (cs *Circuits) forget(key string) {
	if cs.memory == 0 {
		return
	}
	cs.mu.Lock()
	delete(cs.quiet, key)
	cs.mu.Unlock()
}

// forgetAll forgets every circuit remembered, and says whether the
// subscription that lets Check remember is up.
func (cs *Circuits) forgetAll(live bool) {
	cs.mu.Lock()
	clear(cs.quiet)
	cs.gen++
	cs.live = live
	cs.mu.Unlock()
}

// Watch listens for the fleet's circuit openings until ctx ends, so that
// Check may answer from memory (CircuitsConfig.Remember); without it, Check
// asks Redis every time. Every opening heard, and every break in the
// subscription, forgets all that was remembered: openings are rare, and a
// message missed while reconnecting cannot be told from none.
func (cs *Circuits) Watch(ctx context.Context) {
	if cs.memory == 0 {
		return
	}
	watch.Channel(ctx, cs.rdb, rediskeys.CircuitChannel, func(string) { cs.forgetAll(true) }, cs.forgetAll)
}

// Status is a circuit's state as Read found it.
type Status struct {
	// Credential is the circuit's credential, for a breaker per credential.
	Credential string `json:"credential,omitempty"`
	State      State  `json:"state"`
	// Failures is the consecutive failures counted (see Ticket.Failures).
	Failures int `json:"failures"`
	// OpenedAt is when an open or half-open circuit opened.
	OpenedAt *time.Time `json:"opened_at,omitempty"`
	// NextProbeAt is when an open circuit lets its probe through (a time
	// past means at its next call); while half-open, when the probe began
	// may be later.
	NextProbeAt *time.Time `json:"next_probe_at,omitempty"`
}

// Breakers is one integration's circuits as Read found them.
type Breakers struct {
	// Status is the state of a breaker per integration; for one per
	// credential, the worst state of its circuits (closed when all are).
	Status
	// Credentials are, for a breaker per credential, its circuits that are
	// not closed, by credential.
	Credentials []Status `json:"credentials,omitempty"`
}

// Read returns the state of tenant's circuits of the integrations given,
// by name: of each breaker per integration, its circuit; of each breaker
// per credential, the circuits not closed (the tenant's set of them). Two
// round trips, whatever the number of integrations.
func (cs *Circuits) Read(ctx context.Context, tenant string, breakers map[string]*tasks.CircuitBreaker) (map[string]*Breakers, error) {
	out := make(map[string]*Breakers, len(breakers))
	if len(breakers) == 0 {
		return out, nil
	}
	now := time.Now()
	pipe := cs.rdb.Pipeline()
	reads := map[string]*redis.MapStringStringCmd{}
	perCred := false
	for name, b := range breakers {
		out[name] = &Breakers{Status: Status{State: Closed}}
		if b.PerCredential() {
			perCred = true
			continue
		}
		c := Circuit{Tenant: tenant, Integration: name, Breaker: b}
		reads[name] = pipe.HGetAll(ctx, c.key())
	}
	var members *redis.StringSliceCmd
	if perCred {
		members = pipe.SMembers(ctx, rediskeys.Circuits(tenant))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("circuit breaker: %w", err)
	}
	for name, cmd := range reads {
		out[name].Status = status(cmd.Val(), breakers[name], now)
	}
	if members == nil || len(members.Val()) == 0 {
		return out, nil
	}
	type credRead struct {
		integration, credential, member string
		cmd                             *redis.MapStringStringCmd
	}
	var creds []credRead
	pipe = cs.rdb.Pipeline()
	for _, m := range members.Val() {
		in, cred, ok := rediskeys.ParseCircuitMember(m)
		b := breakers[in]
		if !ok || b == nil || !b.PerCredential() {
			continue // another catalog's, or a breaker since set per integration
		}
		c := Circuit{Tenant: tenant, Integration: in, Credential: cred, Breaker: b}
		creds = append(creds, credRead{in, cred, m, pipe.HGetAll(ctx, c.key())})
	}
	if len(creds) == 0 {
		return out, nil
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("circuit breaker: %w", err)
	}
	var gone []any
	for _, cr := range creds {
		st := status(cr.cmd.Val(), breakers[cr.integration], now)
		if st.State == Closed {
			gone = append(gone, cr.member) // expired while open: nobody called it for a day
			continue
		}
		st.Credential = cr.credential
		b := out[cr.integration]
		b.Credentials = append(b.Credentials, st)
		if st.State.Gauge() > b.State.Gauge() {
			b.State = st.State
		}
	}
	if len(gone) > 0 {
		// Tidy only: a circuit that opens again is added back by its script.
		_ = cs.rdb.SRem(ctx, rediskeys.Circuits(tenant), gone...).Err()
	}
	return out, nil
}

// status reads a circuit's hash as of now.
func status(h map[string]string, b *tasks.CircuitBreaker, now time.Time) Status {
	ms := func(f string) *time.Time {
		n, err := strconv.ParseInt(h[f], 10, 64)
		if err != nil {
			return nil
		}
		t := time.UnixMilli(n).UTC()
		return &t
	}
	n, _ := strconv.Atoi(h["n"])
	switch h["s"] {
	case "open":
		return Status{State: Open, Failures: n, OpenedAt: ms("at"), NextProbeAt: ms("np")}
	case "half":
		return Status{State: HalfOpen, Failures: n, OpenedAt: ms("at"), NextProbeAt: ms("np")}
	}
	// Closed: count the failures still inside the window, as the next
	// report would.
	st := Status{State: Closed}
	for _, f := range strings.Fields(h["ts"]) {
		if at, err := strconv.ParseInt(f, 10, 64); err == nil && now.UnixMilli()-at <= b.Window.D().Milliseconds() {
			st.Failures++
		}
	}
	return st
}
