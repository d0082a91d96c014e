package producer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/tasks"
)

func TestEnqueueAnswers202WithLocation(t *testing.T) {
	t.Parallel()
	e := setup(t)

	r := e.post(t, call(map[string]any{"correlation_id": "order-981"}))
	require.Equal(t, http.StatusAccepted, r.Status, "body: %s", r.Body)
	require.Equal(t, "application/json", r.Header.Get("Content-Type"))
	require.Equal(t, "/v1/calls/order-981", r.Header.Get("Location"))
	require.JSONEq(t, `{"correlation_id":"order-981","status":"queued","url":"/v1/calls/order-981"}`, string(r.Body))

	// The call is queued in asynq under the tenant's task ID, and its record
	// belongs to tenant acme.
	info, err := e.taskInfo("acme", "default", "order-981")
	require.NoError(t, err)
	require.Equal(t, asynq.TaskStatePending, info.State)
	require.Equal(t, tasks.TypeCall, info.Type)
	p, err := tasks.DecodePayload(info.Payload)
	require.NoError(t, err)
	require.Equal(t, "acme", p.Tenant)
	require.Equal(t, "GET", p.Call.Method)
	require.Equal(t, tasks.Query{"since": {"364"}}, p.Call.Query)

	rec := e.get(t, "order-981").Record(t)
	require.Equal(t, "acme", rec.Tenant)
	require.Equal(t, tasks.StatusQueued, rec.Status)
	require.Equal(t, "httpbin", rec.Integration)
	require.Equal(t, "/get", rec.Path)
	require.Equal(t, "default", rec.Queue)
	require.Equal(t, 3, rec.MaxAttempts, "the integration's retry policy")
}

func TestEnqueueGeneratesACorrelationID(t *testing.T) {
	t.Parallel()
	e := setup(t)

	r := e.post(t, call(nil))
	require.Equal(t, http.StatusAccepted, r.Status, "body: %s", r.Body)
	m := r.JSON(t)
	id, _ := m["correlation_id"].(string)
	u, err := uuid.Parse(id)
	require.NoError(t, err, "a generated correlation ID is a UUID")
	require.Equal(t, uuid.Version(7), u.Version())
	require.Equal(t, "/v1/calls/"+id, r.Header.Get("Location"))
	require.Equal(t, "/v1/calls/"+id, m["url"])

	// Two calls without an ID are two calls.
	r2 := e.post(t, call(nil))
	require.Equal(t, http.StatusAccepted, r2.Status)
	require.NotEqual(t, id, r2.JSON(t)["correlation_id"])
}

func TestEnqueueCorrelationIDHeader(t *testing.T) {
	t.Parallel()
	e := setup(t)

	// The header alone names the call.
	r := e.post(t, call(nil), "Correlation-Id", "from-header")
	require.Equal(t, http.StatusAccepted, r.Status, "body: %s", r.Body)
	require.Equal(t, "from-header", r.JSON(t)["correlation_id"])
	require.Equal(t, "/v1/calls/from-header", r.Header.Get("Location"))
	_, err := e.taskInfo("acme", "default", "from-header")
	require.NoError(t, err)

	// Header and body agreeing is fine.
	r = e.post(t, call(map[string]any{"correlation_id": "both"}), "Correlation-Id", "both")
	require.Equal(t, http.StatusAccepted, r.Status, "body: %s", r.Body)
	require.Equal(t, "both", r.JSON(t)["correlation_id"])

	// Disagreeing is refused, and nothing is queued under either ID.
	r = e.post(t, call(map[string]any{"correlation_id": "in-body"}), "Correlation-Id", "in-header")
	requireError(t, r, http.StatusBadRequest, "invalid_field", "correlation_id")
	for _, id := range []string{"in-body", "in-header"} {
		requireError(t, e.get(t, id), http.StatusNotFound, "not_found", "")
		_, err := e.taskInfo("acme", "default", id)
		require.ErrorIs(t, err, asynq.ErrTaskNotFound)
	}

	// An invalid header value is named as the correlation_id.
	r = e.post(t, call(nil), "Correlation-Id", "has space")
	requireError(t, r, http.StatusBadRequest, "invalid_field", "correlation_id")
}

