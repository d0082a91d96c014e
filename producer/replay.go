package producer

import (
	"context"
	"errors"
	"fmt"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/tasks"
)

// ErrNoPayload: the call's record was written by a callq that did not keep
// the call's payload, so it cannot be replayed.
var ErrNoPayload = tasks.ErrNoPayload

// ReplayOption adjusts one Replay.
type ReplayOption func(*replayOptions)

type replayOptions struct {
	id string
}

// ReplayAs gives the replay the correlation ID id instead of a new UUIDv7.
// Replaying under the same ID again is a safe retry; an ID another call
// holds is a *ConflictError.
func ReplayAs(id string) ReplayOption { return func(o *replayOptions) { o.id = id } }

// Replay makes a new call from the stored payload of the finished call id:
// the same integration, method, path, query, headers, body, credential
// reference, webhook, queue, timeout and retry policy, without its delay,
// under a new correlation ID (ReplayAs names it). The new record's
// ReplayOf is id, and id's ReplayedBy becomes the new call (the latest of
// its replays). It fails with ErrNotFound for an unknown call, a
// *NotFinishedError for a call that has not finished, ErrNoPayload for a
// record that keeps no payload, a *ConflictError when ReplayAs names an ID
// another call holds, and a *tasks.FieldError when the call is no longer
// accepted (its integration or queue removed from the configuration, say;
// or ReplayAs given an invalid ID, naming "correlation_id").
//
// A replay interrupted between making the call and recording it on the
// original is taken up by the next Replay of the call, not made twice.
func (c *Client) Replay(ctx context.Context, id string, opts ...ReplayOption) (*Enqueued, error) {
	if !tasks.ValidID(id) {
		return nil, ErrNotFound
	}
	var o replayOptions
	for _, opt := range opts {
		opt(&o)
	}
	explicit := o.id != ""
	if explicit && !tasks.ValidID(o.id) {
		return nil, &tasks.FieldError{Field: "correlation_id", Message: "must be " + auth.IDRule}
	}
	newID := o.id
	if !explicit {
		newID = tasks.NewCorrelationID()
	}
	res, err := c.replay(ctx, id, newID, true, explicit)
	if errors.Is(err, tasks.ErrUnfinished) {
		rec, gerr := c.Get(ctx, id)
		if gerr != nil {
			return nil, gerr
		}
		return nil, &NotFinishedError{Record: rec}
	}
	return res, err
}

