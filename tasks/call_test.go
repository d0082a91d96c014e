package tasks_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/tasks"
)

// goodCall is a valid call to the "open" integration that each case bends.
func goodCall() tasks.Call {
	return tasks.Call{Integration: "open", Method: "GET", Path: "/things"}
}

func TestNormalizeRefuses(t *testing.T) {
	t.Parallel()
	cat := testCatalog(t)
	manyHeaders := map[string]string{}
	for i := range tasks.DefaultMaxHeaders + 1 {
		manyHeaders["X-H"+strconv.Itoa(i)] = "v"
	}
	manyQuery := tasks.Query{"id": make([]string, tasks.DefaultMaxQueryParams+1)}
	bigJSON := json.RawMessage(`"` + strings.Repeat("a", tasks.DefaultMaxRequestBytes) + `"`)
	bigText := strings.Repeat("a", tasks.DefaultMaxRequestBytes+1)
	bigB64 := base64.StdEncoding.EncodeToString(make([]byte, tasks.DefaultMaxRequestBytes+3))

	tests := []struct {
		name     string
		edit     func(c *tasks.Call)
		limits   *tasks.Limits
		field    string
		tooLarge bool
	}{
		{name: "missing integration", edit: func(c *tasks.Call) { c.Integration = "" }, field: "integration"},
		{name: "unknown integration", edit: func(c *tasks.Call) { c.Integration = "gitlab" }, field: "integration"},
		{name: "missing method", edit: func(c *tasks.Call) { c.Method = "  " }, field: "method"},
		{name: "unknown method", edit: func(c *tasks.Call) { c.Method = "TRACE" }, field: "method"},
		{name: "method with space", edit: func(c *tasks.Call) { c.Method = "GET /evil" }, field: "method"},
		{name: "missing path", edit: func(c *tasks.Call) { c.Path = "" }, field: "path"},
		{name: "absolute URL path", edit: func(c *tasks.Call) { c.Path = "https://evil.com/x" }, field: "path"},
		{name: "timeout above max_timeout", edit: func(c *tasks.Call) {
			c.Integration = "gh"
			c.Timeout = tasks.Duration(21 * time.Second)
		}, field: "timeout"},
		{name: "timeout above default max_timeout", edit: func(c *tasks.Call) { c.Timeout = tasks.Duration(31 * time.Second) }, field: "timeout"},
		{name: "negative timeout", edit: func(c *tasks.Call) { c.Timeout = tasks.Duration(-time.Second) }, field: "timeout"},
		{name: "sub-millisecond timeout", edit: func(c *tasks.Call) { c.Timeout = tasks.Duration(time.Microsecond) }, field: "timeout"},
		{name: "negative delay", edit: func(c *tasks.Call) { c.Delay = tasks.Duration(-time.Second) }, field: "delay"},
		{name: "delay over 7 days", edit: func(c *tasks.Call) { c.Delay = tasks.Duration(7*24*time.Hour + time.Second) }, field: "delay"},
		{name: "delay over custom limit", edit: func(c *tasks.Call) { c.Delay = tasks.Duration(2 * time.Minute) },
			limits: &tasks.Limits{MaxDelay: time.Minute}, field: "delay"},
		{name: "unknown queue", edit: func(c *tasks.Call) { c.Queue = "urgent" }, field: "queue"},
		{name: "queue not in custom list", edit: func(c *tasks.Call) { c.Queue = "low" },
			limits: &tasks.Limits{Queues: []string{"default", "bulk"}}, field: "queue"},
		{name: "body and body_text", edit: func(c *tasks.Call) {
			c.Body = json.RawMessage(`{"a":1}`)
			c.BodyText = ptr("x")
		}, field: "body"},
		{name: "body_text and body_base64", edit: func(c *tasks.Call) {
			c.BodyText = ptr("x")
			c.BodyBase64 = "eA=="
		}, field: "body"},
		{name: "invalid JSON body", edit: func(c *tasks.Call) { c.Body = json.RawMessage(`{"a":`) }, field: "body"},
		{name: "invalid base64", edit: func(c *tasks.Call) { c.BodyBase64 = "not base64!" }, field: "body_base64"},
		{name: "URL-safe base64 is not standard", edit: func(c *tasks.Call) { c.BodyBase64 = "-_-_" }, field: "body_base64"},
		{name: "JSON body over limit", edit: func(c *tasks.Call) { c.Body = bigJSON }, field: "body", tooLarge: true},
		{name: "JSON body over custom limit", edit: func(c *tasks.Call) { c.Body = json.RawMessage(`{"a": "12345"}`) },
			limits: &tasks.Limits{MaxRequestBytes: 10}, field: "body", tooLarge: true},
		{name: "body_text over limit", edit: func(c *tasks.Call) { c.BodyText = &bigText }, field: "body_text", tooLarge: true},
		{name: "body_base64 over limit", edit: func(c *tasks.Call) { c.BodyBase64 = bigB64 }, field: "body_base64", tooLarge: true},
		{name: "too many headers", edit: func(c *tasks.Call) { c.Headers = manyHeaders }, field: "headers", tooLarge: true},
		{name: "too many headers for custom limit", edit: func(c *tasks.Call) { c.Headers = map[string]string{"A": "1", "B": "2"} },
			limits: &tasks.Limits{MaxHeaders: 1}, field: "headers", tooLarge: true},
		{name: "header value too long", edit: func(c *tasks.Call) { c.Headers = map[string]string{"X-Big": strings.Repeat("v", 8<<10+1)} },
			field: "headers.X-Big", tooLarge: true},
		{name: "too many query values", edit: func(c *tasks.Call) { c.Query = manyQuery }, field: "query", tooLarge: true},
		{name: "empty query name", edit: func(c *tasks.Call) { c.Query = tasks.Query{"": {"x"}} }, field: "query"},
		{name: "query value with newline", edit: func(c *tasks.Call) { c.Query = tasks.Query{"q": {"a\nb"}} }, field: "query.q"},
		{name: "query name with NUL", edit: func(c *tasks.Call) { c.Query = tasks.Query{"q\x00": {"a"}} }, field: "query.q\x00"},
		{name: "reserved Host", edit: func(c *tasks.Call) { c.Headers = map[string]string{"Host": "evil.com"} }, field: "headers.Host"},
		{name: "reserved host lower case", edit: func(c *tasks.Call) { c.Headers = map[string]string{"host": "evil.com"} }, field: "headers.host"},
		{name: "reserved Content-Length", edit: func(c *tasks.Call) { c.Headers = map[string]string{"Content-Length": "5"} }, field: "headers.Content-Length"},
		{name: "reserved Transfer-Encoding", edit: func(c *tasks.Call) { c.Headers = map[string]string{"transfer-encoding": "chunked"} }, field: "headers.transfer-encoding"},
		{name: "reserved Proxy-Authorization", edit: func(c *tasks.Call) { c.Headers = map[string]string{"Proxy-Authorization": "x"} }, field: "headers.Proxy-Authorization"},
		// These would let an echoing upstream answer the credential in a
		// form redaction cannot see: compressed, or in slices.
		{name: "reserved Accept-Encoding", edit: func(c *tasks.Call) { c.Headers = map[string]string{"Accept-Encoding": "gzip"} }, field: "headers.Accept-Encoding"},
		{name: "reserved accept-encoding lower case", edit: func(c *tasks.Call) { c.Headers = map[string]string{"accept-encoding": "br"} }, field: "headers.accept-encoding"},
		{name: "reserved Range", edit: func(c *tasks.Call) { c.Headers = map[string]string{"Range": "bytes=0-9"} }, field: "headers.Range"},
		{name: "reserved range upper case", edit: func(c *tasks.Call) { c.Headers = map[string]string{"RANGE": "bytes=10-19"} }, field: "headers.RANGE"},
		{name: "reserved If-Range", edit: func(c *tasks.Call) { c.Headers = map[string]string{"if-range": `"etag"`} }, field: "headers.if-range"},
		{name: "reserved Accept-Charset", edit: func(c *tasks.Call) { c.Headers = map[string]string{"accept-charset": "utf-16"} }, field: "headers.accept-charset"},
		{name: "reserved TE", edit: func(c *tasks.Call) { c.Headers = map[string]string{"TE": "gzip"} }, field: "headers.TE"},
		{name: "Authorization on bearer integration", edit: func(c *tasks.Call) {
			c.Integration = "gh"
			c.Headers = map[string]string{"Authorization": "Bearer stolen"}
		}, field: "headers.Authorization"},
		{name: "authorization any case on bearer integration", edit: func(c *tasks.Call) {
			c.Integration = "gh"
			c.Headers = map[string]string{"AUTHORIZATION": "Bearer stolen"}
		}, field: "headers.AUTHORIZATION"},
		{name: "api_key header on api_key integration", edit: func(c *tasks.Call) {
			c.Integration = "partner"
			c.Headers = map[string]string{"X-API-KEY": "k"}
		}, field: "headers.X-API-KEY"},
		{name: "auth header on headers integration", edit: func(c *tasks.Call) {
			c.Integration = "dd"
			c.Headers = map[string]string{"dd-application-key": "k"}
		}, field: "headers.dd-application-key"},
		{name: "header value with CRLF", edit: func(c *tasks.Call) { c.Headers = map[string]string{"X-A": "v\r\nHost: evil.com"} }, field: "headers.X-A"},
		{name: "header value with LF", edit: func(c *tasks.Call) { c.Headers = map[string]string{"X-A": "v\nw"} }, field: "headers.X-A"},
		{name: "header value with NUL", edit: func(c *tasks.Call) { c.Headers = map[string]string{"X-A": "v\x00"} }, field: "headers.X-A"},
		{name: "header name with space", edit: func(c *tasks.Call) { c.Headers = map[string]string{"X A": "v"} }, field: "headers.X A"},
		{name: "header name with colon", edit: func(c *tasks.Call) { c.Headers = map[string]string{"X-A:": "v"} }, field: "headers.X-A:"},
		{name: "empty header name", edit: func(c *tasks.Call) { c.Headers = map[string]string{"": "v"} }, field: "headers."},
		{name: "correlation_id with slash", edit: func(c *tasks.Call) { c.CorrelationID = "order/981" }, field: "correlation_id"},
		{name: "correlation_id with space", edit: func(c *tasks.Call) { c.CorrelationID = "order 981" }, field: "correlation_id"},
		{name: "correlation_id too long", edit: func(c *tasks.Call) { c.CorrelationID = strings.Repeat("a", 129) }, field: "correlation_id"},
		{name: "credential ref with slash", edit: func(c *tasks.Call) { c.Credential = "../cust-42" }, field: "credential"},
		{name: "credential ref too long", edit: func(c *tasks.Call) { c.Credential = strings.Repeat("c", 129) }, field: "credential"},
		{name: "bearer integration without credential or default", edit: func(c *tasks.Call) { c.Integration = "nodefault" }, field: "credential"},
		{name: "retry max_attempts 26", edit: func(c *tasks.Call) { c.Retry = &tasks.RetryPolicy{MaxAttempts: 26} }, field: "retry.max_attempts"},
		{name: "retry max_attempts negative", edit: func(c *tasks.Call) { c.Retry = &tasks.RetryPolicy{MaxAttempts: -1} }, field: "retry.max_attempts"},
		{name: "retry multiplier 0.5", edit: func(c *tasks.Call) { c.Retry = &tasks.RetryPolicy{Multiplier: 0.5} }, field: "retry.multiplier"},
		{name: "retry negative initial_interval", edit: func(c *tasks.Call) {
			c.Retry = &tasks.RetryPolicy{InitialInterval: tasks.Duration(-time.Second)}
		}, field: "retry.initial_interval"},
		{name: "retry negative max_interval", edit: func(c *tasks.Call) {
			c.Retry = &tasks.RetryPolicy{MaxInterval: tasks.Duration(-time.Second)}
		}, field: "retry.max_interval"},
		{name: "retry negative max_elapsed", edit: func(c *tasks.Call) {
			c.Retry = &tasks.RetryPolicy{MaxElapsed: tasks.Duration(-time.Second)}
		}, field: "retry.max_elapsed"},
		{name: "retry max_interval above 24h", edit: func(c *tasks.Call) {
			c.Retry = &tasks.RetryPolicy{MaxInterval: tasks.Duration(tasks.MaxRetryInterval + time.Second)}
		}, field: "retry.max_interval"},
		{name: "retry max_interval a million hours", edit: func(c *tasks.Call) {
			c.Retry = &tasks.RetryPolicy{MaxInterval: tasks.Duration(1e6 * time.Hour)}
		}, field: "retry.max_interval"},
		{name: "retry max_elapsed above 7 days", edit: func(c *tasks.Call) {
			c.Retry = &tasks.RetryPolicy{MaxElapsed: tasks.Duration(tasks.MaxRetryElapsed + time.Second)}
		}, field: "retry.max_elapsed"},
		{name: "webhook without URL", edit: func(c *tasks.Call) { c.Webhook = &tasks.Webhook{} }, field: "webhook.url"},
		{name: "webhook ftp URL", edit: func(c *tasks.Call) { c.Webhook = &tasks.Webhook{URL: "ftp://svc.example/hook"} }, field: "webhook.url"},
		{name: "webhook relative URL", edit: func(c *tasks.Call) { c.Webhook = &tasks.Webhook{URL: "/hooks/callq"} }, field: "webhook.url"},
		{name: "webhook without host", edit: func(c *tasks.Call) { c.Webhook = &tasks.Webhook{URL: "https:///hooks"} }, field: "webhook.url"},
		{name: "webhook with userinfo", edit: func(c *tasks.Call) { c.Webhook = &tasks.Webhook{URL: "https://user:pw@svc.example/h"} }, field: "webhook.url"},
		{name: "webhook javascript", edit: func(c *tasks.Call) { c.Webhook = &tasks.Webhook{URL: "javascript:alert(1)"} }, field: "webhook.url"},
		{name: "webhook unparseable", edit: func(c *tasks.Call) { c.Webhook = &tasks.Webhook{URL: "http://[::1"} }, field: "webhook.url"},
		{name: "webhook URL too long", edit: func(c *tasks.Call) {
			c.Webhook = &tasks.Webhook{URL: "https://svc.example/" + strings.Repeat("a", 2048)}
		}, field: "webhook.url"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := goodCall()
			tc.edit(&c)
			in, err := c.Normalize(cat, tc.limits)
			require.Nil(t, in)
			fe := requireFieldError(t, err, tc.field)
			require.Equal(t, tc.tooLarge, fe.TooLarge)
			require.Equal(t, tc.tooLarge, errors.Is(err, tasks.ErrTooLarge))
			require.NotEmpty(t, fe.Message)
		})
	}
}

