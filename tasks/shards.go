package tasks

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/hibiken/asynq"

	"github.com/callq/callq/internal/rediskeys"
)

// MaxQueueShards bounds QueueShards: an idle worker polls each of its asynq
// queues in turn, and asynq's background loops (due retries and delayed
// calls, lease recovery, cleanup) visit every queue on each tick, so each
// shard costs a worker Redis commands whether or not it holds calls.
const MaxQueueShards = 64

// ErrQueueName is the error of a queue name that holds QueueShardSep.
var ErrQueueName = errors.New(`a queue's name must not hold "` + rediskeys.QueueShardSep + `", which separates a queue from its shards`)

// ValidQueueName refuses a logical queue's name that is empty or holds
// rediskeys.QueueShardSep: the names of a queue's shards are built with it,
// and read back (rediskeys.LogicalQueue) by cutting at it.
func ValidQueueName(name string) error {
	switch {
	case strings.TrimSpace(name) == "":
		return errors.New("a queue's name must not be empty")
	case strings.Contains(name, rediskeys.QueueShardSep):
		return fmt.Errorf("queue %q: %w", name, ErrQueueName)
	}
	return nil
}

// Sharding maps callq's logical queues (a call's queue, and WebhookQueue)
// to the asynq queues that hold their tasks. asynq keeps a queue in one
// Redis Cluster hash slot, so a logical queue of one asynq queue is one
// master's work; with Shards n > 1 each logical queue is n asynq queues
// (rediskeys.QueueShard), and a call's task goes to the shard its
// correlation ID hashes to. Every lookup of the task (cancel, the API's
// "running", the reconciler, a webhook) computes the same shard from the
// record's logical queue and ID.
//
// Previous are the shard counts the deployment used before (after a change
// of CALLQ_QUEUE_SHARDS): tasks queued then are still in the asynq queues
// those counts named. Workers serve those queues too, and lookups that do
// not find a task where the current count puts it look where the previous
// ones put it. Drop a count from Previous once its queues are empty.
//
// A nil *Sharding is one shard and no previous count: every logical queue
// is the asynq queue of its own name, and nothing is computed.
type Sharding struct {
	shards   int
	previous []int
	names    sync.Map // shardKey -> []string, the names of a queue's shards
}

type shardKey struct {
	queue string
	n     int
}

// NewSharding returns the Sharding of shards asynq queues per logical queue
// (0 means 1), with the counts used before, previous (the current count
// among them changes nothing). field names the setting in errors
// ("Config.QueueShards"); the previous counts are named as its sibling
// ("Config.PreviousQueueShards"), so that an error points at the setting
// that is wrong. For one shard and no previous count it returns
// nil, which is that Sharding.
func NewSharding(shards int, previous []int, field string) (*Sharding, error) {
	if shards == 0 {
		shards = 1
	}
	if shards < 1 || shards > MaxQueueShards {
		return nil, fmt.Errorf("%s must be from 1 to %d, not %d", field, MaxQueueShards, shards)
	}
	s := &Sharding{shards: shards}
	for _, p := range previous {
		if p < 1 || p > MaxQueueShards {
			return nil, fmt.Errorf("%s must hold counts from 1 to %d, not %d", previousField(field), MaxQueueShards, p)
		}
		if p != shards && !slices.Contains(s.previous, p) {
			s.previous = append(s.previous, p)
		}
	}
	if s.shards == 1 && len(s.previous) == 0 {
		return nil, nil // nothing to compute, ever
	}
	return s, nil
}

// previousField is the name of the previous counts' setting beside field:
// "Config.QueueShards" -> "Config.PreviousQueueShards".
func previousField(field string) string {
	i := strings.LastIndexByte(field, '.') + 1
	return field[:i] + "Previous" + field[i:]
}

// Shards is how many asynq queues each logical queue is split into.
func (s *Sharding) Shards() int {
	if s == nil {
		return 1
	}
	return s.shards
}

