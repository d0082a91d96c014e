package main

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/redistest"
	"github.com/callq/callq/tasks"
)

// The README's "Isolating a slow integration": the API knows a queue that
// the main workers do not take; a pool of its own takes it, and only it.
func TestSlowIntegrationOnItsOwnPool(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	d := deployOn(t, rs.URL, "CALLQ_QUEUES=critical=6,default=3,low=1,partner=1")
	main := d.procs.start("worker-main", "", append(slices.Clone(d.env), "CALLQ_QUEUES=critical=6,default=3,low=1"), "worker")

	d.enqueueWith("partner-1", map[string]any{"queue": "partner"})
	d.enqueue("default-1")
	recs := d.waitAllTerminal([]string{"default-1"}, time.Now().Add(30*time.Second))
	require.Equal(t, tasks.StatusSucceeded, recs["default-1"].Status)
	// The main pool ran default-1 and left partner-1 alone.
	var rec tasks.Record
	require.Equal(t, http.StatusOK, d.do(http.MethodGet, "/v1/calls/partner-1", nil, &rec))
	require.Equal(t, tasks.StatusQueued, rec.Status, "the main workers do not take the partner queue")

	pool := d.procs.start("worker-partner", "", append(slices.Clone(d.env), "CALLQ_QUEUES=partner=1", "CALLQ_CONCURRENCY=200"), "worker")
	recs = d.waitAllTerminal([]string{"partner-1"}, time.Now().Add(30*time.Second))
	require.Equal(t, tasks.StatusSucceeded, recs["partner-1"].Status)
	require.Contains(t, pool.logs(), `"correlation_id":"partner-1"`, "the partner pool ran partner-1")
	require.NotContains(t, pool.logs(), `"correlation_id":"default-1"`)
	require.False(t, strings.Contains(main.logs(), `"correlation_id":"partner-1"`), "the main pool never touched partner-1")

	// A queue the API does not know is refused, naming the field.
	var refused map[string]any
	code := d.do(http.MethodPost, "/v1/calls", map[string]any{"integration": "slow", "method": "GET", "path": "/slow", "queue": "nowhere"}, &refused)
	require.Equal(t, http.StatusBadRequest, code)
}
