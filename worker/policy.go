package worker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/callq/callq/tasks"
)

// CheckRetry decides whether the outcome of an attempt is worth another one,
// and names the kind of error it was. resp is nil when err is not; a
// response is an error only if CheckRetry gives it a kind. The parent ctx is
// the task's: when it is done the attempt was canceled, not timed out.
type CheckRetry func(ctx context.Context, resp *http.Response, err error) (retry bool, kind tasks.ErrorKind)

// Backoff returns how long to wait after attempt (1 for the first) before
// the next one, under policy.
type Backoff func(policy tasks.RetryPolicy, attempt int) time.Duration

// RetryableStatuses are the HTTP statuses DefaultCheckRetry retries.
var RetryableStatuses = []int{
	http.StatusRequestTimeout,      // 408
	http.StatusTooEarly,            // 425
	http.StatusTooManyRequests,     // 429
	http.StatusInternalServerError, // 500
	http.StatusBadGateway,          // 502
	http.StatusServiceUnavailable,  // 503
	http.StatusGatewayTimeout,      // 504
}

// DefaultCheckRetry retries connection errors, timeouts and the statuses in
// RetryableStatuses. It does not retry TLS verification errors, other 4xx,
// or 501. A 2xx or 3xx is a success (callq does not follow redirects).
func DefaultCheckRetry(ctx context.Context, resp *http.Response, err error) (bool, tasks.ErrorKind) {
	if err != nil {
		switch kind := ClassifyError(ctx, err); kind {
		case tasks.KindTimeout, tasks.KindConnection:
			return true, kind
		default:
			return false, kind
		}
	}
	if resp.StatusCode < 400 {
		return false, ""
	}
	for _, s := range RetryableStatuses {
		if resp.StatusCode == s {
			if s == http.StatusTooManyRequests {
				return true, tasks.KindRateLimited
			}
			return true, tasks.KindHTTPStatus
		}
	}
	return false, tasks.KindHTTPStatus
}

// ClassifyError names the kind of a transport error.
func ClassifyError(ctx context.Context, err error) tasks.ErrorKind {
	if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return tasks.KindCanceled
	}
	var (
		unknownAuthority x509.UnknownAuthorityError
		hostname         x509.HostnameError
		invalid          x509.CertificateInvalidError
		verify           *tls.CertificateVerificationError
		header           tls.RecordHeaderError
		alert            tls.AlertError
		netErr           net.Error
	)
	switch {
	case errors.As(err, &verify), errors.As(err, &unknownAuthority), errors.As(err, &hostname),
		errors.As(err, &invalid), errors.As(err, &header), errors.As(err, &alert):
		return tasks.KindTLS
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return tasks.KindTimeout
	case errors.Is(err, context.Canceled):
		return tasks.KindCanceled
	}
	return tasks.KindConnection
}

// DefaultBackoff is exponential backoff with full jitter: a uniformly random
// wait between zero and min(max_interval, initial_interval ×
// multiplier^(attempt-1)). Full jitter spreads a fleet's retries after an
// outage instead of sending them back in waves.
func DefaultBackoff(policy tasks.RetryPolicy, attempt int) time.Duration {
	return rand.N(BackoffCap(policy, attempt) + 1)
}

// BackoffCap is the upper bound DefaultBackoff draws under.
func BackoffCap(policy tasks.RetryPolicy, attempt int) time.Duration {
	base := float64(policy.InitialInterval.D())
	mult := policy.Multiplier
	if mult < 1 {
		mult = 1
	}
	capped := base * math.Pow(mult, float64(max(attempt, 1)-1))
	if limit := float64(policy.MaxInterval.D()); limit > 0 && capped > limit {
		capped = limit
	}
	if capped > float64(math.MaxInt64/2) {
		capped = float64(math.MaxInt64 / 2)
	}
	return time.Duration(capped)
}

// ParseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date.
// A date in the past means "now". It reports false for anything else.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		if secs > int64(365*24*time.Hour/time.Second) {
			secs = int64(365 * 24 * time.Hour / time.Second)
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}
