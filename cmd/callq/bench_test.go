package main

import (
	"bytes"
	"encoding/json"
	"os"
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
	require.Equal(t, []string{"asynq_http_cred_per_s", "asynq_http_per_s", "asynq_http_redis_cmds_per_call", "asynq_noop_per_s",
		"callq_cred_per_s", "callq_cred_redis_cmds_per_call", "callq_cred_vs_asynq_http", "callq_per_s",
		"callq_vs_asynq_http", "callq_vs_asynq_noop", "calls", "concurrency", "date", "go_enqueue_per_s",
		"http_enqueue_per_s", "idle_pickup_ms", "list_p99_ms", "machine", "redis_cmds_per_call", "redis_cpu_us_per_call",
		"wait_latency_ms", "worker_peak_rss_mb"}, keys)
	var cpu map[string]float64
	require.NoError(t, json.Unmarshal(got["redis_cpu_us_per_call"], &cpu))
	require.Len(t, cpu, 4)
	for _, phase := range []string{"asynq_noop", "asynq_http", "callq", "callq_cred"} {
		require.Positive(t, cpu[phase], "redis_cpu_us_per_call.%s", phase)
	}
	var lat struct{ P50, P99 *float64 }
	require.NoError(t, json.Unmarshal(got["wait_latency_ms"], &lat))
	require.NotNil(t, lat.P50)
	require.NotNil(t, lat.P99)
	require.Contains(t, stderr.String(), "callq bench", "progress lines go to stderr")
}

// `callq bench --scaling` runs asynq + net/http and callq at each
// concurrency and body size, each beside the other. No figure is asserted.
func TestBenchScalingReportsEachSetting(t *testing.T) {
	t.Parallel()
	bin := callqBinary(t)
	cmd := exec.Command(bin, "bench", "--scaling", "--calls", "40", "--json")
	cmd.Env = childEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "callq bench --scaling: %s", stderr.String())
	var got struct {
		Scaling struct {
			Runs []struct {
				Concurrency   int     `json:"concurrency"`
				BodyBytes     int     `json:"body_bytes"`
				Calls         int     `json:"calls"`
				AsynqHTTPPerS float64 `json:"asynq_http_per_s"`
				CallqPerS     float64 `json:"callq_per_s"`
			}
		}
	}
	dec := json.NewDecoder(bytes.NewReader(stdout.Bytes()))
	require.NoError(t, dec.Decode(&got), "%s", stdout.String())
	var settings [][2]int
	for _, r := range got.Scaling.Runs {
		settings = append(settings, [2]int{r.Concurrency, r.BodyBytes})
		require.Equal(t, 40, r.Calls)
		require.Positive(t, r.AsynqHTTPPerS)
		require.Positive(t, r.CallqPerS)
	}
	require.Equal(t, [][2]int{{10, 0}, {50, 0}, {200, 0}, {50, 1 << 10}, {50, 64 << 10}, {50, 1 << 20}}, settings)

	out, err := exec.Command(bin, "bench", "--scaling", "--cluster").CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), "--cluster and --scaling are separate runs")
}

// `callq bench --cluster` starts a local cluster, runs the callq
// throughput phase on it with one queue shard and with --queue-shards, and
// reports each master's commands per call and their spread, under the keys
// the README documents. Splitting the queues evens the masters out: that
// is the point of the flag, so it is checked (the rates are not).
func TestBenchClusterReportsCommandsPerMaster(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v (CI=true, so this is a failure, not a skip)", err)
		}
		t.Skip(err)
	}
	bin := callqBinary(t)
	cmd := exec.Command(bin, "bench", "--cluster", "--calls", "600", "--concurrency", "10", "--json")
	cmd.Env = childEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "callq bench --cluster: %s", stderr.String())
	var got struct {
		Cluster struct {
			Masters           int `json:"masters"`
			ReplicasPerMaster int `json:"replicas_per_master"`
			Runs              []struct {
				QueueShards        int       `json:"queue_shards"`
				CallqPerS          float64   `json:"callq_per_s"`
				GoEnqueuePerS      float64   `json:"go_enqueue_per_s"`
				MasterCmdsPerCall  []float64 `json:"master_cmds_per_call"`
				Spread             float64   `json:"spread"`
				MasterCPUUSPerCall []float64 `json:"master_cpu_us_per_call"`
			} `json:"runs"`
		} `json:"cluster"`
		Machine     json.RawMessage `json:"machine"`
		Calls       int             `json:"calls"`
		Concurrency int             `json:"concurrency"`
		Date        string          `json:"date"`
	}
	dec := json.NewDecoder(&stdout)
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&got), "%s", stdout.String())
	require.Equal(t, 3, got.Cluster.Masters)
	require.Equal(t, 1, got.Cluster.ReplicasPerMaster)
	require.Equal(t, 600, got.Calls)
	require.Len(t, got.Cluster.Runs, 2)
	require.Equal(t, 1, got.Cluster.Runs[0].QueueShards)
	require.Equal(t, 6, got.Cluster.Runs[1].QueueShards)
	for _, run := range got.Cluster.Runs {
		require.Positive(t, run.CallqPerS)
		require.Positive(t, run.GoEnqueuePerS)
		require.Len(t, run.MasterCmdsPerCall, 3)
		require.Len(t, run.MasterCPUUSPerCall, 3)
		require.GreaterOrEqual(t, run.Spread, 1.0)
	}
	t.Logf("spread of the masters' commands: %.2f with 1 shard, %.2f with 6", got.Cluster.Runs[0].Spread, got.Cluster.Runs[1].Spread)
	require.Less(t, got.Cluster.Runs[1].Spread, got.Cluster.Runs[0].Spread, "6 shards spread the work more evenly than 1")
	require.Contains(t, stderr.String(), "callq on the cluster", "progress lines go to stderr")

	// --queue-shards belongs to --cluster.
	out, err := exec.Command(bin, "bench", "--queue-shards", "4").CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), "--queue-shards goes with --cluster")
}