func TestNormalizeAccepts(t *testing.T) {
	t.Parallel()
	cat := testCatalog(t)
	text := "hello"
	tests := []struct {
		name   string
		edit   func(c *tasks.Call)
		limits *tasks.Limits
	}{
		{name: "minimal", edit: func(c *tasks.Call) {}},
		{name: "every method lower case", edit: func(c *tasks.Call) { c.Method = "options" }},
		{name: "timeout at max_timeout", edit: func(c *tasks.Call) {
			c.Integration = "gh"
			c.Timeout = tasks.Duration(20 * time.Second)
		}},
		{name: "timeout of 1ms", edit: func(c *tasks.Call) { c.Timeout = tasks.Duration(time.Millisecond) }},
		{name: "delay of exactly 7 days", edit: func(c *tasks.Call) { c.Delay = tasks.Duration(7 * 24 * time.Hour) }},
		{name: "named queues", edit: func(c *tasks.Call) { c.Queue = "critical" }},
		{name: "custom queue", edit: func(c *tasks.Call) { c.Queue = "bulk" }, limits: &tasks.Limits{Queues: []string{"bulk"}}},
		{name: "body_text", edit: func(c *tasks.Call) { c.BodyText = &text }},
		{name: "empty body_text", edit: func(c *tasks.Call) { c.BodyText = ptr("") }},
		{name: "body_base64", edit: func(c *tasks.Call) { c.BodyBase64 = base64.StdEncoding.EncodeToString([]byte{0, 1, 2, 255}) }},
		{name: "JSON body at limit", edit: func(c *tasks.Call) { c.Body = json.RawMessage(`"12345678"`) },
			limits: &tasks.Limits{MaxRequestBytes: 10}},
		{name: "body_text at limit", edit: func(c *tasks.Call) { c.BodyText = ptr(strings.Repeat("a", 10)) },
			limits: &tasks.Limits{MaxRequestBytes: 10}},
		{name: "body_base64 at limit", edit: func(c *tasks.Call) { c.BodyBase64 = base64.StdEncoding.EncodeToString(make([]byte, 9)) },
			limits: &tasks.Limits{MaxRequestBytes: 9}},
		{name: "headers at limit", edit: func(c *tasks.Call) { c.Headers = map[string]string{"A": "1", "B": "2"} },
			limits: &tasks.Limits{MaxHeaders: 2}},
		{name: "header value with tab", edit: func(c *tasks.Call) { c.Headers = map[string]string{"X-A": "a\tb"} }},
		{name: "static catalog header may be overridden", edit: func(c *tasks.Call) {
			c.Integration = "gh"
			c.Headers = map[string]string{"Accept": "application/json"}
		}},
		{name: "Authorization on none integration", edit: func(c *tasks.Call) { c.Headers = map[string]string{"Authorization": "Bearer mine"} }},
		{name: "explicit credential", edit: func(c *tasks.Call) {
			c.Integration = "nodefault"
			c.Credential = "cust-42"
		}},
		{name: "retry max_attempts 0 inherits", edit: func(c *tasks.Call) { c.Retry = &tasks.RetryPolicy{MaxAttempts: 0} }},
		{name: "retry max_attempts 25", edit: func(c *tasks.Call) { c.Retry = &tasks.RetryPolicy{MaxAttempts: 25, Multiplier: 1} }},
		{name: "retry at the interval and elapsed limits", edit: func(c *tasks.Call) {
			c.Retry = &tasks.RetryPolicy{MaxInterval: tasks.Duration(24 * time.Hour), MaxElapsed: tasks.Duration(7 * 24 * time.Hour)}
		}},
		{name: "webhook http", edit: func(c *tasks.Call) { c.Webhook = &tasks.Webhook{URL: "http://svc.example:8080/hooks/callq?x=1"} }},
		{name: "correlation id charset", edit: func(c *tasks.Call) { c.CorrelationID = "Order_981.v2:a-b" }},
		{name: "query values", edit: func(c *tasks.Call) { c.Query = tasks.Query{"since": {"364"}, "id": {"1", "2"}} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := goodCall()
			tc.edit(&c)
			in, err := c.Normalize(cat, tc.limits)
			require.NoError(t, err)
			require.Equal(t, c.Integration, in.Name)
		})
	}
}

