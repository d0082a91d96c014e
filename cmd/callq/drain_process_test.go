package main

import (
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/tasks"
)

// TestProcessDrainLimitInterruptsWithoutResending SIGTERMs a worker whose
// calls outlast its drain limit (CALLQ_SHUTDOWN_TIMEOUT) while a second
// worker runs. Each cut-off attempt is recorded as interrupted and counts:
// a call allowed one attempt fails without reaching the upstream again, a
// call allowed two is sent once more, by the second worker, and succeeds.
func TestProcessDrainLimitInterruptsWithoutResending(t *testing.T) {
	t.Parallel()
	const drainLimit = time.Second
	d := deploy(t, 5*drainLimit, fmt.Sprintf("CALLQ_SHUTDOWN_TIMEOUT=%s", drainLimit))

	const n = 8 // of each kind; both kinds fit worker1's concurrency of 20
	var once, twice []string
	for i := range n {
		once = append(once, fmt.Sprintf("drain-once-%02d", i))
		d.enqueueWith(once[i], map[string]any{"retry": map[string]any{"max_attempts": 1}})
		twice = append(twice, fmt.Sprintf("drain-twice-%02d", i))
		d.enqueueWith(twice[i], map[string]any{"retry": map[string]any{"max_attempts": 2, "initial_interval": "10ms"}})
	}
	ids := append(append([]string{}, once...), twice...)

	// Every call at the upstream at about the same time, all of them held
	// by worker1.
	w1 := d.startWorker()
	deadline := time.Now().Add(20 * time.Second)
	for d.up.count() < len(ids) {
		if w1.exited() {
			t.Fatalf("worker1 exited (%v) before calling the upstream", w1.waitErr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the upstream received %d requests in 20s; expected %d", d.up.count(), len(ids))
		}
		time.Sleep(10 * time.Millisecond)
	}
	w2 := d.startWorker()

	termSent := time.Now()
	require.NoError(t, w1.signal(syscall.SIGTERM))
	select {
	case <-w1.done:
	case <-time.After(time.Minute):
		t.Fatalf("worker1 still running a minute after SIGTERM, with a drain limit of %s", drainLimit)
	}
	t.Logf("worker1 exited %s after SIGTERM (status %d)", w1.exitedAt.Sub(termSent).Round(time.Millisecond), w1.exitCode())
	require.Equal(t, 0, w1.exitCode(), "worker1 should exit 0 on SIGTERM: %v", w1.waitErr)

	recs := d.waitAllTerminal(ids, time.Now().Add(2*time.Minute))
	require.False(t, w2.exited(), "worker2 exited: %v", w2.waitErr)

	var resent []string
	for _, id := range once {
		if hs := d.up.hitsOf(id); len(hs) > 1 {
			resent = append(resent, fmt.Sprintf("%s (%d times; attempts %d of %d, %s)", id, len(hs), recs[id].Attempts, recs[id].MaxAttempts, recs[id].Status))
		}
	}
	require.Empty(t, resent, "%d of %d calls allowed one attempt reached the upstream more than once:\n%s",
		len(resent), n, strings.Join(resent, "\n"))

	lostMark := fmt.Sprintf(":%d ", w1.cmd.Process.Pid) // the worker's name is hostname:pid
	for _, id := range ids {
		rec, hist := recs[id], historyString(recs[id])
		require.Equal(t, len(rec.History), rec.Attempts, "call %s: %s", id, hist)
		require.LessOrEqual(t, rec.Attempts, rec.MaxAttempts, "call %s: %s", id, hist)
		require.LessOrEqual(t, len(d.up.hitsOf(id)), rec.Attempts, "call %s reached the upstream more often than it has attempts: %s", id, hist)
		require.NotEmpty(t, rec.History, "call %s", id)
		first := rec.History[0]
		require.Contains(t, first.Error, "attempt interrupted", "call %s: %s", id, hist)
		require.Contains(t, first.Error, lostMark, "call %s: the interruption names worker1: %s", id, hist)
		require.Contains(t, first.Error, "the upstream may have received the request", "call %s: %s", id, hist)
	}
	for _, id := range once {
		rec, hist := recs[id], historyString(recs[id])
		require.Equal(t, tasks.StatusFailed, rec.Status, "call %s: %s", id, hist)
		require.Equal(t, 1, rec.Attempts, "call %s: %s", id, hist)
		require.NotNil(t, rec.Error, "call %s", id)
		require.Contains(t, rec.Error.Message, "interrupted", "call %s: %+v", id, rec.Error)
		require.Len(t, d.up.hitsOf(id), 1, "call %s", id)
	}
	for _, id := range twice {
		rec, hist := recs[id], historyString(recs[id])
		require.Equal(t, tasks.StatusSucceeded, rec.Status, "call %s: %s", id, hist)
		require.Equal(t, 2, rec.Attempts, "call %s: %s", id, hist)
		require.Equal(t, http.StatusOK, rec.History[1].Status, "call %s: %s", id, hist)
		require.Len(t, d.up.hitsOf(id), 2, "call %s", id)
	}
	requireNoErrorLogs(t, d.api, w1, w2)
}
