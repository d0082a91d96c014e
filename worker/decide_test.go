package worker

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/tasks"
)

// TestDecide walks every way decide can judge an attempt, without Redis or
// asynq: what the record will say and what the log and metrics call the
// attempt.
func TestDecide(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.FixedZone("CET", 3600))
	policy := tasks.RetryPolicy{MaxAttempts: 3, MaxElapsed: tasks.Duration(time.Minute)}
	const interruption = "attempt interrupted: worker w1 was shutting down and its drain limit of 30s ran out; the upstream may have received the request"
	retryable := func(kind tasks.ErrorKind, msg string) outcome {
		return outcome{retry: true, err: &tasks.CallError{Kind: kind, Message: msg}}
	}
	retryAfter := func(d time.Duration) outcome {
		o := retryable(tasks.KindRateLimited, "upstream answered 429 Too Many Requests")
		o.retryAfter, o.hasRetryAfter = d, true
		ra := tasks.Duration(d)
		o.err.RetryAfter = &ra
		return o
	}
	canceled := outcome{err: &tasks.CallError{Kind: tasks.KindCanceled, Message: "context canceled"}}
	// base is the second of three attempts, begun 10s into the call, with
	// retries to spare: each case changes what it is about.
	base := func(out outcome) decision {
		return decision{out: out, attempt: 2, policy: policy, startedAt: now.Add(-10 * time.Second),
			retried: 1, maxRetry: 8, now: now, backoff: func(_ tasks.RetryPolicy, attempt int) time.Duration {
				return time.Duration(attempt) * time.Second
			}}
	}
	ra7s := tasks.Duration(7 * time.Second)
	ra2m := tasks.Duration(2 * time.Minute)

	for _, tc := range []struct {
		name string
		d    decision
		want verdict
		// outcome is the attempt's name in the log and metrics.
		outcome string
	}{
		{
			name:    "a response the check does not call an error succeeds",
			d:       base(outcome{response: &tasks.Response{Status: 201}}),
			want:    verdict{status: tasks.StatusSucceeded},
			outcome: "succeeded",
		},
		{
			name: "an error not worth retrying fails with its own message",
			d:    base(outcome{err: &tasks.CallError{Kind: tasks.KindHTTPStatus, Message: "upstream answered 404 Not Found"}}),
			want: verdict{status: tasks.StatusFailed,
				err: &tasks.CallError{Kind: tasks.KindHTTPStatus, Message: "upstream answered 404 Not Found"}},
			outcome: "failed",
		},
		{
			name: "a retryable error is retried after the backoff",
			d:    base(retryable(tasks.KindHTTPStatus, "upstream answered 503 Service Unavailable")),
			want: verdict{status: tasks.StatusRetrying, delay: 2 * time.Second, next: now.Add(2 * time.Second).UTC(),
				err: &tasks.CallError{Kind: tasks.KindHTTPStatus, Message: "upstream answered 503 Service Unavailable"}},
			outcome: "retrying",
		},
		{
			name: "the upstream's Retry-After replaces the backoff",
			d:    base(retryAfter(7 * time.Second)),
			want: verdict{status: tasks.StatusRetrying, delay: 7 * time.Second, next: now.Add(7 * time.Second).UTC(),
				err: &tasks.CallError{Kind: tasks.KindRateLimited, Message: "upstream answered 429 Too Many Requests", RetryAfter: &ra7s}},
			outcome: "retrying",
		},
		{
			name: "a retryable error on the last attempt fails, saying how many were made",
			d: func() decision {
				d := base(retryable(tasks.KindTimeout, "no complete response within the timeout of 5s"))
				d.attempt = 3
				return d
			}(),
			want: verdict{status: tasks.StatusFailed,
				err: &tasks.CallError{Kind: tasks.KindTimeout, Message: "no complete response within the timeout of 5s (after 3 attempts)"}},
			outcome: "failed",
		},
		{
			name: "a backoff past the retry budget fails",
			d: func() decision {
				d := base(retryable(tasks.KindConnection, "connection refused"))
				d.startedAt = now.Add(-59 * time.Second) // 59s + 2s > 1m
				return d
			}(),
			want: verdict{status: tasks.StatusFailed,
				err: &tasks.CallError{Kind: tasks.KindConnection, Message: "connection refused; the retry budget of 1m0s is spent"}},
			outcome: "failed",
		},
		{
			name: "a backoff that ends exactly at the budget is still retried",
			d: func() decision {
				d := base(retryable(tasks.KindConnection, "connection refused"))
				d.startedAt = now.Add(-58 * time.Second) // 58s + 2s = 1m
				return d
			}(),
			want: verdict{status: tasks.StatusRetrying, delay: 2 * time.Second, next: now.Add(2 * time.Second).UTC(),
				err: &tasks.CallError{Kind: tasks.KindConnection, Message: "connection refused"}},
			outcome: "retrying",
		},
		{
			name: "a Retry-After past the retry budget fails as rate limited, with the wait asked",
			d: func() decision {
				o := retryAfter(2 * time.Minute)
				o.err.Kind = tasks.KindHTTPStatus // a 503 with Retry-After
				return base(o)
			}(),
			want: verdict{status: tasks.StatusFailed, err: &tasks.CallError{Kind: tasks.KindRateLimited, RetryAfter: &ra2m,
				Message: "upstream answered 429 Too Many Requests; the upstream asked to wait 2m0s, past the retry budget of 1m0s"}},
			outcome: "failed",
		},
		{
			name: "without a budget there is no limit on the elapsed time",
			d: func() decision {
				d := base(retryAfter(2 * time.Minute))
				d.policy.MaxElapsed = 0
				return d
			}(),
			want: verdict{status: tasks.StatusRetrying, delay: 2 * time.Minute, next: now.Add(2 * time.Minute).UTC(),
				err: &tasks.CallError{Kind: tasks.KindRateLimited, Message: "upstream answered 429 Too Many Requests", RetryAfter: &ra2m}},
			outcome: "retrying",
		},
		{
			name: "the budget is checked before asynq's retries",
			d: func() decision {
				d := base(retryable(tasks.KindConnection, "connection refused"))
				d.startedAt, d.retried, d.maxRetry = now.Add(-time.Hour), 8, 8
				return d
			}(),
			want: verdict{status: tasks.StatusFailed,
				err: &tasks.CallError{Kind: tasks.KindConnection, Message: "connection refused; the retry budget of 1m0s is spent"}},
			outcome: "failed",
		},
		{
			name: "a retry asynq would not run fails the call now",
			d: func() decision {
				d := base(retryable(tasks.KindHTTPStatus, "upstream answered 502 Bad Gateway"))
				d.retried, d.maxRetry = 8, 8
				return d
			}(),
			want: verdict{status: tasks.StatusFailed,
				err: &tasks.CallError{Kind: tasks.KindHTTPStatus, Message: "upstream answered 502 Bad Gateway (the task's 8 retries are spent)"}},
			outcome: "failed",
		},
		{
			name: "asynq's retries unknown (a handler called directly) do not end the call",
			d: func() decision {
				d := base(retryable(tasks.KindHTTPStatus, "upstream answered 502 Bad Gateway"))
				d.retried, d.maxRetry = 0, -1
				return d
			}(),
			want: verdict{status: tasks.StatusRetrying, delay: 2 * time.Second, next: now.Add(2 * time.Second).UTC(),
				err: &tasks.CallError{Kind: tasks.KindHTTPStatus, Message: "upstream answered 502 Bad Gateway"}},
			outcome: "retrying",
		},
		{
			name: "an interrupted attempt is retried at once, its note the error",
			d: func() decision {
				d := base(canceled)
				d.interrupted = interruption
				return d
			}(),
			want: verdict{status: tasks.StatusRetrying, interrupted: true, next: now.UTC(),
				err: &tasks.CallError{Kind: tasks.KindInternal, Message: interruption}},
			outcome: "interrupted",
		},
		{
			name: "an interruption is judged as one whatever error the attempt made of it",
			d: func() decision {
				d := base(retryable(tasks.KindTimeout, "no complete response within the timeout of 5s"))
				d.interrupted = interruption
				return d
			}(),
			want: verdict{status: tasks.StatusRetrying, interrupted: true, next: now.UTC(),
				err: &tasks.CallError{Kind: tasks.KindInternal, Message: interruption}},
			outcome: "interrupted",
		},
		{
			name: "an interrupted last attempt fails the call",
			d: func() decision {
				d := base(canceled)
				d.interrupted, d.attempt = interruption, 3
				d.retried, d.maxRetry = 8, 8 // attempts are checked first
				return d
			}(),
			want: verdict{status: tasks.StatusFailed, interrupted: true,
				err: &tasks.CallError{Kind: tasks.KindInternal, Message: "all 3 attempts were used; the last was interrupted"}},
			outcome: "interrupted",
		},
		{
			name: "an interrupted attempt whose retry asynq would not run fails the call",
			d: func() decision {
				d := base(canceled)
				d.interrupted, d.retried, d.maxRetry = interruption, 8, 8
				return d
			}(),
			want: verdict{status: tasks.StatusFailed, interrupted: true,
				err: &tasks.CallError{Kind: tasks.KindInternal, Message: "the last attempt was interrupted and the task's 8 retries are spent"}},
			outcome: "interrupted",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var before *tasks.CallError
			if tc.d.out.err != nil {
				c := *tc.d.out.err
				before = &c
			}
			got := decide(tc.d)
			require.Equal(t, tc.want, got)
			require.Equal(t, tc.outcome, got.outcome())
			if before != nil {
				require.Equal(t, before, tc.d.out.err, "the attempt's own error is left as it was: the log reports it")
			}
		})
	}
}