var uuidV7 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestNormalizeCanonicalForm(t *testing.T) {
	t.Parallel()
	cat := testCatalog(t)

	c := tasks.Call{
		Integration: "gh",
		Method:      " post ",
		Path:        "/repos",
		Body:        json.RawMessage("{ \"name\" : \"x\",\n  \"tags\": [ 1, 2 ] }"),
	}
	in, err := c.Normalize(cat, nil)
	require.NoError(t, err)
	require.Equal(t, "gh", in.Name)
	require.Equal(t, "POST", c.Method)
	require.Equal(t, `{"name":"x","tags":[1,2]}`, string(c.Body))
	require.Equal(t, "gh-default", c.Credential, "default_credential fills an empty credential")
	require.Equal(t, "default", c.Queue)
	require.Regexp(t, uuidV7, c.CorrelationID)
	id, err := uuid.Parse(c.CorrelationID)
	require.NoError(t, err)
	require.Equal(t, uuid.Version(7), id.Version())

	body, ctype := c.RequestBody()
	require.Equal(t, `{"name":"x","tags":[1,2]}`, string(body))
	require.Equal(t, "application/json", ctype)

	// A second call gets another ID.
	c2 := tasks.Call{Integration: "gh", Method: "GET", Path: "/repos"}
	_, err = c2.Normalize(cat, nil)
	require.NoError(t, err)
	require.Regexp(t, uuidV7, c2.CorrelationID)
	require.NotEqual(t, c.CorrelationID, c2.CorrelationID)

	// Explicit values are kept.
	c3 := tasks.Call{Integration: "gh", Method: "delete", Path: "/repos/1", Credential: "cust-42",
		CorrelationID: "order-981", Queue: "low"}
	_, err = c3.Normalize(cat, nil)
	require.NoError(t, err)
	require.Equal(t, "DELETE", c3.Method)
	require.Equal(t, "cust-42", c3.Credential)
	require.Equal(t, "order-981", c3.CorrelationID)
	require.Equal(t, "low", c3.Queue)

	// "none" integrations get no credential.
	c4 := goodCall()
	_, err = c4.Normalize(cat, nil)
	require.NoError(t, err)
	require.Empty(t, c4.Credential)
}

