package main

import (
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

// The server flags default to the packages' exported defaults, not to
// copies of them. Not parallel: clears the environment the flags read.
func TestServerFlagsTakeThePackagesDefaults(t *testing.T) {
	cfg := defaultServerConfig(t)
	require.Equal(t, worker.DefaultConcurrency, cfg.concurrency)
	queues, _, err := parseQueues(cfg.queues)
	require.NoError(t, err)
	require.Equal(t, worker.DefaultQueues(), queues)
	require.Equal(t, tasks.DefaultResultTTL, cfg.resultTTL)
	require.EqualValues(t, tasks.DefaultMaxRequestBytes, cfg.maxRequestBytes)
	require.EqualValues(t, worker.DefaultMaxResponseBytes, cfg.maxResponseBytes)
	require.Equal(t, worker.DefaultShutdownTimeout, cfg.shutdownTimeout)
	require.Equal(t, worker.DefaultReconcileInterval, cfg.reconcile)
	require.True(t, cfg.scheduler, "the scheduler runs unless turned off")
}

// The README's table of variables lists every variable of the settings
// table, with its default as the binary has it. Not parallel: clears the
// environment the flags read.
func TestReadmeShowsEveryVariableAndItsDefault(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	// | `CALLQ_CONCURRENCY` | `50` | ...
	row := regexp.MustCompile("(?m)^\\| `([A-Z_]+)` \\| (`([^`]*)`)?")
	documented := map[string]string{}
	listed := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(string(readme), -1) {
		listed[m[1]] = true
		if m[2] != "" {
			documented[m[1]] = m[3]
		}
	}
	checked := 0
	for _, s := range settings {
		require.True(t, listed[s.env], "the README's table of variables has no row for %s", s.env)
		want, ok := documented[s.env]
		if !ok {
			require.Empty(t, s.def, "the README shows no default for %s", s.env)
			continue
		}
		checked++
		if d, err := time.ParseDuration(s.def); err == nil {
			wd, err := time.ParseDuration(want)
			require.NoError(t, err, "README default of %s", s.env)
			require.Equal(t, d, wd, "README default of %s", s.env)
			continue
		}
		if s.def == "" && s.env == "CALLQ_WEBHOOK_SCHEDULE" { // empty: the worker's own
			sched, err := parseSchedule(want)
			require.NoError(t, err)
			require.Equal(t, worker.DefaultWebhookSchedule(), sched, "README default of %s", s.env)
			continue
		}
		require.Equal(t, want, s.def, "README default of %s", s.env)
	}
	require.GreaterOrEqual(t, checked, 10, "the README's table was read")
	// And each default parses: newConfig panics on one that does not.
	clearServerEnv(t)
	for _, cmd := range []string{"api", "worker", "dev", "client", "healthcheck", "integrations", "keys create", "creds reseal"} {
		require.NotPanics(t, func() { newConfig(flag.NewFlagSet(cmd, flag.ContinueOnError), cmd) }, cmd)
	}
}

func clearServerEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "CALLQ_") || name == "REDIS_URL" {
			t.Setenv(name, "")
		}
	}
}

func defaultServerConfig(t *testing.T) *config {
	t.Helper()
	clearServerEnv(t)
	return newConfig(flag.NewFlagSet("worker", flag.ContinueOnError), "worker")
}
