package main

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
)

// scheduledCalls lists every call of the deployment's tenant made by
// schedule id, by the Unix second of its firing.
func (d *deployment) scheduledCalls(id string) map[int64]tasks.Record {
	d.t.Helper()
	out := map[int64]tasks.Record{}
	q := url.Values{"limit": {"500"}}
	for {
		var page listAnswer
		require.Equal(d.t, http.StatusOK, d.do(http.MethodGet, "/v1/calls?"+q.Encode(), nil, &page))
		for _, rec := range page.Calls {
			if rec.Schedule != id {
				continue
			}
			unix, ok := strings.CutPrefix(rec.CorrelationID, producer.ScheduleCorrelationPrefix+id+"-")
			require.True(d.t, ok, "call %s of schedule %s", rec.CorrelationID, id)
			n, err := strconv.ParseInt(unix, 10, 64)
			require.NoError(d.t, err, rec.CorrelationID)
			out[n] = rec
		}
		if page.NextCursor == nil {
			return out
		}
		q.Set("cursor", *page.NextCursor)
	}
}

// logEvents returns the JSON log events of c whose message is msg.
func logEvents(t *testing.T, c *child, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(c.logs()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev map[string]any
		if json.Unmarshal(sc.Bytes(), &ev) == nil && ev["message"] == msg {
			out = append(out, ev)
		}
	}
	return out
}

// firedBy returns the instants (Unix seconds) of schedule id that c's
// scheduler fired, by its logs.
func firedBy(t *testing.T, c *child, id string) []int64 {
	t.Helper()
	var out []int64
	for _, ev := range logEvents(t, c, "schedule fired") {
		cid, _ := ev["correlation_id"].(string)
		if unix, ok := strings.CutPrefix(cid, producer.ScheduleCorrelationPrefix+id+"-"); ok {
			n, err := strconv.ParseInt(unix, 10, 64)
			require.NoError(t, err)
			out = append(out, n)
		}
	}
	return out
}

func leaseTaken(t *testing.T, c *child) int {
	return len(logEvents(t, c, "took the scheduler's lease; this process fires the fleet's schedules"))
}

