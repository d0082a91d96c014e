package main

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A worker with CALLQ_METRICS_ADDR serves Prometheus metrics of its calls;
// the API serves /metrics on its own address, without an API key.
func TestMetricsEndpoints(t *testing.T) {
	t.Parallel()
	d := deploy(t, 0)
	var metricsURL string
	d.procs.startListening(func() (*child, []string) {
		addr := freeAddr(t)
		metricsURL = "http://" + addr + "/metrics"
		c := d.procs.start("worker-metrics", "", append(slices.Clone(d.env), "CALLQ_METRICS_ADDR="+addr), "worker")
		return c, []string{metricsURL}
	})
	d.enqueue("metrics-1")
	d.waitAllTerminal([]string{"metrics-1"}, time.Now().Add(30*time.Second))

	get := func(url string) string {
		resp, err := http.Get(url)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, url)
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return string(b)
	}
	worker := get(metricsURL)
	require.Contains(t, worker, `callq_calls_finished_total{error_kind="",integration="slow",status="succeeded"} 1`)
	require.Contains(t, worker, `callq_attempt_duration_seconds_count{integration="slow",outcome="succeeded"} 1`)
	require.NotContains(t, worker, "metrics-1", "no correlation IDs in labels")

	api := get(d.apiURL + "/metrics")
	require.True(t, strings.Contains(api, "go_goroutines"), "the API exposes its process metrics")
}