func TestEnqueueSameCallAgainAnswers200WithTheRecord(t *testing.T) {
	t.Parallel()
	e := setup(t)
	body := call(map[string]any{"correlation_id": "again", "timeout": "10s", "headers": map[string]string{"X-Trace": "1"}})

	r := e.post(t, body)
	require.Equal(t, http.StatusAccepted, r.Status, "body: %s", r.Body)
	first := e.get(t, "again").Record(t)

	r = e.post(t, body)
	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)
	require.Empty(t, r.Header.Get("Location"))
	rec := r.Record(t)
	require.Equal(t, "again", rec.CorrelationID)
	require.Equal(t, "acme", rec.Tenant)
	require.Equal(t, tasks.StatusQueued, rec.Status)
	require.True(t, first.CreatedAt.Equal(rec.CreatedAt), "the existing record, not a new one")

	// The same call written differently (method case, timeout in seconds)
	// normalizes to the same payload.
	r = e.post(t, call(map[string]any{"correlation_id": "again", "method": "get", "timeout": 10, "headers": map[string]string{"X-Trace": "1"}}))
	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)

	// asynq holds exactly one task for it.
	info, err := e.taskInfo("acme", "default", "again")
	require.NoError(t, err)
	require.Equal(t, asynq.TaskStatePending, info.State)
	require.Equal(t, 1, e.queueSize(t, "default"))
}

func TestEnqueueSameIDOtherPayloadAnswers409(t *testing.T) {
	t.Parallel()
	e := setup(t)

	r := e.post(t, call(map[string]any{"correlation_id": "taken"}))
	require.Equal(t, http.StatusAccepted, r.Status, "body: %s", r.Body)

	for name, other := range map[string]map[string]any{
		"path":    {"correlation_id": "taken", "path": "/other"},
		"query":   {"correlation_id": "taken", "query": map[string]any{"since": "365"}},
		"queue":   {"correlation_id": "taken", "queue": "low"},
		"timeout": {"correlation_id": "taken", "timeout": "3s"},
	} {
		r = e.post(t, call(other))
		requireError(t, r, http.StatusConflict, "conflict", "correlation_id")
		require.Contains(t, string(r.Body), "taken", name)
	}
	// The header form conflicts the same way.
	r = e.post(t, call(map[string]any{"path": "/other"}), "Correlation-Id", "taken")
	requireError(t, r, http.StatusConflict, "conflict", "correlation_id")

	rec := e.get(t, "taken").Record(t)
	require.Equal(t, "/get", rec.Path, "the first call stands")
	require.Equal(t, 1, e.queueSize(t, "default"))
}

func TestEnqueueSameIDInTwoTenantsIsTwoCalls(t *testing.T) {
	t.Parallel()
	e := setup(t)

	// An admin key may enqueue too: it has every right a producer has.
	ra := e.post(t, call(map[string]any{"correlation_id": "shared", "path": "/acme"}))
	require.Equal(t, http.StatusAccepted, ra.Status, "body: %s", ra.Body)
	ro := e.do(t, req{Method: http.MethodPost, Path: "/v1/calls", Key: e.otherAdminKey, Body: call(map[string]any{"correlation_id": "shared", "path": "/other"})})
	require.Equal(t, http.StatusAccepted, ro.Status, "body: %s", ro.Body)

	recA := e.get(t, "shared").Record(t)
	require.Equal(t, "acme", recA.Tenant)
	require.Equal(t, "/acme", recA.Path)
	recO := e.do(t, req{Method: http.MethodGet, Path: "/v1/calls/shared", Key: e.otherAdminKey}).Record(t)
	require.Equal(t, "other", recO.Tenant)
	require.Equal(t, "/other", recO.Path)

	for _, tenant := range []string{"acme", "other"} {
		info, err := e.taskInfo(tenant, "default", "shared")
		require.NoError(t, err, tenant)
		p, err := tasks.DecodePayload(info.Payload)
		require.NoError(t, err)
		require.Equal(t, tenant, p.Tenant)
		require.Equal(t, "/"+tenant, p.Call.Path)
	}
}

// nested returns depth levels of JSON arrays around 1.
func nested(depth int) string {
	return strings.Repeat("[", depth) + "1" + strings.Repeat("]", depth)
}