func TestNormalizeNullBodyIsNoBody(t *testing.T) {
	t.Parallel()
	cat := testCatalog(t)
	var c tasks.Call
	require.NoError(t, json.Unmarshal([]byte(`{"integration":"open","method":"POST","path":"/x","body":null,"body_text":"t"}`), &c))
	_, err := c.Normalize(cat, nil)
	require.NoError(t, err, "a JSON null body does not count as a body")
	require.Nil(t, c.Body)
	body, ctype := c.RequestBody()
	require.Equal(t, "t", string(body))
	require.Equal(t, "text/plain; charset=utf-8", ctype)
}

func TestRequestBody(t *testing.T) {
	t.Parallel()
	cat := testCatalog(t)
	tests := []struct {
		name  string
		edit  func(c *tasks.Call)
		body  []byte
		ctype string
	}{
		{name: "none", edit: func(c *tasks.Call) {}, body: nil, ctype: ""},
		{name: "json", edit: func(c *tasks.Call) { c.Body = json.RawMessage(` [1, 2] `) }, body: []byte(`[1,2]`), ctype: "application/json"},
		{name: "text", edit: func(c *tasks.Call) { c.BodyText = ptr("héllo") }, body: []byte("héllo"), ctype: "text/plain; charset=utf-8"},
		{name: "base64", edit: func(c *tasks.Call) { c.BodyBase64 = "AAH/" }, body: []byte{0, 1, 255}, ctype: "application/octet-stream"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := goodCall()
			c.Method = "POST"
			tc.edit(&c)
			_, err := c.Normalize(cat, nil)
			require.NoError(t, err)
			body, ctype := c.RequestBody()
			require.Equal(t, tc.body, body)
			require.Equal(t, tc.ctype, ctype)
		})
	}
}

