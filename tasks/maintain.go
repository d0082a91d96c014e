package tasks

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/callq/callq/internal/rediskeys"
)

// What the reconciler uses: the unfinished calls, pruning, and moving
// records from where callq before the calls index kept them.

// Unfinished returns the summaries (Record.Summary) of up to n of tenant's
// unfinished calls created before before, shard by shard, oldest first within a shard, from after cursor
// ("" to begin), and the cursor to go on from ("" when done). On the way
// it drops entries whose record has expired and moves a finished call
// still in the open index to its status's (a terminal write always does
// both; this repairs what an interrupted one could leave).
func (s *Store) Unfinished(ctx context.Context, tenant string, before time.Time, cursor string, n int) ([]*Record, string, error) {
	if cursor == "" {
		return s.unfinished(ctx, tenant, before, 0, "-", n)
	}
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	sh, m, ok := strings.Cut(string(b), "/")
	shard, err2 := strconv.Atoi(sh)
	if err != nil || err2 != nil || !ok || shard < 0 || shard >= rediskeys.RecordShards {
		return nil, "", ErrBadCursor
	}
	return s.unfinished(ctx, tenant, before, shard, "("+m, n)
}

func (s *Store) unfinished(ctx context.Context, tenant string, before time.Time, shard int, lo string, n int) ([]*Record, string, error) {
	hi := "(" + timeBound(before)
	var out []*Record
	for shard < rediskeys.RecordShards {
		open := rediskeys.Index(tenant, shard, rediskeys.IndexOpen)
		want := n - len(out)
		members, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: open, Start: lo, Stop: hi, ByLex: true, Count: int64(want)}).Result()
		if err != nil {
			return nil, "", fmt.Errorf("read the open index: %w", err)
		}
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.SliceCmd, len(members))
		for i, m := range members {
			cmds[i] = pipe.HMGet(ctx, rediskeys.Record(tenant, memberID(m)), "rec", "status", "run", "wh", "rb")
		}
		if len(members) > 0 {
			if _, err := pipe.Exec(ctx); err != nil {
				return nil, "", fmt.Errorf("read unfinished records: %w", err)
			}
		}
		fix := s.rdb.Pipeline()
		for i, c := range cmds {
			v := c.Val()
			if v[0] == nil {
				fix.ZRem(ctx, open, members[i])
				continue
			}
			rec, err := decodeRecord(false, v[0], nil, v[1], v[2], v[3], v[4])
			if err != nil {
				return nil, "", err
			}
			if !indexes(rec, members[i]) {
				fix.ZRem(ctx, open, members[i])
				continue
			}
			if rec.Status.Terminal() {
				fix.ZRem(ctx, open, members[i])
				fix.ZAdd(ctx, rediskeys.Index(tenant, shard, rediskeys.IndexStatus(string(rec.Status), "")), redis.Z{Member: members[i]})
				continue
			}
			out = append(out, rec)
		}
		if fix.Len() > 0 {
			if _, err := fix.Exec(ctx); err != nil {
				return nil, "", fmt.Errorf("repair the open index: %w", err)
			}
		}
		if len(out) == n {
			return out, base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(shard) + "/" + members[len(members)-1])), nil
		}
		if len(members) < want {
			shard, lo = shard+1, "-"
			continue
		}
		// A full page of which some were dropped: the shard may hold more.
		lo = "(" + members[len(members)-1]
	}
	return out, "", nil
}

// prunePage and prunePages bound one Prune's work per shard.
const (
	prunePage  = 500
	prunePages = 40
)

// Prune removes from tenant's indexes the entries of records that have
// expired, oldest first, and returns how many calls it unindexed. In each
// shard it stops at the first page of entries whose records all live:
// records expire roughly in the order they were created, and List drops
// any entry it meets whose record is gone. (An entry of an expired record
// whose ID was used again goes when List meets it, or once the new record
// has expired too.)
func (s *Store) Prune(ctx context.Context, tenant string) (int, error) {
	removed := 0
	for shard := range rediskeys.RecordShards {
		names, err := s.rdb.SMembers(ctx, rediskeys.Index(tenant, shard, rediskeys.IndexNames)).Result()
		if err != nil {
			return removed, fmt.Errorf("prune the calls index: %w", err)
		}
		keys := shardIndexes(tenant, shard, names)
		// Every call is in exactly one integration's index, for good (a
		// state index loses it when it finishes): walk those, or the state
		// indexes if the shard's names were lost.
		walk := keys[len(stateIndexes()):]
		if len(walk) == 0 {
			walk = keys
		}
		for _, key := range walk {
			n, err := s.pruneIndex(ctx, tenant, key, keys)
			removed += n
			if err != nil {
				return removed, err
			}
		}
	}
	return removed, nil
}