func TestEnqueueRefusesBadInputNamingTheField(t *testing.T) {
	t.Parallel()
	e := setup(t)
	valid := `"integration": "httpbin", "method": "GET", "path": "/get"`

	cases := []struct {
		name   string
		body   string
		code   string
		fields []string // acceptable fields; nil means no field
	}{
		{"unknown field", `{` + valid + `, "bogus": 1}`, "invalid_field", []string{"bogus"}},
		{"field in the wrong case", `{` + valid + `, "Queue": "low"}`, "invalid_field", []string{"Queue"}},
		{"method not a string", `{"integration": "httpbin", "method": 5, "path": "/get"}`, "invalid_field", []string{"method"}},
		{"query not an object", `{` + valid + `, "query": 5}`, "invalid_field", []string{"query"}},
		{"query value not a string", `{` + valid + `, "query": {"a": 5}}`, "invalid_field", []string{"query", "query.a"}},
		{"headers not an object", `{` + valid + `, "headers": ["a"]}`, "invalid_field", []string{"headers"}},
		{"header value not a string", `{` + valid + `, "headers": {"X-A": 5}}`, "invalid_field", []string{"headers", "headers.X-A"}},
		// encoding/json reads these nulls as "": refused, as the OpenAPI document has it.
		{"header value null", `{` + valid + `, "headers": {"X-A": null}}`, "invalid_field", []string{"headers.X-A"}},
		{"query value null", `{` + valid + `, "query": {"a": null}}`, "invalid_field", []string{"query"}},
		{"query value null in an array", `{` + valid + `, "query": {"a": ["x", null]}}`, "invalid_field", []string{"query"}},
		{"timeout not a duration", `{` + valid + `, "timeout": "abc"}`, "invalid_field", []string{"timeout"}},
		{"timeout a boolean", `{` + valid + `, "timeout": true}`, "invalid_field", []string{"timeout"}},
		{"retry.max_attempts a string", `{` + valid + `, "retry": {"max_attempts": "x"}}`, "invalid_field", []string{"retry.max_attempts", "retry"}},
		{"retry not an object", `{` + valid + `, "retry": 3}`, "invalid_field", []string{"retry"}},
		{"body_text not a string", `{` + valid + `, "body_text": 5}`, "invalid_field", []string{"body_text"}},
		{"delay not a duration", `{` + valid + `, "delay": "soon"}`, "invalid_field", []string{"delay"}},
		{"webhook not an object", `{` + valid + `, "webhook": "https://x.example"}`, "invalid_field", []string{"webhook"}},

		{"missing integration", `{"method": "GET", "path": "/get"}`, "invalid_field", []string{"integration"}},
		{"empty integration", `{"integration": "", "method": "GET", "path": "/get"}`, "invalid_field", []string{"integration"}},
		{"unknown integration", `{"integration": "nope", "method": "GET", "path": "/get"}`, "invalid_field", []string{"integration"}},
		{"missing method", `{"integration": "httpbin", "path": "/get"}`, "invalid_field", []string{"method"}},
		{"bad method", `{"integration": "httpbin", "method": "FETCH", "path": "/get"}`, "invalid_field", []string{"method"}},
		{"CONNECT", `{"integration": "httpbin", "method": "CONNECT", "path": "/get"}`, "invalid_field", []string{"method"}},
		{"missing path", `{"integration": "httpbin", "method": "GET"}`, "invalid_field", []string{"path"}},

		{"path //host", `{"integration": "httpbin", "method": "GET", "path": "//evil.com"}`, "invalid_field", []string{"path"}},
		{"path absolute URL", `{"integration": "httpbin", "method": "GET", "path": "http://evil.com/x"}`, "invalid_field", []string{"path"}},
		{"path relative", `{"integration": "httpbin", "method": "GET", "path": "evil.com"}`, "invalid_field", []string{"path"}},
		{"path backslash", `{"integration": "httpbin", "method": "GET", "path": "/\\\\evil.com"}`, "invalid_field", []string{"path"}},
		{"path climbing", `{"integration": "httpbin", "method": "GET", "path": "/a/../../x"}`, "invalid_field", []string{"path"}},
		{"path encoded climbing", `{"integration": "httpbin", "method": "GET", "path": "/%2e%2e/x"}`, "invalid_field", []string{"path"}},
		{"path double encoding", `{"integration": "httpbin", "method": "GET", "path": "/%252e%252e/x"}`, "invalid_field", []string{"path"}},
		{"path query string", `{"integration": "httpbin", "method": "GET", "path": "/get?a=b"}`, "invalid_field", []string{"path"}},
		{"path fragment", `{"integration": "httpbin", "method": "GET", "path": "/get#x"}`, "invalid_field", []string{"path"}},
		{"path control character", `{"integration": "httpbin", "method": "GET", "path": "/get\r\nHost: evil"}`, "invalid_field", []string{"path"}},
		{"path look-alike slash", `{"integration": "httpbin", "method": "GET", "path": "/\u2215\u2215evil.com"}`, "invalid_field", []string{"path"}},
		{"path encoded look-alike", `{"integration": "httpbin", "method": "GET", "path": "/%EF%BC%8Fevil"}`, "invalid_field", []string{"path"}},
		{"path scheme", `{"integration": "httpbin", "method": "GET", "path": "/http://evil.com"}`, "invalid_field", []string{"path"}},

		{"timeout above max_timeout", `{` + valid + `, "timeout": "21s"}`, "invalid_field", []string{"timeout"}},
		{"timeout above max_timeout in seconds", `{` + valid + `, "timeout": 21}`, "invalid_field", []string{"timeout"}},
		{"negative timeout", `{` + valid + `, "timeout": "-1s"}`, "invalid_field", []string{"timeout"}},
		{"negative delay", `{` + valid + `, "delay": "-1s"}`, "invalid_field", []string{"delay"}},
		{"delay above 7 days", `{` + valid + `, "delay": "169h"}`, "invalid_field", []string{"delay"}},
		{"unknown queue", `{` + valid + `, "queue": "nope"}`, "invalid_field", []string{"queue"}},
		{"max_attempts above 25", `{` + valid + `, "retry": {"max_attempts": 26}}`, "invalid_field", []string{"retry.max_attempts"}},
		{"multiplier below 1", `{` + valid + `, "retry": {"multiplier": 0.5}}`, "invalid_field", []string{"retry.multiplier"}},
		{"max_interval above 24h", `{` + valid + `, "retry": {"max_interval": "24h0m1s"}}`, "invalid_field", []string{"retry.max_interval"}},
		{"max_interval above 24h in seconds", `{` + valid + `, "retry": {"max_interval": 86401}}`, "invalid_field", []string{"retry.max_interval"}},
		{"max_elapsed above 7 days", `{` + valid + `, "retry": {"max_elapsed": "169h"}}`, "invalid_field", []string{"retry.max_elapsed"}},
		{"max_elapsed far above 7 days", `{` + valid + `, "retry": {"max_elapsed": "2000000h"}}`, "invalid_field", []string{"retry.max_elapsed"}},
		{"bad credential ref", `{` + valid + `, "credential": "no spaces"}`, "invalid_field", []string{"credential"}},
		{"bad correlation_id", `{` + valid + `, "correlation_id": "a/b"}`, "invalid_field", []string{"correlation_id"}},
		{"correlation_id too long", `{` + valid + `, "correlation_id": "` + strings.Repeat("a", 129) + `"}`, "invalid_field", []string{"correlation_id"}},
		{"reserved header", `{` + valid + `, "headers": {"Host": "evil.com"}}`, "invalid_field", []string{"headers.Host"}},
		{"reserved Accept-Encoding", `{` + valid + `, "headers": {"accept-encoding": "gzip"}}`, "invalid_field", []string{"headers.accept-encoding"}},
		{"reserved Range", `{` + valid + `, "headers": {"Range": "bytes=0-9"}}`, "invalid_field", []string{"headers.Range"}},
		{"reserved If-Range", `{` + valid + `, "headers": {"IF-RANGE": "x"}}`, "invalid_field", []string{"headers.IF-RANGE"}},
		{"reserved TE", `{` + valid + `, "headers": {"te": "trailers"}}`, "invalid_field", []string{"headers.te"}},
		{"header name", `{` + valid + `, "headers": {"Bad Name": "x"}}`, "invalid_field", []string{"headers.Bad Name"}},
		{"header value with CRLF", `{` + valid + `, "headers": {"X-A": "a\r\nHost: evil"}}`, "invalid_field", []string{"headers.X-A"}},
		{"auth header on a bearer integration", `{"integration": "bearer", "method": "GET", "path": "/x", "headers": {"authorization": "Bearer mine"}}`, "invalid_field", []string{"headers.authorization"}},
		{"credential required", `{"integration": "basic", "method": "GET", "path": "/x"}`, "invalid_field", []string{"credential"}},
		{"two bodies", `{` + valid + `, "body": {"a": 1}, "body_text": "a"}`, "invalid_field", []string{"body"}},
		{"bad base64", `{` + valid + `, "body_base64": "!!!"}`, "invalid_field", []string{"body_base64"}},
		{"webhook not http", `{` + valid + `, "webhook": {"url": "ftp://x.example/h"}}`, "invalid_field", []string{"webhook.url"}},
		{"webhook without url", `{` + valid + `, "webhook": {}}`, "invalid_field", []string{"webhook.url"}},
		{"empty query name", `{` + valid + `, "query": {"": "x"}}`, "invalid_field", []string{"query"}},

		{"invalid JSON", `{"integration": "httpbin",`, "invalid_json", nil},
		{"trailing garbage", `{` + valid + `} x`, "invalid_json", nil},
		{"empty body", ``, "invalid_json", nil},
		{"blank body", " \n\t ", "invalid_json", nil},
		{"nested 100 deep", `{` + valid + `, "body": ` + nested(100) + `}`, "invalid_json", nil},
		{"array body", `[` + `{` + valid + `}]`, "invalid_json", nil},
		{"string body", `"GET /get"`, "invalid_json", nil},
		{"number body", `42`, "invalid_json", nil},
		{"boolean body", `true`, "invalid_json", nil},
		{"not JSON", `integration=httpbin&method=GET`, "invalid_json", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.post(t, tc.body)
			require.Equal(t, http.StatusBadRequest, r.Status, "body: %s", r.Body)
			var ae apiError
			require.NoError(t, json.Unmarshal(r.Body, &ae), "body: %s", r.Body)
			require.NotNil(t, ae.Error)
			require.Equal(t, tc.code, ae.Error.Code, "body: %s", r.Body)
			require.NotEmpty(t, ae.Error.Message)
			if tc.fields == nil {
				require.Nil(t, ae.Error.Field, "body: %s", r.Body)
			} else {
				require.NotNil(t, ae.Error.Field, "body: %s", r.Body)
				require.Contains(t, tc.fields, *ae.Error.Field, "body: %s", r.Body)
			}
		})
	}

	// Nothing was queued by any of them.
	for _, q := range tasks.DefaultQueues() {
		require.Zero(t, e.queueSize(t, q), q)
	}
}

