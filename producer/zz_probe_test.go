package producer_test

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/callq/callq/tasks"
)

func TestProbe(t *testing.T) {
	e := setup(t)
	e.enqueueFinished(t, "httpbin", tasks.StatusFailed, "f1", "f2")
	b64 := func(s string) string { return url.QueryEscape(base64.RawURLEncoding.EncodeToString([]byte(s))) }
	many := strings.Repeat("status=failed&", 5000)
	qs := []string{
		"limit=0", "limit=501", "limit=abc", "limit=99999999999999999999", "limit=%00",
		"since=1h&until=1h", "since=9999999h", "since=2562047h", "since=2562048h", "since=0001-01-01T00:00:00Z",
		"since=9999-12-31T23:59:59Z", "until=0001-01-01T00:00:00Z", "since=-0001-01-01T00:00:00Z",
		"until=1000000h", "since=1ns", "since=1e9h",
		"cursor=" + b64("1700000000000:f1"), "cursor=" + b64("9999999999999:f1"), "cursor=" + b64("0000000000000:x"),
		"cursor=" + b64("-100000000000:x"), "cursor=" + b64("1700000000000:a b"), "cursor=" + b64("17000000000000:x"),
		"cursor=" + b64("1700000000000:"+strings.Repeat("a", 5000)), "cursor=%ZZ", "cursor=====",
		"integration=" + strings.Repeat("a", 10000), "integration=..", "integration=a:b", "integration=%00",
		"integration=a%7Bb%7D", "status=FAILED", "status=failed,canceled", many,
		"status=queued&integration=httpbin", "status=running", "status=", "&&&", "limit=1&limit=2",
	}
	for _, q := range qs {
		r := e.do(t, req{Method: http.MethodGet, Path: "/v1/calls?" + q, Key: e.producerKey})
		short := q
		if len(short) > 80 {
			short = short[:80]
		}
		t.Logf("GET /v1/calls?%s -> %d %.200s", short, r.Status, r.Body)
	}
	for _, q := range []string{"since=1h", "since=8d", "since=7d", "since=168h", "since=169h", "until=1h", "since=2h&until=1h",
		"since=9999-12-31T23:59:59Z", "since=0001-01-01T00:00:00Z", "until=0001-01-01T00:00:00Z", "until=9999-12-31T23:59:59Z",
		"since=2562047h", "foo=1", "since=1h&since=2h"} {
		r := e.do(t, req{Method: http.MethodGet, Path: "/v1/stats?" + q, Key: e.producerKey})
		t.Logf("GET /v1/stats?%s -> %d %.300s", q, r.Status, r.Body)
	}
	for _, id := range []string{"nope", "f1", "%20", strings.Repeat("a", 300), "a..b", "x%2Fy"} {
		for _, body := range []string{"", "{}", `{"correlation_id": "f2"}`, `{"correlation_id": "f1"}`, `{"correlation_id": "a b"}`, `{"correlation_id": 1}`, `null`, `[]`, `{"correlation_id": ""}`, `{"x":1}`} {
			r := e.do(t, req{Method: http.MethodPost, Path: "/v1/calls/" + id + "/replay", Key: e.producerKey, Body: body})
			t.Logf("POST /v1/calls/%.20s/replay %s -> %d %.200s", id, body, r.Status, r.Body)
		}
	}
	for _, body := range []string{`{"filter": {"since": "9999-12-31T23:59:59Z"}}`, `{"filter": {"until": "0001-01-01T00:00:00Z"}}`,
		`{"filter": {"status": []}}`, `{"filter": {"status": [null]}}`, `{"filter": null}`, `{"filter": {}}`, `{"limit": 10000, "dry_run": true}`,
		`{"limit": 1e4}`, `{"filter": {"status": "failed", "status": "x"}}`, `{"dry_run": null}`} {
		r := e.do(t, req{Method: http.MethodPost, Path: "/v1/calls/replay", Key: e.producerKey, Body: body})
		t.Logf("POST /v1/calls/replay %s -> %d %.200s", body, r.Status, r.Body)
	}
}
