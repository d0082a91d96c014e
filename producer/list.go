package producer

import (
	"context"
	"fmt"
	"time"

	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/tasks"
)

// List returns a page of the tenant's calls that f selects, newest first by
// created_at, from after cursor ("" for the first page; then the previous
// page's NextCursor). limit is 1 to tasks.MaxListLimit, 0 for
// tasks.DefaultListLimit. Paging never repeats or skips a call that existed
// when paging began. The calls are summaries (tasks.Record.Summary), with
// their status as stored: a call on its first attempt is listed queued
// (Get shows it running). A bad filter or limit is a *tasks.FieldError; a
// cursor List did not make is tasks.ErrBadCursor.
func (c *Client) List(ctx context.Context, f tasks.Filter, cursor string, limit int) (*tasks.Page, error) {
	if limit == 0 {
		limit = tasks.DefaultListLimit
	}
	return c.p.cfg.Records.List(ctx, c.tenant, f, cursor, limit)
}

// Stats windows.
const (
	// DefaultStatsWindow is the window Stats counts over when since is zero.
	DefaultStatsWindow = time.Hour
	// MaxStatsWindow bounds the window Stats counts over.
	MaxStatsWindow = 7 * 24 * time.Hour
)

// Stats are the counts of a tenant's calls created in a window, and the
// depths of asynq's queues.
type Stats struct {
	Since time.Time `json:"since"`
	Until time.Time `json:"until"`
	// Total counts every call created in the window.
	Total int64 `json:"total"`
	// ByStatus counts them by status; every status is present.
	ByStatus map[tasks.Status]int64 `json:"by_status"`
	// ByIntegration counts them by integration (those with calls).
	ByIntegration map[string]int64 `json:"by_integration"`
	// Queues are the depths of asynq's queues, by name. They are the
	// fleet's, not the tenant's: tenants share asynq's queues.
	Queues map[string]QueueDepth `json:"queues"`
}

// QueueDepth is how many tasks an asynq queue holds in each state: asynq's
// own counts, of tasks (a call's webhook deliveries are tasks too).
type QueueDepth struct {
	Pending   int `json:"pending"`
	Active    int `json:"active"`
	Scheduled int `json:"scheduled"`
	Retry     int `json:"retry"`
	Archived  int `json:"archived"`
}

// Stats counts the tenant's calls created in [since, until) by status and
// by integration, and reads the depths of asynq's queues. A zero until is
// now; a zero since is DefaultStatsWindow before until. The window must
// not be longer than MaxStatsWindow (a *tasks.FieldError naming "since")
// and since must be before until (naming "until").
func (c *Client) Stats(ctx context.Context, since, until time.Time) (*Stats, error) {
	if until.IsZero() {
		until = time.Now()
	}
	if since.IsZero() {
		since = until.Add(-DefaultStatsWindow)
	}
	switch {
	case !since.Before(until):
		return nil, &tasks.FieldError{Field: "until", Message: "must be after since"}
	case until.Sub(since) > MaxStatsWindow:
		return nil, &tasks.FieldError{Field: "since", Message: fmt.Sprintf("must be at most %s before until", MaxStatsWindow)}
	}
	counts, err := c.p.cfg.Records.Count(ctx, c.tenant, since, until)
	if err != nil {
		return nil, err
	}
	queues, err := c.p.queueDepths()
	if err != nil {
		return nil, err
	}
	return &Stats{Since: since.UTC(), Until: until.UTC(), Total: counts.Total, ByStatus: counts.ByStatus,
		ByIntegration: counts.ByIntegration, Queues: queues}, nil
}

// queueDepths reads the depth of every queue asynq knows, by logical
// queue: the shards of a queue (Config.QueueShards), under any shard
// count, add up to their logical queue's depth.
func (p *Producer) queueDepths() (map[string]QueueDepth, error) {
	names, err := p.inspector.Queues()
	if err != nil {
		return nil, fmt.Errorf("list queues: %w", err)
	}
	out := make(map[string]QueueDepth, len(names))
	for _, q := range names {
		info, err := p.inspector.GetQueueInfo(q)
		if err != nil {
			return nil, fmt.Errorf("read queue %q: %w", q, err)
		}
		name := rediskeys.LogicalQueue(q)
		d := out[name]
		d.Pending += info.Pending
		d.Active += info.Active
		d.Scheduled += info.Scheduled
		d.Retry += info.Retry
		d.Archived += info.Archived
		out[name] = d
	}
	return out, nil
}