func TestEnqueueAcceptsWhatTheReadmeAccepts(t *testing.T) {
	t.Parallel()
	e := setup(t)

	for name, extra := range map[string]map[string]any{
		"full example": {
			"query": map[string]any{"since": "364", "id": []string{"1", "2"}}, "headers": map[string]string{"X-Request-Source": "billing"},
			"body": map[string]any{"name": "x"}, "timeout": "10s", "retry": map[string]any{"max_attempts": 3},
			"delay": "30s", "queue": "critical",
		},
		"body_text":              {"method": "POST", "body_text": "hello"},
		"body_base64":            {"method": "PUT", "body_base64": "aGVsbG8="},
		"numbers of seconds":     {"timeout": 1.5, "delay": 2},
		"at sign in path":        {"path": "/users/@me"},
		"encoded non-ASCII":      {"path": "/caf%C3%A9"},
		"dot-dot within base":    {"path": "/a/../b"},
		"every method":           {"method": "OPTIONS"},
		"lower-case method":      {"method": "delete"},
		"null body":              {"body": json.RawMessage(`null`)},
		"max_attempts 25":        {"retry": map[string]any{"max_attempts": 25}},
		"retry at its limits":    {"retry": map[string]any{"max_interval": "24h", "max_elapsed": "168h"}},
		"max timeout":            {"timeout": "20s"},
		"delay 7 days":           {"delay": "168h"},
		"bearer with default":    {"integration": "bearer", "path": "/me"},
		"explicit credential":    {"integration": "basic", "credential": "cust-42"},
		"64 headers":             {"headers": manyHeaders(64)},
		"128 query values":       {"query": manyQuery(128)},
		"nested 63 deep in body": {"body": json.RawMessage(nested(63))},
	} {
		r := e.post(t, call(extra))
		require.Equal(t, http.StatusAccepted, r.Status, "%s: %s", name, r.Body)
	}
}

