package producer_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/openapitest"
	"github.com/callq/callq/producer"
)

func TestRoutesWrongMethodIsJSON405(t *testing.T) {
	t.Parallel()
	e := setup(t)

	cases := []struct {
		method, path, allow string
	}{
		{http.MethodPatch, "/v1/calls/x", "DELETE, GET"},
		{http.MethodPut, "/v1/calls/x", "DELETE, GET"},
		{http.MethodPost, "/v1/calls/x", "DELETE, GET"},
		{http.MethodPut, "/v1/calls", "GET, POST"},
		{http.MethodDelete, "/v1/calls", "GET, POST"},
		{http.MethodPut, "/v1/calls/replay", "DELETE, GET, POST"},
		{http.MethodGet, "/v1/calls/x/replay", "POST"},
		{http.MethodPost, "/v1/stats", "GET"},
		{http.MethodPut, "/v1/calls/batch", "DELETE, GET, POST"},
		{http.MethodPost, "/v1/credentials", "GET"},
		{http.MethodDelete, "/v1/credentials", "GET"},
		{http.MethodPost, "/v1/credentials/x", "DELETE, GET, PUT"},
		{http.MethodPost, "/healthz", "GET"},
		{http.MethodDelete, "/readyz", "GET"},
	}
	for _, tc := range cases {
		// With and without a key: the method is checked first either way.
		for _, key := range []string{"", e.producerKey} {
			r := e.do(t, req{Method: tc.method, Path: tc.path, Key: key})
			requireError(t, r, http.StatusMethodNotAllowed, "method_not_allowed", "")
			require.Equal(t, tc.allow, r.Header.Get("Allow"), "%s %s", tc.method, tc.path)
		}
	}
}

func TestRoutesUnknownPathIsJSON404(t *testing.T) {
	t.Parallel()
	e := setup(t)

	for _, path := range []string{"/", "/nope", "/v1", "/v1/", "/v2/calls", "/v1/calls/a/b", "/v1/credentials/a/b"} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			r := e.do(t, req{Method: method, Path: path, Key: e.producerKey})
			requireError(t, r, http.StatusNotFound, "not_found", "")
		}
	}
}

func TestRoutesHealth(t *testing.T) {
	t.Parallel()
	e := setup(t)

	for _, path := range []string{"/healthz", "/readyz"} {
		r := e.do(t, req{Method: http.MethodGet, Path: path})
		require.Equal(t, http.StatusOK, r.Status, "%s: %s", path, r.Body)
		require.Equal(t, "application/json", r.Header.Get("Content-Type"))
		require.Equal(t, "ok", r.JSON(t)["status"])
		// HEAD is GET without the body.
		r = e.do(t, req{Method: http.MethodHead, Path: path})
		require.Equal(t, http.StatusOK, r.Status, path)
	}
}

func TestRoutesReadyzReportsTheReadyFunc(t *testing.T) {
	t.Parallel()
	ready := make(chan error, 1)
	e := setup(t, withReady(func(ctx context.Context) error {
		select {
		case err := <-ready:
			return err
		default:
			return errors.New("dial tcp 127.0.0.1:6379: connection refused")
		}
	}))

	r := e.do(t, req{Method: http.MethodGet, Path: "/readyz"})
	require.Equal(t, http.StatusServiceUnavailable, r.Status, "body: %s", r.Body)
	require.Equal(t, "application/json", r.Header.Get("Content-Type"))
	require.NotEqual(t, "ok", r.JSON(t)["status"])
	require.NotContains(t, string(r.Body), "6379", "the cause is logged, not answered")

	// Liveness does not depend on readiness.
	r = e.do(t, req{Method: http.MethodGet, Path: "/healthz"})
	require.Equal(t, http.StatusOK, r.Status)

	ready <- nil
	r = e.do(t, req{Method: http.MethodGet, Path: "/readyz"})
	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)
}

func TestNewHandlerValidatesItsConfig(t *testing.T) {
	t.Parallel()
	e := setup(t)

	for name, cfg := range map[string]*producer.HandlerConfig{
		"nil":              nil,
		"no producer":      {Credentials: e.creds, Keys: e.keys},
		"no credentials":   {Producer: e.prod, Keys: e.keys},
		"no keys":          {Producer: e.prod, Credentials: e.creds},
		"negative MaxWait": {Producer: e.prod, Credentials: e.creds, Keys: e.keys, MaxWait: -1},
	} {
		h, err := producer.NewHandler(cfg)
		require.Error(t, err, name)
		require.Nil(t, h, name)
	}
}

func TestHandlerMaxWait(t *testing.T) {
	t.Parallel()
	e := setup(t)
	h, err := producer.NewHandler(&producer.HandlerConfig{Producer: e.prod, Credentials: e.creds, Keys: e.keys, MaxWait: 500 * time.Millisecond})
	require.NoError(t, err)
	ts := httptest.NewServer(openapitest.Handler(t, h))
	t.Cleanup(ts.Close)
	e2 := *e
	e2.url = ts.URL

	r := e2.post(t, call(map[string]any{"correlation_id": "mw"}))
	require.Equal(t, http.StatusAccepted, r.Status)
	requireError(t, e2.get(t, "mw?wait=501ms"), http.StatusBadRequest, "invalid_field", "wait")
	r = e2.get(t, "mw?wait=500ms")
	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)
}
