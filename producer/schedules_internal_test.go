package producer

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/tasks"
)

func at(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	require.NoError(t, err)
	return v.UTC()
}

func mustCron(t *testing.T, expr, tz string) *cronSpec {
	t.Helper()
	s, err := parseCron(expr, tz)
	require.NoError(t, err)
	return s
}

// instants lists the first n instants after from, in UTC.
func instants(s *cronSpec, from time.Time, n int) []string {
	var out []string
	for t := from; len(out) < n; {
		t = s.next(t)
		out = append(out, t.UTC().Format(time.RFC3339))
	}
	return out
}

func TestParseCron(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ expr, tz, field, msg string }{
		{"", "", "cron", "is required"},
		{"   ", "UTC", "cron", "is required"},
		{"* * * *", "", "cron", "is not a cron expression"},
		{"* * * * * *", "", "cron", "is not a cron expression"}, // no seconds field
		{"61 * * * *", "", "cron", "is not a cron expression"},
		{"@reboot", "", "cron", "is not a cron expression"},
		{"@every", "", "cron", "is not a cron expression"},
		{"@every soon", "", "cron", "@every takes a Go duration"},
		{"@every 500ms", "", "cron", "at least 1s"},
		{"@every 0s", "", "cron", "at least 1s"},
		{"@every -5s", "", "cron", "at least 1s"},
		{"@every 1.5s", "", "cron", "whole number of seconds"},
		{"TZ=Europe/Paris 0 3 * * *", "", "cron", "give it in timezone"},
		{"CRON_TZ=UTC 0 3 * * *", "", "cron", "give it in timezone"},
		{"0 0 30 2 *", "", "cron", "never fires"},
		{strings.Repeat("1,", 70) + "1 * * * *", "", "cron", "longer than"},
		{"0 3 * * *", "Mars/Olympus", "timezone", "not an IANA time zone"},
		{"0 3 * * *", "Local", "timezone", "not an IANA time zone"},
		{"0 3 * * *", "../../etc/passwd", "timezone", "not an IANA time zone"},
		{"0 3 * * *", strings.Repeat("A", 65), "timezone", "not an IANA time zone"},
	} {
		_, err := parseCron(c.expr, c.tz)
		fe := requireFieldError(t, err)
		require.Equal(t, c.field, fe.Field, "%q in %q: %v", c.expr, c.tz, err)
		require.Contains(t, fe.Message, c.msg, "%q in %q", c.expr, c.tz)
	}
	for _, expr := range []string{"*/5 * * * *", "0 3 * * 1-5", "@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@every 1s", "@every 1h30m", " @every 30s "} {
		_, err := parseCron(expr, "Europe/Paris")
		require.NoError(t, err, expr)
	}
	s := mustCron(t, "@every 90s", "")
	require.Equal(t, 90*time.Second, s.every)
}

// A cron expression is read on the wall clock of its zone.
func TestCronTimezone(t *testing.T) {
	t.Parallel()
	from := at(t, "2026-01-10T00:00:00Z")
	require.Equal(t, []string{"2026-01-10T02:00:00Z", "2026-01-11T02:00:00Z"}, instants(mustCron(t, "0 3 * * *", "Europe/Paris"), from, 2))
	require.Equal(t, []string{"2026-01-10T08:00:00Z"}, instants(mustCron(t, "0 3 * * *", "America/New_York"), from, 1))
	require.Equal(t, []string{"2026-01-10T03:00:00Z"}, instants(mustCron(t, "0 3 * * *", ""), from, 1), "UTC by default")
}

// Europe/Paris goes forward from 02:00 to 03:00 on 2026-03-29 and back
// from 03:00 to 02:00 on 2026-10-25.
func TestCronDST(t *testing.T) {
	t.Parallel()
	nightly := mustCron(t, "30 2 * * *", "Europe/Paris")
	// 02:30 does not exist on the 29th: not fired that day.
	require.Equal(t, []string{"2026-03-28T01:30:00Z", "2026-03-30T00:30:00Z"}, instants(nightly, at(t, "2026-03-28T00:00:00Z"), 2))
	// 02:30 comes twice on the 25th: fired once, at the first.
	require.Equal(t, []string{"2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"}, instants(nightly, at(t, "2026-10-23T23:00:00Z"), 3))
	// An hourly expression fires at each real hour, the repeated one too:
	// 02:00 CEST, 02:00 CET, 03:00 CET.
	require.Equal(t, []string{"2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z"},
		instants(mustCron(t, "0 * * * *", "Europe/Paris"), at(t, "2026-10-24T23:30:00Z"), 3))
	// And across the spring gap: 01:00 CET, then 03:00 CEST.
	require.Equal(t, []string{"2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z"},
		instants(mustCron(t, "0 * * * *", "Europe/Paris"), at(t, "2026-03-28T23:30:00Z"), 2))
	// New York goes back from 02:00 EDT to 01:00 EST on 2026-11-01.
	require.Equal(t, []string{"2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"},
		instants(mustCron(t, "30 1 * * *", "America/New_York"), at(t, "2026-11-01T00:00:00Z"), 2))
	// @every counts elapsed time: zones and clock changes do not matter.
	require.Equal(t, []string{"2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z"},
		instants(mustCron(t, "@every 1h", "Europe/Paris"), at(t, "2026-10-24T23:30:00Z"), 2))
}

