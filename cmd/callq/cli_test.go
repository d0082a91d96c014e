package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The CLI commands the README shows, run as a user would against `callq api`,
// a worker and Redis.
func TestCLICommands(t *testing.T) {
	t.Parallel()
	d := deploy(t, 10*time.Millisecond)
	d.startWorker()
	run := func(env []string, args ...string) (string, int) {
		t.Helper()
		stdout, stderr, code := d.cli(env, args...)
		return stdout + stderr, code
	}

	// JSON logs stamp times in milliseconds (RFC 3339).
	require.Regexp(t, `"time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)"`, d.api.logs())

	out, code := run(nil, "integrations")
	require.Zero(t, code, out)
	require.Contains(t, out, "slow")
	require.Contains(t, out, d.up.URL)

	out, code = run(nil, "call", "--integration", "slow", "GET", "/slow", "--correlation-id", "cli-1",
		"--header", "X-Test-Call=cli-1", "--wait", "20s")
	require.Zero(t, code, out)
	require.Contains(t, out, `"status": "succeeded"`)

	out, code = run(nil, "get", "cli-1")
	require.Zero(t, code, out)
	require.Contains(t, out, `"correlation_id": "cli-1"`)
	out, code = run(nil, "get", "cli-1", "--wait", "5s")
	require.Zero(t, code, out)
	require.Contains(t, out, `"status": "succeeded"`)
	// Exit codes: 3 still running when the wait ended, 1 failed or
	// canceled, 4 unauthorized or unreachable.
	out, code = run(nil, "call", "--integration", "slow", "GET", "/slow", "--correlation-id", "cli-later", "--delay", "1h", "--wait", "1s")
	require.Equal(t, 3, code, out)
	require.Contains(t, out, `"status": "queued"`)
	out, code = run(nil, "get", "cli-later", "--wait", "1s")
	require.Equal(t, 3, code, out)
	out, code = run(nil, "calls", "cancel", "cli-later")
	require.Zero(t, code, out)
	out, code = run(nil, "get", "cli-later", "--wait", "1s")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "call cli-later canceled")
	out, code = run(nil, "get", "cli-later")
	require.Zero(t, code, "without --wait the exit code is the request's: %s", out)
	out, code = run(nil, "call", "--integration", "bin", "GET", "/status/500", "--wait", "20s")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, `"status": "failed"`)
	out, code = run([]string{"CALLQ_API_KEY=wrong"}, "get", "cli-1", "--wait", "1s")
	require.Equal(t, 4, code, out)
	out, code = run([]string{"CALLQ_URL=http://" + freeAddr(t)}, "get", "cli-1", "--wait", "1s")
	require.Equal(t, 4, code, out)

	out, code = run(nil, "get", "nope")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "404")

	out, code = run(nil, "creds", "put", "c1", "--integration", "slow", "--field", "token=cli-secret-7e1f")
	require.Zero(t, code, out)
	require.Contains(t, out, `"token"`)
	out, code = run(nil, "creds", "list")
	require.Zero(t, code, out)
	require.Contains(t, out, `"c1"`)
	require.NotContains(t, out, "cli-secret-7e1f")
	out, code = run(nil, "creds", "rm", "c1")
	require.Zero(t, code, out)
	out, code = run(nil, "creds", "list")
	require.Zero(t, code, out)
	require.NotContains(t, out, `"c1"`)

	out, code = run(nil, "keys", "create", "--tenant", "beta", "--role", "producer")
	require.Zero(t, code, out)
	var created struct{ ID, Key string }
	require.NoError(t, json.Unmarshal([]byte(out[:strings.LastIndex(out, "}")+1]), &created), out)
	require.NotEmpty(t, created.Key)
	out, code = run(nil, "keys", "list")
	require.Zero(t, code, out)
	require.Contains(t, out, created.ID)
	require.NotContains(t, out, created.Key, "keys list shows no secret")
	out, code = run([]string{"CALLQ_URL=" + d.validatingURL(), "CALLQ_API_KEY=" + created.Key}, "get", "cli-1")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "404", "another tenant's call is not found")
	out, code = run(nil, "keys", "revoke", created.ID)
	require.Zero(t, code, out)
	out, code = run(nil, "keys", "list")
	require.Zero(t, code, out)
	require.NotContains(t, out, created.ID)
	out, code = run([]string{"CALLQ_URL=" + d.validatingURL(), "CALLQ_API_KEY=" + created.Key}, "get", "cli-1")
	require.Equal(t, 4, code, out)
	require.Contains(t, out, "401", "a revoked key is refused")

	out, code = run(nil, "call", "GET")
	require.Equal(t, 2, code, "a usage error: %s", out)
	require.Contains(t, out, "Usage:")
	out, code = run(nil, "keys", "create", "--tenant", "beta", "--role", "owner")
	require.Equal(t, 2, code, out)
}
