package tasks

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/callq/callq/internal/rediskeys"
)

// Replay errors.
var (
	// ErrUnfinished: the call has not finished, so it cannot be replayed.
	ErrUnfinished = errors.New("tasks: the call has not finished")
	// ErrNoPayload: the record was written by a callq that did not keep
	// the call's payload, so there is nothing to replay it from.
	ErrNoPayload = errors.New("tasks: the record keeps no payload to replay")
	// ErrReplayed: the call was replayed already. ClaimReplay returns it as
	// a *ReplayedError.
	ErrReplayed = errors.New("tasks: the call was replayed already")
)

// ReplayedError is ClaimReplay's error for a call replayed already;
// errors.Is(err, ErrReplayed) matches it.
type ReplayedError struct {
	// By is the latest replay.
	By string
}

func (e *ReplayedError) Error() string { return ErrReplayed.Error() + " by " + e.By }

// Is reports whether target is ErrReplayed.
func (e *ReplayedError) Is(target error) bool { return target == ErrReplayed }

// ReplayClaim is a claimed replay: the correlation ID the replay is to
// have and the original's task payload to make it from.
type ReplayClaim struct {
	ID      string
	Payload []byte
}

var claimReplayScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'status', 'rb', 'rbp', 'call')
if not v[1] then return {-1} end
if v[1] ~= 'succeeded' and v[1] ~= 'failed' and v[1] ~= 'canceled' then return {0, v[1]} end
if not v[4] or v[4] == '' then return {-3} end
if v[3] and ARGV[3] == '0' then return {1, v[3], v[4]} end
if v[2] and ARGV[2] == '0' then return {2, v[2]} end
redis.call('HSET', KEYS[1], 'rbp', ARGV[1])
return {1, ARGV[1], v[4]}
`)

// ClaimReplay claims the replay of tenant's finished call id under newID,
// and returns the claim, whose ID is newID unless an earlier replay was
// claimed and not confirmed (interrupted): then it is that replay's, so
// that replaying again makes it, rather than a second one. explicit says
// newID was asked for by name: it is used in any case. A call replayed
// already is a *ReplayedError unless again is set; a call not finished is
// ErrUnfinished; a record without a payload ErrNoPayload.
//
// The replay is made, then ConfirmReplay records it on the original: an
// interruption in between leaves the claim, which the next ClaimReplay of
// the call takes up.
func (s *Store) ClaimReplay(ctx context.Context, tenant, id, newID string, again, explicit bool) (*ReplayClaim, error) {
	keys := []string{rediskeys.Record(tenant, id)}
	args := []any{newID, flag(again), flag(explicit)}
	res, err := claimReplayScript.Run(ctx, s.rdb, keys, args...).Slice()
	if err == nil && res[0].(int64) == -1 && s.moveLegacy(ctx, tenant, id) {
		res, err = claimReplayScript.Run(ctx, s.rdb, keys, args...).Slice()
	}
	if err != nil {
		return nil, fmt.Errorf("claim replay: %w", err)
	}
	switch res[0].(int64) {
	case -1:
		return nil, ErrNotFound
	case 0:
		return nil, ErrUnfinished
	case -3:
		return nil, ErrNoPayload
	case 2:
		by, _ := res[1].(string)
		return nil, &ReplayedError{By: by}
	}
	claimed, _ := res[1].(string)
	payload, _ := res[2].(string)
	return &ReplayClaim{ID: claimed, Payload: []byte(payload)}, nil
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

var confirmReplayScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'rb', ARGV[1])
if redis.call('HGET', KEYS[1], 'rbp') == ARGV[1] then redis.call('HDEL', KEYS[1], 'rbp') end
return 1
`)

// ConfirmReplay records newID as the latest replay of tenant's call id
// (Record.ReplayedBy) and ends its claim. The original may have expired
// meanwhile: then there is nothing to record.
func (s *Store) ConfirmReplay(ctx context.Context, tenant, id, newID string) error {
	if err := confirmReplayScript.Run(ctx, s.rdb, []string{rediskeys.Record(tenant, id)}, newID).Err(); err != nil {
		return fmt.Errorf("confirm replay: %w", err)
	}
	return nil
}

var releaseReplayScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'rbp') == ARGV[1] then redis.call('HDEL', KEYS[1], 'rbp') end
return 1
`)

// ReleaseReplay gives up the claim of tenant's call id under newID, when
// the replay cannot be made under that ID (another call holds it): left,
// the claim would make every later replay of the call take it up, and
// fail the same way.
func (s *Store) ReleaseReplay(ctx context.Context, tenant, id, newID string) error {
	if err := releaseReplayScript.Run(ctx, s.rdb, []string{rediskeys.Record(tenant, id)}, newID).Err(); err != nil {
		return fmt.Errorf("release replay: %w", err)
	}
	return nil
}