// due fires the latest instant due, never a backlog, and only within the
// catch-up window.
func TestDue(t *testing.T) {
	t.Parallel()
	const window = 5 * time.Minute
	every := mustCron(t, "@every 10s", "")
	cursor := at(t, "2026-01-10T12:00:00Z")

	f := every.due(cursor, cursor.Add(9*time.Second), window)
	require.True(t, f.at.IsZero(), "nothing due before the first instant")
	require.True(t, f.missed.IsZero())
	require.Equal(t, cursor, f.cursor)

	f = every.due(cursor, cursor.Add(10*time.Second+300*time.Millisecond), window)
	require.Equal(t, cursor.Add(10*time.Second), f.at, "the first instant, due")
	require.True(t, f.missed.IsZero())
	require.Equal(t, f.at, f.cursor)

	// Three minutes without a scheduler: only the latest instant is fired,
	// on the schedule's own grid (cursor + 10s multiples).
	f = every.due(cursor, cursor.Add(3*time.Minute+7*time.Second), window)
	require.Equal(t, cursor.Add(3*time.Minute), f.at)
	require.Equal(t, cursor.Add(10*time.Second), f.missed)
	// From there, the next look finds nothing due until the next instant.
	require.True(t, every.due(f.cursor, cursor.Add(3*time.Minute+9*time.Second), window).at.IsZero())

	// An hour-long interval missed by more than the window: passed over.
	hourly := mustCron(t, "@every 1h", "")
	f = hourly.due(cursor, cursor.Add(time.Hour+6*time.Minute), window)
	require.True(t, f.at.IsZero())
	require.Equal(t, cursor.Add(time.Hour), f.missed)
	require.Equal(t, cursor.Add(time.Hour), f.cursor)
	f = hourly.due(f.cursor, cursor.Add(2*time.Hour+time.Second), window)
	require.Equal(t, cursor.Add(2*time.Hour), f.at, "the next instant fires as usual")

	// A cron expression missed for days: the walk starts at the window, and
	// fires the latest instant in it.
	fiveMin := mustCron(t, "*/5 * * * *", "")
	f = fiveMin.due(cursor, cursor.Add(72*time.Hour+2*time.Minute), window)
	require.Equal(t, cursor.Add(72*time.Hour), f.at)
	require.Equal(t, cursor.Add(5*time.Minute), f.missed)
	// ...or none, when the window holds no instant.
	daily := mustCron(t, "0 3 * * *", "")
	f = daily.due(cursor, at(t, "2026-01-12T03:20:00Z"), window)
	require.True(t, f.at.IsZero())
	require.Equal(t, at(t, "2026-01-11T03:00:00Z"), f.missed)
	require.Equal(t, at(t, "2026-01-12T03:20:00Z"), f.cursor)
	require.Equal(t, at(t, "2026-01-13T03:00:00Z"), daily.next(f.cursor))
}

func TestNextAfter(t *testing.T) {
	t.Parallel()
	cursor := at(t, "2026-01-10T12:00:00Z")
	every := mustCron(t, "@every 30s", "")
	require.Equal(t, cursor.Add(30*time.Second), every.nextAfter(cursor, cursor.Add(time.Second)))
	require.Equal(t, cursor.Add(90*time.Second), every.nextAfter(cursor, cursor.Add(60*time.Second)), "on the schedule's grid")
	require.Equal(t, cursor.Add(30*time.Second), every.nextAfter(cursor, cursor.Add(-time.Minute)))
	require.Equal(t, at(t, "2026-01-10T12:05:00Z"), mustCron(t, "*/5 * * * *", "").nextAfter(cursor, cursor.Add(time.Minute)))
}

func TestScheduleCorrelationID(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 64)
	require.True(t, ValidScheduleID(long))
	id := ScheduleCorrelationID(long, at(t, "2286-11-20T17:46:39Z")) // the last 10-digit second
	require.Equal(t, "sched-"+long+"-9999999999", id)
	require.Regexp(t, `^[A-Za-z0-9._:-]{1,128}$`, id, "a valid correlation ID")
	for _, bad := range []string{"", "-x", ".x", "a:b", "a b", "a/b", "é", strings.Repeat("x", 65), "a{b}"} {
		require.False(t, ValidScheduleID(bad), bad)
	}
}

func requireFieldError(t *testing.T, err error) *tasks.FieldError {
	t.Helper()
	fe, ok := err.(*tasks.FieldError)
	require.True(t, ok, "want a *tasks.FieldError, got %T %v", err, err)
	return fe
}
