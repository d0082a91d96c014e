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
	require.Equal(t, worker.DefaultReconcileInterval, time.Duration(cfg.reconcile))
	require.True(t, bool(cfg.scheduler), "the scheduler runs unless turned off")
}

// The README's table of variables shows each flag's default as the binary
// has it. Not parallel: clears the environment the flags read.
func TestReadmeShowsTheFlagDefaults(t *testing.T) {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	clearServerEnv(t)
	var cfg serverConfig
	cfg.flags(fs, "")
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	// | `CALLQ_CONCURRENCY` | `50` | ...
	row := regexp.MustCompile("(?m)^\\| `([A-Z_]+)` \\| `([^`]*)`")
	documented := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(readme), -1) {
		documented[m[1]] = m[2]
	}
	envName := regexp.MustCompile(`\(((?:CALLQ_|REDIS_)[A-Z_]+)[);]`)
	checked := 0
	fs.VisitAll(func(f *flag.Flag) {
		m := envName.FindStringSubmatch(f.Usage)
		if m == nil {
			return
		}
		want, ok := documented[m[1]]
		if !ok {
			return // no default in the README (none, or "off")
		}
		checked++
		if _, isDuration := f.Value.(flag.Getter).Get().(time.Duration); isDuration {
			d, err := time.ParseDuration(want)
			require.NoError(t, err, "README default of %s", m[1])
			require.Equal(t, f.DefValue, d.String(), "README default of %s", m[1])
			return
		}
		if f.DefValue == "" && m[1] == "CALLQ_WEBHOOK_SCHEDULE" { // empty: the worker's own
			sched, err := parseSchedule(want)
			require.NoError(t, err)
			require.Equal(t, worker.DefaultWebhookSchedule(), sched, "README default of %s", m[1])
			return
		}
		require.Equal(t, want, f.DefValue, "README default of %s (--%s)", m[1], f.Name)
	})
	require.GreaterOrEqual(t, checked, 10, "the README's table was read")
}

func clearServerEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "CALLQ_") || name == "REDIS_URL" {
			t.Setenv(name, "")
		}
	}
}

func defaultServerConfig(t *testing.T) serverConfig {
	t.Helper()
	clearServerEnv(t)
	var cfg serverConfig
	cfg.flags(flag.NewFlagSet("worker", flag.ContinueOnError), "")
	return cfg
}
