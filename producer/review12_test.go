package producer_test

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/rediskeys"
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

// lockedBuffer is a log sink tests read while the scheduler writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

// A firing that Redis keeps refusing (here its record's key holds a value
// of another type; an out-of-memory Redis refuses every write the same
// way) is tried again at every pass while it is within the catch-up
// window, and said once at warn, not once a pass: a pass runs every
// second, a catch-up window is 5 minutes, and a fleet may have thousands
// of schedules. It says when the firing is made at last.
func TestSchedulerFiringFailureLoggedOnce(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.schedules(t, http.MethodPost, "", e.adminKey, schedule(map[string]any{"id": "refused", "cron": "@every 1h"}))
	require.Equal(t, http.StatusCreated, r.Status, "body: %s", r.Body)
	instant := decodeSchedule(t, r).UpdatedAt.Truncate(time.Second).Add(time.Hour)
	key := rediskeys.Record("acme", producer.ScheduleCorrelationID("refused", instant))
	require.NoError(t, e.rdb.Set(context.Background(), key, "not a record", 0).Err())

	logs := &lockedBuffer{}
	log := zerolog.New(logs)
	s := newScheduler(t, e.prod, &producer.SchedulerConfig{Logger: &log}, &fakeClock{t: instant.Add(time.Second)})
	for range 5 {
		rep, err := s.RunOnce(context.Background())
		require.NoError(t, err)
		require.Equal(t, producer.SchedulerReport{Schedules: 1, Failed: 1}, *rep)
	}
	require.Equal(t, 1, logs.count(`"level":"warn"`), "%s", logs.b.String())

	require.NoError(t, e.rdb.Del(context.Background(), key).Err())
	rep, err := s.RunOnce(context.Background())
	require.NoError(t, err)
	require.Equal(t, producer.SchedulerReport{Schedules: 1, Fired: 1}, *rep)
	require.Contains(t, e.scheduledCalls(t, "refused"), instant.Unix())
	require.Equal(t, 1, logs.count("schedule fired after failing"), "%s", logs.b.String())
}
