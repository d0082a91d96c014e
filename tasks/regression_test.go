package tasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/tasks"
)

// Cases found by review; each failed before its fix.

func TestBodyBase64AtTheLimit(t *testing.T) {
	t.Parallel()
	cat := testCatalog(t)
	lim := &tasks.Limits{MaxRequestBytes: 4}
	for _, b64 := range []string{"YWJjZGU=", "YWJjZGVm"} { // 5 and 6 bytes
		c := &tasks.Call{Integration: "open", Method: "POST", Path: "/x", BodyBase64: b64}
		_, err := c.Normalize(cat, lim)
		fe := requireFieldError(t, err, "body_base64")
		require.True(t, fe.TooLarge)
		require.True(t, errors.Is(err, tasks.ErrTooLarge))
	}
	ok := &tasks.Call{Integration: "open", Method: "POST", Path: "/x", BodyBase64: "YWJjZA=="} // 4 bytes
	_, err := ok.Normalize(cat, lim)
	require.NoError(t, err)
}

func TestCatalogRetryValuesWrittenOutAreChecked(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ retry, key string }{
		{"{max_attempts: 0}", "retry.max_attempts"},
		{"{max_attempts: -1}", "retry.max_attempts"},
		{"{multiplier: 0}", "retry.multiplier"},
		{"{multiplier: -2}", "retry.multiplier"},
		{"{initial_interval: -1s}", "retry.initial_interval"},
		{"{max_interval: -5s}", "retry.max_interval"},
		{"{max_elapsed: -1h}", "retry.max_elapsed"},
	} {
		_, err := tasks.ParseCatalog([]byte("integrations:\n  x:\n    base_url: https://x.example\n    retry: " + tc.retry + "\n"))
		requireCatalogError(t, err, "x", tc.key)
	}
}

func TestPathOverlongAndFoldingCharacters(t *testing.T) {
	t.Parallel()
	for _, p := range []string{
		"/%c0%ae%c0%ae/admin",         // overlong "."
		"/%c0%af",                     // overlong "/"
		"/%EF%BC%852e%EF%BC%852e/x",   // fullwidth percent: "%2e%2e" after folding
		"/a%E2%84%80b",                // U+2100 ACCOUNT OF, folds to a/c
		"/%E2%84%85x", "/%EF%B9%AA2f", // U+2105, U+FE6A
	} {
		requireFieldError(t, tasks.ValidatePath(p), "path")
	}
}

func TestDurationNullAndOverflow(t *testing.T) {
	t.Parallel()
	var c tasks.Call
	require.NoError(t, json.Unmarshal([]byte(`{"timeout": null, "delay": null}`), &c))
	require.Zero(t, c.Timeout)
	require.Error(t, json.Unmarshal([]byte(`{"timeout": 1e12}`), &c))
	require.Error(t, json.Unmarshal([]byte(`{"delay": -1e300}`), &c))
}

func TestQueueDefaultsToFirstConfigured(t *testing.T) {
	t.Parallel()
	c := &tasks.Call{Integration: "open", Method: "GET", Path: "/x"}
	_, err := c.Normalize(testCatalog(t), &tasks.Limits{Queues: []string{"critical", "low"}})
	require.NoError(t, err)
	require.Equal(t, "critical", c.Queue)
}

// A waiter outlives a Redis outage: it is woken when the connection drops,
// cannot read its record while Redis is down, and must wait on rather than
// fail.
func TestWaitSurvivesRedisOutage(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	e.create(t, "acme", "outage")
	type result struct {
		rec *tasks.Record
		err error
	}
	reads := &recordReads{key: rediskeys.Record("acme", "outage")}
	e.rdb.AddHook(reads)
	done := make(chan result, 1)
	go func() {
		r, err := e.store.Wait(e.ctx, "acme", "outage")
		done <- result{r, err}
	}()
	// Read once: the waiter is subscribed and waits.
	require.Eventually(t, func() bool { return reads.ok.Load() >= 1 }, 30*time.Second, 5*time.Millisecond)
	e.srv.SaveRDB(t) // keep the record across the restart
	e.srv.Kill(t)
	// A waiter that failed on a failed read would never read again: two
	// failed reads show it woke in the outage and waited on.
	require.Eventually(t, func() bool { return reads.failed.Load() >= 2 }, 30*time.Second, 5*time.Millisecond,
		"the waiter did not read its record again during the outage")
	select {
	case r := <-done:
		t.Fatalf("Wait returned during the outage: %v", r.err)
	default:
	}
	e.srv.Restart(t)

	begun, err := e.store.Begin(e.ctx, "acme", "outage", tasks.RunMarker{Attempt: 1, StartedAt: testNow})
	require.NoError(t, err)
	rec := begun.Record
	rec.Status = tasks.StatusSucceeded
	require.NoError(t, e.store.Write(e.ctx, rec, begun.Version))
	select {
	case r := <-done:
		require.NoError(t, r.err)
		require.Equal(t, tasks.StatusSucceeded, r.rec.Status)
	case <-time.After(15 * time.Second):
		t.Fatal("Wait was not woken after Redis came back")
	}
}

// recordReads counts the reads of one record a client makes, by outcome.
type recordReads struct {
	key        string
	ok, failed atomic.Int64
}

func (h *recordReads) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *recordReads) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		// Wait's first read is a script (it marks the call waited for).
		a := cmd.Args()
		read := cmd.Name() == "hmget" && len(a) > 1 && a[1] == h.key ||
			(cmd.Name() == "evalsha" || cmd.Name() == "eval") && len(a) > 3 && a[3] == h.key
		if read {
			if err != nil {
				h.failed.Add(1)
			} else {
				h.ok.Add(1)
			}
		}
		return err
	}
}

func (h *recordReads) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func TestPathDotDotWithMatrixParameter(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"/..;/admin", "/..;jsessionid=x/admin", "/a/..;/..;/b"} {
		requireFieldError(t, tasks.ValidatePath(p), "path")
	}
	require.NoError(t, tasks.ValidatePath("/items;v=2/x"))
	require.NoError(t, tasks.ValidatePath("/a/..;/b"), "stays within the base path")
}