func sortedInstants(calls map[int64]tasks.Record) []int64 {
	out := make([]int64, 0, len(calls))
	for n := range calls {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Two `callq worker` processes run the scheduler: one fires, each instant
// once; SIGKILLed, the other takes over within the lease; a restart fires
// no instant twice; a delete stops the firings.
//
// The gaps this allows: none while a scheduler holds the lease. After the
// holder dies, the others take over when its lease lapses (5s) at their
// next pass (1s), and fire the latest instant missed, so the instants
// fired on either side of a SIGKILL are at most 5s + 1s + one period
// apart (measured: the lease taken 5.3s after the kill, the instants 4s
// apart, one skipped). A SIGTERMed holder releases its lease, so another
// takes over within a pass.
func TestProcessSchedulesTwoWorkers(t *testing.T) {
	t.Parallel()
	d := deploy(t, 0)
	w1, w2 := d.startWorker(), d.startWorker()
	var leader, other *child
	require.Eventually(t, func() bool {
		switch n1, n2 := leaseTaken(t, w1), leaseTaken(t, w2); {
		case n1+n2 > 1:
			t.Fatalf("both workers took the lease: %d and %d times", n1, n2)
		case n1 == 1:
			leader, other = w1, w2
		case n2 == 1:
			leader, other = w2, w1
		}
		return leader != nil
	}, 20*time.Second, 20*time.Millisecond, "no worker took the scheduler's lease")
	t.Logf("%s holds the scheduler's lease", leader.name)

	const period = 2 // seconds: a grid a wall-clock-derived ID would miss
	var created producer.Schedule
	require.Equal(t, http.StatusCreated, d.do(http.MethodPost, "/v1/schedules", map[string]any{
		"id": "tick", "cron": "@every 2s",
		"call": map[string]any{"integration": "slow", "method": "GET", "path": "/slow", "headers": map[string]string{"X-Test-Call": "tick"}},
	}, &created))
	anchor := created.UpdatedAt.Truncate(time.Second).Unix()
	onGrid := func(calls map[int64]tasks.Record) {
		t.Helper()
		for n := range calls {
			require.Zero(t, (n-anchor)%period, "instant %d is not the schedule's (anchor %d, every %ds)", n, anchor, period)
			require.Greater(t, n, anchor)
		}
	}
	steady := func(instants []int64) {
		t.Helper()
		for i := 1; i < len(instants); i++ {
			require.Equal(t, int64(period), instants[i]-instants[i-1], "a gap while a scheduler held the lease: %v", instants)
		}
	}

	// Steady state: one worker fires every instant.
	var calls map[int64]tasks.Record
	require.Eventually(t, func() bool { calls = d.scheduledCalls("tick"); return len(calls) >= 4 },
		30*time.Second, 100*time.Millisecond, "four firings did not come")
	onGrid(calls)
	before := sortedInstants(calls)
	require.Equal(t, anchor+period, before[0], "the first instant fired")
	steady(before)
	require.Empty(t, firedBy(t, other, "tick"), "only the lease holder fires")

	// SIGKILL the holder: the other takes over within the lease.
	killed := time.Now()
	leader.kill()
	lastBefore := sortedInstants(d.scheduledCalls("tick"))
	last := lastBefore[len(lastBefore)-1]
	require.Eventually(t, func() bool { return leaseTaken(t, other) == 1 }, 15*time.Second, 20*time.Millisecond, "%s did not take over", other.name)
	took := time.Since(killed)
	t.Logf("%s took the lease %s after the SIGKILL", other.name, took.Round(10*time.Millisecond))
	require.Less(t, took, producer.DefaultSchedulerLease+producer.DefaultSchedulerInterval+2*time.Second, "the takeover took longer than the lease and a pass")
	var after []int64
	require.Eventually(t, func() bool {
		calls = d.scheduledCalls("tick")
		after = nil
		for _, n := range sortedInstants(calls) {
			if n > last {
				after = append(after, n)
			}
		}
		return len(after) >= 3
	}, 30*time.Second, 100*time.Millisecond, "no firings after the SIGKILL")
	onGrid(calls)
	require.LessOrEqual(t, after[0]-last, int64(5+1+period+1), "the firings before and after the takeover: %d then %v", last, after)
	require.LessOrEqual(t, time.Unix(after[0], 0).Sub(killed), 5*time.Second+time.Second+period*time.Second+time.Second)
	steady(after)
	t.Logf("last instant before the SIGKILL %d, first after %d", last, after[0])

	// SIGTERM it, start another: no instant fired twice.
	other.stop(30 * time.Second)
	require.Zero(t, other.exitCode(), "%s exited %v", other.name, other.waitErr)
	calls = d.scheduledCalls("tick")
	stopped := sortedInstants(calls)
	lastStopped := stopped[len(stopped)-1]
	w3 := d.startWorker()
	require.Eventually(t, func() bool {
		calls = d.scheduledCalls("tick")
		return sortedInstants(calls)[len(calls)-1] >= lastStopped+2*period
	}, 30*time.Second, 100*time.Millisecond, "no firings after the restart")
	onGrid(calls)
	fired := firedBy(t, w3, "tick")
	require.NotEmpty(t, fired)
	for _, n := range fired {
		require.Greater(t, n, lastStopped, "the restarted worker fired an instant fired before it: %v", fired)
	}
	require.Empty(t, logEvents(t, w3, "schedule's firing was made already"), "the restart kept the state: nothing to fire again")

	// Across the processes, each instant fired once.
	seen := map[int64]string{}
	for _, c := range []*child{w1, w2, w3} {
		for _, n := range firedBy(t, c, "tick") {
			require.NotContains(t, seen, n, "instant %d fired by %s and %s", n, seen[n], c.name)
			seen[n] = c.name
		}
	}

	// Deleted: no firing after the delete (one under way may end).
	require.Equal(t, http.StatusNoContent, d.do(http.MethodDelete, "/v1/schedules/tick", nil, nil))
	deleted := time.Now().Unix()
	require.Never(t, func() bool {
		for n := range d.scheduledCalls("tick") {
			if n > deleted+1 {
				return true
			}
		}
		return false
	}, 4*time.Second, 200*time.Millisecond, "the deleted schedule fired")

	// Every firing's call ran once and succeeded, and the upstream saw no
	// other request.
	calls = d.scheduledCalls("tick")
	ids := make([]string, 0, len(calls))
	for _, rec := range calls {
		ids = append(ids, rec.CorrelationID)
	}
	recs := d.waitAllTerminal(ids, time.Now().Add(60*time.Second))
	for id, rec := range recs {
		require.Equal(t, tasks.StatusSucceeded, rec.Status, "%s: %+v", id, rec.Error)
		require.Equal(t, "tick", rec.Schedule, id)
	}
	require.Len(t, d.up.hitsOf("tick"), len(calls), "one request per firing")
	requireNoErrorLogs(t, d.api, w3)
}

// callq schedules, run as a user would.
func TestCLISchedules(t *testing.T) {
	t.Parallel()
	d := deploy(t, 0)
	w := d.startWorker()
	run := func(args ...string) (string, string, int) {
		t.Helper()
		return d.cli(nil, args...)
	}

	out, errOut, code := run("schedules", "ls")
	require.Zero(t, code, errOut)
	require.Regexp(t, `^ID +CRON +TIMEZONE +INTEGRATION +METHOD +PATH +NEXT RUN +LAST RUN +LAST ERROR\n$`, out)
	require.Contains(t, errOut, "no schedules")

	out, errOut, code = run("schedules", "add", "tick", "--cron", "@every 1s", "--integration", "slow", "GET", "/slow",
		"--header", "X-Test-Call=cli-tick", "--query", "n=1")
	require.Zero(t, code, errOut)
	var added producer.Schedule
	require.NoError(t, json.Unmarshal([]byte(out), &added), out)
	require.Equal(t, "tick", added.ID)
	require.Equal(t, "UTC", added.Timezone)
	require.Equal(t, []string{"1"}, added.Call.Query["n"])
	require.NotNil(t, added.NextRunAt)

	out, errOut, code = run("schedules", "add", "nightly", "--cron", "30 2 * * *", "--timezone", "Europe/Paris", "--integration", "bin",
		"POST", "/post", "--body", `{"report": "daily"}`)
	require.Zero(t, code, errOut)
	require.Contains(t, out, `"timezone": "Europe/Paris"`)

	// Taken IDs and bad fields are the API's errors; wrong usage exits 2.
	_, errOut, code = run("schedules", "add", "tick", "--cron", "@hourly", "--integration", "slow", "GET", "/slow")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "409")
	_, errOut, code = run("schedules", "add", "bad", "--cron", "@every 100ms", "--integration", "slow", "GET", "/slow")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, `"field":"cron"`)
	_, errOut, code = run("schedules", "add", "bad", "--cron", "@hourly", "GET", "/slow")
	require.Equal(t, 2, code, errOut)
	require.Contains(t, errOut, "Usage:")
	out, _, code = run("schedules", "add", "-h")
	require.Zero(t, code)
	require.Contains(t, out, "--replace")

	// The schedule fires; its calls name it.
	require.Eventually(t, func() bool { return len(d.scheduledCalls("tick")) >= 2 }, 20*time.Second, 100*time.Millisecond)
	out, errOut, code = run("calls", "ls", "--json")
	require.Zero(t, code, errOut)
	require.Contains(t, out, `"schedule": "tick"`)

	out, errOut, code = run("schedules", "ls")
	require.Zero(t, code, errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3, out)
	require.Regexp(t, `^nightly +30 2 \* \* \* +Europe/Paris +bin +POST +/post +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ +- +-$`, lines[1])
	require.Regexp(t, `^tick +@every 1s +UTC +slow +GET +/slow +\S+Z +\S+Z +-$`, lines[2])

	out, errOut, code = run("schedules", "get", "tick")
	require.Zero(t, code, errOut)
	var got producer.Schedule
	require.NoError(t, json.Unmarshal([]byte(out), &got), out)
	require.NotNil(t, got.LastCorrelationID)
	out, errOut, code = run("get", *got.LastCorrelationID)
	require.Zero(t, code, errOut)
	require.Contains(t, out, `"schedule": "tick"`)

	// --replace changes it.
	out, errOut, code = run("schedules", "add", "tick", "--cron", "@every 1h", "--integration", "slow", "GET", "/slow", "--replace")
	require.Zero(t, code, errOut)
	require.Contains(t, out, `"cron": "@every 1h"`)

	for _, id := range []string{"tick", "nightly"} {
		out, errOut, code = run("schedules", "rm", id)
		require.Zero(t, code, errOut)
		require.JSONEq(t, `{"deleted": "`+id+`"}`, out)
	}
	_, errOut, code = run("schedules", "rm", "tick")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "404")
	out, _, code = run("schedules", "ls", "--json")
	require.Zero(t, code)
	require.JSONEq(t, `{"schedules": []}`, out)
	requireNoErrorLogs(t, d.api, w)
}

