package bench

import (
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/worker"
)

// A zero Config runs at callq's own defaults; HTTP requests never exceed
// the calls.
func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	var c Config
	require.NoError(t, c.withDefaults())
	require.Equal(t, Config{
		Calls: DefaultCalls, Concurrency: worker.DefaultConcurrency, Rounds: DefaultRounds,
		HTTPRequests: DefaultHTTPRequests, WaitSamples: DefaultWaitSamples, PickupSamples: DefaultPickupSamples,
		ListRecords: DefaultListRecords, ListSamples: DefaultListSamples, QueueShards: DefaultClusterQueueShards,
		Progress: io.Discard,
	}, c)

	c = Config{Calls: 300}
	require.NoError(t, c.withDefaults())
	require.Equal(t, 300, c.HTTPRequests)

	c = Config{WaitSamples: -1}
	require.EqualError(t, c.withDefaults(), "bench: Config.WaitSamples must not be negative")
	c = Config{QueueShards: 65}
	require.EqualError(t, c.withDefaults(), "bench: Config.QueueShards must be at most 64")
}

func TestPercentilesAndMedian(t *testing.T) {
	t.Parallel()
	samples := make([]float64, 100)
	for i := range samples {
		samples[i] = float64(100 - i) // 100..1, unsorted
	}
	require.Equal(t, Latency{P50: 50, P99: 99}, percentiles(samples))
	require.Equal(t, 100.0, samples[0], "percentiles leaves its input as it was")
	require.Equal(t, Latency{}, percentiles(nil))
	require.Equal(t, 2.0, median([]float64{3, 1, 2}))
	require.Equal(t, 2.5, median([]float64{4, 1, 3, 2}))
	require.Zero(t, median(nil))
	require.Zero(t, ratio(1, 0))
	require.Equal(t, 0.667, round(ratio(2, 3), 3))
}
