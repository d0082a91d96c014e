package producer_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
)

// With the README's pools (the API knows queue partner, the main workers
// do not, and the partner pool takes only it: "Isolating a slow
// integration"), every worker runs a scheduler, and whichever holds the
// lease fires each schedule into the queue the API accepted: its own, or
// the API's default. (A main worker refused the partner schedule's queue,
// "unknown queue", and enqueued nothing; a partner worker sent the other
// schedule's calls to partner, its first queue.)
func TestSchedulerFiresIntoTheQueueTheAPIAccepted(t *testing.T) {
	t.Parallel()
	e := setup(t, withLimits(&tasks.Limits{Queues: []string{"critical", "default", "low", "partner"}}))
	var t0 time.Time
	for id, queue := range map[string]any{"to-partner": "partner", "to-default": nil} {
		call := map[string]any{"integration": "httpbin", "method": "GET", "path": "/get"}
		if queue != nil {
			call["queue"] = queue
		}
		r := e.schedules(t, http.MethodPost, "", e.adminKey, schedule(map[string]any{"id": id, "cron": "@every 1h", "timezone": nil, "call": call}))
		require.Equal(t, http.StatusCreated, r.Status, "body: %s", r.Body)
		if u := decodeSchedule(t, r).UpdatedAt.Truncate(time.Second); u.After(t0) {
			t0 = u
		}
	}
	for i, queues := range [][]string{{"critical", "default", "low"}, {"partner"}} {
		worker, err := producer.New(e.rdb, &producer.Config{Catalog: e.cat, Records: e.records, Limits: &tasks.Limits{Queues: queues}})
		require.NoError(t, err)
		t.Cleanup(func() { _ = worker.Close() })
		instant := t0.Add(time.Duration(i+1) * time.Hour)
		s := newScheduler(t, worker, nil, &fakeClock{t: instant.Add(time.Second)})
		rep, err := s.RunOnce(context.Background())
		require.NoError(t, err)
		require.NoError(t, s.Release(context.Background()))
		require.Equal(t, producer.SchedulerReport{Schedules: 2, Fired: 2}, *rep, "the scheduler of a worker taking %v", queues)
		for id, want := range map[string]string{"to-partner": "partner", "to-default": "default"} {
			rec := e.scheduledCalls(t, id)[instant.Unix()]
			require.NotNil(t, rec, "%s fired at %s by a worker taking %v", id, instant, queues)
			require.Equal(t, want, rec.Queue, "%s fired by a worker taking %v", id, queues)
			require.Nil(t, e.getSchedule(t, id).LastError)
		}
	}
}
