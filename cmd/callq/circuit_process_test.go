package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
)

// TestProcessCircuitBreaker is the test of the circuit breaker, on
// two `callq worker` processes: an upstream that answers 503 until told
// otherwise, an integration with `circuit_breaker: {failures: 3, ...}` and
// calls with attempts enough. While the circuit is open the upstream
// receives a probe a cooldown, not every call's retries; no call fails
// because of the open circuit, and every call succeeds once the upstream
// heals. GET /v1/integrations, the held calls' records and the workers'
// logs show the circuit's state.
func TestProcessCircuitBreaker(t *testing.T) {
	t.Parallel()
	const cooldown = time.Second
	var failing atomic.Bool
	var requests atomic.Int64
	failing.Store(true)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if failing.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(up.Close)
	d := deployWith(t, 0, fmt.Sprintf(`  breaker:
    base_url: %s
    auth: {type: none}
    timeout: 2s
    retry: {max_attempts: 25, initial_interval: 100ms, max_interval: 200ms, max_elapsed: 10m}
    circuit_breaker: {failures: 3, window: 30s, cooldown: %s}
`, up.URL, cooldown))
	w1, w2 := d.startWorker(), d.startWorker()

	circuit := func() *producer.Circuit {
		var ans struct{ Integrations []producer.Integration }
		require.Equal(t, http.StatusOK, d.do(http.MethodGet, "/v1/integrations", nil, &ans))
		for _, in := range ans.Integrations {
			if in.Name == "breaker" {
				require.NotNil(t, in.Circuit)
				return in.Circuit
			}
		}
		t.Fatal("GET /v1/integrations does not list breaker")
		return nil
	}
	require.Equal(t, producer.CircuitClosed, circuit().State)

	const n = 12
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("circuit-%02d", i)
		var ans struct{ Status string }
		code := d.do(http.MethodPost, "/v1/calls", map[string]any{"integration": "breaker", "method": "GET", "path": "/x",
			"correlation_id": ids[i]}, &ans)
		require.Equal(t, http.StatusAccepted, code)
	}

	// The circuit opens, and the API says so.
	var open *producer.Circuit
	require.Eventually(t, func() bool {
		open = circuit()
		return open.State != producer.CircuitClosed
	}, 30*time.Second, 20*time.Millisecond, "the circuit opens")
	openedSeen, atOpen := time.Now(), requests.Load()
	require.GreaterOrEqual(t, open.Failures, 3)
	require.NotNil(t, open.OpenedAt)
	require.NotNil(t, open.NextProbeAt)
	require.LessOrEqual(t, atOpen, int64(n+2), "the first attempts, hardly any retry, reached the upstream before it opened")

	// A held call's record says why it waits.
	note := regexp.MustCompile(`^circuit (open for "breaker": \d+ consecutive failures; next probe at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ|half-open for "breaker": waiting for the outcome of its probe call)$`)
	require.Eventually(t, func() bool {
		for _, id := range ids {
			var rec tasks.Record
			require.Equal(t, http.StatusOK, d.do(http.MethodGet, "/v1/calls/"+id, nil, &rec))
			if rec.Status == tasks.StatusRetrying && note.MatchString(rec.Note) {
				return true
			}
		}
		return false
	}, 30*time.Second, 20*time.Millisecond, "a held call's record has the circuit's note")

	// Three probes, a cooldown apart, each failing: only they reach the
	// upstream. Without the breaker, twelve calls retrying every 200ms at
	// most would have sent dozens.
	probes := func() int {
		return strings.Count(w1.logs(), "circuit half-open: this call is its probe") +
			strings.Count(w2.logs(), "circuit half-open: this call is its probe")
	}
	require.Eventually(t, func() bool { return probes() >= 3 && circuit().State == producer.CircuitOpen },
		60*time.Second, 20*time.Millisecond, "probes are sent, and fail")
	elapsed, sent := time.Since(openedSeen), requests.Load()-atOpen
	t.Logf("while open for %s: %d requests, %d probes", elapsed.Round(time.Millisecond), sent, probes())
	require.LessOrEqual(t, sent, int64(probes()+2), "while open, the upstream receives the probes and hardly anything else")
	require.GreaterOrEqual(t, elapsed, 2*cooldown-200*time.Millisecond, "a cooldown between probes")

	// The upstream heals: the next probe closes the circuit and every call
	// succeeds, none failed by the circuit, each attempt one request.
	failing.Store(false)
	recs := d.waitAllTerminal(ids, time.Now().Add(60*time.Second))
	attempts := 0
	for _, id := range ids {
		rec := recs[id]
		require.Equal(t, tasks.StatusSucceeded, rec.Status, "call %s: %s", id, historyString(rec))
		require.Empty(t, rec.Note)
		attempts += rec.Attempts
	}
	require.Equal(t, requests.Load(), int64(attempts), "every attempt is a request: waiting for the circuit spends none")
	require.Equal(t, producer.CircuitClosed, circuit().State)

	logs := w1.logs() + w2.logs()
	require.Regexp(t, `"level":"warn"[^\n]*"integration":"breaker"[^\n]*"from":"closed","to":"open","failures":3[^\n]*"circuit open: consecutive failures"`, logs)
	require.Regexp(t, `"level":"warn"[^\n]*"from":"half_open","to":"open"[^\n]*"circuit open again: the probe call failed"`, logs)
	require.Regexp(t, `"level":"info"[^\n]*"from":"half_open","to":"closed"[^\n]*"circuit closed: the probe call was answered"`, logs)
	require.Equal(t, 1, strings.Count(logs, "circuit open: consecutive failures"), "one worker opened it, once")
	require.Equal(t, 1, strings.Count(logs, "circuit closed: the probe call was answered"))
	requireNoErrorLogs(t, d.api, w1, w2)
}
