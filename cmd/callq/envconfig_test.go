package main

import (
	"errors"
	"flag"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/worker"
)

// A malformed numeric, duration or boolean environment value stops the
// command with an error naming the variable, instead of running on the
// default the operator meant to change (a drain limit of "45" would
// otherwise silently stay 30s).
func TestProcessMalformedEnvRefusesToStart(t *testing.T) {
	t.Parallel()
	bin := callqBinary(t)
	cases := []struct{ cmd, env, want string }{
		{"worker", "CALLQ_SHUTDOWN_TIMEOUT=45", `CALLQ_SHUTDOWN_TIMEOUT: "45" is not a duration`},
		{"worker", "CALLQ_CONCURRENCY=fifty", `CALLQ_CONCURRENCY: "fifty" is not a whole number`},
		{"api", "CALLQ_RESULT_TTL=1 day", `CALLQ_RESULT_TTL: "1 day" is not a duration`},
		{"api", "CALLQ_MAX_REQUEST_BYTES=1MiB", `CALLQ_MAX_REQUEST_BYTES: "1MiB" is not a whole number`},
		{"api", "CALLQ_WEBHOOK_ALLOW_PRIVATE=yes", `CALLQ_WEBHOOK_ALLOW_PRIVATE: "yes" is not true or false`},
		{"dev", "CALLQ_ALLOW_SOURCE_REFS=on", `CALLQ_ALLOW_SOURCE_REFS: "on" is not true or false`},
		{"worker", "CALLQ_RECONCILE_INTERVAL=0", `CALLQ_RECONCILE_INTERVAL: "0" is not a duration of at least 10ms such as 1m, or off`},
		{"dev", "CALLQ_RECONCILE_INTERVAL=-1m", `CALLQ_RECONCILE_INTERVAL: "-1m" is not a duration of at least 10ms`},
		{"worker", "CALLQ_RECONCILE_INTERVAL=60", `CALLQ_RECONCILE_INTERVAL: "60" is not a duration of at least 10ms`},
		{"worker", "CALLQ_SCHEDULER=yes", `CALLQ_SCHEDULER: "yes" is not on or off`},
		{"dev", "CALLQ_SCHEDULER=false", `CALLQ_SCHEDULER: "false" is not on or off`},
		{"api", "CALLQ_QUEUE_SHARDS=0", `CALLQ_QUEUE_SHARDS: "0" is not a whole number from 1 to 64`},
		{"worker", "CALLQ_QUEUE_SHARDS=65", `CALLQ_QUEUE_SHARDS: "65" is not a whole number from 1 to 64`},
		{"worker", "CALLQ_PREVIOUS_QUEUE_SHARDS=1;4", `CALLQ_PREVIOUS_QUEUE_SHARDS: "1;4" is not whole numbers from 1 to 64, comma-separated`},
	}
	for _, tc := range cases {
		t.Run(tc.cmd+"/"+strings.SplitN(tc.env, "=", 2)[0], func(t *testing.T) {
			t.Parallel()
			// Nothing listens on port 1: a command that got past its
			// configuration would fail on Redis instead, with another message.
			cmd := exec.Command(bin, tc.cmd)
			cmd.Env = childEnv(tc.env, "REDIS_URL=redis://127.0.0.1:1/0", "CALLQ_API_ADDR="+freeAddr(t))
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			require.True(t, errors.As(err, &exit), "callq %s with %s: err = %v, want a non-zero exit; output:\n%s", tc.cmd, tc.env, err, out)
			require.NotZero(t, exit.ExitCode())
			require.Contains(t, string(out), tc.want)
		})
	}
	// Positive control: a well-formed value gets past configuration (and
	// then fails on the unreachable Redis, not on the variable).
	cmd := exec.Command(bin, "worker")
	cmd.Env = childEnv("CALLQ_SHUTDOWN_TIMEOUT=45s", "REDIS_URL=redis://127.0.0.1:1/0")
	out, err := cmd.CombinedOutput()
	require.Error(t, err)
	require.NotContains(t, string(out), "CALLQ_SHUTDOWN_TIMEOUT")
	require.Contains(t, string(out), "redis")
}

// CALLQ_RECONCILE_INTERVAL and --reconcile-interval take a duration of at
// least 10ms or "off". Not parallel: sets the environment the flags read.
func TestReconcileIntervalSetting(t *testing.T) {
	for _, tc := range []struct {
		env  string
		want time.Duration
		err  string
	}{
		{"", worker.DefaultReconcileInterval, ""},
		{"30s", 30 * time.Second, ""},
		{" 2m ", 2 * time.Minute, ""},
		{"off", worker.ReconcileOff, ""},
		{"0", 0, `CALLQ_RECONCILE_INTERVAL: "0" is not a duration of at least 10ms such as 1m, or off`},
		{"-5s", 0, `CALLQ_RECONCILE_INTERVAL: "-5s" is not a duration of at least 10ms`},
		{"OFF", 0, `CALLQ_RECONCILE_INTERVAL: "OFF" is not a duration of at least 10ms`},
		{"1", 0, `CALLQ_RECONCILE_INTERVAL: "1" is not a duration of at least 10ms`},
		{"1ms", 0, `CALLQ_RECONCILE_INTERVAL: "1ms" is not a duration of at least 10ms`},
	} {
		clearServerEnv(t)
		t.Setenv("CALLQ_RECONCILE_INTERVAL", tc.env)
		fs := flag.NewFlagSet("worker", flag.ContinueOnError)
		cfg := newConfig(fs, "worker")
		if tc.err != "" {
			require.ErrorContains(t, cfg.envError(), tc.err, tc.env)
			continue
		}
		require.NoError(t, cfg.envError(), tc.env)
		require.Equal(t, tc.want, cfg.reconcile, tc.env)
	}
	// The flag wins over the environment, and refuses what the variable does.
	clearServerEnv(t)
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg := newConfig(fs, "worker")
	require.NoError(t, fs.Parse([]string{"--reconcile-interval", "off"}))
	require.Equal(t, worker.ReconcileOff, cfg.reconcile)
	require.Equal(t, "off", fs.Lookup("reconcile-interval").Value.String())
	require.Error(t, fs.Parse([]string{"--reconcile-interval", "0s"}))
	require.Equal(t, "1m0s", fs.Lookup("reconcile-interval").DefValue)
}

