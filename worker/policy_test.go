package worker

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/tasks"
)

func TestDefaultCheckRetryStatuses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cases := []struct {
		status int
		retry  bool
		kind   tasks.ErrorKind
	}{
		{200, false, ""}, {201, false, ""}, {204, false, ""}, {301, false, ""}, {302, false, ""}, {304, false, ""},
		{400, false, tasks.KindHTTPStatus}, {401, false, tasks.KindHTTPStatus}, {403, false, tasks.KindHTTPStatus},
		{404, false, tasks.KindHTTPStatus}, {409, false, tasks.KindHTTPStatus}, {422, false, tasks.KindHTTPStatus},
		{408, true, tasks.KindHTTPStatus}, {425, true, tasks.KindHTTPStatus}, {429, true, tasks.KindRateLimited},
		{500, true, tasks.KindHTTPStatus}, {501, false, tasks.KindHTTPStatus}, {502, true, tasks.KindHTTPStatus},
		{503, true, tasks.KindHTTPStatus}, {504, true, tasks.KindHTTPStatus}, {505, false, tasks.KindHTTPStatus},
	}
	for _, tc := range cases {
		retry, kind := DefaultCheckRetry(ctx, &http.Response{StatusCode: tc.status}, nil)
		require.Equal(t, tc.retry, retry, "status %d", tc.status)
		require.Equal(t, tc.kind, kind, "status %d", tc.status)
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestDefaultCheckRetryErrors(t *testing.T) {
	t.Parallel()
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	cases := []struct {
		name  string
		ctx   context.Context
		err   error
		retry bool
		kind  tasks.ErrorKind
	}{
		{"refused", context.Background(), &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, true, tasks.KindConnection},
		{"reset", context.Background(), fmt.Errorf("read: %w", syscall.ECONNRESET), true, tasks.KindConnection},
		{"deadline", context.Background(), fmt.Errorf("get: %w", context.DeadlineExceeded), true, tasks.KindTimeout},
		{"net timeout", context.Background(), &net.OpError{Op: "read", Err: timeoutErr{}}, true, tasks.KindTimeout},
		{"unknown authority", context.Background(), fmt.Errorf("tls: %w", x509.UnknownAuthorityError{}), false, tasks.KindTLS},
		{"hostname", context.Background(), x509.HostnameError{Certificate: &x509.Certificate{}, Host: "x"}, false, tasks.KindTLS},
		{"task canceled", canceled, errors.New("context canceled"), false, tasks.KindCanceled},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			retry, kind := DefaultCheckRetry(tc.ctx, nil, tc.err)
			require.Equal(t, tc.retry, retry)
			require.Equal(t, tc.kind, kind)
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"0", 0, true},
		{"1", time.Second, true},
		{"120", 2 * time.Minute, true},
		{" 30 ", 30 * time.Second, true},
		{"Mon, 23 Nov 2026 12:00:30 GMT", 30 * time.Second, true},
		{"Monday, 23-Nov-26 12:01:00 GMT", time.Minute, true}, // RFC 850
		{"Mon Nov 23 12:00:05 2026", 5 * time.Second, true},   // ANSI C
		{"Mon, 23 Nov 2026 11:00:00 GMT", 0, true},            // in the past: now
		{"", 0, false},
		{"-5", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
	}
	for _, tc := range cases {
		got, ok := ParseRetryAfter(tc.in, now)
		require.Equal(t, tc.ok, ok, "%q", tc.in)
		require.Equal(t, tc.want, got, "%q", tc.in)
	}
	huge, ok := ParseRetryAfter("99999999999", now)
	require.True(t, ok)
	require.Equal(t, 365*24*time.Hour, huge, "absurd values are capped, not overflowed")
}

func TestBackoffBounds(t *testing.T) {
	t.Parallel()
	p := tasks.RetryPolicy{MaxAttempts: 10, InitialInterval: tasks.Duration(100 * time.Millisecond),
		MaxInterval: tasks.Duration(time.Second), Multiplier: 2}
	wantCaps := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond,
		800 * time.Millisecond, time.Second, time.Second}
	for i, want := range wantCaps {
		attempt := i + 1
		require.Equal(t, want, BackoffCap(p, attempt), "attempt %d", attempt)
		var sawLow, sawHigh bool
		for range 2000 {
			d := DefaultBackoff(p, attempt)
			require.GreaterOrEqual(t, d, time.Duration(0))
			require.LessOrEqual(t, d, want)
			sawLow = sawLow || d < want/4
			sawHigh = sawHigh || d > want*3/4
		}
		require.True(t, sawLow && sawHigh, "full jitter spreads over [0, cap] (attempt %d)", attempt)
	}
	require.Equal(t, time.Second, BackoffCap(p, 1000), "no overflow with many attempts")
	flat := tasks.RetryPolicy{InitialInterval: tasks.Duration(time.Second), Multiplier: 0}
	require.Equal(t, time.Second, BackoffCap(flat, 5), "a multiplier below 1 does not shrink the wait")
}
