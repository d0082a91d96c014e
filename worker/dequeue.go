package worker

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/callq/callq/internal/rediskeys"
)

// asynqDequeueScript is asynq's dequeue script (v0.26, internal/rdb's
// dequeueCmd), byte for byte: asynq runs it by its SHA-1, once per queue,
// in turn, until one gives a task. TestAsynqScripts checks it against what
// asynq sends.
const asynqDequeueScript = `
if redis.call("EXISTS", KEYS[2]) == 0 then
	local id = redis.call("RPOPLPUSH", KEYS[1], KEYS[3])
	if id then
		local key = ARGV[2] .. id
		redis.call("HSET", key, "state", "active")
		redis.call("HDEL", key, "pending_since")
		redis.call("ZADD", KEYS[4], ARGV[1], id)
		return redis.call("HGET", key, "msg")
	end
end
return nil`

var asynqDequeueSHA = func() string {
	h := sha1.Sum([]byte(asynqDequeueScript))
	return hex.EncodeToString(h[:])
}()

// dequeueAnyScript is asynqDequeueScript over several queues, in the
// order given, in one script: the first task found, or nil when every
// queue is empty or paused. KEYS are each queue's pending list, paused
// key, active list and lease set (rediskeys.AsynqDequeueKeys); ARGV the
// lease's expiry, then each queue's task key prefix.
var dequeueAnyScript = redis.NewScript(`
for q = 0, #KEYS / 4 - 1 do
  local k = q * 4
  if redis.call('EXISTS', KEYS[k + 2]) == 0 then
    local id = redis.call('RPOPLPUSH', KEYS[k + 1], KEYS[k + 3])
    if id then
      local key = ARGV[q + 2] .. id
      redis.call('HSET', key, 'state', 'active')
      redis.call('HDEL', key, 'pending_since')
      redis.call('ZADD', KEYS[k + 4], ARGV[1], id)
      return redis.call('HGET', key, 'msg')
    end
  end
end
return nil
`)

// emptyForget bounds how long queueProbes trusts that a queue it found
// empty is the one asynq asks of next in the same round.
const emptyForget = time.Second

// queueProbes is the calls' asynq server's Redis client, over next: the
// same, but for asynq's dequeue. asynq tries a worker's queues one script
// each, in a weighted random order, until one gives a task: with the
// default three queues, 1.9 round trips a call, and three an idle poll.
// queueProbes answers the first probe of each round with one script that
// tries that queue and then the others, in asynq's own weighted random
// order, and the round's remaining probes, when all were empty, without
// Redis (a task queued in the microseconds between is taken at the next
// round, as one queued just after the round would be). asynq reads a
// task's queue from the task itself, so a task of another queue than the
// one probed is taken as it would have been.
// (asynq's processor probes one round at a time, in turn; the worker never
// sets asynq's StrictPriority, whose order is fixed; a single Redis only:
// on Cluster the queues are in different slots.)
type queueProbes struct {
	redis.UniversalClient

	queues map[string]int       // the server's queues and their priorities
	keys   map[string]queueKeys // each queue's, made once

	mu         sync.Mutex
	empty      map[string]bool // the queues still to be asked of this round, found empty
	emptySince time.Time
}

// queueKeys are a queue's keys a dequeue script takes: its dequeue keys
// (rediskeys.AsynqDequeueKeys) and its task key prefix.
type queueKeys struct {
	dequeue    []string
	taskPrefix string
}

func newQueueProbes(next redis.UniversalClient, queues map[string]int) *queueProbes {
	keys := make(map[string]queueKeys, len(queues))
	for q := range queues {
		keys[q] = queueKeys{rediskeys.AsynqDequeueKeys(q), rediskeys.AsynqTaskPrefix(q)}
	}
	return &queueProbes{UniversalClient: next, queues: queues, keys: keys, empty: map[string]bool{}}
}

// EvalSha answers asynq's dequeue probes; anything else goes to next.
func (p *queueProbes) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	if sha != asynqDequeueSHA || len(keys) != 4 || len(args) != 2 {
		return p.UniversalClient.EvalSha(ctx, sha, keys, args...)
	}
	first, ok := rediskeys.AsynqQueueOfPending(keys[0])
	if _, known := p.queues[first]; !ok || !known {
		return p.UniversalClient.EvalSha(ctx, sha, keys, args...)
	}
	p.mu.Lock()
	if p.empty[first] && time.Since(p.emptySince) < emptyForget {
		delete(p.empty, first)
		p.mu.Unlock()
		cmd := redis.NewCmd(ctx, "evalsha", sha)
		cmd.SetErr(redis.Nil)
		return cmd
	}
	clear(p.empty)
	p.mu.Unlock()

	order := append([]string{first}, p.rest(first)...)
	allKeys := make([]string, 0, 4*len(order))
	allArgs := make([]any, 0, 1+len(order))
	allArgs = append(allArgs, args[0])
	for _, q := range order {
		k := p.keys[q]
		allKeys = append(allKeys, k.dequeue...)
		allArgs = append(allArgs, k.taskPrefix)
	}
	cmd := dequeueAnyScript.Run(ctx, p.UniversalClient, allKeys, allArgs...)
	if cmd.Err() == redis.Nil {
		p.mu.Lock()
		for _, q := range order[1:] {
			p.empty[q] = true
		}
		p.emptySince = time.Now()
		p.mu.Unlock()
	}
	return cmd
}

// rest is the server's queues but first, in a weighted random order: as
// asynq orders them (each queue as many times as its priority, shuffled,
// each kept at its first place), which is also how asynq's order goes on
// after first.
func (p *queueProbes) rest(first string) []string {
	names := make([]string, 0, 16)
	for q, prio := range p.queues {
		if q == first {
			continue
		}
		for range prio {
			names = append(names, q)
		}
	}
	rand.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	seen := make(map[string]bool, len(p.queues))
	out := names[:0]
	for _, q := range names {
		if !seen[q] {
			seen[q] = true
			out = append(out, q)
		}
	}
	return out
}