// pruneIndex walks key oldest first, a page at a time, and removes from
// every one of keys the entries whose record is gone; it stops at the first
// page whose records all live.
func (s *Store) pruneIndex(ctx context.Context, tenant, key string, keys []string) (int, error) {
	removed := 0
	lo := "-"
	for range prunePages {
		members, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: key, Start: lo, Stop: "+", ByLex: true, Count: prunePage}).Result()
		if err != nil {
			return removed, fmt.Errorf("prune the calls index: %w", err)
		}
		if len(members) == 0 {
			break
		}
		pipe := s.rdb.Pipeline()
		exists := make([]*redis.IntCmd, len(members))
		for i, m := range members {
			exists[i] = pipe.Exists(ctx, rediskeys.Record(tenant, memberID(m)))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return removed, fmt.Errorf("prune the calls index: %w", err)
		}
		var gone []any
		for i, c := range exists {
			if c.Val() == 0 {
				gone = append(gone, members[i])
			}
		}
		if len(gone) > 0 {
			pipe := s.rdb.Pipeline()
			for _, k := range keys {
				pipe.ZRem(ctx, k, gone...)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return removed, fmt.Errorf("prune the calls index: %w", err)
			}
			removed += len(gone)
		}
		if len(gone) == 0 || len(members) < prunePage {
			break
		}
		lo = "(" + members[len(members)-1]
	}
	return removed, nil
}

var moveScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
if tonumber(ARGV[1]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
for i = 2, 3 do redis.call('ZADD', KEYS[i], 0, ARGV[2]) end
redis.call('SADD', KEYS[4], ARGV[3])
return 1
`)

// moveLegacy moves tenant's record id from where callq before the calls
// index kept it (rediskeys.LegacyRecord) to its shard, indexed, keeping its
// time to live, and reports whether there was one. Every read and write
// that finds no record tries it once, so records written before an upgrade
// stay readable and finish normally; MigrateLegacy moves the rest.
func (s *Store) moveLegacy(ctx context.Context, tenant, id string) bool {
	old := rediskeys.LegacyRecord(tenant, id)
	pipe := s.rdb.Pipeline()
	all := pipe.HGetAll(ctx, old)
	pttl := pipe.PTTL(ctx, old)
	if _, err := pipe.Exec(ctx); err != nil || len(all.Val()) == 0 || all.Val()["rec"] == "" {
		return false
	}
	fields := all.Val()
	// Its JSON is the whole record's: split it as Write does.
	rec, err := decodeRecord(true, fields["rec"], nil, fields["status"], nil, fields["wh"], fields["rb"])
	if err != nil {
		return false
	}
	rec.Tenant, rec.CorrelationID = tenant, id
	sum, full, err := encodeRecord(rec, false)
	if err != nil {
		return false
	}
	fields["rec"] = string(sum)
	if full != nil {
		fields["full"] = string(full)
	}
	args := []any{pttl.Val().Milliseconds(), indexMember(rec.CreatedAt, id), rec.Integration}
	for k, v := range fields {
		args = append(args, k, v)
	}
	if err := moveScript.Run(ctx, s.rdb, append(createKeys(rec), namesKey(rec)), args...).Err(); err != nil {
		return false
	}
	// Its tenant may have made no call since the upgrade: the reconciler
	// walks only the tenants registered.
	s.registerTenant(ctx, tenant)
	_ = s.rdb.Del(ctx, old).Err()
	return true
}

// MigrateLegacy moves every record still where callq before the calls
// index kept it, and returns how many it moved.
func (s *Store) MigrateLegacy(ctx context.Context) (int, error) {
	// Old-layout records cannot appear after the upgrade (the README says
	// to stop old workers first), so once a scan has moved every one it
	// met, no later scan (a whole keyspace's SCAN at each worker's start)
	// is needed.
	if n, err := s.rdb.Exists(ctx, rediskeys.LegacyMoved).Result(); err != nil {
		return 0, fmt.Errorf("migrate records: %w", err)
	} else if n == 1 {
		return 0, nil
	}
	var moved, found atomic.Int64
	each := func(ctx context.Context, c *redis.Client) error {
		it := c.Scan(ctx, 0, rediskeys.LegacyRecordPattern, 1000).Iterator()
		for it.Next(ctx) {
			found.Add(1)
			rest := strings.TrimPrefix(it.Val(), rediskeys.Prefix+":call:")
			tenant, id, ok := strings.Cut(rest, ":")
			if ok && s.moveLegacy(ctx, tenant, id) {
				moved.Add(1)
			}
		}
		return it.Err()
	}
	var err error
	switch c := s.rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, each)
	case *redis.Client:
		err = each(ctx, c)
	default:
		err = errors.New("migrate records: unsupported Redis client")
	}
	if err != nil {
		return int(moved.Load()), fmt.Errorf("migrate records: %w", err)
	}
	if found.Load() == moved.Load() {
		if err := s.rdb.Set(ctx, rediskeys.LegacyMoved, "1", 0).Err(); err != nil {
			return int(moved.Load()), fmt.Errorf("migrate records: %w", err)
		}
	}
	return int(moved.Load()), nil
}
