package worker_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

// Defaults are handed out fresh: a caller changing its copy changes nobody
// else's.
func TestDefaultQueuesIsAFreshMap(t *testing.T) {
	t.Parallel()
	q := worker.DefaultQueues()
	require.Equal(t, map[string]int{"critical": 6, tasks.DefaultQueue: 3, "low": 1}, q)
	q["critical"] = 1
	delete(q, "low")
	require.Equal(t, map[string]int{"critical": 6, tasks.DefaultQueue: 3, "low": 1}, worker.DefaultQueues())
}

func TestDefaultWebhookScheduleIsAFreshSlice(t *testing.T) {
	t.Parallel()
	s := worker.DefaultWebhookSchedule()
	want := append([]time.Duration(nil), s...)
	require.Len(t, s, 9, "ten deliveries in all")
	s[0] = 0
	require.Equal(t, want, worker.DefaultWebhookSchedule())
}

// FormatQueues writes CALLQ_QUEUES' form, highest priority first, so the
// flag's default reads as the README shows it.
func TestFormatQueues(t *testing.T) {
	t.Parallel()
	require.Equal(t, "critical=6,default=3,low=1", worker.FormatQueues(worker.DefaultQueues()))
	require.Equal(t, "a=2,b=2,c=1", worker.FormatQueues(map[string]int{"c": 1, "b": 2, "a": 2}))
	require.Empty(t, worker.FormatQueues(nil))
}
