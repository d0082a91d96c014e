package main

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
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