// CALLQ_SCHEDULER=off keeps a worker out of the scheduling: a schedule
// does not fire until a worker that runs the scheduler starts.
func TestProcessSchedulerOff(t *testing.T) {
	t.Parallel()
	d := deploy(t, 0)
	off := d.procs.start("worker-off", "", append(slices.Clone(d.env), "CALLQ_SCHEDULER=off"), "worker")
	require.Equal(t, http.StatusCreated, d.do(http.MethodPost, "/v1/schedules", map[string]any{
		"id": "tick", "cron": "@every 1s", "call": map[string]any{"integration": "bin", "method": "GET", "path": "/get"},
	}, nil))
	require.Eventually(t, func() bool { return strings.Contains(off.logs(), `"scheduler":"off"`) }, 20*time.Second, 20*time.Millisecond)
	require.Never(t, func() bool { return len(d.scheduledCalls("tick")) > 0 }, 3*time.Second, 200*time.Millisecond,
		"a worker with CALLQ_SCHEDULER=off fired a schedule")
	on := d.startWorker()
	require.Eventually(t, func() bool { return len(d.scheduledCalls("tick")) > 0 }, 20*time.Second, 100*time.Millisecond,
		"the worker that runs the scheduler did not fire")
	require.Zero(t, leaseTaken(t, off))
	require.Equal(t, 1, leaseTaken(t, on))
}
