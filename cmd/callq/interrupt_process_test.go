package main

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/tasks"
)

// Ctrl-C during a --wait stops the waiting, not the call: the CLI exits 130
// (143 on SIGTERM) and says on stderr which call goes on and the command
// that checks it; the call then finishes in the fleet.
func TestProcessCLIWaitInterrupted(t *testing.T) {
	t.Parallel()
	d := deploy(t, 0)
	release := d.up.hold(t, 0) // the call stays running until release
	d.startWorker()

	// The CLI's requests pass through here, which reports each long poll
	// (?wait=) as it starts: the CLI is then waiting.
	waiting := make(chan string, 10)
	target, err := url.Parse(d.validatingURL())
	require.NoError(t, err)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = log.New(io.Discard, "", 0) // the interrupted polls' "context canceled"
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Query().Get("wait") != "" {
			waiting <- strings.TrimPrefix(r.URL.Path, "/v1/calls/")
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	cliEnv := append(slices.Clone(d.env), "CALLQ_URL="+front.URL, "CALLQ_API_KEY="+d.apiKey)

	// interrupt runs the CLI until its long poll for id has started and the
	// call is held at the upstream, signals it and returns its exit code
	// and stderr.
	interrupt := func(sig syscall.Signal, id string, args ...string) (int, string) {
		t.Helper()
		cmd := exec.Command(d.procs.bin, args...)
		cmd.Env = cliEnv
		c := d.procs.startCmd("cli", cmd)
		require.Eventually(t, func() bool { return c.exited() || len(d.up.hitsOf(id)) > 0 },
			60*time.Second, 5*time.Millisecond, "the worker calls the upstream")
		require.False(t, c.exited(), "callq %s exited before it waited: %s", strings.Join(args, " "), c.logs())
		select {
		case got := <-waiting:
			require.Equal(t, id, got)
		case <-c.done:
			t.Fatalf("callq %s exited before it waited: %s", strings.Join(args, " "), c.logs())
		case <-time.After(60 * time.Second):
			t.Fatalf("callq %s did not wait for the call within 60s: %s", strings.Join(args, " "), c.logs())
		}
		require.NoError(t, c.signal(sig))
		select {
		case <-c.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("callq %s did not exit within 30s of %s", strings.Join(args, " "), sig)
		}
		return c.exitCode(), c.logs()
	}

	code, out := interrupt(syscall.SIGINT, "wait-int", "call", "--integration", "slow", "GET", "/slow",
		"--correlation-id", "wait-int", "--header", "X-Test-Call=wait-int", "--wait", "60s",
		"--timeout", "30s") // the longest: the attempt is held until release
	require.Equal(t, 130, code, "Ctrl-C during call --wait: %s", out)
	require.Contains(t, out, "callq: stopped waiting for call wait-int (interrupt); the call goes on", out)
	require.Contains(t, out, "\nCheck it later with: callq calls get wait-int\n", out)
	var rec tasks.Record
	require.Equal(t, http.StatusOK, d.do(http.MethodGet, "/v1/calls/wait-int", nil, &rec))
	require.Contains(t, []tasks.Status{tasks.StatusRunning, tasks.StatusRetrying}, rec.Status, "the interrupt canceled nothing")

	// get --wait, on the same call (still held): the same, and 143 for SIGTERM.
	code, out = interrupt(syscall.SIGINT, "wait-int", "get", "wait-int", "--wait", "60s")
	require.Equal(t, 130, code, "Ctrl-C during get --wait: %s", out)
	require.Contains(t, out, "stopped waiting for call wait-int (interrupt)", out)
	code, out = interrupt(syscall.SIGTERM, "wait-int", "calls", "get", "wait-int", "--wait", "60s")
	require.Equal(t, 143, code, "SIGTERM during calls get --wait: %s", out)
	require.Contains(t, out, "stopped waiting for call wait-int (terminated)", out)

	// The call went on: released, it succeeds, and the command the CLI
	// printed shows it.
	release()
	require.Equal(t, http.StatusOK, d.do(http.MethodGet, "/v1/calls/wait-int?wait=30s", nil, &rec))
	require.Equal(t, tasks.StatusSucceeded, rec.Status)
	stdout, stderr, code := d.cli(nil, "calls", "get", "wait-int")
	require.Zero(t, code, stderr)
	require.Contains(t, stdout, `"status": "succeeded"`)
}