func manyHeaders(n int) map[string]string {
	h := make(map[string]string, n)
	for i := range n {
		h[fmt.Sprintf("X-H%d", i)] = "v"
	}
	return h
}

func manyQuery(n int) map[string]any {
	q := make(map[string]any, n)
	for i := range n {
		q[fmt.Sprintf("q%d", i)] = "v"
	}
	return q
}

func TestEnqueueTooLarge(t *testing.T) {
	t.Parallel()
	e := setup(t, withLimits(&tasks.Limits{MaxRequestBytes: 1024}))
	big := strings.Repeat("x", 2048)

	// The call's body over MaxRequestBytes, in each of its three forms.
	r := e.post(t, call(map[string]any{"method": "POST", "body": map[string]string{"data": big}}))
	requireError(t, r, http.StatusRequestEntityTooLarge, "too_large", "body")
	r = e.post(t, call(map[string]any{"method": "POST", "body_text": big}))
	require.Equal(t, http.StatusRequestEntityTooLarge, r.Status, "body: %s", r.Body)
	require.Contains(t, []string{"body", "body_text"}, errorField(t, r))
	r = e.post(t, call(map[string]any{"method": "POST", "body_base64": strings.Repeat("QUJD", 700)}))
	require.Equal(t, http.StatusRequestEntityTooLarge, r.Status, "body: %s", r.Body)
	require.Contains(t, []string{"body", "body_base64"}, errorField(t, r))

	// Just at the limit is fine.
	r = e.post(t, call(map[string]any{"method": "POST", "body_text": strings.Repeat("x", 1024)}))
	require.Equal(t, http.StatusAccepted, r.Status, "body: %s", r.Body)

	// The whole request over MaxBodyBytes (by default 4/3 of the limit plus
	// 64 KiB) is refused before it is decoded.
	r = e.post(t, call(map[string]any{"method": "POST", "body_text": strings.Repeat("x", 100<<10)}))
	requireError(t, r, http.StatusRequestEntityTooLarge, "too_large", "")

	// Too many headers, query values, or too long a path or header value.
	r = e.post(t, call(map[string]any{"headers": manyHeaders(65)}))
	requireError(t, r, http.StatusRequestEntityTooLarge, "too_large", "headers")
	r = e.post(t, call(map[string]any{"query": manyQuery(129)}))
	requireError(t, r, http.StatusRequestEntityTooLarge, "too_large", "query")
	r = e.post(t, call(map[string]any{"path": "/" + strings.Repeat("a", 2048)}))
	requireError(t, r, http.StatusRequestEntityTooLarge, "too_large", "path")
	r = e.post(t, call(map[string]any{"headers": map[string]string{"X-Big": strings.Repeat("v", 8<<10+1)}}))
	requireError(t, r, http.StatusRequestEntityTooLarge, "too_large", "headers.X-Big")

	require.Equal(t, 1, e.queueSize(t, "default"), "only the call at the limit was queued")
}

