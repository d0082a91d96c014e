package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/callq/callq/tasks"
)

// ProcessCall is the asynq handler of a call task. It makes one attempt and
// writes the record: succeeded, failed, or retrying with the wait it chose
// (returned to asynq in a retryError). It returns nil once the record is
// terminal, because the record, not asynq's archive, is the truth.
func (w *Worker) ProcessCall(ctx context.Context, t *asynq.Task) error {
	ctx, stop := w.attemptContext(ctx)
	defer stop()
	p, err := tasks.DecodePayload(t.Payload())
	if err != nil {
		w.log.Error().Err(err).Msg("dropping a call task whose payload cannot be read")
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	call, tenant := &p.Call, p.Tenant
	log := w.log.With().Str("correlation_id", call.CorrelationID).Str("tenant", tenant).
		Str("integration", call.Integration).Logger()

	start := time.Now()
	retried, _ := asynq.GetRetryCount(ctx)
	in, known := w.cfg.Catalog.Lookup(call.Integration)
	var rec *tasks.Record
	var version int64
	if retried == 0 && !p.CreatedAt.IsZero() && known {
		// A first attempt: the record is still the one the producer wrote,
		// so it is rebuilt from the payload and nothing is read or written
		// before the request (the API shows a call whose task asynq holds
		// as running). The write after it is a compare-and-set on the
		// version Create gave it, so a cancel meanwhile is never
		// overwritten.
		rec = tasks.NewRecord(tenant, call, in, p.CreatedAt)
		version = tasks.CreatedVersion
	} else {
		begun, err := w.cfg.Records.Begin(ctx, tenant, call.CorrelationID,
			tasks.RunMarker{Attempt: retried + 1, StartedAt: start.UTC(), Worker: w.cfg.Name})
		switch {
		case errors.Is(err, tasks.ErrFinished):
			// Canceled before it ran, or run to the end by a worker that
			// died before it queued the webhook: queue it now (at most once).
			log.Info().Str("status", string(begun.Record.Status)).Msg("call already finished; not attempting it")
			return w.enqueueWebhook(ctx, begun.Record)
		case errors.Is(err, tasks.ErrNotFound):
			log.Warn().Msg("call has no record (expired or deleted); not attempting it")
			return nil
		case err != nil:
			return err // Redis trouble: asynq retries the task later
		}
		rec, version = begun.Record, begun.Version
		switch {
		case begun.Lost != nil:
			// The previous attempt's worker died after marking it running:
			// the upstream may have received that request. Say so.
			rec.History = append(rec.History, tasks.Attempt{
				Attempt:   len(rec.History) + 1,
				StartedAt: begun.Lost.StartedAt,
				Error:     fmt.Sprintf("attempt interrupted: worker %s stopped before recording an outcome; the upstream may have received the request", begun.Lost.Worker),
			})
			log.Warn().Int("attempt", len(rec.History)).Str("lost_worker", begun.Lost.Worker).Msg("previous attempt was interrupted")
		case retried > 0 && rec.Status == tasks.StatusQueued && len(rec.History) == 0:
			// Run before, yet nothing recorded: the first attempt (which
			// marks nothing before its request) lost its worker.
			rec.History = append(rec.History, tasks.Attempt{
				Attempt: 1,
				Error:   "attempt interrupted: its worker stopped (or lost Redis) before recording an outcome; the upstream may have received the request",
			})
			log.Warn().Int("attempt", 1).Msg("previous attempt was interrupted")
		}
		rec.Attempts = len(rec.History)
	}
	rec.Status = tasks.StatusRunning
	if rec.StartedAt == nil {
		t := start.UTC()
		rec.StartedAt = &t
	}

	if !known {
		return w.finish(ctx, log, rec, version, nil, tasks.StatusFailed, &tasks.CallError{
			Kind: tasks.KindValidation, Message: fmt.Sprintf("integration %q is not in this worker's catalog", call.Integration)})
	}
	policy := in.Retry.Merge(call.Retry)
	rec.MaxAttempts = policy.MaxAttempts
	if rec.Attempts >= policy.MaxAttempts {
		return w.finish(ctx, log, rec, version, nil, tasks.StatusFailed, &tasks.CallError{
			Kind: tasks.KindInternal, Message: fmt.Sprintf("all %d attempts were used; the last was interrupted", policy.MaxAttempts)})
	}

	if in.RateLimit != nil {
		if wait, err := w.rateLimit(ctx, tenant, call, in); err != nil || wait > 0 {
			if err != nil {
				return err // Redis trouble: try later
			}
			log.Info().Dur("retry_in", wait).Msg("fleet-wide rate limit reached; call put back without spending an attempt")
			if version != tasks.CreatedVersion || rec.Attempts > 0 {
				// A retry marked itself running: say it is waiting again.
				next := time.Now().Add(wait).UTC()
				rec.Status, rec.NextAttemptAt = tasks.StatusRetrying, &next
				if _, err := w.commit(context.WithoutCancel(ctx), rec, version, nil); err != nil && !errors.Is(err, tasks.ErrFinished) {
					return err
				}
			}
			return &rateLimited{delay: wait}
		}
	}
	out := w.attempt(ctx, tenant, call, in)
	// Cut off: canceled through the API, the task taken back by asynq, or
	// the drain limit (whatever the attempt made of it).
	cut := out.err != nil && (out.err.Kind == tasks.KindCanceled || errors.Is(context.Cause(ctx), errDrainLimit))
	attemptNo := len(rec.History) + 1
	entry := tasks.Attempt{Attempt: attemptNo, StartedAt: start.UTC(), DurationMS: out.duration.Milliseconds(), Note: out.note}
	if out.response != nil {
		entry.Status = out.response.Status
		rec.Response = out.response
	}
	if out.err != nil {
		entry.Error = out.err.Message
	}
	if cut {
		entry.Error = w.interruption(ctx)
	}
	rec.History = append(rec.History, entry)
	rec.Attempts = len(rec.History)
	rec.NextAttemptAt = nil
	mine := &entry

	ev := log.Info()
	if out.err != nil {
		ev = log.Warn().Str("error_kind", string(out.err.Kind)).Str("error", out.err.Message)
	}
	ev = ev.Int("attempt", attemptNo).Int("status", entry.Status).Int64("duration_ms", entry.DurationMS)
	observe := func(outcome string) { w.cfg.Metrics.attempt(in.Name, outcome, out.duration) }

	switch {
	case out.err == nil:
		ev.Str("outcome", string(tasks.StatusSucceeded)).Msg("attempt")
		observe(string(tasks.StatusSucceeded))
		return w.finish(ctx, log, rec, version, mine, tasks.StatusSucceeded, nil)
	case cut:
		ev.Str("outcome", "interrupted").Msg("attempt")
		observe("interrupted")
		return w.interrupted(ctx, log, rec, version, mine, policy.MaxAttempts, retried)
	case !out.retry || attemptNo >= policy.MaxAttempts:
		ev.Str("outcome", string(tasks.StatusFailed)).Msg("attempt")
		observe(string(tasks.StatusFailed))
		if out.retry {
			out.err.Message += fmt.Sprintf(" (after %d attempts)", attemptNo)
		}
		return w.finish(ctx, log, rec, version, mine, tasks.StatusFailed, out.err)
	}

	delay := w.cfg.Backoff(policy, attemptNo)
	if out.hasRetryAfter {
		delay = out.retryAfter
	}
	if budget := policy.MaxElapsed.D(); budget > 0 && time.Since(*rec.StartedAt)+delay > budget {
		ev.Str("outcome", string(tasks.StatusFailed)).Msg("attempt")
		observe(string(tasks.StatusFailed))
		if out.hasRetryAfter {
			ra := tasks.Duration(out.retryAfter)
			out.err.Kind = tasks.KindRateLimited
			out.err.RetryAfter = &ra
			out.err.Message += fmt.Sprintf("; the upstream asked to wait %s, past the retry budget of %s", out.retryAfter, budget)
		} else {
			out.err.Message += fmt.Sprintf("; the retry budget of %s is spent", budget)
		}
		return w.finish(ctx, log, rec, version, mine, tasks.StatusFailed, out.err)
	}
	if maxRetry, ok := asynq.GetMaxRetry(ctx); ok && retried >= maxRetry {
		// asynq would archive the task instead of running it again (its
		// retries went to lost runs, or another catalog allows more
		// attempts than the one that queued it): fail now rather than
		// leave the record retrying forever.
		ev.Str("outcome", string(tasks.StatusFailed)).Msg("attempt")
		observe(string(tasks.StatusFailed))
		out.err.Message += fmt.Sprintf(" (the task's %d retries are spent)", maxRetry)
		return w.finish(ctx, log, rec, version, mine, tasks.StatusFailed, out.err)
	}
	next := time.Now().Add(delay).UTC()
	rec.Status, rec.Error, rec.NextAttemptAt = tasks.StatusRetrying, out.err, &next
	ev.Str("outcome", string(tasks.StatusRetrying)).Dur("retry_in", delay).Msg("attempt")
	observe(string(tasks.StatusRetrying))
	// WithoutCancel: an attempt that ran up to the task's deadline must
	// still be recorded.
	if _, err := w.commit(context.WithoutCancel(ctx), rec, version, mine); err != nil {
		if errors.Is(err, tasks.ErrFinished) {
			return nil // canceled while the attempt ran
		}
		return err
	}
	return &retryError{delay: delay, err: out.err}
}

// interruption is the history's note of an attempt cut off before its outcome.
func (w *Worker) interruption(ctx context.Context) string {
	why := fmt.Sprintf("worker %s lost the call's task (canceled, or its lease expired)", w.cfg.Name)
	if errors.Is(context.Cause(ctx), errDrainLimit) {
		why = fmt.Sprintf("worker %s was shutting down and its drain limit of %s ran out", w.cfg.Name, w.cfg.ShutdownTimeout)
	}
	return "attempt interrupted: " + why + "; the upstream may have received the request"
}

// interrupted records an attempt that was cut off; it counts against the
// call's attempts like any other. If it was the last, the call fails now.
// Otherwise the record says retrying and the handler returns an error, so
// that asynq raises the task's retry count and runs it again at once: the
// next run then goes through Begin, which sees this attempt, rather than a
// first attempt's path, which reads nothing and would send the call as if
// it had never run. A call canceled through the API is terminal already:
// the write is refused and the record stays canceled.
func (w *Worker) interrupted(ctx context.Context, log zerolog.Logger, rec *tasks.Record, version int64, mine *tasks.Attempt, maxAttempts, retried int) error {
	cerr := &tasks.CallError{Kind: tasks.KindInternal, Message: mine.Error}
	if mine.Attempt >= maxAttempts {
		cerr.Message = fmt.Sprintf("all %d attempts were used; the last was interrupted", maxAttempts)
		return w.finish(ctx, log, rec, version, mine, tasks.StatusFailed, cerr)
	}
	if maxRetry, ok := asynq.GetMaxRetry(ctx); ok && retried >= maxRetry {
		cerr.Message = fmt.Sprintf("the last attempt was interrupted and the task's %d retries are spent", maxRetry)
		return w.finish(ctx, log, rec, version, mine, tasks.StatusFailed, cerr)
	}
	now := time.Now().UTC()
	rec.Status, rec.Error, rec.NextAttemptAt = tasks.StatusRetrying, cerr, &now
	if _, err := w.commit(context.WithoutCancel(ctx), rec, version, mine); err != nil {
		if errors.Is(err, tasks.ErrFinished) {
			return nil // canceled through the API
		}
		// The next run finds the record as this attempt began it, and
		// records the interruption itself (Begin).
		log.Error().Err(err).Msg("could not record an interrupted attempt")
	}
	return &retryError{err: errors.New(mine.Error)}
}

// finish writes a terminal record.
// mine is the attempt this run added to rec's history, if any.
func (w *Worker) finish(ctx context.Context, log zerolog.Logger, rec *tasks.Record, version int64, mine *tasks.Attempt, status tasks.Status, cerr *tasks.CallError) error {
	now := time.Now().UTC()
	rec.Status, rec.Error, rec.CompletedAt, rec.NextAttemptAt = status, cerr, &now, nil
	rec, err := w.commit(context.WithoutCancel(ctx), rec, version, mine)
	switch {
	case errors.Is(err, tasks.ErrFinished):
		// Canceled while the attempt ran (the API queued the webhook), or
		// finished by an earlier run of this task that stopped before
		// queueing it: queue it (its task ID makes that happen once).
		log.Info().Msg("call finished elsewhere while this attempt ran; outcome not recorded")
		cur, gerr := w.cfg.Records.Get(context.WithoutCancel(ctx), rec.Tenant, rec.CorrelationID)
		if gerr != nil {
			return nil
		}
		return w.enqueueWebhook(context.WithoutCancel(ctx), cur)
	case err != nil:
		log.Error().Err(err).Msg("could not write the call's record")
		return err
	}
	w.cfg.Metrics.finished(rec)
	// If this fails, asynq runs the task again; it finds the record
	// finished and queues the webhook then.
	return w.enqueueWebhook(context.WithoutCancel(ctx), rec)
}

// commit writes rec over the record as of version. If the record changed
// meanwhile (an interrupted run recorded itself, say) it folds this
// attempt into the record as it now is and tries again; a record that
// became terminal (canceled) is left alone: ErrFinished.
func (w *Worker) commit(ctx context.Context, rec *tasks.Record, version int64, mine *tasks.Attempt) (*tasks.Record, error) {
	for range 5 {
		err := w.cfg.Records.Write(ctx, rec, version)
		if !errors.Is(err, tasks.ErrChanged) {
			return rec, err
		}
		cur, ver, err := w.cfg.Records.GetVersion(ctx, rec.Tenant, rec.CorrelationID)
		if err != nil {
			return rec, err
		}
		if cur.Status.Terminal() {
			return cur, tasks.ErrFinished
		}
		if mine != nil {
			m := *mine
			m.Attempt = len(cur.History) + 1
			cur.History = append(cur.History, m)
			cur.Attempts = len(cur.History)
		}
		cur.Status, cur.Response, cur.Error = rec.Status, rec.Response, rec.Error
		cur.NextAttemptAt, cur.CompletedAt, cur.MaxAttempts = rec.NextAttemptAt, rec.CompletedAt, rec.MaxAttempts
		if cur.StartedAt == nil {
			cur.StartedAt = rec.StartedAt
		}
		if cur.Status == tasks.StatusRetrying && cur.MaxAttempts > 0 && cur.Attempts >= cur.MaxAttempts {
			// Folded into a record that already held attempts, this one
			// was the last: the call fails instead of retrying.
			now := time.Now().UTC()
			cur.Status, cur.NextAttemptAt, cur.CompletedAt = tasks.StatusFailed, nil, &now
		}
		rec, version = cur, ver
	}
	return rec, tasks.ErrChanged
}