// TestRefuse covers the calls failed before an attempt.
func TestRefuse(t *testing.T) {
	t.Parallel()
	policy := tasks.RetryPolicy{MaxAttempts: 2}
	for _, tc := range []struct {
		name     string
		known    bool
		attempts int
		want     *tasks.CallError // nil: the attempt goes ahead
	}{
		{name: "a known integration with attempts left goes ahead", known: true, attempts: 1},
		{name: "an integration not in the catalog fails", known: false, attempts: 0,
			want: &tasks.CallError{Kind: tasks.KindValidation, Message: `integration "billing" is not in this worker's catalog`}},
		{name: "an unknown integration fails as such, attempts or not", known: false, attempts: 5,
			want: &tasks.CallError{Kind: tasks.KindValidation, Message: `integration "billing" is not in this worker's catalog`}},
		{name: "attempts used up by lost runs fail the call", known: true, attempts: 2,
			want: &tasks.CallError{Kind: tasks.KindInternal, Message: "all 2 attempts were used; the last was interrupted"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v, refused := refuse(tc.known, "billing", policy, tc.attempts)
			if tc.want == nil {
				require.False(t, refused)
				return
			}
			require.True(t, refused)
			require.Equal(t, verdict{status: tasks.StatusFailed, err: tc.want}, v)
		})
	}
}
