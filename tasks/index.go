package tasks

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/callq/callq/internal/rediskeys"
)

// The calls index. Each of a tenant's rediskeys.RecordShards shards holds,
// beside its records, sorted sets of "<created_at ms>:<id>" members (score
// 0, read by lex range, so that order is created_at then ID): every call
// to one integration (IndexIntegration), the calls not finished (IndexOpen)
// and the calls finished with each terminal status (IndexStatus), plus the
// set of integration names the shard has seen. Every call is in one
// integration's index and in one of the state indexes (open and the
// statuses'): no index of every call is kept, as these make it. The record
// scripts write them: Create adds a call to its integration's and open (or
// its status's, if it is created finished); a terminal Write
// moves it from open to its status's. Create adds the call's integration to
// the shard's names unless its store did so lately (addDue). Entries of
// expired records are removed by List when it meets them and by Prune.

// ErrBadCursor: a List cursor that List did not make.
var ErrBadCursor = errors.New("tasks: cursor is not valid")

// Filter selects calls by what their summaries hold. The zero Filter
// selects every call.
type Filter struct {
	// Statuses selects calls in any of these statuses; none selects all.
	Statuses []Status
	// Integration selects calls to this integration; "" selects all.
	Integration string
	// Since selects calls created at or after it; zero: no bound.
	Since time.Time
	// Until selects calls created before it; zero: no bound.
	Until time.Time
}

// Validate checks f, naming the field at fault.
func (f *Filter) Validate() error {
	for _, st := range f.Statuses {
		if !slices.Contains(Statuses(), st) {
			return fieldErr("status", "must be one of queued, running, retrying, succeeded, failed, canceled; got %q", st)
		}
	}
	if f.Integration != "" && !ValidID(f.Integration) {
		return fieldErr("integration", "is not a valid integration name")
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return fieldErr("until", "must be after since")
	}
	return nil
}

func (f *Filter) matches(rec *Record) bool {
	if len(f.Statuses) > 0 && !slices.Contains(f.Statuses, rec.Status) {
		return false
	}
	return f.Integration == "" || rec.Integration == f.Integration
}

// Page is one page of List.
type Page struct {
	// Calls are summaries (Record.Summary), newest first.
	Calls []*Record
	// NextCursor continues the list after Calls; "" when nothing is left.
	NextCursor string
}

// List limits.
const (
	DefaultListLimit = 50
	MaxListLimit     = 500
)

// indexMember is a call's member in its shard's indexes.
func indexMember(createdAt time.Time, id string) string {
	ms := max(createdAt.UnixMilli(), 0)
	b := make([]byte, 0, 14+len(id))
	b = strconv.AppendInt(b, ms, 10)
	for len(b) < 13 {
		b = append([]byte{'0'}, b...)
	}
	b = append(b, ':')
	return string(append(b, id...))
}

// memberID is the call ID of an index member.
func memberID(m string) string {
	_, id, _ := strings.Cut(m, ":")
	return id
}

// indexes reports whether m is the index member of rec, not one left by an
// earlier record under the same ID (expired or deleted, and the ID used
// again), which must not be read as this one's.
func indexes(rec *Record, m string) bool {
	return indexMember(rec.CreatedAt, memberID(m)) == m
}

// ceilMilli rounds t up to a millisecond, the index's precision, so that
// an exclusive bound at t keeps every call created before t.
func ceilMilli(t time.Time) time.Time {
	if tt := t.Truncate(time.Millisecond); !tt.Equal(t) {
		return tt.Add(time.Millisecond)
	}
	return t
}

// maxBound is the greatest bound of 13 digits (2286-11-20): a later time
// has more, which would compare below every member.
var maxBound = time.UnixMilli(9_999_999_999_999)

func timeBound(t time.Time) string {
	if t.After(maxBound) {
		t = maxBound
	}
	return indexMember(t, "")[:13]
}

// createKeys are the keys Create's script writes: the record, and the
// shard's integration and open (or status) indexes.
func createKeys(rec *Record) []string {
	shard := rediskeys.Shard(rec.CorrelationID)
	where := rediskeys.IndexOpen
	if rec.Status.Terminal() {
		where = rediskeys.IndexStatus(string(rec.Status), "")
	}
	return []string{
		rediskeys.Record(rec.Tenant, rec.CorrelationID),
		rediskeys.Index(rec.Tenant, shard, rediskeys.IndexIntegration(rec.Integration)),
		rediskeys.Index(rec.Tenant, shard, where),
	}
}

