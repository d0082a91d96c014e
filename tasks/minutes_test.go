package tasks_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/tasks"
)

func TestFinishedPerMinute(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	all := e.populate(t, "acme", 240) // 80 seconds of calls
	e.populate(t, "other", 12)
	from := all[len(all)-1].created.Add(-time.Minute)
	minutes, err := e.store.FinishedPerMinute(e.ctx, "acme", from, 4)
	require.NoError(t, err)
	require.Len(t, minutes, 4)

	want := make([]map[tasks.Status]int64, 4)
	for i := range want {
		want[i] = map[tasks.Status]int64{tasks.StatusSucceeded: 0, tasks.StatusFailed: 0, tasks.StatusCanceled: 0}
	}
	start := from.UTC().Truncate(time.Minute)
	var finished int64
	for _, c := range all {
		if c.status.Terminal() {
			want[int(c.created.Sub(start)/time.Minute)][c.status]++
			finished++
		}
	}
	var total int64
	for i, m := range minutes {
		require.Equal(t, start.Add(time.Duration(i)*time.Minute), m.Start)
		require.Equal(t, want[i], m.ByStatus, "minute %d", i)
		total += m.Total()
	}
	require.Equal(t, finished, total, "every finished call is in one of the minutes")
	require.Zero(t, minutes[0].Total(), "the minute before the first call")

	for _, n := range []int{0, tasks.MaxMinutes + 1} {
		_, err := e.store.FinishedPerMinute(e.ctx, "acme", from, n)
		var fe *tasks.FieldError
		require.ErrorAs(t, err, &fe)
	}
}