func TestValidID(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"a", "order-981", "A.b_c:d-e", strings.Repeat("x", 128)} {
		require.True(t, tasks.ValidID(ok), ok)
	}
	for _, bad := range []string{"", " ", "a b", "a/b", "a\nb", "é", strings.Repeat("x", 129), "a*"} {
		require.False(t, tasks.ValidID(bad), bad)
	}
}

func TestQueryJSON(t *testing.T) {
	t.Parallel()
	good := []struct {
		in   string
		want tasks.Query
	}{
		{`{"since": "364"}`, tasks.Query{"since": {"364"}}},
		{`{"id": ["1", "2"], "q": "x"}`, tasks.Query{"id": {"1", "2"}, "q": {"x"}}},
		{`{"id": []}`, tasks.Query{"id": {}}},
		{`{}`, tasks.Query{}},
		{`{"q": "null", "r": ["null", "x"]}`, tasks.Query{"q": {"null"}, "r": {"null", "x"}}},
	}
	for _, tc := range good {
		t.Run("good "+tc.in, func(t *testing.T) {
			t.Parallel()
			var q tasks.Query
			require.NoError(t, json.Unmarshal([]byte(tc.in), &q))
			require.Equal(t, tc.want, q)
		})
	}
	bad := []string{`"since=364"`, `["a"]`, `{"n": 1}`, `{"n": [1, 2]}`, `{"n": {"a": "b"}}`, `{"n": true}`, `{"n": ["a", 1]}`,
		// A null is not read as "" (the OpenAPI document says strings).
		`{"n": null}`, `{"n": ["a", null]}`, `{"n": [null]}`}
	for _, in := range bad {
		t.Run("bad "+in, func(t *testing.T) {
			t.Parallel()
			var q tasks.Query
			require.Error(t, json.Unmarshal([]byte(in), &q))
		})
	}
	t.Run("bad inside a call", func(t *testing.T) {
		t.Parallel()
		var c tasks.Call
		require.Error(t, json.Unmarshal([]byte(`{"integration":"x","query":{"a":3}}`), &c))
	})

	t.Run("marshal", func(t *testing.T) {
		t.Parallel()
		q := tasks.Query{"since": {"364"}, "id": {"1", "2"}, "none": {}}
		b, err := json.Marshal(q)
		require.NoError(t, err)
		require.JSONEq(t, `{"since": "364", "id": ["1", "2"], "none": []}`, string(b))
		var back tasks.Query
		require.NoError(t, json.Unmarshal(b, &back))
		require.Equal(t, q, back)
	})
}