// replay claims the replay of id under newID (tasks.Store.ClaimReplay),
// makes it from the original's payload and records it on the original.
func (c *Client) replay(ctx context.Context, id, newID string, again, explicit bool) (*Enqueued, error) {
	records := c.p.cfg.Records
	claim, err := records.ClaimReplay(ctx, c.tenant, id, newID, again, explicit)
	if err != nil {
		return nil, err
	}
	payload, err := tasks.DecodePayload(claim.Payload)
	if err != nil {
		return nil, err
	}
	call := payload.Call
	call.CorrelationID = claim.ID
	call.Delay = 0
	res, err := c.enqueue(ctx, &call, origin{replayOf: id, trace: payload.Trace})
	var conflict *ConflictError
	if errors.As(err, &conflict) {
		// Another call holds the ID: give the claim up, or every later
		// replay of the call would take it up and fail the same way.
		if rerr := records.ReleaseReplay(context.WithoutCancel(ctx), c.tenant, id, claim.ID); rerr != nil {
			return nil, errors.Join(err, rerr)
		}
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	if err := records.ConfirmReplay(ctx, c.tenant, id, claim.ID); err != nil {
		return nil, fmt.Errorf("replay %q is queued, but it could not be recorded on call %q (replaying again records it): %w", claim.ID, id, err)
	}
	return res, nil
}

// Bulk replay limits.
const (
	DefaultReplayLimit = 1000
	MaxReplayLimit     = 10000
	// replayPage is how many calls ReplayMany lists at a time.
	replayPage = tasks.MaxListLimit
)

// ReplayRequest selects the calls ReplayMany replays.
type ReplayRequest struct {
	// Filter selects the calls, as List does; only finished ones are
	// replayed.
	Filter tasks.Filter
	// Limit bounds how many are replayed: 1 to MaxReplayLimit, 0 for
	// DefaultReplayLimit.
	Limit int
	// DryRun counts and lists the calls that would be replayed, and
	// replays none.
	DryRun bool
	// Again replays calls that were replayed already, and calls that are
	// themselves replays; by default both are skipped, so that the same
	// request made twice replays nothing new.
	Again bool
}

// ReplayResult is what ReplayMany did.
type ReplayResult struct {
	// Replayed counts the calls replayed (would be, in a dry run).
	Replayed int `json:"replayed"`
	// Skipped counts the calls selected but not replayed: not finished,
	// replayed already or replays themselves (unless Again), or no longer
	// replayable (no stored
	// payload, or no longer accepted by the configuration).
	Skipped int  `json:"skipped"`
	DryRun  bool `json:"dry_run"`
	// Calls are the replays, newest original first; in a dry run they
	// name only the originals.
	Calls []Replayed `json:"calls"`
}

// Replayed is one replay of ReplayMany.
type Replayed struct {
	ReplayOf      string `json:"replay_of"`
	CorrelationID string `json:"correlation_id,omitempty"`
}

// ReplayMany replays the finished calls req.Filter selects, as Replay does
// each, newest first, up to req.Limit. A call replayed already, and a call
// that is itself a replay, is skipped unless req.Again, so running the same
// request twice replays nothing new, even when the replays the first run
// made have failed meanwhile. It works through the calls in
// pages and claims each replay before making it: a run interrupted midway
// (by an error, which it returns with what it did until then, or by ctx)
// can be repeated, and a replay it had claimed but not recorded is taken
// up, not made twice. A bad filter or limit is a *tasks.FieldError.
func (c *Client) ReplayMany(ctx context.Context, req ReplayRequest) (*ReplayResult, error) {
	limit := req.Limit
	if limit == 0 {
		limit = DefaultReplayLimit
	}
	if limit < 1 || limit > MaxReplayLimit {
		return nil, &tasks.FieldError{Field: "limit", Message: fmt.Sprintf("must be between 1 and %d", MaxReplayLimit)}
	}
	if err := req.Filter.Validate(); err != nil {
		return nil, err
	}
	res := &ReplayResult{DryRun: req.DryRun, Calls: []Replayed{}}
	cursor := ""
	for {
		page, err := c.List(ctx, req.Filter, cursor, replayPage)
		if err != nil {
			return res, err
		}
		for _, s := range page.Calls {
			if res.Replayed == limit {
				return res, nil
			}
			ok, err := c.replayOne(ctx, s, req, res)
			if err != nil {
				return res, err
			}
			if !ok {
				res.Skipped++
			}
		}
		if page.NextCursor == "" || res.Replayed == limit {
			return res, nil
		}
		cursor = page.NextCursor
	}
}

// replayOne replays the call of summary s for ReplayMany, adding it to res,
// and reports false for a call it skips.
func (c *Client) replayOne(ctx context.Context, s *tasks.Record, req ReplayRequest, res *ReplayResult) (bool, error) {
	if !s.Status.Terminal() || s.ReplayOf != "" && !req.Again {
		return false, nil
	}
	if req.DryRun {
		if s.ReplayedBy != "" && !req.Again {
			return false, nil
		}
		res.Replayed++
		res.Calls = append(res.Calls, Replayed{ReplayOf: s.CorrelationID})
		return true, nil
	}
	made, err := c.replay(ctx, s.CorrelationID, tasks.NewCorrelationID(), req.Again, false)
	var conflict *ConflictError
	switch {
	case errors.Is(err, tasks.ErrReplayed), errors.Is(err, tasks.ErrUnfinished), errors.Is(err, ErrNotFound),
		errors.Is(err, ErrNoPayload), errors.As(err, &conflict):
		return false, nil
	case err != nil:
		var fe *tasks.FieldError
		if errors.As(err, &fe) {
			return false, nil // no longer accepted by the configuration
		}
		return false, err
	}
	res.Replayed++
	res.Calls = append(res.Calls, Replayed{ReplayOf: s.CorrelationID, CorrelationID: made.Record.CorrelationID})
	return true, nil
}