// namesKey is the set of integration names of rec's shard.
func namesKey(rec *Record) string {
	return rediskeys.Index(rec.Tenant, rediskeys.Shard(rec.CorrelationID), rediskeys.IndexNames)
}

// addRefresh is how often a process adds again a member it added to a set
// it keeps up (rediskeys.Tenants, a shard's integration names), in case
// Redis lost it.
const addRefresh = 10 * time.Minute

// addDue reports whether this store is to add member to the set key: it
// has not within addRefresh. It counts the member as added now; forget
// undoes that when the add fails. So the sets cost a command per member
// and process now and then, not per call.
func (s *Store) addDue(key, member string) bool {
	k := key + " " + member
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if last, ok := s.added[k]; ok && now.Sub(last) < addRefresh {
		return false
	}
	s.added[k] = now
	return true
}

// forget undoes addDue's count of member as added to key.
func (s *Store) forget(key, member string) {
	s.mu.Lock()
	delete(s.added, key+" "+member)
	s.mu.Unlock()
}

// registerTenant adds tenant to rediskeys.Tenants when addDue says so. A
// failure is left to the next call's try.
func (s *Store) registerTenant(ctx context.Context, tenant string) {
	if s.addDue(rediskeys.Tenants, tenant) && s.rdb.SAdd(ctx, rediskeys.Tenants, tenant).Err() != nil {
		s.forget(rediskeys.Tenants, tenant)
	}
}

// Tenants returns every tenant that has created a call.
func (s *Store) Tenants(ctx context.Context) ([]string, error) {
	ts, err := s.rdb.SMembers(ctx, rediskeys.Tenants).Result()
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	slices.Sort(ts)
	return ts, nil
}

// source is one index key of one shard that List reads.
type source struct {
	shard int
	key   string
}

// sources are the index keys that hold every call f can select, and
// whether f must still be checked on each summary read.
func (f *Filter) sources(tenant string) ([]source, bool) {
	var names []string
	exact := true
	switch {
	case f.Integration != "":
		names = []string{rediskeys.IndexIntegration(f.Integration)}
		exact = len(f.Statuses) == 0
	case len(f.Statuses) == 0:
		// Every call is in the open index or in its terminal status's.
		names = stateIndexes()
	default:
		open := false
		for _, st := range f.Statuses {
			if st.Terminal() {
				names = append(names, rediskeys.IndexStatus(string(st), ""))
			} else {
				open = true
			}
		}
		if open {
			names = append(names, rediskeys.IndexOpen)
			exact = false
		}
	}
	// Sorted, the open index comes before the status indexes, and a
	// pipeline reads it first: a call that finishes between the two reads
	// is then met twice (and listed once), never missed.
	slices.Sort(names)
	names = slices.Compact(names)
	var out []source
	for shard := range rediskeys.RecordShards {
		for _, n := range names {
			out = append(out, source{shard, rediskeys.Index(tenant, shard, n)})
		}
	}
	return out, exact
}

// encodeCursor and decodeCursor make a cursor of the last member a page
// returned: every page after it holds members below it.
func encodeCursor(member string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(member))
}

func decodeCursor(c string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	m := string(b)
	if err != nil || len(m) < 15 || m[13] != ':' || !ValidID(m[14:]) {
		return "", ErrBadCursor
	}
	if _, err := strconv.ParseUint(m[:13], 10, 64); err != nil {
		return "", ErrBadCursor
	}
	return m, nil
}

// listScan bounds how many index entries one List reads when the filter
// leaves most of them out: a page may then hold fewer calls than asked,
// with a cursor to go on.
func listScan(limit int) int { return max(1000, 20*limit) }

// summaryFields are the fields a summary is read from.
var summaryFields = []string{"rec", "status", "wh", "rb"}

