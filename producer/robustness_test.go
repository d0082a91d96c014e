package producer_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// hostileBodies are hand-picked inputs: odd JSON, huge numbers, deep
// nesting, nulls, and Unicode where URL syntax is expected.
func hostileBodies() []string {
	v := `"integration": "httpbin", "method": "GET", "path": "/get"`
	out := []string{
		``, `{`, `}`, `{}`, `[]`, `null`, `"`, `""`, `0`, `-0`, `1e999`, `true`, `nul`,
		`{"integration": null, "method": null, "path": null}`,
		`{` + v + `, "query": null, "headers": null, "body": null, "body_text": null, "body_base64": null}`,
		`{` + v + `, "credential": null, "correlation_id": null, "timeout": null, "retry": null, "webhook": null, "delay": null, "queue": null}`,
		`{` + v + `, "retry": {"max_attempts": null, "multiplier": null}}`,
		`{` + v + `, "query": {"a": null}}`,
		`{` + v + `, "query": {"a": [null]}}`,
		`{` + v + `, "query": {"a": [[["x"]]]}}`,
		`{` + v + `, "headers": {"X-A": null}}`,
		`{` + v + `, "timeout": 1e308}`,
		`{` + v + `, "timeout": -1e308}`,
		`{` + v + `, "timeout": 1e999}`,
		`{` + v + `, "timeout": 9223372036.854775807}`,
		`{` + v + `, "timeout": 0.0000000001}`,
		`{` + v + `, "timeout": "9999999999999999999h"}`,
		`{` + v + `, "delay": 1e18}`,
		`{` + v + `, "delay": -1e18}`,
		`{` + v + `, "delay": NaN}`,
		`{` + v + `, "retry": {"max_attempts": 99999999999999999999999}}`,
		`{` + v + `, "retry": {"max_attempts": -9223372036854775808}}`,
		`{` + v + `, "retry": {"max_attempts": 1.5}}`,
		`{` + v + `, "retry": {"multiplier": 1e308, "max_interval": 1e300, "initial_interval": 1e-300}}`,
		`{` + v + `, "body": ` + nested(10000) + `}`,
		`{` + v + `, "body": ` + strings.Repeat(`{"a":`, 5000) + `1` + strings.Repeat(`}`, 5000) + `}`,
		`{` + v + `, "body": ` + strings.Repeat("[", 100000) + `}`,
		`{` + v + `, "body": "` + strings.Repeat(`\"`, 1000) + `"}`,
		`{` + v + `, "body": 123456789012345678901234567890e999999}`,
		`{` + v + `, "body_base64": "====" }`,
		`{` + v + `, "body_text": "\ud800"}`,
		`{"integration": "httpbin", "method": "GET", "path": "/\u0000"}`,
		`{"integration": "httpbin", "method": "GET", "path": "/\uff0f\uff0fevil.com"}`,
		`{"integration": "httpbin", "method": "GET", "path": "/caf\u00e9"}`,
		`{"integration": "httpbin", "method": "GET", "path": "/%"}`,
		`{"integration": "httpbin", "method": "GET", "path": "/%zz"}`,
		`{"integration": "httpbin", "method": "G\u0000ET", "path": "/get"}`,
		`{"integration": "http\u00e9in", "method": "GET", "path": "/get"}`,
		`{"integration": "httpbin", "method": "GET", "path": "/get", "correlation_id": "\u2603"}`,
		`{"integration": "httpbin", "method": "GET", "path": "/get", "headers": {"X-\u2603": "\u2603"}}`,
		`{"integration": "httpbin", "method": "GET", "path": "/get", "query": {"\u2603": "\u0000"}}`,
		`{"integration": "httpbin", "method": "GET", "path": "/get", "webhook": {"url": "http://[::1"}}`,
		`{"integration": "httpbin", "method": "GET", "path": "/get", "webhook": {"url": "https://user:pw@x.example/"}}`,
		`{"integration": "httpbin", "method": "GET", "path": "/get", "integration": 5}`,
		"\xff\xfe\xfd",
		"{\"integration\": \"\xff\", \"method\": \"GET\", \"path\": \"/get\"}",
		"\ufeff{" + v + "}",
		`{` + v + `}` + strings.Repeat(" ", 1000) + `{}`,
	}
	return out
}

