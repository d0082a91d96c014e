package tasks

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/callq/callq/internal/rediskeys"
)

// MaxMinutes bounds how many minutes FinishedPerMinute counts at once: each
// costs one ZLEXCOUNT per shard and terminal status in its pipeline.
const MaxMinutes = 24 * 60

// Minute counts the calls created in one minute that have finished, by
// status.
type Minute struct {
	// Start is the minute's first instant.
	Start time.Time
	// ByStatus counts the finished calls by terminal status (succeeded,
	// failed, canceled; each present).
	ByStatus map[Status]int64
}

// Total is how many of the minute's calls have finished.
func (m *Minute) Total() int64 {
	var n int64
	for _, c := range m.ByStatus {
		n += c
	}
	return n
}

// FinishedPerMinute counts tenant's calls created in each of the n minutes
// from the minute of from (truncated to it) that have finished, by status.
// The status indexes are kept by created_at, not completed_at, so a call is
// counted in the minute it was created in. It reads the sizes of the
// indexes' ranges, one ZLEXCOUNT per shard, minute and terminal status, in
// one pipeline. n is 1 to MaxMinutes.
func (s *Store) FinishedPerMinute(ctx context.Context, tenant string, from time.Time, n int) ([]Minute, error) {
	if n < 1 || n > MaxMinutes {
		return nil, fieldErr("minutes", "must be between 1 and %d", MaxMinutes)
	}
	terminal := []Status{StatusSucceeded, StatusFailed, StatusCanceled}
	start := from.UTC().Truncate(time.Minute)
	out := make([]Minute, n)
	cmds := make([][]*redis.IntCmd, n)
	pipe := s.rdb.Pipeline()
	for i := range out {
		out[i] = Minute{Start: start.Add(time.Duration(i) * time.Minute), ByStatus: make(map[Status]int64, len(terminal))}
		lo := "[" + timeBound(out[i].Start)
		hi := "(" + timeBound(out[i].Start.Add(time.Minute))
		for shard := range rediskeys.RecordShards {
			for _, st := range terminal {
				cmds[i] = append(cmds[i], pipe.ZLexCount(ctx, rediskeys.Index(tenant, shard, rediskeys.IndexStatus(string(st), "")), lo, hi))
			}
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("count finished calls per minute: %w", err)
	}
	for i := range out {
		for j, cmd := range cmds[i] {
			out[i].ByStatus[terminal[j%len(terminal)]] += cmd.Val()
		}
	}
	return out, nil
}
