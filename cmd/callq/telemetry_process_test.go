package main

import (
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/stretchr/testify/require"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/callq/callq/tasks"
)

// otlpReceiver is a real OTLP/HTTP trace receiver: it decodes each export
// request's protobuf and keeps its spans and raw bytes.
type otlpReceiver struct {
	*httptest.Server
	mu    sync.Mutex
	spans []*tracepb.Span
	raw   []byte
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
			http.Error(w, "not an OTLP trace export", http.StatusNotFound)
			return
		}
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		b, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var export coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &export); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.raw = append(r.raw, b...)
		for _, rs := range export.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				r.spans = append(r.spans, ss.Spans...)
			}
		}
		r.mu.Unlock()
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(r.Close)
	return r
}

// span is the first span received with that name in that trace, or nil.
func (r *otlpReceiver) span(name, traceID string) *tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.spans {
		if s.Name == name && hex.EncodeToString(s.TraceId) == traceID {
			return s
		}
	}
	return nil
}

func (r *otlpReceiver) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.raw)
}

// TestTracingExportedOverOTLP: `callq api` and `callq worker`, configured
// only by OTEL_EXPORTER_OTLP_ENDPOINT, export to a real OTLP/HTTP receiver
// the API's span of POST /v1/calls, the child of the request's
// traceparent, and the worker's span of the attempt, its child in the same
// trace; go-httpbin received the attempt span's traceparent. No API key,
// secret key or query value is in what was exported. The API's /metrics
// passes `promtool check metrics`.
func TestTracingExportedOverOTLP(t *testing.T) {
	t.Parallel()
	recv := newOTLPReceiver(t)
	d := deploy(t, 0, "OTEL_EXPORTER_OTLP_ENDPOINT="+recv.URL, "OTEL_BSP_SCHEDULE_DELAY=50")
	worker := d.startWorker()

	const traceID = "0af7651916cd43dd8448eb211c80319c"
	const querySecret = "q-s3cr3t-7c1d0e"
	b, err := json.Marshal(map[string]any{"integration": "bin", "method": "GET", "path": "/headers",
		"query": map[string]string{"token": querySecret}, "correlation_id": "otlp-1"})
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, d.apiURL+"/v1/calls", bytes.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+d.apiKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", "00-"+traceID+"-b7ad6b7169203331-01")
	resp, err := d.http.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	rec := d.waitAllTerminal([]string{"otlp-1"}, time.Now().Add(30*time.Second))["otlp-1"]
	require.Equal(t, tasks.StatusSucceeded, rec.Status)
	require.NotNil(t, rec.Trace)
	require.True(t, strings.HasPrefix(rec.Trace.Parent, "00-"+traceID+"-"), rec.Trace.Parent)

	var api, attempt *tracepb.Span
	require.Eventually(t, func() bool {
		api, attempt = recv.span("POST /v1/calls", traceID), recv.span("callq.attempt", traceID)
		return api != nil && attempt != nil
	}, 30*time.Second, 20*time.Millisecond, "the receiver never got both spans of trace %s", traceID)
	require.Equal(t, "b7ad6b7169203331", hex.EncodeToString(api.ParentSpanId), "the API's span is the request's child")
	require.Equal(t, api.SpanId, attempt.ParentSpanId, "the worker's attempt is the API span's child, across the queue")
	attrs := map[string]string{}
	for _, kv := range attempt.Attributes {
		attrs[kv.Key] = kv.Value.String()
	}
	require.Contains(t, attrs["callq.status"], "succeeded")
	require.Contains(t, attrs["callq.integration"], "bin")

	var echoed struct{ Headers map[string][]string }
	require.NoError(t, json.Unmarshal(rec.Response.Body, &echoed))
	require.Equal(t, []string{"00-" + traceID + "-" + hex.EncodeToString(attempt.SpanId) + "-01"}, echoed.Headers["Traceparent"])

	for _, c := range []*child{d.api, worker} {
		require.Contains(t, c.logs(), "tracing: exporting spans over OTLP/HTTP", c.name)
	}

	raw := string(recv.bytes())
	for _, secret := range []string{d.apiKey, querySecret, "token=", envOf(d.env, "CALLQ_SECRET_KEY")} {
		require.NotContains(t, raw, secret)
	}

	// The API's /metrics, with its callq_* series, passes promtool's lint.
	wants := []string{
		`callq_http_requests_total{code="202",method="POST",route="/v1/calls"} 1`,
		`callq_calls_enqueued_total{integration="bin"} 1`,
		`callq_queue_stats_up 1`,
		`callq_queue_tasks{queue="default",state="pending"} 0`,
	}
	var metrics []byte
	// A request is counted once its handler has answered.
	require.Eventually(t, func() bool {
		mresp, err := http.Get(d.apiURL + "/metrics")
		if err != nil {
			return false
		}
		defer mresp.Body.Close()
		if metrics, err = io.ReadAll(mresp.Body); err != nil {
			return false
		}
		for _, want := range wants {
			if !bytes.Contains(metrics, []byte(want)) {
				return false
			}
		}
		return true
	}, 10*time.Second, 20*time.Millisecond, "the API's /metrics lacks one of %q:\n%s", wants, &metrics)
	checkMetrics(t, metrics)
}

// checkMetrics runs `promtool check metrics` on a scrape, and promlint (the
// same lint, in process). promtool comes with Debian's prometheus package,
// which .ci/run installs: under CI=true it must be there.
func checkMetrics(t *testing.T, scrape []byte) {
	t.Helper()
	problems, err := promlint.New(bytes.NewReader(scrape)).Lint()
	require.NoError(t, err)
	require.Empty(t, problems)
	path, err := exec.LookPath("promtool")
	if err != nil {
		require.NotEqual(t, "true", os.Getenv("CI"), "promtool is needed under CI=true (Debian's prometheus package)")
		t.Log("promtool is not installed (Debian's prometheus package); the scrape passed promlint only")
		return
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = bytes.NewReader(scrape)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "promtool check metrics: %s", out)
}

// envOf is NAME's value in env.
func envOf(env []string, name string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return "\x00unset"
}