func TestCallJSONRoundTrip(t *testing.T) {
	t.Parallel()
	in := `{"integration": "github", "method": "GET", "path": "/repositories",
	  "query": {"since": "364", "id": ["1", "2"]}, "headers": {"X-Request-Source": "billing"},
	  "body": {"name":"x"}, "credential": "cust-42", "correlation_id": "order-981",
	  "timeout": "10s", "retry": {"max_attempts": 3, "initial_interval": 0.5}, "webhook": {"url": "https://svc.example/hooks/callq"},
	  "delay": 30, "queue": "default"}`
	var c tasks.Call
	require.NoError(t, json.Unmarshal([]byte(in), &c))
	require.Equal(t, tasks.Duration(10*time.Second), c.Timeout)
	require.Equal(t, tasks.Duration(30*time.Second), c.Delay)
	require.Equal(t, 3, c.Retry.MaxAttempts)
	require.Equal(t, tasks.Duration(500*time.Millisecond), c.Retry.InitialInterval)
	require.Equal(t, tasks.Query{"since": {"364"}, "id": {"1", "2"}}, c.Query)

	b, err := json.Marshal(c)
	require.NoError(t, err)
	require.Contains(t, string(b), `"timeout":"10s"`)
	require.Contains(t, string(b), `"delay":"30s"`)
	var back tasks.Call
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, c, back)
}

