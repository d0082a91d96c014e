package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/flow"
	"github.com/callq/callq/tasks"
)

// capUpstream counts the requests in flight at once. /hold?ms=N answers
// after N milliseconds; /hold without ms holds the request until the
// client goes away or the test lets every held request go (release).
type capUpstream struct {
	*httptest.Server
	release chan struct{}
	once    sync.Once

	mu    sync.Mutex
	now   int
	most  int
	open  map[string]bool // the calls (X-Test-Call) in flight
	sends map[string]int  // requests per call
}

func newCapUpstream(t *testing.T) *capUpstream {
	u := &capUpstream{release: make(chan struct{}), open: map[string]bool{}, sends: map[string]int{}}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Test-Call")
		u.mu.Lock()
		u.now++
		u.most = max(u.most, u.now)
		u.open[id] = true
		u.sends[id]++
		u.mu.Unlock()
		var wait <-chan time.Time
		if ms, err := strconv.Atoi(r.URL.Query().Get("ms")); err == nil {
			t := time.NewTimer(time.Duration(ms) * time.Millisecond)
			defer t.Stop()
			wait = t.C
		}
		select {
		case <-wait:
		case <-u.release:
		case <-r.Context().Done(): // the worker died, or gave up
		}
		u.mu.Lock()
		u.now--
		delete(u.open, id)
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ok":true}`)
	}))
	t.Cleanup(u.Close)
	t.Cleanup(u.releaseAll) // runs first: lets Close return
	return u
}

func (u *capUpstream) releaseAll() { u.once.Do(func() { close(u.release) }) }

// inFlight is how many requests are in flight, the most there were at
// once, and whether each of ids is in flight.
func (u *capUpstream) inFlight(ids ...string) (now, most int, open []bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, id := range ids {
		open = append(open, u.open[id])
	}
	return u.now, u.most, open
}

func (u *capUpstream) sent(id string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.sends[id]
}

// deployCapped deploys callq with the integration capped (concurrency 2)
// over a capUpstream.
func deployCapped(t *testing.T) (*deployment, *capUpstream) {
	t.Helper()
	up := newCapUpstream(t)
	d := deployWith(t, 0, fmt.Sprintf(`  capped:
    base_url: %s
    auth: {type: none}
    timeout: 30s
    max_timeout: 30s
    retry: {max_attempts: 1}
    concurrency: 2
`, up.URL))
	return d, up
}

// enqueueCapped POSTs a call of capped to /hold (with ?ms= unless ms < 0).
func (d *deployment) enqueueCapped(id string, ms int) {
	d.t.Helper()
	call := map[string]any{"integration": "capped", "method": "GET", "path": "/hold",
		"headers": map[string]string{"X-Test-Call": id}, "correlation_id": id}
	if ms >= 0 {
		call["query"] = map[string][]string{"ms": {strconv.Itoa(ms)}}
	}
	require.Equal(d.t, http.StatusAccepted, d.do(http.MethodPost, "/v1/calls", call, nil), "enqueue %s", id)
}