func TestEnqueueMaxBodyBytes(t *testing.T) {
	t.Parallel()
	e := setup(t, withMaxBodyBytes(4096))

	r := e.post(t, call(map[string]any{"method": "POST", "body_text": strings.Repeat("x", 3000)}))
	require.Equal(t, http.StatusAccepted, r.Status, "body: %s", r.Body)
	r = e.post(t, call(map[string]any{"method": "POST", "body_text": strings.Repeat("x", 5000)}))
	requireError(t, r, http.StatusRequestEntityTooLarge, "too_large", "")
	// The batch endpoint has the same bound.
	r = e.do(t, req{Method: http.MethodPost, Path: "/v1/calls/batch", Key: e.producerKey,
		Body: map[string]any{"calls": []any{call(map[string]any{"method": "POST", "body_text": strings.Repeat("x", 5000)})}}})
	requireError(t, r, http.StatusRequestEntityTooLarge, "too_large", "")
}

func TestEnqueueJSONDepthLimit(t *testing.T) {
	t.Parallel()
	e := setup(t)

	// The object itself is one level: 63 more inside body make 64.
	r := e.post(t, `{"integration": "httpbin", "method": "POST", "path": "/x", "body": `+nested(63)+`}`)
	require.Equal(t, http.StatusAccepted, r.Status, "body: %s", r.Body)
	r = e.post(t, `{"integration": "httpbin", "method": "POST", "path": "/x", "body": `+nested(64)+`}`)
	requireError(t, r, http.StatusBadRequest, "invalid_json", "")
	// Brackets inside strings are not nesting.
	r = e.post(t, `{"integration": "httpbin", "method": "POST", "path": "/x", "body_text": "`+strings.Repeat("[{", 200)+`\"\\"}`)
	require.Equal(t, http.StatusAccepted, r.Status, "body: %s", r.Body)
}

