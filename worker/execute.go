package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/callq/callq/tasks"
)

// ProcessCall is the asynq handler of a call task. It makes one attempt and
// writes the record: succeeded, failed, or retrying with the wait it chose
// (returned to asynq in a retryError). It returns nil once the record is
// terminal, because the record, not asynq's archive, is the truth.
//
// Like River's job executor, a run is a short sequence: begin finds the
// record, the attempt is made, decide (a pure function) says what becomes
// of the call, and report writes, logs and observes that, once.
func (w *Worker) ProcessCall(ctx context.Context, t *asynq.Task) error {
	if w.runners != nil {
		return w.runners.run(ctx, t)
	}
	return w.processCall(ctx, t)
}

// processCall is ProcessCall's work, on a runner of a started worker.
func (w *Worker) processCall(ctx context.Context, t *asynq.Task) error {
	ctx, stop := w.attemptContext(ctx)
	defer stop()
	p, err := tasks.DecodePayload(t.Payload())
	if err != nil {
		w.log.Error().Err(err).Msg("dropping a call task whose payload cannot be read")
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	if w.traced(p.Trace) {
		var span trace.Span
		ctx, span = w.startAttempt(ctx, p)
		defer span.End()
	}
	r, err := w.begin(ctx, p)
	if r.rec == nil {
		return err // nothing to attempt, or Redis trouble
	}
	if v, refused := refuse(r.in != nil, r.call.Integration, r.policy, r.rec.Attempts); refused {
		return w.report(ctx, &r, decision{}, v)
	}
	passes, err := w.takeTurn(ctx, &r)
	if err != nil {
		return err // held back by a gate, or Redis trouble
	}
	if passes != nil {
		// asynq recovers a panic in the attempt (a CheckRetry's, say):
		// the passes must not outlive it (a slot renewed for ever).
		defer func() { release(ctx, passes, nil) }()
	}
	out := w.attempt(ctx, r.tenant, r.call, r.in)
	interrupted := w.interruption(ctx, &out)
	out.interrupted = interrupted != ""
	release(ctx, passes, &out)
	passes = nil
	d := r.decision(out, interrupted, w.cfg.Backoff)
	return w.report(ctx, &r, d, decide(d))
}

// run is one run of a call's task, from begin to report.
type run struct {
	tenant string
	call   *tasks.Call
	in     *tasks.Integration // nil when the integration is not in this worker's catalog
	policy tasks.RetryPolicy  // the integration's merged with the call's
	log    zerolog.Logger     // carries the call's correlation ID, tenant and integration
	start  time.Time
	// retried and maxRetry are asynq's count of the task's runs before
	// this one and its limit (-1 when unknown: a handler called directly).
	retried, maxRetry int
	// firstRun says the record was rebuilt from the payload: nothing was
	// read or written before the attempt.
	firstRun bool
	rec      *tasks.Record // the record as this run will write it, marked running
	version  int64         // the version rec is written over (a compare-and-set)
	// detailChanged says rec's history is no longer the one stored: resume
	// recorded an attempt a lost run left.
	detailChanged bool
}

// begin starts a run. A first run rebuilds the record from the payload and
// writes nothing; a later one marks the record running (Store.Begin) and
// records any attempt a lost worker left without an outcome. The run has
// no record when there is nothing to attempt (the call finished, or its
// record is gone); the error is then the one to give asynq. (A run is a
// value, not a pointer: it stays on the handler's stack.)
func (w *Worker) begin(ctx context.Context, p *tasks.Payload) (run, error) {
	call := &p.Call
	r := run{tenant: p.Tenant, call: call, start: time.Now(), maxRetry: -1,
		log: w.log.With().Str("correlation_id", call.CorrelationID).Str("tenant", p.Tenant).
			Str("integration", call.Integration).Logger()}
	r.retried, _ = asynq.GetRetryCount(ctx)
	if n, ok := asynq.GetMaxRetry(ctx); ok {
		r.maxRetry = n
	}
	if in, known := w.cfg.Catalog.Lookup(call.Integration); known {
		r.in, r.policy = in, in.Retry.Merge(call.Retry)
	}
	if r.in != nil && p.FirstRun(r.retried) {
		// The record is still the one the producer wrote, so it is rebuilt
		// from the payload and nothing is read or written before the
		// request. The write after it is a compare-and-set on the version
		// Create gave it, so a cancel meanwhile is never overwritten.
		r.firstRun = true
		r.rec, r.version = tasks.NewRecord(r.tenant, call, r.in, p.CreatedAt), tasks.CreatedVersion
		r.rec.ReplayOf, r.rec.Schedule, r.rec.Trace = p.ReplayOf, p.Schedule, p.Trace
	} else if err := w.resume(ctx, &r); r.rec == nil {
		return r, err
	}
	r.rec.Status = tasks.StatusRunning
	if r.rec.StartedAt == nil {
		t := r.start.UTC()
		r.rec.StartedAt = &t
	}
	if r.in != nil {
		r.rec.MaxAttempts = r.policy.MaxAttempts
	}
	return r, nil
}

// resume marks the record of a run that is not the call's first running,
// and records an attempt before it that lost its worker. It leaves r.rec
// nil when there is nothing to attempt, and returns the error to give
// asynq.
func (w *Worker) resume(ctx context.Context, r *run) error {
	begun, err := w.cfg.Records.Begin(ctx, r.tenant, r.call.CorrelationID,
		tasks.RunMarker{Attempt: r.retried + 1, StartedAt: r.start.UTC(), Worker: w.cfg.Name})
	var finished *tasks.FinishedError
	switch {
	case errors.As(err, &finished):
		// Canceled before it ran, or run to the end by a worker that
		// died before it queued the webhook: queue it now (at most once).
		r.log.Info().Str("status", string(finished.Record.Status)).Msg("call already finished; not attempting it")
		return enqueueWebhook(ctx, w.queue, w.shards, finished.Record)
	case errors.Is(err, tasks.ErrNotFound):
		r.log.Warn().Msg("call has no record (expired or deleted); not attempting it")
		return nil
	case err != nil:
		return err // Redis trouble: asynq retries the task later
	}
	rec := begun.Record
	stored := len(rec.History)
	switch {
	case begun.Lost != nil:
		// The previous attempt's worker died after marking it running:
		// the upstream may have received that request. Say so.
		rec.History = append(rec.History, tasks.Attempt{
			Attempt:   len(rec.History) + 1,
			StartedAt: begun.Lost.StartedAt,
			Error:     fmt.Sprintf("attempt interrupted: worker %s stopped before recording an outcome; the upstream may have received the request", begun.Lost.Worker),
		})
		r.log.Warn().Int("attempt", len(rec.History)).Str("lost_worker", begun.Lost.Worker).Msg("previous attempt was interrupted")
	case tasks.FirstAttemptLost(rec, r.retried):
		rec.History = append(rec.History, tasks.Attempt{
			Attempt: 1,
			Error:   "attempt interrupted: its worker stopped (or lost Redis) before recording an outcome; the upstream may have received the request",
		})
		r.log.Warn().Int("attempt", 1).Msg("previous attempt was interrupted")
	}
	rec.Attempts = len(rec.History)
	r.rec, r.version, r.detailChanged = rec, begun.Version, len(rec.History) != stored
	return nil
}

// takeTurn passes the call through its integration's gates (gatesFor):
// the fleet-wide limits an attempt must wait for. When a gate says wait, the
// gates passed before it are released and takeTurn returns a heldBack
// error, which puts the task back without spending a retry or an attempt;
// the record shows retrying, with the wait and a note saying why.
// Otherwise it returns the passes, to be released with the attempt's
// outcome (release) on every way the run ends. An integration with no
// gates pays nothing here.
func (w *Worker) takeTurn(ctx context.Context, r *run) ([]pass, error) {
	gates := w.gates[r.in.Name]
	if len(gates) == 0 {
		return nil, nil
	}
	// The gates get a copy of the run: one passed to them (indirect
	// calls) would be moved to the heap on every call, gated or not.
	gr := *r
	var passes []pass
	for _, g := range gates {
		p, hold, err := g(ctx, &gr)
		if err == nil && hold == nil {
			if p != nil {
				passes = append(passes, p)
			}
			continue
		}
		release(ctx, passes, nil)
		if err != nil {
			// Redis trouble: the call waits like a held one. Returned as
			// is, the error would spend a retry of the task with no
			// attempt made, and leave a later run's record marked
			// running: the next run would take either for an attempt
			// that lost its worker (FirstAttemptLost, Begin's Lost), and
			// record one that never reached the upstream.
			r.log.Warn().Err(err).Msg("could not check the integration's fleet-wide limits; the call waits")
			hold = &heldBack{delay: gateErrorWait + rand.N(gateErrorWait),
				note: fmt.Sprintf("waiting: the fleet-wide limits of %q could not be checked (a Redis error)", r.in.Name)}
		}
		return nil, w.hold(ctx, r, hold)
	}
	return passes, nil
}

// gateErrorWait is the least wait of a call whose gate could not be
// checked; it waits up to twice that.
const gateErrorWait = time.Second

// hold records that the call waits for hold and returns the error that
// puts its task back.
func (w *Worker) hold(ctx context.Context, r *run, h *heldBack) error {
	r.log.Info().Int64("retry_in_ms", h.delay.Milliseconds()).Str("reason", h.note).Msg("call held back without spending an attempt")
	traceHold(ctx, h)
	next := time.Now().Add(h.delay).UTC()
	r.rec.Status, r.rec.NextAttemptAt, r.rec.Note = tasks.StatusRetrying, &next, h.note
	if len(r.rec.History) == 0 {
		// No attempt has started: started_at is the first attempt's, and
		// the retry budget (max_elapsed) is counted from it.
		r.rec.StartedAt = nil
	}
	// The record's response and history are as stored, unless this run
	// recorded a lost attempt (resume): what a hold changes is written
	// without them, however large the response kept.
	_, err := w.commit(context.WithoutCancel(ctx), r.rec, r.version, nil, r.detailChanged)
	switch {
	case errors.Is(err, tasks.ErrFinished):
		return nil // canceled while it waited: nothing left to run
	case errors.Is(err, tasks.ErrNotFound):
		r.log.Warn().Msg("call has no record (expired or deleted); not attempting it")
		return nil
	case err != nil && r.firstRun:
		// Nothing was written: the record still says the call has made
		// no attempt, which is true. Spending a retry would make the next
		// run take it for a first attempt that lost its worker.
		r.log.Warn().Err(err).Msg("could not record that the call waits; it waits all the same")
		return h
	case err != nil:
		// The record stays marked running (Begin): the next run records
		// an interrupted attempt. Both Redis round trips of this run
		// failed; see the README's note on Redis outages.
		return err
	}
	return h
}

// release ends each pass with the attempt's outcome (nil: no attempt was
// made). It runs whatever ended the run, cancel and timeout included, so it
// does not use a context that may have ended.
func release(ctx context.Context, passes []pass, out *outcome) {
	if len(passes) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	// The passes get a copy: the handler's outcome, given to them
	// (indirect calls), would be moved to the heap on every call.
	var o *outcome
	if out != nil {
		c := *out
		o = &c
	}
	for _, p := range passes {
		p(ctx, o)
	}
}

// decision gathers what decide weighs after this run's attempt.
func (r *run) decision(out outcome, interrupted string, backoff Backoff) decision {
	return decision{out: out, interrupted: interrupted, attempt: len(r.rec.History) + 1, policy: r.policy,
		startedAt: *r.rec.StartedAt, retried: r.retried, maxRetry: r.maxRetry, now: time.Now(), backoff: backoff}
}

// interruption is the history's note of an attempt cut off before its
// outcome (canceled through the API, the task taken back by asynq, or the
// drain limit, whatever the attempt made of it), or "" if it was not.
func (w *Worker) interruption(ctx context.Context, out *outcome) string {
	cut := out.err != nil && (out.err.Kind == tasks.KindCanceled || errors.Is(context.Cause(ctx), errDrainLimit))
	if !cut {
		return ""
	}
	why := fmt.Sprintf("worker %s lost the call's task (canceled, or its lease expired)", w.cfg.Name)
	if errors.Is(context.Cause(ctx), errDrainLimit) {
		why = fmt.Sprintf("worker %s was shutting down and its drain limit of %s ran out", w.cfg.Name, w.cfg.ShutdownTimeout)
	}
	return "attempt interrupted: " + why + "; the upstream may have received the request"
}

// report carries out the verdict, once for every way a run ends: it adds
// the attempt to the history, logs it (one event) and observes it, then
// writes the record. A terminal record's webhook is queued (finish); a
// retrying one goes back to asynq in a retryError with the verdict's wait.
// d.attempt is 0 when the call was refused without an attempt.
func (w *Worker) report(ctx context.Context, r *run, d decision, v verdict) error {
	traceAttempt(ctx, d, v)
	var mine *tasks.Attempt
	if d.attempt > 0 {
		entry := r.record(d)
		mine = &entry
		ev := r.log.Info()
		if d.out.err != nil {
			ev = r.log.Warn().Str("error_kind", string(d.out.err.Kind)).Str("error", d.out.err.Message)
		}
		ev = ev.Int("attempt", mine.Attempt).Int("status", mine.Status).Int64("duration_ms", mine.DurationMS).
			Str("outcome", v.outcome())
		if v.status == tasks.StatusRetrying && !v.interrupted {
			ev = ev.Int64("retry_in_ms", v.delay.Milliseconds())
		}
		ev.Msg("attempt")
		w.cfg.Metrics.attempt(r.in.Name, v.outcome(), d.out.duration)
	}
	if v.status.Terminal() {
		return w.finish(ctx, r.log, r.rec, r.version, mine, v.status, v.err)
	}
	next := v.next
	r.rec.Status, r.rec.Error, r.rec.NextAttemptAt = tasks.StatusRetrying, v.err, &next
	// WithoutCancel: an attempt that ran up to the task's deadline must
	// still be recorded.
	_, err := w.commit(context.WithoutCancel(ctx), r.rec, r.version, mine, true)
	if errors.Is(err, tasks.ErrFinished) {
		return nil // canceled through the API while the attempt ran
	}
	if v.interrupted {
		if err != nil {
			// The next run finds the record as this attempt began it, and
			// records the interruption itself (Begin).
			r.log.Error().Err(err).Msg("could not record an interrupted attempt")
		}
		return &retryError{err: errors.New(v.err.Message)}
	}
	if err != nil {
		return err
	}
	return &retryError{delay: v.delay, err: v.err}
}

// record adds this run's attempt to the record's history and returns it.
func (r *run) record(d decision) tasks.Attempt {
	entry := tasks.Attempt{Attempt: d.attempt, StartedAt: r.start.UTC(), DurationMS: d.out.duration.Milliseconds(), Note: d.out.note}
	if d.out.response != nil {
		entry.Status = d.out.response.Status
		r.rec.Response = d.out.response
	}
	if d.out.err != nil {
		entry.Error = d.out.err.Message
	}
	if d.interrupted != "" {
		entry.Error = d.interrupted
	}
	r.rec.History = append(r.rec.History, entry)
	r.rec.Attempts = len(r.rec.History)
	r.rec.NextAttemptAt, r.rec.Note = nil, ""
	return entry
}

// finish writes a terminal record.
// mine is the attempt this run added to rec's history, if any.
// When the run is an asynq task's and no webhook is to be queued, the
// write also ends the task (tasks.Store.WriteDone), and asynq's Done that
// follows the handler's return costs nothing (taskEnds). With a webhook
// to queue, the task stays active until it is queued, so that asynq runs
// the task again if queueing fails.
func (w *Worker) finish(ctx context.Context, log zerolog.Logger, rec *tasks.Record, version int64, mine *tasks.Attempt, status tasks.Status, cerr *tasks.CallError) error {
	now := time.Now().UTC()
	rec.Status, rec.Error, rec.CompletedAt, rec.NextAttemptAt = status, cerr, &now, nil
	var task *tasks.AsynqTask
	if w.ends != nil {
		task = asynqTask(ctx)
	}
	rec, ended, err := w.commitDone(context.WithoutCancel(ctx), rec, version, mine, true, task)
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
		return enqueueWebhook(context.WithoutCancel(ctx), w.queue, w.shards, cur)
	case err != nil:
		log.Error().Err(err).Msg("could not write the call's record")
		return err
	}
	if ended {
		w.ends.end(task.ID)
	}
	w.cfg.Metrics.finished(rec)
	// If this fails, asynq runs the task again; it finds the record
	// finished and queues the webhook then.
	return enqueueWebhook(context.WithoutCancel(ctx), w.queue, w.shards, rec)
}