// List returns up to limit (1 to MaxListLimit) summaries of tenant's calls
// that f selects, newest first, from after cursor ("" for the first page).
// Paging with the cursors it returns never repeats or skips a call that
// existed when paging began and that f still selects. A cursor List did not
// make is ErrBadCursor.
func (s *Store) List(ctx context.Context, tenant string, f Filter, cursor string, limit int) (*Page, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	if limit < 1 || limit > MaxListLimit {
		return nil, fieldErr("limit", "must be between 1 and %d", MaxListLimit)
	}
	hi, lo := "+", "-"
	if !f.Until.IsZero() {
		hi = "(" + timeBound(ceilMilli(f.Until))
	}
	if !f.Since.IsZero() {
		lo = "[" + timeBound(f.Since)
	}
	if cursor != "" {
		m, err := decodeCursor(cursor)
		if err != nil {
			return nil, err
		}
		if hi == "+" || m < hi[1:] {
			hi = "(" + m
		}
	}
	srcs, exact := f.sources(tenant)
	page := &Page{Calls: []*Record{}}
	var dangling []source
	var danglingMembers []string
	defer func() {
		if len(dangling) > 0 {
			s.unindex(context.WithoutCancel(ctx), tenant, dangling, danglingMembers)
		}
	}()
	scanned, budget := 0, listScan(limit)
	for {
		n := limit - len(page.Calls)
		if !exact {
			n = min(limit, 100) // most may be left out: read in larger steps
		}
		members, from, more, err := s.scan(ctx, srcs, hi, lo, n)
		if err != nil {
			return nil, err
		}
		if len(members) == 0 {
			return page, nil
		}
		recs, err := s.summaries(ctx, tenant, members)
		if err != nil {
			return nil, err
		}
		for i, rec := range recs {
			scanned++
			hi = "(" + members[i]
			switch {
			case rec == nil:
				dangling, danglingMembers = append(dangling, from[i]), append(danglingMembers, members[i])
			case f.matches(rec):
				page.Calls = append(page.Calls, rec)
			}
			if len(page.Calls) == limit {
				if more || i < len(recs)-1 {
					page.NextCursor = encodeCursor(members[i])
				}
				return page, nil
			}
		}
		if !more {
			return page, nil
		}
		if scanned >= budget {
			page.NextCursor = encodeCursor(hi[1:])
			return page, nil
		}
	}
}

// scan returns, newest first, the n greatest members in (lo, hi) over srcs,
// the source each came from, and whether any source may hold more below.
func (s *Store) scan(ctx context.Context, srcs []source, hi, lo string, n int) ([]string, []source, bool, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringSliceCmd, len(srcs))
	for i, src := range srcs {
		cmds[i] = pipe.ZRangeArgs(ctx, redis.ZRangeArgs{Key: src.key, Start: hi, Stop: lo, ByLex: true, Rev: true, Count: int64(n)})
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, false, fmt.Errorf("read the calls index: %w", err)
	}
	type hit struct {
		m   string
		src source
	}
	var hits []hit
	more := false
	for i, c := range cmds {
		ms := c.Val()
		if len(ms) == n {
			more = true
		}
		for _, m := range ms {
			hits = append(hits, hit{m, srcs[i]})
		}
	}
	slices.SortFunc(hits, func(a, b hit) int { return cmp.Compare(b.m, a.m) })
	hits = slices.CompactFunc(hits, func(a, b hit) bool { return a.m == b.m })
	if len(hits) > n {
		hits, more = hits[:n], true
	}
	members := make([]string, len(hits))
	from := make([]source, len(hits))
	for i, h := range hits {
		members[i], from[i] = h.m, h.src
	}
	return members, from, more, nil
}

// summaries reads the summaries of the calls of members, nil for a call
// whose record has expired (or is another record under the same ID).
func (s *Store) summaries(ctx context.Context, tenant string, members []string) ([]*Record, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(members))
	for i, m := range members {
		cmds[i] = pipe.HMGet(ctx, rediskeys.Record(tenant, memberID(m)), summaryFields...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read summaries: %w", err)
	}
	out := make([]*Record, len(members))
	for i, c := range cmds {
		v := c.Val()
		if v[0] == nil {
			continue
		}
		rec, err := decodeRecord(false, v[0], nil, v[1], nil, v[2], v[3])
		if err != nil {
			return nil, err
		}
		if indexes(rec, members[i]) {
			out[i] = rec
		}
	}
	return out, nil
}

// unindex removes members, found in srcs, from every index of their
// shards: Prune walks only the all index, so an entry left in another
// would stay.
func (s *Store) unindex(ctx context.Context, tenant string, srcs []source, members []string) {
	byShard := map[int][]any{}
	for i, src := range srcs {
		byShard[src.shard] = append(byShard[src.shard], members[i])
	}
	pipe := s.rdb.Pipeline()
	names := map[int]*redis.StringSliceCmd{}
	for shard := range byShard {
		names[shard] = pipe.SMembers(ctx, rediskeys.Index(tenant, shard, rediskeys.IndexNames))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return // left to the next List or Prune
	}
	pipe = s.rdb.Pipeline()
	for shard, ms := range byShard {
		for _, k := range shardIndexes(tenant, shard, names[shard].Val()) {
			pipe.ZRem(ctx, k, ms...)
		}
	}
	_, _ = pipe.Exec(ctx)
}

