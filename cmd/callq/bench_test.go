package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// `callq bench` (what `make bench` runs) works end to end, small; its JSON
// has exactly the keys the README documents. No figure is asserted: speed
// is measured, never tested.
func TestBenchRunsAndReportsItsKeys(t *testing.T) {
	t.Parallel()
	bin := callqBinary(t)
	cmd := exec.Command(bin, "bench", "--calls", "300", "--concurrency", "10", "--http-requests", "300",
		"--wait-samples", "20", "--pickup-samples", "10", "--list-records", "3000", "--list-samples", "30", "--json")
	cmd.Env = childEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "callq bench: %s", stderr.String())
	var got map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &got), "%s", stdout.String())
	keys := make([]string, 0, len(got))
	for k := range got {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	require.Equal(t, []string{"asynq_http_per_s", "asynq_http_redis_cmds_per_call", "asynq_noop_per_s", "callq_per_s",
		"callq_vs_asynq_http", "callq_vs_asynq_noop", "calls", "concurrency", "date", "go_enqueue_per_s",
		"http_enqueue_per_s", "idle_pickup_ms", "list_p99_ms", "machine", "redis_cmds_per_call", "wait_latency_ms", "worker_peak_rss_mb"}, keys)
	var lat struct{ P50, P99 *float64 }
	require.NoError(t, json.Unmarshal(got["wait_latency_ms"], &lat))
	require.NotNil(t, lat.P50)
	require.NotNil(t, lat.P99)
	require.Contains(t, stderr.String(), "callq bench", "progress lines go to stderr")
}