// asynqTask is the asynq task ctx runs, or nil when the handler was called
// by other means.
func asynqTask(ctx context.Context) *tasks.AsynqTask {
	id, ok := asynq.GetTaskID(ctx)
	if !ok {
		return nil
	}
	q, ok := asynq.GetQueueName(ctx)
	if !ok {
		return nil
	}
	return &tasks.AsynqTask{Queue: q, ID: id}
}

// commit writes rec over the record as of version. If the record changed
// meanwhile (an interrupted run recorded itself, say) it folds this
// attempt into the record as it now is and tries again; a record that
// became terminal (canceled) is left alone: ErrFinished. detail says rec's
// response or history may differ from the stored ones; without it only
// the rest is written (Store.WriteSummary: a hold).
func (w *Worker) commit(ctx context.Context, rec *tasks.Record, version int64, mine *tasks.Attempt, detail bool) (*tasks.Record, error) {
	rec, _, err := w.commitDone(ctx, rec, version, mine, detail, nil)
	return rec, err
}

// commitDone is commit, the write of a terminal record with no webhook
// to queue also ending task when it is not nil (tasks.Store.WriteDone);
// ended says it did. (The webhook is judged on the record as written: one
// set through the API while the attempt ran is in the record folded in.)
func (w *Worker) commitDone(ctx context.Context, rec *tasks.Record, version int64, mine *tasks.Attempt, detail bool, task *tasks.AsynqTask) (_ *tasks.Record, ended bool, _ error) {
	for range 5 {
		var err error
		switch {
		case task != nil && rec.Status.Terminal() && !webhookDue(rec):
			ended, err = w.cfg.Records.WriteDone(ctx, rec, version, *task)
		case detail:
			err = w.cfg.Records.Write(ctx, rec, version)
		default:
			err = w.cfg.Records.WriteSummary(ctx, rec, version)
		}
		if !errors.Is(err, tasks.ErrChanged) {
			return rec, ended, err
		}
		cur, ver, err := w.cfg.Records.GetVersion(ctx, rec.Tenant, rec.CorrelationID)
		if err != nil {
			return rec, false, err
		}
		if cur.Status.Terminal() {
			return cur, false, tasks.ErrFinished
		}
		if mine != nil {
			m := *mine
			m.Attempt = len(cur.History) + 1
			cur.History = append(cur.History, m)
			cur.Attempts = len(cur.History)
		}
		cur.Status, cur.Response, cur.Error = rec.Status, rec.Response, rec.Error
		cur.NextAttemptAt, cur.CompletedAt, cur.MaxAttempts, cur.Note = rec.NextAttemptAt, rec.CompletedAt, rec.MaxAttempts, rec.Note
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
	return rec, false, tasks.ErrChanged
}