type batchAnswer struct {
	Results []struct {
		Status int             `json:"status"`
		Result json.RawMessage `json:"result"`
		Error  *struct {
			Code    string  `json:"code"`
			Message string  `json:"message"`
			Field   *string `json:"field"`
		} `json:"error"`
	} `json:"results"`
}

func TestBatchAnswersPerItem(t *testing.T) {
	t.Parallel()
	e := setup(t)

	body := `{"calls": [
		{"integration": "httpbin", "method": "GET", "path": "/one", "correlation_id": "b1"},
		{"integration": "httpbin", "method": 5, "path": "/two"},
		{"integration": "httpbin", "method": "GET", "path": "//evil.com"},
		{"integration": "httpbin", "method": "GET", "path": "/one", "correlation_id": "b1"},
		{"integration": "httpbin", "method": "GET", "path": "/changed", "correlation_id": "b1"},
		{"integration": "httpbin", "method": "GET", "path": "/three", "bogus": true},
		[1, 2],
		{"integration": "httpbin", "method": "POST", "path": "/four", "queue": "low"}
	]}`
	r := e.do(t, req{Method: http.MethodPost, Path: "/v1/calls/batch", Key: e.producerKey, Body: body})
	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)
	var ans batchAnswer
	require.NoError(t, json.Unmarshal(r.Body, &ans), "body: %s", r.Body)
	require.Len(t, ans.Results, 8)

	want := []struct {
		status int
		code   string
		field  string
	}{
		{http.StatusAccepted, "", ""},
		{http.StatusBadRequest, "invalid_field", "method"},
		{http.StatusBadRequest, "invalid_field", "path"},
		{http.StatusOK, "", ""},
		{http.StatusConflict, "conflict", "correlation_id"},
		{http.StatusBadRequest, "invalid_field", "bogus"},
		{http.StatusBadRequest, "invalid_json", ""},
		{http.StatusAccepted, "", ""},
	}
	for i, w := range want {
		got := ans.Results[i]
		require.Equal(t, w.status, got.Status, "item %d: %s", i, r.Body)
		if w.code == "" {
			require.Nil(t, got.Error, "item %d", i)
			require.NotEmpty(t, got.Result, "item %d", i)
			continue
		}
		require.NotNil(t, got.Error, "item %d", i)
		require.Empty(t, got.Result, "item %d", i)
		require.Equal(t, w.code, got.Error.Code, "item %d", i)
		require.NotEmpty(t, got.Error.Message, "item %d", i)
		if w.field == "" {
			require.Nil(t, got.Error.Field, "item %d", i)
		} else {
			require.NotNil(t, got.Error.Field, "item %d", i)
			require.Equal(t, w.field, *got.Error.Field, "item %d", i)
		}
	}

	var first map[string]any
	require.NoError(t, json.Unmarshal(ans.Results[0].Result, &first))
	require.Equal(t, map[string]any{"correlation_id": "b1", "status": "queued", "url": "/v1/calls/b1"}, first)
	var dup tasks.Record
	require.NoError(t, json.Unmarshal(ans.Results[3].Result, &dup))
	require.Equal(t, "b1", dup.CorrelationID)
	require.Equal(t, tasks.StatusQueued, dup.Status)
	var last map[string]any
	require.NoError(t, json.Unmarshal(ans.Results[7].Result, &last))
	id, _ := last["correlation_id"].(string)
	require.NotEmpty(t, id)

	// Two tasks in all, each where its call said.
	_, err := e.taskInfo("acme", "default", "b1")
	require.NoError(t, err)
	_, err = e.taskInfo("acme", "low", id)
	require.NoError(t, err)
	require.Equal(t, 1, e.queueSize(t, "default"))
}