func TestFingerprint(t *testing.T) {
	t.Parallel()
	cat := testCatalog(t)
	norm := func(t *testing.T, c tasks.Call) *tasks.Call {
		t.Helper()
		c.CorrelationID = "order-981"
		_, err := c.Normalize(cat, nil)
		require.NoError(t, err)
		return &c
	}
	base := tasks.Call{Integration: "gh", Method: "POST", Path: "/repos",
		Headers: map[string]string{"X-Source": "billing"}, Body: json.RawMessage(`{"name":"x","n":[1,2]}`)}

	a := norm(t, base)
	fp := a.Fingerprint()
	require.Regexp(t, `^[0-9a-f]{32}$`, fp)
	require.Equal(t, fp, a.Fingerprint(), "stable for one call")
	require.Equal(t, fp, norm(t, base).Fingerprint(), "same call, same fingerprint")

	spaced := base
	spaced.Method = "post"
	spaced.Body = json.RawMessage("{\n  \"name\" : \"x\",\n  \"n\" : [ 1, 2 ]\n}")
	require.Equal(t, fp, norm(t, spaced).Fingerprint(), "whitespace and method case vanish in Normalize")

	defaulted := base
	defaulted.Credential = "gh-default"
	defaulted.Queue = "default"
	require.Equal(t, fp, norm(t, defaulted).Fingerprint(), "explicit defaults equal implicit ones")

	differ := map[string]func(c *tasks.Call){
		"header value": func(c *tasks.Call) { c.Headers = map[string]string{"X-Source": "other"} },
		"extra header": func(c *tasks.Call) { c.Headers = map[string]string{"X-Source": "billing", "X-B": "1"} },
		"body":         func(c *tasks.Call) { c.Body = json.RawMessage(`{"name":"y","n":[1,2]}`) },
		"path":         func(c *tasks.Call) { c.Path = "/repos/" },
		"method":       func(c *tasks.Call) { c.Method = "PUT" },
		"query":        func(c *tasks.Call) { c.Query = tasks.Query{"a": {"1"}} },
		"credential":   func(c *tasks.Call) { c.Credential = "cust-42" },
		"timeout":      func(c *tasks.Call) { c.Timeout = tasks.Duration(time.Second) },
		"queue":        func(c *tasks.Call) { c.Queue = "low" },
		"retry":        func(c *tasks.Call) { c.Retry = &tasks.RetryPolicy{MaxAttempts: 2} },
		"webhook":      func(c *tasks.Call) { c.Webhook = &tasks.Webhook{URL: "https://svc.example/h"} },
		"delay":        func(c *tasks.Call) { c.Delay = tasks.Duration(time.Second) },
	}
	for name, edit := range differ {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := base
			c.Headers = map[string]string{"X-Source": "billing"}
			edit(&c)
			require.NotEqual(t, fp, norm(t, c).Fingerprint())
		})
	}
}
