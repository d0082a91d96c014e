package main

import (
	"fmt"
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

	get := func(url string) (string, error) {
		resp, err := http.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("%s answered %d", url, resp.StatusCode)
		}
		return string(b), err
	}
	// The worker counts a finished call after its record is written, and
	// the write is what wakes the wait above: poll for the count.
	finished := `callq_calls_finished_total{error_kind="",integration="slow",status="succeeded"} 1`
	var worker string
	require.Eventually(t, func() bool {
		var err error
		worker, err = get(metricsURL)
		return err == nil && strings.Contains(worker, finished)
	}, 30*time.Second, 10*time.Millisecond, "the worker never counted the call")
	require.Contains(t, worker, `callq_attempt_duration_seconds_count{integration="slow",outcome="succeeded"} 1`)
	require.NotContains(t, worker, "metrics-1", "no correlation IDs in labels")

	api, err := get(d.apiURL + "/metrics")
	require.NoError(t, err)
	require.True(t, strings.Contains(api, "go_goroutines"), "the API exposes its process metrics")
}