// awaitNote polls GET /v1/calls/{id} of ids until one shows retrying with
// the note, a next_attempt_at and no attempt spent.
func (d *deployment) awaitNote(note string, bound time.Duration, ids ...string) {
	d.t.Helper()
	deadline := time.Now().Add(bound)
	for {
		for _, id := range ids {
			var rec tasks.Record
			if d.do(http.MethodGet, "/v1/calls/"+id, nil, &rec) == http.StatusOK && rec.Status == tasks.StatusRetrying &&
				rec.Note == note && rec.NextAttemptAt != nil && rec.Attempts == 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("no call of %v showed retrying with the note %q within %s", ids, note, bound)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (d *deployment) slotsInUse() int {
	d.t.Helper()
	slots, err := flow.NewSlots(d.redis.Client(d.t), nil)
	require.NoError(d.t, err)
	n, err := slots.InUse(context.Background(), "acme", "capped")
	require.NoError(d.t, err)
	return n
}

// Two worker processes, a cap of 2, ten one-second calls: the upstream
// never sees more than 2 at once, and does see 2; every call succeeds on
// its first attempt, the others waiting their turn without spending one.
func TestProcessConcurrencyCapAcrossWorkers(t *testing.T) {
	t.Parallel()
	d, up := deployCapped(t)
	w1, w2 := d.startWorker(), d.startWorker()
	var ids []string
	for i := range 10 {
		ids = append(ids, fmt.Sprintf("cap-%02d", i))
		d.enqueueCapped(ids[i], 1000)
	}
	d.awaitNote(`waiting for a free slot: 2 of 2 requests to "capped" are in flight`, 20*time.Second, ids...)
	start := time.Now()
	recs := d.waitAllTerminal(ids, time.Now().Add(2*time.Minute))
	t.Logf("ten one-second calls under a cap of 2 finished %s after the first was seen held", time.Since(start).Round(10*time.Millisecond))
	for _, id := range ids {
		rec := recs[id]
		require.Equal(t, tasks.StatusSucceeded, rec.Status, "call %s: %s", id, historyString(rec))
		require.Equal(t, 1, rec.Attempts, "call %s: waiting for a slot spends no attempt", id)
		require.Empty(t, rec.Note, "call %s", id)
		require.Equal(t, 1, up.sent(id), "call %s", id)
	}
	_, most, _ := up.inFlight()
	require.Equal(t, 2, most, "never more than 2 at once across both workers, and 2 at times")
	require.Zero(t, d.slotsInUse(), "every slot released")
	attempts := func(c *child) int { return strings.Count(c.logs(), `"message":"attempt"`) }
	t.Logf("attempts by worker1: %d, by worker2: %d", attempts(w1), attempts(w2))
	require.Equal(t, 10, attempts(w1)+attempts(w2))
	requireNoErrorLogs(t, d.api, w1, w2)
}

// A worker SIGKILLed while its calls hold both slots does not leak them:
// they free when their lease ends (flow.DefaultLease, 15s), and the other
// worker's calls take them, long before asynq's lease recovery would hand
// the killed worker's calls to another worker (60 to 120s). A call
// canceled through the API while in flight gives its slot back at once.
func TestProcessKilledWorkerSlotsFreeWithinTheLease(t *testing.T) {
	t.Parallel()
	d, up := deployCapped(t)
	w1 := d.startWorker()
	d.enqueueCapped("killed-a", -1)
	d.enqueueCapped("killed-b", -1)
	deadline := time.Now().Add(20 * time.Second)
	for now, _, _ := up.inFlight(); now < 2; now, _, _ = up.inFlight() {
		if time.Now().After(deadline) {
			t.Fatalf("worker1 did not get both calls to the upstream within 20s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	require.Equal(t, 2, d.slotsInUse())

	w2 := d.startWorker()
	killed := time.Now()
	w1.kill()
	require.Equal(t, -1, w1.exitCode(), "worker1 should have died of SIGKILL: %v", w1.waitErr)
	t.Logf("SIGKILLed worker1 (pid %d) holding both slots", w1.cmd.Process.Pid)
	require.Eventually(t, func() bool { now, _, _ := up.inFlight(); return now == 0 }, 10*time.Second, 10*time.Millisecond,
		"the upstream should see worker1's requests go away")

	// worker2's calls wait for the slots worker1 left taken.
	d.enqueueCapped("after-c", -1)
	d.enqueueCapped("after-d", -1)
	d.awaitNote(`waiting for a free slot: 2 of 2 requests to "capped" are in flight`, 10*time.Second, "after-c", "after-d")
	deadline = killed.Add(flow.DefaultLease + 10*time.Second)
	for _, _, open := up.inFlight("after-c", "after-d"); !open[0] || !open[1]; _, _, open = up.inFlight("after-c", "after-d") {
		if time.Now().After(deadline) {
			t.Fatalf("worker2's calls were not both in flight %s after the kill (the lease is %s); slots in use: %d",
				time.Since(killed).Round(time.Millisecond), flow.DefaultLease, d.slotsInUse())
		}
		time.Sleep(10 * time.Millisecond)
	}
	freed := time.Since(killed)
	t.Logf("worker2 had both slots %s after the kill", freed.Round(10*time.Millisecond))
	// The slots were renewed every 5s until the kill, so their lease ended
	// 10 to 15s after it; worker2's calls came back within 2.25s of that.
	require.Greater(t, freed, flow.DefaultLease*2/3-time.Second, "the slots were held until their lease ended")
	require.Less(t, freed, flow.DefaultLease+5*time.Second)
	require.Equal(t, 1, up.sent("killed-a"), "asynq has not recovered worker1's calls yet: the slots were freed by their lease")
	require.Equal(t, 1, up.sent("killed-b"))
	var rec tasks.Record
	require.Equal(t, http.StatusOK, d.do(http.MethodGet, "/v1/calls/killed-a", nil, &rec))
	require.Equal(t, tasks.StatusRunning, rec.Status, "still asynq's active task of the dead worker")

	// DELETE while in flight: the slot is back at once, and the next call
	// takes it.
	require.Equal(t, 2, d.slotsInUse())
	require.Equal(t, http.StatusOK, d.do(http.MethodDelete, "/v1/calls/after-c", nil, nil))
	require.Eventually(t, func() bool { return d.slotsInUse() == 1 }, 5*time.Second, 10*time.Millisecond,
		"the canceled call's slot should be released")
	d.enqueueCapped("after-e", 0)
	recs := d.waitAllTerminal([]string{"after-e"}, time.Now().Add(30*time.Second))
	require.Equal(t, tasks.StatusSucceeded, recs["after-e"].Status)
	require.Equal(t, 1, recs["after-e"].Attempts)

	up.releaseAll()
	recs = d.waitAllTerminal([]string{"after-c", "after-d"}, time.Now().Add(30*time.Second))
	require.Equal(t, tasks.StatusCanceled, recs["after-c"].Status)
	require.Equal(t, tasks.StatusSucceeded, recs["after-d"].Status)
	require.Equal(t, 1, recs["after-d"].Attempts)
	require.False(t, w2.exited(), "worker2 exited: %v", w2.waitErr)
	requireNoErrorLogs(t, d.api, w2)
}
