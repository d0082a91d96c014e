package openapitest_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/openapitest"
)

// failures is a testing.TB that keeps what Errorf reports instead of
// failing the test: the validator's verdicts, for these tests to check.
type failures struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (f *failures) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, fmt.Sprintf(format, args...))
}

func (f *failures) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.errs...)
}

// answer is a handler standing in for the API: it answers every request
// status and body, as JSON.
func answer(status int, body string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		if status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", "GET")
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	})
}

const validCall = `{"integration": "httpbin", "method": "GET", "path": "/get"}`

// The validator reports what disagrees with the document, and only that:
// through Handler (the API in the test's process) and through Transport
// (the API in another).
func TestValidatorVerdicts(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, method, path, key, body string
		status                        int
		answer                        string
		want                          string // "" for no failure
	}{
		{name: "a documented exchange", method: "GET", path: "/healthz", status: 200, answer: `{"status":"ok"}`},
		{name: "an enqueue", method: "POST", path: "/v1/calls", key: "k", body: validCall,
			status: 202, answer: `{"correlation_id":"a","status":"queued","url":"/v1/calls/a"}`},
		{name: "a refusal of a bad call", method: "POST", path: "/v1/calls", key: "k", body: `{"integration": 5}`,
			status: 400, answer: `{"error":{"code":"invalid_field","message":"must be a string","field":"integration"}}`},
		{name: "an unknown path answered 404", method: "GET", path: "/v2/nope", key: "k",
			status: 404, answer: `{"error":{"code":"not_found","message":"no such endpoint"}}`},
		{name: "a wrong method answered 405", method: "PATCH", path: "/v1/calls", key: "k",
			status: 405, answer: `{"error":{"code":"method_not_allowed","message":"no"}}`},

		{name: "a value outside the enum", method: "GET", path: "/healthz", status: 200, answer: `{"status":"fine"}`,
			want: "the response does not match the document"},
		{name: "a field the document lacks", method: "POST", path: "/v1/calls", key: "k", body: validCall,
			status: 202, answer: `{"correlation_id":"a","status":"queued","url":"/v1/calls/a","extra":1}`,
			want: "the response does not match the document"},
		{name: "a required field missing", method: "GET", path: "/v1/calls/a", key: "k",
			status: 200, answer: `{"correlation_id":"a"}`, want: "the response does not match the document"},
		{name: "a status the operation does not list", method: "GET", path: "/healthz", status: 418, answer: `{}`,
			want: "the response does not match the document"},
		{name: "an error body of another shape", method: "GET", path: "/v1/calls/a", key: "k",
			status: 404, answer: `{"message":"no"}`, want: "the response does not match the document"},
		{name: "a bad call accepted", method: "POST", path: "/v1/calls", key: "k", body: `{"integration": "httpbin"}`,
			status: 202, answer: `{"correlation_id":"a","status":"queued","url":"/v1/calls/a"}`,
			want: "the document rejects the request, yet it was answered 202"},
		{name: "no key accepted", method: "GET", path: "/v1/integrations",
			status: 200, answer: `{"integrations":[]}`, want: "the document rejects the request"},
		{name: "an undocumented path served", method: "GET", path: "/v1/secret", key: "k",
			status: 200, answer: `{}`, want: "the document has no operation for it"},
		{name: "a 405 without the error body", method: "PATCH", path: "/v1/calls", key: "k",
			status: 405, answer: `method not allowed`, want: "a 405 answer must be the API's error body"},
	}
	for _, tc := range cases {
		for _, via := range []string{"Handler", "Transport"} {
			t.Run(tc.name+" via "+via, func(t *testing.T) {
				t.Parallel()
				f := &failures{TB: t}
				client := http.DefaultClient
				var srv *httptest.Server
				if via == "Handler" {
					srv = httptest.NewServer(openapitest.Handler(f, answer(tc.status, tc.answer)))
				} else {
					srv = httptest.NewServer(answer(tc.status, tc.answer))
					client = &http.Client{Transport: openapitest.Transport(f, nil)}
				}
				t.Cleanup(srv.Close)
				var body io.Reader
				if tc.body != "" {
					body = strings.NewReader(tc.body)
				}
				req, err := http.NewRequest(tc.method, srv.URL+tc.path, body)
				require.NoError(t, err)
				if tc.key != "" {
					req.Header.Set("Authorization", "Bearer "+tc.key)
				}
				resp, err := client.Do(req)
				require.NoError(t, err)
				got, err := io.ReadAll(resp.Body)
				require.NoError(t, err)
				require.NoError(t, resp.Body.Close())
				require.Equal(t, tc.status, resp.StatusCode)
				require.Equal(t, tc.answer, string(got), "the answer passes through unchanged")

				errs := f.got()
				if tc.want == "" {
					require.Empty(t, errs)
					return
				}
				require.Len(t, errs, 1, "%q", errs)
				require.Contains(t, errs[0], tc.want)
			})
		}
	}
}

func TestOperationsListsTheDocument(t *testing.T) {
	t.Parallel()
	ops := openapitest.Operations(t)
	for _, op := range []string{"POST /v1/calls", "GET /v1/calls/{id}", "GET /v1/calls/batch", "PUT /v1/credentials/{ref}", "GET /openapi.json", "GET /docs", "GET /metrics"} {
		require.Contains(t, ops, op)
	}
	require.IsIncreasing(t, ops)
}

// A Transport, like the http.Client it is in, is used by many goroutines
// at once (a test's load of enqueues): it holds no state of one request
// that another could write (go test -race).
func TestTransportConcurrentRequests(t *testing.T) {
	t.Parallel()
	f := &failures{TB: t}
	srv := httptest.NewServer(answer(http.StatusAccepted, `{"correlation_id":"a","status":"queued","url":"/v1/calls/a"}`))
	t.Cleanup(srv.Close)
	client := &http.Client{Transport: openapitest.Transport(f, nil)}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 10 {
				req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/calls", strings.NewReader(validCall))
				if err != nil {
					t.Error(err)
					return
				}
				req.Header.Set("Authorization", "Bearer k")
				resp, err := client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		})
	}
	wg.Wait()
	require.Empty(t, f.got())
}
