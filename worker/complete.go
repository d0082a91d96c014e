package worker

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// asynqDoneScript is asynq's Done script (v0.26, internal/rdb's doneCmd),
// byte for byte: asynq runs it by its SHA-1, which is how taskEnds knows
// the command. TestAsynqScripts checks it against what asynq sends.
const asynqDoneScript = `
if redis.call("LREM", KEYS[1], 0, ARGV[1]) == 0 then
  return redis.error_reply("NOT FOUND")
end
if redis.call("ZREM", KEYS[2], ARGV[1]) == 0 then
  return redis.error_reply("NOT FOUND")
end
if redis.call("DEL", KEYS[3]) == 0 then
  return redis.error_reply("NOT FOUND")
end
local n = redis.call("INCR", KEYS[4])
if tonumber(n) == 1 then
	redis.call("EXPIREAT", KEYS[4], ARGV[2])
end
local total = redis.call("GET", KEYS[5])
if tonumber(total) == tonumber(ARGV[3]) then
	redis.call("SET", KEYS[5], 1)
else
	redis.call("INCR", KEYS[5])
end
return redis.status_reply("OK")
`

var asynqDoneSHA = func() string {
	h := sha1.Sum([]byte(asynqDoneScript))
	return hex.EncodeToString(h[:])
}()

// endedForget is how long taskEnds keeps a task it was told of. asynq
// runs Done as soon as the handler returns, unless the task's lease had
// lapsed, in which case it never does and the entry is only swept.
const endedForget = time.Minute

// taskEnds is the Redis client the calls' asynq server runs on: the
// worker's, but for asynq's Done of a task whose terminal write already
// ended it (tasks.Store.WriteDone), which it answers OK without a round
// trip. Every other command goes to Redis as it is. (callq's call tasks
// carry neither a retention nor a unique key, with which asynq would end a
// task with other scripts: tasks.NewCallTask.)
type taskEnds struct {
	redis.UniversalClient

	mu    sync.Mutex
	ended map[string]time.Time // task ID → when its write ended it
	swept time.Time
}

func newTaskEnds(rdb redis.UniversalClient) *taskEnds {
	return &taskEnds{UniversalClient: rdb, ended: map[string]time.Time{}, swept: time.Now()}
}

// end records that the task with ID id was ended by its terminal write,
// just before its handler returns.
func (t *taskEnds) end(id string) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ended[id] = now
	if now.Sub(t.swept) < endedForget {
		return
	}
	for k, at := range t.ended {
		if now.Sub(at) > endedForget {
			delete(t.ended, k)
		}
	}
	t.swept = now
}

// take says whether the task with ID id was ended, and forgets it.
func (t *taskEnds) take(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.ended[id]; !ok {
		return false
	}
	delete(t.ended, id)
	return true
}

// EvalSha answers asynq's Done of a task already ended; anything else
// goes to Redis. (asynq runs its scripts with go-redis's Script.Run, which
// calls EvalSha first.)
func (t *taskEnds) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	if sha == asynqDoneSHA && len(args) > 0 {
		if id, ok := args[0].(string); ok && t.take(id) {
			cmd := redis.NewCmd(ctx, "evalsha", sha)
			cmd.SetVal("OK")
			return cmd
		}
	}
	return t.UniversalClient.EvalSha(ctx, sha, keys, args...)
}