// Previous are the previous shard counts still looked at, without the
// current one.
func (s *Sharding) Previous() []int {
	if s == nil {
		return nil
	}
	return slices.Clone(s.previous)
}

// shardOf is the shard of the correlation ID id among n (FNV-1a).
func shardOf(id string, n int) int {
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h ^= uint32(id[i])
		h *= 16777619
	}
	return int(h % uint32(n))
}

// namesOf are the asynq queues of the n shards of queue, computed once.
func (s *Sharding) namesOf(queue string, n int) []string {
	key := shardKey{queue, n}
	if v, ok := s.names.Load(key); ok {
		return v.([]string)
	}
	names := make([]string, n)
	for k := range names {
		names[k] = rediskeys.QueueShard(queue, k, n)
	}
	v, _ := s.names.LoadOrStore(key, names)
	return v.([]string)
}

// Queue is the asynq queue of the task of call (or webhook) id in the
// logical queue queue: queue itself with one shard.
func (s *Sharding) Queue(queue, id string) string {
	if s == nil || s.shards == 1 {
		return queue
	}
	return s.namesOf(queue, s.shards)[shardOf(id, s.shards)]
}

// Names are the asynq queues of the logical queue queue under the current
// count, in shard order: queue itself with one shard.
func (s *Sharding) Names(queue string) []string {
	if s == nil || s.shards == 1 {
		return []string{queue}
	}
	return slices.Clone(s.namesOf(queue, s.shards))
}

// EnqueueOptions are the options that send a task of id in the logical
// queue queue to its asynq queue: none with one shard (the task names its
// logical queue itself, NewCallTask and NewWebhookTask), else asynq.Queue
// of its shard, which overrides the task's own.
func (s *Sharding) EnqueueOptions(queue, id string) []asynq.Option {
	if s == nil || s.shards == 1 {
		return nil
	}
	return []asynq.Option{asynq.Queue(s.Queue(queue, id))}
}

// Earlier are the asynq queues where the previous shard counts put the task
// of id in queue, without Queue's and without repeats: where to look when
// it is not in Queue. None without previous counts.
func (s *Sharding) Earlier(queue, id string) []string {
	if s == nil || len(s.previous) == 0 {
		return nil
	}
	cur := s.Queue(queue, id)
	var out []string
	for _, n := range s.previous {
		name := queue
		if n > 1 {
			name = s.namesOf(queue, n)[shardOf(id, n)]
		}
		if name != cur && !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

// Expand turns the priorities of logical queues into those of the asynq
// queues a worker serves: every shard of a logical queue, under the
// current count and every previous one, with the logical queue's
// priority. asynq picks among its queues at random by weight, so each
// logical queue's weight is its priority times the number of its asynq
// queues, a number every logical queue shares: the ratios between logical
// queues, which are what priorities mean, are those of the priorities
// themselves. (Dividing the priority among the shards would keep the same
// ratios, but asynq's priorities are whole numbers of at least 1.)
func (s *Sharding) Expand(priorities map[string]int) map[string]int {
	if s == nil {
		return priorities
	}
	out := make(map[string]int, len(priorities)*s.shards)
	for q, p := range priorities {
		for _, n := range append([]int{s.shards}, s.previous...) {
			if n == 1 {
				out[q] = p
				continue
			}
			for _, name := range s.namesOf(q, n) {
				out[name] = p
			}
		}
	}
	return out
}

// String describes the sharding for logs: "4" or "4 (and previous 1)".
func (s *Sharding) String() string {
	if s == nil {
		return "1"
	}
	out := strconv.Itoa(s.shards)
	if len(s.previous) > 0 {
		prev := make([]string, len(s.previous))
		for i, p := range s.previous {
			prev[i] = strconv.Itoa(p)
		}
		out += " (and previous " + strings.Join(prev, ", ") + ")"
	}
	return out
}
