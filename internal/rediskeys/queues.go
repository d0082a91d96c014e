package rediskeys

import (
	"strconv"
	"strings"
	"time"
)

// HashSlots is how many hash slots Redis Cluster has.
const HashSlots = 16384

// Slot is the Redis Cluster hash slot of key: CRC16 (XMODEM) of its hash
// tag, the part between the first "{" and the first "}" after it when that
// part is not empty, else of the whole key; modulo HashSlots. It is Redis's
// own rule (CLUSTER KEYSLOT), which the tests compare it with.
func Slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for k := 0; k < len(key); k++ {
		crc = crc<<8 ^ crc16tab[byte(crc>>8)^key[k]]
	}
	return int(crc) % HashSlots
}

// crc16tab is CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0), as
// Redis's crc16.c.
var crc16tab = func() (t [256]uint16) {
	for i := range t {
		crc := uint16(i) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
		t[i] = crc
	}
	return t
}()

// QueueShardSep separates a logical queue's name from its shard's in an
// asynq queue's name ("default#3"). No logical queue's name holds it.
const QueueShardSep = "#"

// AsynqQueueSlot is the slot of every key of the asynq queue named name:
// asynq keeps a queue under "asynq:{<name>}:...".
func AsynqQueueSlot(name string) int {
	return Slot("asynq:{" + name + "}:")
}

// QueueShard is the name of the asynq queue that is shard k (0 ≤ k < n) of
// the logical queue queue when each logical queue is split into n asynq
// queues (callq's CALLQ_QUEUE_SHARDS). With n = 1 it is queue itself, so
// a deployment that never shards keeps asynq's queue names as they always
// were.
//
// With n > 1 it is "<queue>#<k>" if the slot of that asynq queue's keys
// lies in the middle half of the kth of n equal parts of the slot space,
// else the first of "<queue>#<k>.1", "<queue>#<k>.2", ... that does. So
// the n shards of a queue lie on n different slots, spread evenly over
// the slot space: a cluster whose masters serve equal ranges of slots, as
// `redis-cli --cluster create` and rebalancing make them, holds n/masters
// of them on each master when n is a multiple of the masters (margins of a
// quarter of a part on each side keep a shard off a master's edge slots,
// which the split may give to either neighbour). The names depend only on
// queue, k and n: every process computes the same ones.
func QueueShard(queue string, k, n int) string {
	if n <= 1 {
		return queue
	}
	lo, hi := k*HashSlots/n, (k+1)*HashSlots/n
	margin := (hi - lo) / 4
	base := queue + QueueShardSep + strconv.Itoa(k)
	name := base
	for j := 1; ; j++ {
		if s := AsynqQueueSlot(name); s >= lo+margin && s < hi-margin {
			return name
		}
		name = base + "." + strconv.Itoa(j)
	}
}

// LogicalQueue is the logical queue an asynq queue belongs to: name up to
// QueueShardSep, or name itself when it is not a shard.
func LogicalQueue(name string) string {
	q, _, _ := strings.Cut(name, QueueShardSep)
	return q
}

// AsynqDoneKeys are the keys asynq's Done touches when a task of queue
// with ID id ends at now, in the order its script takes them: the queue's
// active list, its lease set, the task's hash, the day's processed count
// (the UTC date) and the total processed count. They are asynq's own
// (internal/base, v0.26): tasks.Store completes a call's task with them in
// the script of its terminal write, and the tests compare what that leaves
// with what asynq's Done leaves.
func AsynqDoneKeys(queue, id string, now time.Time) []string {
	p := "asynq:{" + queue + "}:"
	return []string{p + "active", p + "lease", p + "t:" + id,
		p + "processed:" + now.UTC().Format("2006-01-02"), p + "processed"}
}

// AsynqDequeueKeys are the keys asynq's dequeue reads of the queue named
// queue, in the order its script takes them: the pending list, the paused
// key, the active list and the lease set (asynq v0.26's internal/base).
func AsynqDequeueKeys(queue string) []string {
	p := "asynq:{" + queue + "}:"
	return []string{p + "pending", p + "paused", p + "active", p + "lease"}
}

// AsynqTaskPrefix is the prefix of the keys of the asynq queue queue's
// task hashes.
func AsynqTaskPrefix(queue string) string { return "asynq:{" + queue + "}:t:" }

// AsynqQueueOfPending is the queue whose pending list is key.
func AsynqQueueOfPending(key string) (string, bool) {
	q, ok := strings.CutPrefix(key, "asynq:{")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(q, "}:pending")
}