func TestBatchSize(t *testing.T) {
	t.Parallel()
	e := setup(t)
	batch := func(n int) string {
		items := make([]string, n)
		for i := range items {
			items[i] = `{}`
		}
		return `{"calls": [` + strings.Join(items, ",") + `]}`
	}
	post := func(body string) *resp {
		return e.do(t, req{Method: http.MethodPost, Path: "/v1/calls/batch", Key: e.producerKey, Body: body})
	}

	requireError(t, post(batch(0)), http.StatusBadRequest, "invalid_field", "calls")
	requireError(t, post(batch(1001)), http.StatusBadRequest, "invalid_field", "calls")
	requireError(t, post(`{"calls": null}`), http.StatusBadRequest, "invalid_field", "calls")
	requireError(t, post(`{}`), http.StatusBadRequest, "invalid_field", "calls")
	requireError(t, post(`{"calls": {}}`), http.StatusBadRequest, "invalid_field", "calls")
	requireError(t, post(`{"calls": [`), http.StatusBadRequest, "invalid_json", "")
	requireError(t, post(``), http.StatusBadRequest, "invalid_json", "")
	requireError(t, post(`[{}]`), http.StatusBadRequest, "invalid_json", "")
	requireError(t, post(`{"calls": [`+nested(100)+`]}`), http.StatusBadRequest, "invalid_json", "")

	// 1,000 is allowed, each answered (here, each invalid).
	r := post(batch(1000))
	require.Equal(t, http.StatusOK, r.Status, "body: %.300s", r.Body)
	var ans batchAnswer
	require.NoError(t, json.Unmarshal(r.Body, &ans))
	require.Len(t, ans.Results, 1000)
	for i, it := range ans.Results {
		require.Equal(t, http.StatusBadRequest, it.Status, "item %d", i)
		require.NotNil(t, it.Error)
		require.NotNil(t, it.Error.Field)
		require.Equal(t, "integration", *it.Error.Field)
	}
}

func TestEnqueueConcurrentDuplicatesQueueOnce(t *testing.T) {
	t.Parallel()
	e := setup(t)
	body := call(map[string]any{"correlation_id": "race"})

	const n = 16
	statuses := make(chan int, n)
	errs := make(chan error, n)
	for range n {
		go func() {
			b, _ := json.Marshal(body)
			hr, err := http.NewRequestWithContext(context.Background(), http.MethodPost, e.url+"/v1/calls", strings.NewReader(string(b)))
			if err != nil {
				errs <- err
				return
			}
			hr.Header.Set("Authorization", "Bearer "+e.producerKey)
			res, err := http.DefaultClient.Do(hr)
			if err != nil {
				errs <- err
				return
			}
			res.Body.Close()
			statuses <- res.StatusCode
		}()
	}
	counts := map[int]int{}
	for range n {
		select {
		case s := <-statuses:
			counts[s]++
		case err := <-errs:
			require.NoError(t, err)
		}
	}
	require.Equal(t, map[int]int{http.StatusAccepted: 1, http.StatusOK: n - 1}, counts)
	require.Equal(t, 1, e.queueSize(t, "default"))
}

func TestEnqueueAgainRequeuesALostTask(t *testing.T) {
	t.Parallel()
	e := setup(t)
	body := call(map[string]any{"correlation_id": "lost"})

	r := e.post(t, body)
	require.Equal(t, http.StatusAccepted, r.Status, "body: %s", r.Body)
	// The task is lost (a producer died between record and task, say).
	require.NoError(t, e.inspector.DeleteTask("default", tasks.TaskID("acme", "lost")))

	// The same call again answers the record and queues its task again.
	r = e.post(t, body)
	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)
	info, err := e.taskInfo("acme", "default", "lost")
	require.NoError(t, err)
	require.Equal(t, asynq.TaskStatePending, info.State)
	require.Equal(t, 1, e.queueSize(t, "default"))
}

func TestEnqueueReplacesAStaleTaskOfAnExpiredRecord(t *testing.T) {
	t.Parallel()
	e := setup(t)

	r := e.post(t, call(map[string]any{"correlation_id": "stale", "path": "/old"}))
	require.Equal(t, http.StatusAccepted, r.Status, "body: %s", r.Body)
	// The old call's task ended in the archive and its record expired.
	require.NoError(t, e.inspector.ArchiveTask("default", tasks.TaskID("acme", "stale")))
	require.NoError(t, e.records.Delete(context.Background(), "acme", "stale"))

	// A new call under that ID is queued with its own payload.
	r = e.post(t, call(map[string]any{"correlation_id": "stale", "path": "/new"}))
	require.Equal(t, http.StatusAccepted, r.Status, "body: %s", r.Body)
	info, err := e.taskInfo("acme", "default", "stale")
	require.NoError(t, err)
	require.Equal(t, asynq.TaskStatePending, info.State)
	p, err := tasks.DecodePayload(info.Payload)
	require.NoError(t, err)
	require.Equal(t, "/new", p.Call.Path)
	require.Equal(t, "/new", e.get(t, "stale").Record(t).Path)
}