// stateIndexes names the indexes a call is in one of, by where it stands:
// open, or the status it finished with. Together they hold every call.
func stateIndexes() []string {
	return []string{rediskeys.IndexOpen, rediskeys.IndexStatus(string(StatusSucceeded), ""),
		rediskeys.IndexStatus(string(StatusFailed), ""), rediskeys.IndexStatus(string(StatusCanceled), "")}
}

// shardIndexes are the keys of every index of tenant's shard, whose
// integration names are names: the state indexes, then the integrations'.
func shardIndexes(tenant string, shard int, names []string) []string {
	var keys []string
	for _, n := range stateIndexes() {
		keys = append(keys, rediskeys.Index(tenant, shard, n))
	}
	for _, n := range names {
		keys = append(keys, rediskeys.Index(tenant, shard, rediskeys.IndexIntegration(n)))
	}
	return keys
}

// Counts are tenant's calls created in a window.
type Counts struct {
	// Total counts every call.
	Total int64
	// ByStatus counts calls by status (every status is present).
	ByStatus map[Status]int64
	// ByIntegration counts calls by integration (those with calls).
	ByIntegration map[string]int64
}

// Count counts tenant's calls created in [since, until). Finished and
// total counts come from the indexes' sizes; unfinished calls are read one
// by one to learn their status, which is cheap while few calls are in
// flight. A record that expired within the window may still be counted
// until its entries are pruned.
func (s *Store) Count(ctx context.Context, tenant string, since, until time.Time) (*Counts, error) {
	lo, hi := "["+timeBound(since), "("+timeBound(ceilMilli(until))
	pipe := s.rdb.Pipeline()
	var names []*redis.StringSliceCmd
	type count struct {
		key  string
		cmd  *redis.IntCmd
		open *redis.StringSliceCmd
	}
	var counts []count
	for shard := range rediskeys.RecordShards {
		names = append(names, pipe.SMembers(ctx, rediskeys.Index(tenant, shard, rediskeys.IndexNames)))
		for _, st := range []Status{StatusSucceeded, StatusFailed, StatusCanceled} {
			counts = append(counts, count{key: string(st), cmd: pipe.ZLexCount(ctx, rediskeys.Index(tenant, shard, rediskeys.IndexStatus(string(st), "")), lo, hi)})
		}
		counts = append(counts, count{open: pipe.ZRangeArgs(ctx, redis.ZRangeArgs{Key: rediskeys.Index(tenant, shard, rediskeys.IndexOpen), Start: lo, Stop: hi, ByLex: true})})
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("count calls: %w", err)
	}
	out := &Counts{ByStatus: map[Status]int64{}, ByIntegration: map[string]int64{}}
	for _, st := range Statuses() {
		out.ByStatus[st] = 0
	}
	var open []string
	for _, c := range counts {
		switch {
		case c.open != nil:
			open = append(open, c.open.Val()...)
			out.Total += int64(len(c.open.Val()))
		default:
			out.ByStatus[Status(c.key)] += c.cmd.Val()
			out.Total += c.cmd.Val()
		}
	}
	for chunk := range slices.Chunk(open, 1000) {
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.StringCmd, len(chunk))
		for i, m := range chunk {
			cmds[i] = pipe.HGet(ctx, rediskeys.Record(tenant, memberID(m)), "status")
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("count calls: %w", err)
		}
		for _, c := range cmds {
			// A call that finished since its status index was counted is
			// left out rather than counted twice.
			if st := Status(c.Val()); st != "" && !st.Terminal() {
				out.ByStatus[st]++
			}
		}
	}
	all := map[string]bool{}
	for _, c := range names {
		for _, n := range c.Val() {
			all[n] = true
		}
	}
	pipe = s.rdb.Pipeline()
	type icount struct {
		name string
		cmd  *redis.IntCmd
	}
	var ic []icount
	for n := range all {
		for shard := range rediskeys.RecordShards {
			ic = append(ic, icount{n, pipe.ZLexCount(ctx, rediskeys.Index(tenant, shard, rediskeys.IndexIntegration(n)), lo, hi)})
		}
	}
	if len(ic) > 0 {
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("count calls: %w", err)
		}
	}
	for _, c := range ic {
		if v := c.cmd.Val(); v > 0 {
			out.ByIntegration[c.name] += v
		}
	}
	return out, nil
}
