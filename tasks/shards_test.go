package tasks_test

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/tasks"
)

// One shard is today's layout: the logical queue is the asynq queue, and
// nothing is computed or allocated on the call path. Not parallel:
// AllocsPerRun.
func TestShardingOfOneIsFree(t *testing.T) {
	for _, prev := range [][]int{nil, {1}} {
		s, err := tasks.NewSharding(1, prev, "Config.QueueShards")
		require.NoError(t, err)
		require.Nil(t, s)
	}
	s, err := tasks.NewSharding(0, nil, "Config.QueueShards")
	require.NoError(t, err)
	require.Nil(t, s, "0 is the default, 1")
	require.Equal(t, 1, s.Shards())
	require.Equal(t, "default", s.Queue("default", "order-1"))
	require.Nil(t, s.EnqueueOptions("default", "order-1"))
	require.Nil(t, s.Earlier("default", "order-1"))
	prio := map[string]int{"critical": 6, "default": 3}
	require.Equal(t, prio, s.Expand(prio))
	allocs := testing.AllocsPerRun(100, func() {
		_ = s.Queue("default", "order-1")
		_ = s.EnqueueOptions("default", "order-1")
		_ = s.Earlier("default", "order-1")
	})
	require.Zero(t, allocs)
}

// A call's shard depends on its ID alone, so every process finds its task;
// the IDs spread over the shards; the name is rediskeys.QueueShard's. Not
// parallel: AllocsPerRun.
func TestShardingPutsACallInOneShard(t *testing.T) {
	s, err := tasks.NewSharding(6, nil, "Config.QueueShards")
	require.NoError(t, err)
	other, err := tasks.NewSharding(6, nil, "Config.QueueShards")
	require.NoError(t, err)
	counts := map[string]int{}
	for i := range 6000 {
		id := "order-" + strconv.Itoa(i)
		q := s.Queue("default", id)
		require.Equal(t, q, other.Queue("default", id), "another process computes the same queue")
		require.Equal(t, "default", rediskeys.LogicalQueue(q))
		counts[q]++
	}
	require.Len(t, counts, 6)
	for k := range 6 {
		n := counts[rediskeys.QueueShard("default", k, 6)]
		require.InDelta(t, 1000, n, 150, "shard %d holds %d of 6000 calls", k, n)
	}
	// The webhook queue is sharded alike, by the call's ID.
	require.Equal(t, "webhooks", rediskeys.LogicalQueue(s.Queue(tasks.WebhookQueue, "order-1")))
	require.Len(t, s.EnqueueOptions("default", "order-1"), 1)
	allocs := testing.AllocsPerRun(100, func() { _ = s.Queue("default", "order-1") })
	require.Zero(t, allocs, "the shards' names are computed once")
}

// After a change of the count, a call's task is looked for where the
// previous counts put it; a worker serves every queue of both layouts, at
// the logical queue's priority.
func TestShardingWithPreviousCounts(t *testing.T) {
	t.Parallel()
	s, err := tasks.NewSharding(4, []int{1, 4, 1, 2}, "Config.QueueShards")
	require.NoError(t, err)
	require.Equal(t, 4, s.Shards())
	require.Equal(t, []int{1, 2}, s.Previous(), "the current count and repeats are dropped")
	require.Equal(t, "4 (and previous 1, 2)", s.String())
	for i := range 50 {
		id := "c-" + strconv.Itoa(i)
		earlier := s.Earlier("low", id)
		require.Equal(t, "low", earlier[0])
		two, err := tasks.NewSharding(2, nil, "Config.QueueShards")
		require.NoError(t, err)
		if q := two.Queue("low", id); q != s.Queue("low", id) {
			require.Equal(t, []string{"low", q}, earlier)
		} else {
			// Counts may share a shard's name (a queue in both parts of
			// the slot space their searches overlap on): one queue, looked
			// at once.
			require.Equal(t, []string{"low"}, earlier)
		}
	}
	got := s.Expand(map[string]int{"critical": 6, "low": 1})
	for _, q := range []string{"critical", "low"} {
		for _, n := range []int{4, 1, 2} {
			for k := range n {
				require.Contains(t, got, rediskeys.QueueShard(q, k, n))
			}
		}
	}
	require.LessOrEqual(t, len(got), 2*(4+1+2))
	for name, p := range got {
		want := map[string]int{"critical": 6, "low": 1}[rediskeys.LogicalQueue(name)]
		require.Equal(t, want, p, name)
	}
	require.Equal(t, 6, got["critical"])
	require.Equal(t, 1, got[rediskeys.QueueShard("low", 3, 4)])

	// Back to one shard: the old shards are still found and served.
	down, err := tasks.NewSharding(1, []int{4}, "Config.QueueShards")
	require.NoError(t, err)
	require.NotNil(t, down)
	require.Equal(t, "low", down.Queue("low", "c-1"))
	require.Nil(t, down.EnqueueOptions("low", "c-1"))
	earlier := down.Earlier("low", "c-1")
	require.Len(t, earlier, 1)
	require.Equal(t, s.Queue("low", "c-1"), earlier[0], "where the count of 4 put it")
	require.Len(t, down.Expand(map[string]int{"low": 1}), 5)
}

func TestShardingRefusesBadCounts(t *testing.T) {
	t.Parallel()
	_, err := tasks.NewSharding(-1, nil, "Config.QueueShards")
	require.EqualError(t, err, "Config.QueueShards must be from 1 to 64, not -1")
	_, err = tasks.NewSharding(65, nil, "Config.QueueShards")
	require.EqualError(t, err, "Config.QueueShards must be from 1 to 64, not 65")
	_, err = tasks.NewSharding(4, []int{0}, "Config.QueueShards")
	require.EqualError(t, err, "Config.PreviousQueueShards must hold counts from 1 to 64, not 0", "the error names the field that is wrong")
	_, err = tasks.NewSharding(4, []int{1, 65}, "ReconcilerConfig.QueueShards")
	require.EqualError(t, err, "ReconcilerConfig.PreviousQueueShards must hold counts from 1 to 64, not 65")
	require.NoError(t, tasks.ValidQueueName("partner-eu.slow_1"))
	require.ErrorIs(t, tasks.ValidQueueName("a#b"), tasks.ErrQueueName)
	require.Error(t, tasks.ValidQueueName(" "))
}
