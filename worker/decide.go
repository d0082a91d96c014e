package worker

import (
	"fmt"
	"time"

	"github.com/callq/callq/tasks"
)

// decision is what decide weighs after an attempt.
type decision struct {
	out outcome // the attempt's outcome
	// interrupted is the history's note of an attempt cut off before its
	// outcome (canceled, its task taken back, the drain limit), or "".
	interrupted string
	attempt     int               // this attempt's number, 1 for the first; 0 when none was made (refuse)
	policy      tasks.RetryPolicy // the integration's merged with the call's
	startedAt   time.Time         // when the call's first attempt began: the retry budget runs from it
	// retried and maxRetry are asynq's count of the task's runs before this
	// one and its limit (-1 when unknown).
	retried, maxRetry int
	now               time.Time
	backoff           Backoff
}

// verdict is what becomes of a call after a run.
type verdict struct {
	status tasks.Status     // succeeded, failed or retrying
	err    *tasks.CallError // the record's error; nil when the call succeeded
	// delay and next say when a retrying call's next attempt runs: at once
	// after an interruption.
	delay time.Duration
	next  time.Time
	// interrupted says the attempt was cut off before its outcome.
	interrupted bool
}

// outcome names the attempt's outcome in the log and the
// attempt_duration_seconds metric: the status it left, or "interrupted".
func (v verdict) outcome() string {
	if v.interrupted {
		return "interrupted"
	}
	return string(v.status)
}

// refuse fails a call that must not be attempted: its integration is not
// in this worker's catalog, or its attempts were all used (the last by a
// run that lost its worker).
func refuse(known bool, integration string, policy tasks.RetryPolicy, attempts int) (verdict, bool) {
	switch {
	case !known:
		return verdict{status: tasks.StatusFailed, err: &tasks.CallError{
			Kind: tasks.KindValidation, Message: fmt.Sprintf("integration %q is not in this worker's catalog", integration)}}, true
	case attempts >= policy.MaxAttempts:
		return verdict{status: tasks.StatusFailed, err: &tasks.CallError{
			Kind: tasks.KindInternal, Message: fmt.Sprintf("all %d attempts were used; the last was interrupted", policy.MaxAttempts)}}, true
	}
	return verdict{}, false
}

// decide says what becomes of a call after an attempt: it succeeded, it
// failed (the error says why no attempt follows), or it is retried after
// the backoff or the upstream's Retry-After. It reads nothing but d, so
// every rule of the call path is tested without Redis or asynq. It leaves
// d.out as the attempt made it.
func decide(d decision) verdict {
	if d.out.err == nil {
		return verdict{status: tasks.StatusSucceeded}
	}
	if d.interrupted != "" {
		return decideInterrupted(d)
	}
	if !d.out.retry {
		return verdict{status: tasks.StatusFailed, err: d.out.err}
	}
	cerr := *d.out.err // a copy: the log reports the attempt's own error
	failed := func(format string, args ...any) verdict {
		cerr.Message += fmt.Sprintf(format, args...)
		return verdict{status: tasks.StatusFailed, err: &cerr}
	}
	if d.attempt >= d.policy.MaxAttempts {
		return failed(" (after %d attempts)", d.attempt)
	}
	delay := d.backoff(d.policy, d.attempt)
	if d.out.hasRetryAfter {
		delay = d.out.retryAfter
	}
	if budget := d.policy.MaxElapsed.D(); budget > 0 && d.now.Sub(d.startedAt)+delay > budget {
		if !d.out.hasRetryAfter {
			return failed("; the retry budget of %s is spent", budget)
		}
		ra := tasks.Duration(d.out.retryAfter)
		cerr.Kind, cerr.RetryAfter = tasks.KindRateLimited, &ra
		return failed("; the upstream asked to wait %s, past the retry budget of %s", d.out.retryAfter, budget)
	}
	if d.maxRetry >= 0 && d.retried >= d.maxRetry {
		// asynq would archive the task instead of running it again (its
		// retries went to lost runs, or another catalog allows more
		// attempts than the one that queued it): fail now rather than
		// leave the record retrying forever.
		return failed(" (the task's %d retries are spent)", d.maxRetry)
	}
	return verdict{status: tasks.StatusRetrying, err: d.out.err, delay: delay, next: d.now.Add(delay).UTC()}
}

// decideInterrupted judges an attempt that was cut off; it counts against
// the call's attempts like any other. If it was the last, the call fails
// now. Otherwise the call is retried at once: the handler returns an error,
// so that asynq raises the task's retry count, and the next run goes
// through Begin, which sees this attempt, rather than a first attempt's
// path, which reads nothing and would send the call as if it had never
// run. (A call canceled through the API is terminal already: report's
// write is refused and the record stays canceled.)
func decideInterrupted(d decision) verdict {
	v := verdict{status: tasks.StatusFailed, interrupted: true,
		err: &tasks.CallError{Kind: tasks.KindInternal, Message: d.interrupted}}
	switch {
	case d.attempt >= d.policy.MaxAttempts:
		v.err.Message = fmt.Sprintf("all %d attempts were used; the last was interrupted", d.policy.MaxAttempts)
	case d.maxRetry >= 0 && d.retried >= d.maxRetry:
		v.err.Message = fmt.Sprintf("the last attempt was interrupted and the task's %d retries are spent", d.maxRetry)
	default:
		v.status, v.next = tasks.StatusRetrying, d.now.UTC()
	}
	return v
}