// mutate returns a random mutation of a valid body.
func mutate(rng *rand.Rand, base []byte) []byte {
	b := bytes.Clone(base)
	tokens := []string{`{`, `}`, `[`, `]`, `"`, `,`, `:`, `null`, `1e999`, `-`, `\`, `\u0000`, `\ud800`, "\u2215", "\xff", `true`,
		`"path": "//x"`, `"body": [[[[`, `99999999999999999999`}
	for range 1 + rng.IntN(4) {
		if len(b) == 0 {
			return b
		}
		switch rng.IntN(5) {
		case 0: // truncate
			b = b[:rng.IntN(len(b))]
		case 1: // flip a byte
			i := rng.IntN(len(b))
			b[i] = byte(rng.IntN(256))
		case 2: // insert a token
			i := rng.IntN(len(b) + 1)
			tok := tokens[rng.IntN(len(tokens))]
			b = append(b[:i:i], append([]byte(tok), b[i:]...)...)
		case 3: // delete a span
			i := rng.IntN(len(b))
			j := min(len(b), i+1+rng.IntN(8))
			b = append(b[:i:i], b[j:]...)
		case 4: // duplicate a span
			i := rng.IntN(len(b))
			j := min(len(b), i+1+rng.IntN(16))
			b = append(b[:j:j], append(bytes.Clone(b[i:j]), b[j:]...)...)
		}
	}
	return b
}

func randomBytes(rng *rand.Rand) []byte {
	b := make([]byte, rng.IntN(512))
	for i := range b {
		b[i] = byte(rng.IntN(256))
	}
	return b
}

// requireNo5xx checks that an answer is a well-formed client answer.
func requireNo5xx(t *testing.T, r *resp, input []byte) {
	t.Helper()
	require.Less(t, r.Status, 500, "input %q answered %d: %s", truncate(input), r.Status, r.Body)
	require.Contains(t, []int{http.StatusOK, http.StatusAccepted, http.StatusBadRequest, http.StatusConflict, http.StatusRequestEntityTooLarge},
		r.Status, "input %q: %s", truncate(input), r.Body)
	if r.Status >= 400 {
		errorField(t, r) // checks the shape
	} else {
		require.True(t, json.Valid(r.Body), "input %q: %s", truncate(input), r.Body)
	}
}

// depth is how deep arrays and objects nest in valid JSON b.
func depth(b []byte) int {
	dec := json.NewDecoder(bytes.NewReader(b))
	d, deepest := 0, 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return deepest
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			d++
			deepest = max(deepest, d)
		case json.Delim('}'), json.Delim(']'):
			d--
		}
	}
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

func TestEnqueueHostileBodiesNever5xx(t *testing.T) {
	t.Parallel()
	e := setup(t)
	rng := rand.New(rand.NewPCG(1, 2))

	valid := [][]byte{}
	for _, extra := range []map[string]any{
		{"correlation_id": "seed-1"},
		{"method": "POST", "body": map[string]any{"a": []any{1, "x", nil, map[string]any{"b": true}}}, "headers": map[string]string{"X-A": "b"}},
		{"query": map[string]any{"a": []string{"1", "2"}}, "timeout": "3s", "retry": map[string]any{"max_attempts": 2, "multiplier": 1.5}, "delay": 5},
		{"method": "PUT", "body_base64": "aGVsbG8=", "queue": "low", "webhook": map[string]any{"url": "https://x.example/h"}},
	} {
		b, err := json.Marshal(call(extra))
		require.NoError(t, err)
		valid = append(valid, b)
	}

	inputs := [][]byte{}
	for _, s := range hostileBodies() {
		inputs = append(inputs, []byte(s))
	}
	for len(inputs) < 220 {
		if rng.IntN(10) == 0 {
			inputs = append(inputs, randomBytes(rng))
			continue
		}
		inputs = append(inputs, mutate(rng, valid[rng.IntN(len(valid))]))
	}

	counts := map[int]int{}
	for _, in := range inputs {
		r := e.post(t, in)
		requireNo5xx(t, r, in)
		counts[r.Status]++
	}
	t.Logf("%d inputs, answers by status: %v", len(inputs), counts)
	require.Positive(t, counts[http.StatusAccepted]+counts[http.StatusOK], "some mutations stay valid calls")
	require.Positive(t, counts[http.StatusBadRequest])

	// The same inputs as batch items, where they are JSON.
	var items []json.RawMessage
	for _, in := range inputs {
		if json.Valid(in) && len(bytes.TrimSpace(in)) > 0 && depth(in) < 60 {
			items = append(items, json.RawMessage(in))
		}
	}
	require.NotEmpty(t, items)
	body, err := json.Marshal(map[string]any{"calls": items})
	require.NoError(t, err)
	r := e.do(t, req{Method: http.MethodPost, Path: "/v1/calls/batch", Key: e.producerKey, Body: body})
	require.Less(t, r.Status, 500, "batch: %.500s", r.Body)
	if r.Status == http.StatusOK {
		var ans batchAnswer
		require.NoError(t, json.Unmarshal(r.Body, &ans))
		require.Len(t, ans.Results, len(items))
		for i, it := range ans.Results {
			require.Less(t, it.Status, 500, "item %d %q", i, truncate(items[i]))
		}
	}

	// The API still answers.
	r = e.post(t, call(map[string]any{"correlation_id": "after-fuzz"}))
	require.Equal(t, http.StatusAccepted, r.Status, "body: %s", r.Body)
}

func TestHostileRequestsOutsideTheBodyNever5xx(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.post(t, call(map[string]any{"correlation_id": "x"}))
	require.Equal(t, http.StatusAccepted, r.Status)

	for _, q := range []string{"wait=NaN", "wait=Inf", "wait=-Inf", "wait=1e308", "wait=9223372036854775807ns", "wait=%00", "wait=1s&wait=2s", "wait=0x10"} {
		r := e.get(t, "x?"+q)
		require.Less(t, r.Status, 500, "%s: %s", q, r.Body)
		if r.Status >= 400 {
			errorField(t, r)
		}
	}
	for _, h := range []string{"\u2603", strings.Repeat("a", 4096), "a b", "x\tz"} {
		r := e.do(t, req{Method: http.MethodPost, Path: "/v1/calls", Key: e.producerKey, Body: call(nil), Header: map[string]string{"Correlation-Id": h}})
		require.Less(t, r.Status, 500, "%q: %s", h, r.Body)
	}
	for _, ref := range []string{"%E2%98%83", strings.Repeat("r", 4096), "%2E%2E", "a%00b"} {
		for _, m := range []string{http.MethodGet, http.MethodDelete, http.MethodPut} {
			r := e.do(t, req{Method: m, Path: "/v1/credentials/" + ref, Key: e.adminKey, Body: fmt.Sprintf(`{"integration": "bearer", "fields": {"token": %q}}`, "t")})
			require.Less(t, r.Status, 500, "%s %s: %s", m, ref, r.Body)
		}
	}
}

// FuzzEnqueue runs its seeds as a test; `go test -fuzz FuzzEnqueue
// ./producer/` explores further. Any answer but a 5xx is fine.
func FuzzEnqueue(f *testing.F) {
	for _, s := range hostileBodies()[:20] {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"integration": "httpbin", "method": "GET", "path": "/get", "correlation_id": "f"}`))
	e := setup(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		r := e.post(t, body)
		require.Less(t, r.Status, 500, "input %q: %s", truncate(body), r.Body)
	})
}
