package tasks

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// codecSeeds are hostile and awkward strings: HTML, invalid UTF-8, the
// line separators JSON-in-JavaScript escapes, controls, quotes, non-ASCII.
var codecSeeds = []string{
	"", "plain", `<script>alert("x")</script>`, "a&b>c<d", "\xff\xfe\xfd", "ok\x80bad", "\u2028\u2029",
	"tab\tnl\ncr\r\x00\x1f", `quote" back\ slash/`, "héllo wörld ☃ 𝄞", "\xed\xa0\x80", "{\"k\":1}",
}

// codecRecord is a record with every field set from s, t and b.
func codecRecord(s, t string, body []byte, n int) *Record {
	at := time.Date(2026, 11, 26, 12, 0, 0, n, time.UTC)
	later := at.Add(time.Duration(n) * time.Millisecond)
	txt := s + t
	rec := &Record{
		CorrelationID: s, Tenant: t, Status: Status(s), Integration: t, Method: "POST", Path: "/" + s,
		Credential: t, Queue: s, Attempts: n, MaxAttempts: n + 1,
		Response: &Response{Status: 200 + n%300, Headers: map[string]string{s: t, t + "x": s, "Content-Type": s},
			BodyText: &txt, BodyBase64: t, Size: int64(n), Truncated: n%2 == 0, BodyWithheld: s},
		Error:     &CallError{Kind: ErrorKind(t), Message: s, RetryAfter: new(Duration(n))},
		History:   []Attempt{{Attempt: 1, StartedAt: at, DurationMS: int64(n), Status: n, Error: s, Note: t}, {Attempt: 2}},
		CreatedAt: at, StartedAt: &at, CompletedAt: &later, NextAttemptAt: &later, Note: s,
		Webhook:  &WebhookState{URL: s, Status: t, Attempts: n, LastError: &txt, LastStatus: n, DeliveredAt: &later},
		ReplayOf: s, ReplayedBy: t, Schedule: s, Trace: &TraceContext{Parent: s, State: t},
	}
	if json.Valid(body) {
		rec.Response.Body, rec.Response.BodyText = body, nil
	}
	return rec
}

// codecPayload is a call payload with every field set from s, t and b.
func codecPayload(s, t string, body []byte, n int) *Payload {
	c := Call{Integration: s, Method: t, Path: "/" + s, Query: Query{s: {t, s}, t: {s}},
		Headers: map[string]string{s: t, "X-" + t: s}, BodyText: &t, BodyBase64: s, Credential: t,
		CorrelationID: s, Timeout: Duration(n) * Duration(time.Millisecond), Webhook: &Webhook{URL: t},
		Retry: &RetryPolicy{MaxAttempts: n}, Delay: Duration(n), Queue: s}
	if json.Valid(body) {
		c.Body, c.BodyText = body, nil
	}
	p := &Payload{Tenant: t, Call: c, ReplayOf: s, Schedule: t, Trace: &TraceContext{Parent: s, State: t}}
	if n%2 == 0 {
		p.CreatedAt = time.Date(2026, 11, 26, 12, 0, 0, n, time.UTC)
	}
	return p
}

// checkCodec says marshal writes what encoding/json writes for v, and
// unmarshal reads that back as encoding/json does into a new *T.
func checkCodec[T any](t *testing.T, v *T) {
	t.Helper()
	want, werr := json.Marshal(v)
	got, gerr := marshal(v)
	require.Equal(t, werr == nil, gerr == nil, "encoding/json: %v; marshal: %v", werr, gerr)
	if werr != nil {
		return
	}
	require.Equal(t, string(want), string(got))
	var a, b T
	aerr, berr := json.Unmarshal(want, &a), unmarshal(want, &b)
	require.Equal(t, aerr == nil, berr == nil, "encoding/json: %v; unmarshal: %v", aerr, berr)
	require.True(t, reflect.DeepEqual(a, b), "decoded differently:\nencoding/json %#v\nunmarshal     %#v", a, b)
}

func addCodecSeeds(f *testing.F) {
	for i, s := range codecSeeds {
		t := codecSeeds[(i+3)%len(codecSeeds)]
		f.Add(s, t, []byte(`{"a":[1,2.5,"`+s+`"],"b":null,"c":{"d":true}}`), i)
		f.Add(t, s, []byte(" [ 1 , {\"x\" : \"<&>\"} ]\n"), i*1000003)
		f.Add(s, s, []byte(s), -i)
	}
}

// FuzzCodecRecord: a record's stored parts and the API's record, encoded
// and decoded, as encoding/json would.
func FuzzCodecRecord(f *testing.F) {
	addCodecSeeds(f)
	f.Fuzz(func(t *testing.T, s, u string, body []byte, n int) {
		rec := codecRecord(s, u, body, n)
		checkCodec(t, (*storedSummary)(rec.Summary()))
		checkCodec(t, &recordDetail{Response: rec.Response, History: rec.History})
		checkCodec(t, rec)
		checkCodec(t, &Record{}) // every field empty
		checkCodec(t, (*storedSummary)(&Record{}))
	})
}

// FuzzCodecPayload: a call task's payload, encoded and decoded, as
// encoding/json would.
func FuzzCodecPayload(f *testing.F) {
	addCodecSeeds(f)
	f.Fuzz(func(t *testing.T, s, u string, body []byte, n int) {
		checkCodec(t, codecPayload(s, u, body, n))
		checkCodec(t, &Payload{})
	})
}
