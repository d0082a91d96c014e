package producer

import (
	"context"
	"time"

	"github.com/callq/callq/tasks"
)

// FinishedPerMinute counts the tenant's finished calls by status, per
// minute of their creation, over the n minutes from the minute of from
// (tasks.Store.FinishedPerMinute): what the dashboard's chart draws. n is 1
// to tasks.MaxMinutes, else a *tasks.FieldError.
func (c *Client) FinishedPerMinute(ctx context.Context, from time.Time, n int) ([]tasks.Minute, error) {
	return c.p.cfg.Records.FinishedPerMinute(ctx, c.tenant, from, n)
}