// CALLQ_SCHEDULER and --scheduler take on or off, nothing else. Not
// parallel: sets the environment the flags read.
func TestSchedulerSetting(t *testing.T) {
	for _, tc := range []struct {
		env  string
		want bool
		err  string
	}{
		{"", true, ""},
		{"on", true, ""},
		{" off ", false, ""},
		{"ON", false, `CALLQ_SCHEDULER: "ON" is not on or off`},
		{"1", false, `CALLQ_SCHEDULER: "1" is not on or off`},
		{"disabled", false, `CALLQ_SCHEDULER: "disabled" is not on or off`},
	} {
		clearServerEnv(t)
		t.Setenv("CALLQ_SCHEDULER", tc.env)
		fs := flag.NewFlagSet("worker", flag.ContinueOnError)
		cfg := newConfig(fs, "worker")
		if tc.err != "" {
			require.ErrorContains(t, cfg.envError(), tc.err, tc.env)
			continue
		}
		require.NoError(t, cfg.envError(), tc.env)
		require.Equal(t, tc.want, cfg.scheduler, tc.env)
	}
	clearServerEnv(t)
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg := newConfig(fs, "worker")
	require.Equal(t, "on", fs.Lookup("scheduler").DefValue)
	require.NoError(t, fs.Parse([]string{"--scheduler", "off"}))
	require.False(t, cfg.scheduler)
	require.Error(t, fs.Parse([]string{"--scheduler", "no"}))
}

// CALLQ_QUEUE_SHARDS takes a whole number from 1 to 64 (default 1), and
// CALLQ_PREVIOUS_QUEUE_SHARDS a comma-separated list of them; the flags
// win. Not parallel: sets the environment the flags read.
func TestQueueShardsSetting(t *testing.T) {
	for _, tc := range []struct {
		shards, previous string
		want             int
		wantPrev         []int
		err              string
	}{
		{"", "", 1, nil, ""},
		{"6", "", 6, nil, ""},
		{" 4 ", "1", 4, []int{1}, ""},
		{"8", "1, 4", 8, []int{1, 4}, ""},
		{"64", "", 64, nil, ""},
		{"0", "", 0, nil, `CALLQ_QUEUE_SHARDS: "0" is not a whole number from 1 to 64`},
		{"-1", "", 0, nil, `CALLQ_QUEUE_SHARDS: "-1" is not a whole number from 1 to 64`},
		{"six", "", 0, nil, `CALLQ_QUEUE_SHARDS: "six" is not a whole number from 1 to 64`},
		{"4", "1,", 0, nil, `CALLQ_PREVIOUS_QUEUE_SHARDS: "1," is not whole numbers from 1 to 64, comma-separated, such as 1 or 1,4`},
		{"4", "100", 0, nil, `CALLQ_PREVIOUS_QUEUE_SHARDS: "100" is not whole numbers from 1 to 64`},
	} {
		clearServerEnv(t)
		t.Setenv("CALLQ_QUEUE_SHARDS", tc.shards)
		t.Setenv("CALLQ_PREVIOUS_QUEUE_SHARDS", tc.previous)
		cfg := newConfig(flag.NewFlagSet("worker", flag.ContinueOnError), "worker")
		if tc.err != "" {
			require.ErrorContains(t, cfg.envError(), tc.err, tc.shards+" "+tc.previous)
			continue
		}
		require.NoError(t, cfg.envError(), tc.shards)
		require.Equal(t, tc.want, cfg.queueShards, tc.shards)
		require.Equal(t, tc.wantPrev, cfg.previousShards, tc.previous)
	}
	clearServerEnv(t)
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg := newConfig(fs, "worker")
	require.Equal(t, "1", fs.Lookup("queue-shards").DefValue)
	require.NoError(t, fs.Parse([]string{"--queue-shards", "6", "--previous-queue-shards", "1,3"}))
	require.Equal(t, 6, cfg.queueShards)
	require.Equal(t, []int{1, 3}, cfg.previousShards)
	require.Equal(t, "1,3", fs.Lookup("previous-queue-shards").Value.String())
	require.Error(t, fs.Parse([]string{"--queue-shards", "0"}))
	require.Error(t, fs.Parse([]string{"--previous-queue-shards", "x"}))
}
