package tasks_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/callq/callq/tasks"
)

// Micro-benchmarks of the per-call work on the enqueue and record paths.
// They assert nothing about speed; `make bench` runs them.

const benchCatalogYAML = `
integrations:
  github:
    base_url: https://api.github.com
    auth: {type: bearer}
    headers: {Accept: application/vnd.github+json}
    default_credential: github-default
    timeout: 5s
    retry: {max_attempts: 5, initial_interval: 1s}
`

func benchCatalog(b *testing.B) *tasks.Catalog {
	b.Helper()
	cat, err := tasks.ParseCatalog([]byte(benchCatalogYAML))
	if err != nil {
		b.Fatal(err)
	}
	return cat
}

// benchCall is a typical call: a POST with a query, a header and a small
// JSON body, naming its credential.
func benchCall() tasks.Call {
	return tasks.Call{
		Integration: "github",
		Method:      "post",
		Path:        "/repos/acme/widgets/issues",
		Query:       tasks.Query{"per_page": {"100"}, "state": {"open"}},
		Headers:     map[string]string{"X-Request-Source": "billing"},
		Body:        json.RawMessage(`{"title": "Found a bug", "body": "It breaks.", "labels": ["bug", "p2"]}`),
		Credential:  "cust-42",
		Timeout:     tasks.Duration(10 * time.Second),
	}
}

// benchNormalized is benchCall after Normalize, with a fixed correlation ID.
func benchNormalized(b *testing.B) tasks.Call {
	b.Helper()
	c := benchCall()
	c.CorrelationID = "order-981"
	if _, err := c.Normalize(benchCatalog(b), nil); err != nil {
		b.Fatal(err)
	}
	return c
}

func BenchmarkCallNormalize(b *testing.B) {
	cat := benchCatalog(b)
	base := benchCall()
	b.Run("given_id", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c := base
			c.CorrelationID = "order-981"
			if _, err := c.Normalize(cat, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("generated_id", func(b *testing.B) { // a UUIDv7 is made
		b.ReportAllocs()
		for b.Loop() {
			c := base
			if _, err := c.Normalize(cat, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkPayloadMarshal(b *testing.B) {
	p := tasks.Payload{Tenant: "acme", Call: benchNormalized(b)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodePayload(b *testing.B) {
	raw, err := json.Marshal(tasks.Payload{Tenant: "acme", Call: benchNormalized(b)})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := tasks.DecodePayload(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFingerprint(b *testing.B) {
	c := benchNormalized(b)
	b.ReportAllocs()
	for b.Loop() {
		_ = c.Fingerprint()
	}
}

// benchRecord is a succeeded record whose response has a 1 KiB JSON body.
func benchRecord() *tasks.Record {
	var body strings.Builder
	body.WriteString(`{"items":[`)
	for i := 0; body.Len() < 1000; i++ {
		if i > 0 {
			body.WriteString(",")
		}
		body.WriteString(`{"id":1234567,"name":"widget","ok":true}`)
	}
	body.WriteString(`]}`)
	started := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	completed := started.Add(142 * time.Millisecond)
	return &tasks.Record{
		CorrelationID: "order-981", Tenant: "acme", Status: tasks.StatusSucceeded,
		Integration: "github", Method: "POST", Path: "/repos/acme/widgets/issues", Credential: "cust-42",
		Queue: "default", Attempts: 1, MaxAttempts: 5,
		Response: &tasks.Response{
			Status: 201,
			Headers: map[string]string{
				"Content-Type": "application/json; charset=utf-8", "Date": "Sat, 01 Mar 2025 12:00:00 GMT",
				"Etag": `W/"a1b2c3"`, "X-Github-Request-Id": "C0DE:1234:5678:9ABC", "X-Ratelimit-Remaining": "4999",
			},
			Body: json.RawMessage(body.String()),
			Size: int64(body.Len()),
		},
		History:     []tasks.Attempt{{Attempt: 1, StartedAt: started, DurationMS: 142, Status: 201}},
		CreatedAt:   started.Add(-5 * time.Millisecond),
		StartedAt:   &started,
		CompletedAt: &completed,
	}
}

func BenchmarkRecordMarshal(b *testing.B) {
	rec := benchRecord()
	raw, _ := json.Marshal(rec)
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := json.Marshal(rec); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRecordUnmarshal(b *testing.B) {
	raw, err := json.Marshal(benchRecord())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		var rec tasks.Record
		if err := json.Unmarshal(raw, &rec); err != nil {
			b.Fatal(err)
		}
	}
}
