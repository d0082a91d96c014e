package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
)

// listAnswer is GET /v1/calls's answer, as `callq calls ls --json` prints it.
type listAnswer struct {
	Calls      []tasks.Record `json:"calls"`
	NextCursor *string        `json:"next_cursor"`
}

// tableIDs is the first column of a table's rows, below its header.
func tableIDs(t *testing.T, table string) []string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(table, "\n"), "\n")
	require.Regexp(t, `^CORRELATION ID +STATUS +INTEGRATION +METHOD +PATH +ATTEMPTS +HTTP +ERROR +CREATED +REPLAY OF$`, lines[0], "the header:\n%s", table)
	ids := []string{}
	for _, l := range lines[1:] {
		ids = append(ids, strings.Fields(l)[0])
	}
	return ids
}

func ids(recs []tasks.Record) []string {
	out := []string{}
	for _, r := range recs {
		out = append(out, r.CorrelationID)
	}
	return out
}

// The calls commands and stats, run as a user would against `callq api`, a
// worker and Redis, with go-httpbin as the upstream.
func TestCLICalls(t *testing.T) {
	t.Parallel()
	d := deploy(t, 10*time.Millisecond)
	d.startWorker()

	// ok-*: succeeded, fail-*: failed (httpbin's 500, no retries), slow-0
	// (another integration): succeeded, later-0: due in an hour.
	enqueue := func(id, integration, path string, extra map[string]any) {
		t.Helper()
		call := map[string]any{"integration": integration, "method": "GET", "path": path, "correlation_id": id}
		for k, v := range extra {
			call[k] = v
		}
		require.Equal(t, http.StatusAccepted, d.do(http.MethodPost, "/v1/calls", call, nil), "enqueue %s", id)
	}
	var finished []string
	for i := range 5 {
		finished = append(finished, fmt.Sprintf("ok-%d", i))
		enqueue(finished[len(finished)-1], "bin", "/get", nil)
	}
	for i := range 3 {
		finished = append(finished, fmt.Sprintf("fail-%d", i))
		enqueue(finished[len(finished)-1], "bin", "/status/500", nil)
	}
	finished = append(finished, "slow-0")
	enqueue("slow-0", "slow", "/slow", map[string]any{"headers": map[string]string{"X-Test-Call": "slow-0"}})
	enqueue("later-0", "bin", "/get", map[string]any{"delay": "1h"})
	d.waitAllTerminal(finished, time.Now().Add(60*time.Second))

	ls := func(args ...string) (listAnswer, string) {
		t.Helper()
		stdout, stderr, code := d.cli(nil, append([]string{"calls", "ls", "--json"}, args...)...)
		require.Zero(t, code, "calls ls --json %v: %s", args, stderr)
		var ans listAnswer
		require.NoError(t, json.Unmarshal([]byte(stdout), &ans), stdout)
		return ans, stdout
	}
	all, raw := ls()
	require.Nil(t, all.NextCursor)
	require.Len(t, all.Calls, 10)
	require.NotContains(t, raw, `"history"`, "summaries carry no history")
	for i := 1; i < len(all.Calls); i++ {
		// Newest first, to the millisecond (the index's precision; the ID
		// orders calls of the same millisecond).
		require.False(t, all.Calls[i].CreatedAt.Truncate(time.Millisecond).After(all.Calls[i-1].CreatedAt),
			"newest first: %v", ids(all.Calls))
	}
	byID := map[string]tasks.Record{}
	for _, r := range all.Calls {
		byID[r.CorrelationID] = r
	}
	require.Equal(t, tasks.StatusFailed, byID["fail-0"].Status)
	require.Equal(t, tasks.StatusQueued, byID["later-0"].Status)

	t.Run("table", func(t *testing.T) {
		stdout, stderr, code := d.cli(nil, "calls", "ls")
		require.Zero(t, code, stderr)
		require.Empty(t, stderr, "no cursor: every call fits the default page")
		require.Equal(t, ids(all.Calls), tableIDs(t, stdout))
		created := byID["fail-0"].CreatedAt.UTC().Format(time.RFC3339)
		require.Regexp(t, `(?m)^fail-0 +failed +bin +GET +/status/500 +1/1 +500 +http_status +`+created+` +-$`, stdout)
		require.Regexp(t, `(?m)^slow-0 +succeeded +slow +GET +/slow +1/5 +200 +- +\S+Z +-$`, stdout)
		require.Regexp(t, `(?m)^later-0 +queued +bin +GET +/get +0/1 +- +- +\S+Z +-$`, stdout)
	})

	t.Run("filters", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			want []string
		}{
			{[]string{"--status", "failed"}, []string{"fail-0", "fail-1", "fail-2"}},
			{[]string{"--status", "failed", "--status", "queued"}, []string{"fail-0", "fail-1", "fail-2", "later-0"}},
			{[]string{"--integration", "slow"}, []string{"slow-0"}},
			{[]string{"--status", "succeeded", "--integration", "bin"}, []string{"ok-0", "ok-1", "ok-2", "ok-3", "ok-4"}},
			{[]string{"--since", "1h"}, ids(all.Calls)},
			{[]string{"--until", "1h"}, nil},
			{[]string{"--since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}, nil},
		} {
			got, _ := ls(c.args...)
			require.ElementsMatch(t, c.want, ids(got.Calls), "calls ls %v", c.args)
		}
		// An RFC 3339 time: since is inclusive, until exclusive (to the
		// millisecond, the index's precision).
		at := byID["fail-0"].CreatedAt.Truncate(time.Millisecond)
		var after, before []string
		for _, r := range all.Calls {
			if r.CreatedAt.Truncate(time.Millisecond).Before(at) {
				before = append(before, r.CorrelationID)
			} else {
				after = append(after, r.CorrelationID)
			}
		}
		got, _ := ls("--since", at.Format(time.RFC3339Nano))
		require.Equal(t, after, ids(got.Calls))
		got, _ = ls("--until", at.Format(time.RFC3339Nano))
		require.Equal(t, before, ids(got.Calls))

		stdout, stderr, code := d.cli(nil, "calls", "ls", "--until", "1h")
		require.Zero(t, code, stderr)
		require.Empty(t, tableIDs(t, stdout))
		require.Contains(t, stderr, "no calls match")

		// Bad values: the API's 400 naming the field, exit 1.
		for field, args := range map[string][]string{
			"status": {"--status", "lost"}, "since": {"--since", "yesterday"},
			"integration": {"--integration", "no such/name"}, "limit": {"--limit", "501"},
		} {
			_, stderr, code := d.cli(nil, append([]string{"calls", "ls"}, args...)...)
			require.Equal(t, 1, code, "calls ls %v: %s", args, stderr)
			require.Contains(t, stderr, "400", "calls ls %v", args)
			require.Contains(t, stderr, `"field":"`+field+`"`, "calls ls %v", args)
		}
	})

	t.Run("paging", func(t *testing.T) {
		cursorRE := regexp.MustCompile(`--cursor (\S+)`)
		var seen []string
		args := []string{"calls", "ls", "--limit", "4"}
		for page := 1; ; page++ {
			stdout, stderr, code := d.cli(nil, args...)
			require.Zero(t, code, stderr)
			seen = append(seen, tableIDs(t, stdout)...)
			m := cursorRE.FindStringSubmatch(stderr)
			if page < 3 {
				require.Len(t, seen, 4*page)
				require.NotNil(t, m, "page %d: a cursor on stderr: %q", page, stderr)
				require.NotContains(t, stdout, m[1], "the cursor is on stderr only")
				args = []string{"calls", "ls", "--limit", "4", "--cursor", m[1]}
				continue
			}
			require.Nil(t, m, "the last page has no cursor: %q", stderr)
			break
		}
		require.Equal(t, ids(all.Calls), seen, "pages neither repeat nor skip a call")

		stdout, stderr, code := d.cli(nil, "calls", "ls", "--all", "--limit", "3")
		require.Zero(t, code, stderr)
		require.Empty(t, stderr)
		require.Equal(t, ids(all.Calls), tableIDs(t, stdout))
		got, _ := ls("--all", "--limit", "3")
		require.Equal(t, ids(all.Calls), ids(got.Calls))
		require.Nil(t, got.NextCursor)
		got, _ = ls("--limit", "3", "--status", "succeeded")
		require.Len(t, got.Calls, 3)
		require.NotNil(t, got.NextCursor, "--json without --all prints the API's next_cursor")
	})

	t.Run("get", func(t *testing.T) {
		viaCalls, stderr, code := d.cli(nil, "calls", "get", "ok-0")
		require.Zero(t, code, stderr)
		viaGet, stderr, code := d.cli(nil, "get", "ok-0", "--wait", "1s")
		require.Zero(t, code, stderr)
		require.Equal(t, viaGet, viaCalls)
		require.Contains(t, viaCalls, `"status": "succeeded"`)
		require.Contains(t, viaCalls, `"history"`, "get prints the whole record")
		_, stderr, code = d.cli(nil, "calls", "get", "nope")
		require.Equal(t, 1, code)
		require.Contains(t, stderr, "404")
	})

	getRecord := func(id string, wait string) tasks.Record {
		t.Helper()
		stdout, stderr, code := d.cli(nil, "calls", "get", id, "--wait", wait)
		var r tasks.Record
		require.NoError(t, json.Unmarshal([]byte(stdout), &r), stdout)
		// The exit code says how the call ended: 0 succeeded, 1 failed or
		// canceled, 3 not finished when the wait ended.
		want := map[tasks.Status]int{tasks.StatusSucceeded: 0, tasks.StatusFailed: 1, tasks.StatusCanceled: 1}[r.Status]
		if !r.Status.Terminal() {
			want = 3
		}
		require.Equal(t, want, code, "calls get %s --wait %s, status %s: %s", id, wait, r.Status, stderr)
		return r
	}

	t.Run("replay", func(t *testing.T) {
		stdout, stderr, code := d.cli(nil, "calls", "replay", "fail-0", "--as", "fail-0-again")
		require.Zero(t, code, stderr)
		var ans struct {
			CorrelationID string `json:"correlation_id"`
			ReplayOf      string `json:"replay_of"`
		}
		require.NoError(t, json.Unmarshal([]byte(stdout), &ans), stdout)
		require.Equal(t, "fail-0-again", ans.CorrelationID)
		require.Equal(t, "fail-0", ans.ReplayOf)

		rec := getRecord("fail-0-again", "20s")
		require.Equal(t, tasks.StatusFailed, rec.Status, "the replay makes the same request: %+v", rec)
		require.Equal(t, "/status/500", rec.Path)
		require.Equal(t, "fail-0", rec.ReplayOf)
		require.Equal(t, "fail-0-again", getRecord("fail-0", "1s").ReplayedBy)

		// Without --as: a generated ID.
		stdout, stderr, code = d.cli(nil, "calls", "replay", "ok-0")
		require.Zero(t, code, stderr)
		require.NoError(t, json.Unmarshal([]byte(stdout), &ans), stdout)
		require.Equal(t, "ok-0", ans.ReplayOf)
		require.NotEmpty(t, ans.CorrelationID)
		require.Equal(t, tasks.StatusSucceeded, getRecord(ans.CorrelationID, "20s").Status)

		for args, status := range map[string]string{
			"later-0": "409", "nope": "404", "ok-1 --as ok-2": "409",
		} {
			_, stderr, code := d.cli(nil, append([]string{"calls", "replay"}, strings.Fields(args)...)...)
			require.Equal(t, 1, code, "calls replay %s: %s", args, stderr)
			require.Contains(t, stderr, status, "calls replay %s", args)
		}
	})

	t.Run("bulk", func(t *testing.T) {
		// Bounded by --until: the replays it makes, which fail too, are
		// outside the window (and, being replays, skipped without --again).
		until := time.Now().UTC().Format(time.RFC3339Nano)
		bulk := func(extra ...string) producer.ReplayResult {
			t.Helper()
			args := append([]string{"calls", "replay", "--status", "failed", "--since", "1h", "--until", until}, extra...)
			stdout, stderr, code := d.cli(nil, args...)
			require.Zero(t, code, "%v: %s", args, stderr)
			var ans producer.ReplayResult
			require.NoError(t, json.Unmarshal([]byte(stdout), &ans), stdout)
			return ans
		}
		want := []string{"fail-1", "fail-2"} // fail-0 was replayed, fail-0-again is a replay
		dry := bulk("--dry-run")
		require.True(t, dry.DryRun)
		require.Equal(t, 2, dry.Replayed)
		require.Equal(t, 2, dry.Skipped)
		var of []string
		for _, c := range dry.Calls {
			of = append(of, c.ReplayOf)
			require.Empty(t, c.CorrelationID, "a dry run makes no call")
		}
		require.ElementsMatch(t, want, of)
		got, _ := ls("--status", "failed")
		require.Len(t, got.Calls, 4, "a dry run replays nothing")

		real := bulk()
		require.False(t, real.DryRun)
		require.Equal(t, 2, real.Replayed)
		of = nil
		var made []string
		for _, c := range real.Calls {
			of = append(of, c.ReplayOf)
			made = append(made, c.CorrelationID)
		}
		require.ElementsMatch(t, want, of)
		d.waitAllTerminal(made, time.Now().Add(30*time.Second))

		again := bulk()
		require.Zero(t, again.Replayed, "the same replay again replays nothing new: %+v", again)
		require.Equal(t, 4, again.Skipped)
		require.Equal(t, 4, bulk("--again", "--dry-run").Replayed)
		require.Equal(t, 1, bulk("--again", "--dry-run", "--limit", "1").Replayed)

		stdout, stderr, code := d.cli(nil, "calls", "ls", "--status", "failed")
		require.Zero(t, code, stderr)
		require.Len(t, tableIDs(t, stdout), 6)
		for i, id := range made {
			require.Regexp(t, `(?m)^`+regexp.QuoteMeta(id)+` +failed .* `+regexp.QuoteMeta(of[i])+`$`, stdout, "REPLAY OF")
		}
	})

	t.Run("cancel", func(t *testing.T) {
		stdout, stderr, code := d.cli(nil, "calls", "cancel", "later-0")
		require.Zero(t, code, stderr)
		require.Contains(t, stdout, `"status": "canceled"`)
		_, stderr, code = d.cli(nil, "calls", "cancel", "later-0")
		require.Equal(t, 1, code, "a finished call")
		require.Contains(t, stderr, "409")
	})

	t.Run("stats", func(t *testing.T) {
		// 10 calls, fail-0-again, the replay of ok-0, two bulk replays.
		stdout, stderr, code := d.cli(nil, "stats", "--json")
		require.Zero(t, code, stderr)
		var st producer.Stats
		require.NoError(t, json.Unmarshal([]byte(stdout), &st), stdout)
		require.EqualValues(t, 14, st.Total, stdout)
		require.Equal(t, map[tasks.Status]int64{"queued": 0, "running": 0, "retrying": 0, "succeeded": 7, "failed": 6, "canceled": 1}, st.ByStatus)
		require.Equal(t, map[string]int64{"bin": 13, "slow": 1}, st.ByIntegration)
		require.Contains(t, st.Queues, "default")
		require.WithinDuration(t, time.Now(), st.Until, time.Minute)
		require.WithinDuration(t, st.Until.Add(-time.Hour), st.Since, time.Second)

		stdout, stderr, code = d.cli(nil, "stats")
		require.Zero(t, code, stderr)
		require.Regexp(t, `^14 calls created from \S+Z to \S+Z\n`, stdout)
		require.Regexp(t, `(?m)^STATUS +CALLS\nqueued +0\nrunning +0\nretrying +0\nsucceeded +7\nfailed +6\ncanceled +1\n`, stdout)
		require.Regexp(t, `(?m)^INTEGRATION +CALLS\nbin +13\nslow +1\n`, stdout)
		require.Regexp(t, `(?m)^QUEUE +PENDING +ACTIVE +SCHEDULED +RETRY +ARCHIVED$`, stdout)
		require.Regexp(t, `(?m)^default( +\d+){5}$`, stdout)

		stdout, stderr, code = d.cli(nil, "stats", "--since", "1ms", "--json")
		require.Zero(t, code, stderr)
		require.Contains(t, stdout, `"total": 0`)
		stdout, stderr, code = d.cli(nil, "stats", "--since", "2h", "--until", "1h", "--json")
		require.Zero(t, code, stderr)
		require.Contains(t, stdout, `"total": 0`)
		stdout, stderr, code = d.cli(nil, "stats", "--since", "2h", "--until", time.Now().Add(time.Minute).UTC().Format(time.RFC3339), "--json")
		require.Zero(t, code, stderr)
		require.Contains(t, stdout, `"total": 14`)
		_, stderr, code = d.cli(nil, "stats", "--since", "yesterday")
		require.Equal(t, 1, code)
		require.Contains(t, stderr, `"field":"since"`)
	})

	t.Run("tenants", func(t *testing.T) {
		stdout, stderr, code := d.cli(nil, "keys", "create", "--tenant", "beta", "--role", "producer")
		require.Zero(t, code, stderr)
		var key struct{ Key string }
		require.NoError(t, json.Unmarshal([]byte(stdout), &key), stdout)
		beta := []string{"CALLQ_API_KEY=" + key.Key}
		stdout, stderr, code = d.cli(beta, "calls", "ls")
		require.Zero(t, code, stderr)
		require.Empty(t, tableIDs(t, stdout), "another tenant's calls are not listed")
		stdout, stderr, code = d.cli(beta, "stats", "--json")
		require.Zero(t, code, stderr)
		require.Contains(t, stdout, `"total": 0`)
		_, stderr, code = d.cli(beta, "calls", "replay", "fail-1")
		require.Equal(t, 1, code)
		require.Contains(t, stderr, "404")
		stdout, stderr, code = d.cli(beta, "calls", "replay", "--status", "failed", "--again", "--dry-run")
		require.Zero(t, code, stderr)
		require.Contains(t, stdout, `"replayed": 0`)
	})

	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{
			{"calls", "ls", "-h"}, {"calls", "ls", "--status", "failed", "--help"}, {"calls", "get", "-h"},
			{"get", "--help"}, {"calls", "replay", "-h"}, {"calls", "cancel", "--help"}, {"stats", "-h"},
			{"calls", "-h"}, {"call", "-h"},
		} {
			stdout, stderr, code := d.cli(nil, args...)
			require.Zero(t, code, "%v: %s", args, stderr)
			require.Empty(t, stderr, "%v", args)
			synopsis := "Usage: callq " + strings.Join(slices.DeleteFunc(slices.Clone(args), func(a string) bool {
				return strings.HasPrefix(a, "-") || a == "failed"
			}), " ")
			require.True(t, strings.HasPrefix(stdout, synopsis), "%v: %q does not begin %q", args, stdout, synopsis)
		}
		for _, args := range [][]string{
			{"calls"}, {"calls", "frob"}, {"calls", "ls", "extra"}, {"calls", "ls", "--limit", "x"},
			{"calls", "ls", "--nope"}, {"calls", "get"}, {"calls", "replay"}, {"calls", "replay", "a", "b"},
			{"calls", "replay", "a", "--dry-run"}, {"calls", "replay", "--status", "failed", "--as", "x"},
			{"calls", "cancel"}, {"stats", "x"}, {"stats", "--nope"},
		} {
			stdout, stderr, code := d.cli(nil, args...)
			require.Equal(t, 2, code, "%v: %s", args, stderr)
			require.Empty(t, stdout, "%v", args)
			require.Contains(t, stderr, "Usage:", "%v", args)
		}
	})
}
