package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// healthcheck runs `callq healthcheck args...` in process.
func healthcheck(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), append([]string{"healthcheck"}, args...), &stdout, &stderr)
	require.Empty(t, stderr.String())
	return stdout.String(), err
}

func TestHealthcheckAnswers(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			_, _ = io.WriteString(w, `{"status":"ok"}`)
		case "/down":
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"status":"unavailable","error":"redis unreachable"}`)
		case "/text":
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, "line one\nline two\x1b[31m"+strings.Repeat("x", 500))
		case "/moved":
			http.Redirect(w, r, "/readyz", http.StatusFound)
		case "/hang":
			<-r.Context().Done()
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()

	out, err := healthcheck(t, "--url", srv.URL+"/readyz")
	require.NoError(t, err)
	require.Equal(t, "ok: "+srv.URL+"/readyz answered 200\n", out)

	for _, tc := range []struct {
		path, want string
	}{
		{"/down", "/down answered 503 Service Unavailable: redis unreachable"},
		{"/text", "/text answered 500 Internal Server Error: line one line two [31mxxx"},
		{"/moved", "/moved answered 302 Found"},
		{"/nowhere", "/nowhere answered 404 Not Found"},
	} {
		out, err := healthcheck(t, "--url", srv.URL+tc.path)
		require.Error(t, err, tc.path)
		require.Empty(t, out)
		require.Contains(t, err.Error(), tc.want, tc.path)
		require.NotContains(t, err.Error(), "\n", "%s: one line", tc.path)
		require.Less(t, len(err.Error()), 400, tc.path)
		require.False(t, errors.Is(err, errUsage), "%s: exit 1, not 2", tc.path)
	}

	start := time.Now()
	_, err = healthcheck(t, "--url", srv.URL+"/hang", "--timeout", "200ms")
	require.Error(t, err)
	require.Contains(t, err.Error(), "deadline exceeded")
	require.Less(t, time.Since(start), 5*time.Second, "--timeout bounds the check")

	// Nothing listening.
	addr := freeAddr(t)
	_, err = healthcheck(t, "--url", "http://"+addr+"/readyz")
	require.ErrorContains(t, err, "connection refused")
}

func TestHealthcheckUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--url", "http://x/readyz", "--worker"},
		{"--timeout", "0s"},
		{"extra"},
	} {
		_, err := healthcheck(t, args...)
		require.ErrorIs(t, err, errUsage, "%v", args)
	}
	out, err := healthcheck(t, "-h")
	require.NoError(t, err)
	require.Contains(t, out, "Usage: callq healthcheck")
}

// The default URL is the API's on this host, from CALLQ_API_ADDR; --worker
// takes CALLQ_METRICS_ADDR's.
func TestHealthcheckDefaultURL(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{":8080", "http://127.0.0.1:8080/readyz"},
		{"0.0.0.0:9000", "http://127.0.0.1:9000/readyz"},
		{"[::]:9000", "http://127.0.0.1:9000/readyz"},
		{"10.1.2.3:80", "http://10.1.2.3:80/readyz"},
		{"[::1]:8080", "http://[::1]:8080/readyz"},
	} {
		got, err := localReadyURL(tc.addr)
		require.NoError(t, err, tc.addr)
		require.Equal(t, tc.want, got, tc.addr)
	}
	_, err := localReadyURL("8080")
	require.ErrorContains(t, err, `"8080" is not host:port`)

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	t.Setenv("CALLQ_API_ADDR", addr)
	t.Setenv("CALLQ_METRICS_ADDR", "")
	out, err := healthcheck(t)
	require.NoError(t, err)
	require.Contains(t, out, "http://"+addr+"/readyz answered 200")

	_, err = healthcheck(t, "--worker")
	require.ErrorContains(t, err, "CALLQ_METRICS_ADDR is not set")
	t.Setenv("CALLQ_METRICS_ADDR", addr)
	out, err = healthcheck(t, "--worker")
	require.NoError(t, err)
	require.Contains(t, out, "http://"+addr+"/readyz answered 200")

	t.Setenv("CALLQ_API_ADDR", "nonsense")
	_, err = healthcheck(t)
	require.ErrorContains(t, err, `CALLQ_API_ADDR: "nonsense" is not host:port`)
}

func TestVersionFlag(t *testing.T) {
	t.Parallel()
	var stdout bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"--version"}, &stdout, io.Discard))
	require.Regexp(t, `^callq \S+\n$`, stdout.String())
}
