package tasks

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/httpurl"
)

// Call is one outbound API call as a service enqueues it. It names a
// credential by reference; the secret itself never travels with the call.
type Call struct {
	Integration   string            `json:"integration"`
	Method        string            `json:"method"`
	Path          string            `json:"path"`
	Query         Query             `json:"query,omitempty"`
	Headers       map[string]string `json:"headers,omitempty"`
	Body          json.RawMessage   `json:"body,omitempty"`
	BodyText      *string           `json:"body_text,omitempty"`
	BodyBase64    string            `json:"body_base64,omitempty"`
	Credential    string            `json:"credential,omitempty"`
	CorrelationID string            `json:"correlation_id,omitempty"`
	Timeout       Duration          `json:"timeout,omitempty"`
	Retry         *RetryPolicy      `json:"retry,omitempty"`
	Webhook       *Webhook          `json:"webhook,omitempty"`
	Delay         Duration          `json:"delay,omitempty"`
	Queue         string            `json:"queue,omitempty"`
}

// Webhook names where the outcome of a call is pushed when it finishes.
type Webhook struct {
	URL string `json:"url"`
}

// Query holds query parameters. In JSON each value is a string or an array of
// strings, so repeated parameters (?id=1&id=2) can be expressed.
type Query map[string][]string

// UnmarshalJSON accepts {"k": "v"} and {"k": ["v1", "v2"]}.
func (q *Query) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return errors.New("must be an object of strings or arrays of strings")
	}
	out := make(Query, len(raw))
	for k, v := range raw {
		// Pointers, so that a null is refused rather than read as "", as
		// encoding/json would: the OpenAPI document says strings.
		var s *string
		if err := json.Unmarshal(v, &s); err == nil && s != nil {
			out[k] = []string{*s}
			continue
		}
		var list []*string
		if err := json.Unmarshal(v, &list); err != nil || list == nil || slices.Contains(list, nil) {
			return fmt.Errorf("parameter %q must be a string or an array of strings", k)
		}
		out[k] = make([]string, len(list))
		for i, p := range list {
			out[k][i] = *p
		}
	}
	*q = out
	return nil
}

// MarshalJSON writes single values as strings, repeated ones as arrays.
func (q Query) MarshalJSON() ([]byte, error) {
	out := make(map[string]any, len(q))
	for k, v := range q {
		if len(v) == 1 {
			out[k] = v[0]
		} else {
			out[k] = v
		}
	}
	return json.Marshal(out)
}

// Limits bound what a call may carry. The zero value of each field means its
// default.
type Limits struct {
	// MaxRequestBytes bounds the request body (decoded). Default 1 MiB
	// (CALLQ_MAX_REQUEST_BYTES); a larger body is refused with ErrTooLarge.
	MaxRequestBytes int64
	// MaxHeaders bounds the number of headers a call sets. Default 64.
	MaxHeaders int
	// MaxQueryParams bounds the number of query values. Default 128.
	MaxQueryParams int
	// MaxDelay bounds delay. Default 7 days.
	MaxDelay time.Duration
	// Queues lists the asynq queues a call may name. Default critical,
	// default, low.
	Queues []string
}

// Defaults for Limits.
const (
	DefaultMaxRequestBytes = 1 << 20
	DefaultMaxHeaders      = 64
	DefaultMaxQueryParams  = 128
	DefaultMaxDelay        = 7 * 24 * time.Hour
	DefaultQueue           = "default"
	maxPathBytes           = 2048
	maxHeaderValueBytes    = 8 << 10
	maxMaxAttempts         = 25
)

// defaultQueues is read by every Normalize; never handed out, so never
// changed.
var defaultQueues = []string{"critical", DefaultQueue, "low"}

// DefaultQueues returns the queues callq uses unless CALLQ_QUEUES says
// otherwise, in a slice of the caller's own.
func DefaultQueues() []string { return slices.Clone(defaultQueues) }

func (l *Limits) withDefaults() Limits {
	out := Limits{}
	if l != nil {
		out = *l
	}
	if out.MaxRequestBytes <= 0 {
		out.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if out.MaxHeaders <= 0 {
		out.MaxHeaders = DefaultMaxHeaders
	}
	if out.MaxQueryParams <= 0 {
		out.MaxQueryParams = DefaultMaxQueryParams
	}
	if out.MaxDelay <= 0 {
		out.MaxDelay = DefaultMaxDelay
	}
	if len(out.Queues) == 0 {
		out.Queues = defaultQueues
	}
	return out
}

// FieldError reports a call field the caller must fix. Field is the JSON
// path of the field ("path", "headers.Host", "retry.max_attempts"). It is
// auth.FieldError: one type for a bad field, whichever package found it.
type FieldError = auth.FieldError

// ErrTooLarge matches a FieldError for a value over a size limit.
var ErrTooLarge = auth.ErrTooLarge

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// Methods callq will send.
var methods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

var (
	headerNamePattern = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
)

// ValidID reports whether s is acceptable as a correlation ID or credential
// reference: auth.ValidID, whose auth.IDRule error messages quote.
func ValidID(s string) bool { return auth.ValidID(s) }

// idMessage is the message of a FieldError for an invalid ID.
const idMessage = "must be " + auth.IDRule

// NewCorrelationID returns a time-ordered random ID (UUIDv7).
func NewCorrelationID() string { return uuid.Must(uuid.NewV7()).String() }

// headers a call may not set: they belong to the transport, and letting a
// caller choose Host would move the call to another origin. Accept-Encoding,
// TE, Range and If-Range would let an upstream that echoes the request
// answer the credential compressed or in slices, forms redaction cannot see:
// the worker chooses the encodings itself and decodes them before it
// redacts. Accept-Charset would let it ask for UTF-16 or another charset
// that writes the credential's bytes apart.
var reservedHeaders = []string{"Host", "Content-Length", "Transfer-Encoding", "Connection",
	"Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "Te", "Trailer", "Upgrade",
	"Accept-Encoding", "Accept-Charset", "Range", "If-Range"}

// ReservedHeader reports whether name (in any letter case) is a header only
// callq sets: neither a call nor an integration may set it.
func ReservedHeader(name string) bool {
	return slices.Contains(reservedHeaders, http.CanonicalHeaderKey(name))
}

// Normalize validates c against the catalog and limits and puts it in
// canonical form: method upper-cased, body compacted, credential defaulted
// from the integration, correlation ID generated when absent. It returns the
// integration the call targets. Every error is a *FieldError naming the field.
func (c *Call) Normalize(cat *Catalog, limits *Limits) (*Integration, error) {
	lim := limits.withDefaults()
	if c.Integration == "" {
		return nil, fieldErr("integration", "is required")
	}
	in, ok := cat.Lookup(c.Integration)
	if !ok {
		return nil, fieldErr("integration", "unknown integration %q; known: %s", c.Integration, strings.Join(cat.Names(), ", "))
	}
	c.Method = strings.ToUpper(strings.TrimSpace(c.Method))
	if c.Method == "" {
		return nil, fieldErr("method", "is required")
	}
	if !slices.Contains(methods, c.Method) {
		return nil, fieldErr("method", "must be one of %s, got %q", strings.Join(methods, " "), c.Method)
	}
	// URL validates the path and checks the joined URL keeps the origin.
	if _, err := in.URL(c.Path, nil); err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			return nil, fe
		}
		return nil, fieldErr("path", "%v", err)
	}
	if err := c.validateQuery(lim); err != nil {
		return nil, err
	}
	if err := c.validateHeaders(in, lim); err != nil {
		return nil, err
	}
	if err := c.normalizeBody(lim); err != nil {
		return nil, err
	}
	if c.Credential == "" {
		c.Credential = in.DefaultCredential
	}
	if c.Credential != "" && !ValidID(c.Credential) {
		return nil, fieldErr("credential", idMessage)
	}
	if c.Credential == "" && in.Auth.NeedsCredential() {
		return nil, fieldErr("credential", "is required: integration %q uses auth type %s and has no default_credential", in.Name, in.Auth.Type)
	}
	if c.CorrelationID == "" {
		c.CorrelationID = NewCorrelationID()
	} else if !ValidID(c.CorrelationID) {
		return nil, fieldErr("correlation_id", idMessage)
	}
	if c.Timeout < 0 {
		return nil, fieldErr("timeout", "must not be negative")
	}
	if c.Timeout > 0 && c.Timeout.D() > in.MaxTimeout.D() {
		return nil, fieldErr("timeout", "%s is above the integration's max_timeout of %s", c.Timeout, in.MaxTimeout)
	}
	if c.Timeout > 0 && c.Timeout.D() < time.Millisecond {
		return nil, fieldErr("timeout", "must be at least 1ms")
	}
	if c.Retry != nil {
		if err := c.Retry.validate("retry", true); err != nil {
			return nil, err
		}
	}
	if c.Webhook != nil {
		if err := validateWebhookURL(c.Webhook.URL); err != nil {
			return nil, err
		}
	}
	if c.Delay < 0 {
		return nil, fieldErr("delay", "must not be negative")
	}
	if c.Delay.D() > lim.MaxDelay {
		return nil, fieldErr("delay", "must be at most %s", lim.MaxDelay)
	}
	if c.Queue == "" {
		c.Queue = DefaultQueue
		if !slices.Contains(lim.Queues, DefaultQueue) {
			c.Queue = lim.Queues[0] // CALLQ_QUEUES without "default": its first queue
		}
	}
	if !slices.Contains(lim.Queues, c.Queue) {
		return nil, fieldErr("queue", "unknown queue %q; queues: %s", c.Queue, strings.Join(lim.Queues, ", "))
	}
	return in, nil
}

func (c *Call) validateQuery(lim Limits) error {
	n := 0
	for k, vs := range c.Query {
		if k == "" {
			return fieldErr("query", "parameter names must not be empty")
		}
		for _, v := range append([]string{k}, vs...) {
			if strings.ContainsFunc(v, isControl) {
				return fieldErr("query."+k, "must not contain control characters")
			}
		}
		n += len(vs)
	}
	if n > lim.MaxQueryParams {
		return &FieldError{Field: "query", Message: fmt.Sprintf("has %d values, more than the limit of %d", n, lim.MaxQueryParams), TooLarge: true}
	}
	return nil
}

func (c *Call) validateHeaders(in *Integration, lim Limits) error {
	if len(c.Headers) > lim.MaxHeaders {
		return &FieldError{Field: "headers", Message: fmt.Sprintf("has %d headers, more than the limit of %d", len(c.Headers), lim.MaxHeaders), TooLarge: true}
	}
	for name, v := range c.Headers {
		field := "headers." + name
		if !headerNamePattern.MatchString(name) {
			return fieldErr(field, "is not a valid header name")
		}
		if ReservedHeader(name) {
			return fieldErr(field, "is set by callq and may not be set by a call")
		}
		if in.Auth.IsSensitiveHeader(name) {
			return fieldErr(field, "is set from the credential by integration %q and may not be set by a call", in.Name)
		}
		if len(v) > maxHeaderValueBytes {
			return &FieldError{Field: field, Message: fmt.Sprintf("is longer than %d bytes", maxHeaderValueBytes), TooLarge: true}
		}
		if strings.ContainsFunc(v, func(r rune) bool { return isControl(r) && r != '\t' }) {
			return fieldErr(field, "must not contain control characters")
		}
	}
	return nil
}

func (c *Call) normalizeBody(lim Limits) error {
	set := 0
	if len(c.Body) > 0 && !bytes.Equal(c.Body, []byte("null")) {
		set++
	} else {
		c.Body = nil
	}
	if c.BodyText != nil {
		set++
	}
	if c.BodyBase64 != "" {
		set++
	}
	if set > 1 {
		return fieldErr("body", "give at most one of body, body_text and body_base64")
	}
	tooLarge := func(field string, n int) error {
		return &FieldError{Field: field, Message: fmt.Sprintf("is %d bytes, more than the limit of %d", n, lim.MaxRequestBytes), TooLarge: true}
	}
	switch {
	case c.Body != nil:
		var buf bytes.Buffer
		if err := json.Compact(&buf, c.Body); err != nil {
			return fieldErr("body", "is not valid JSON: %v", err)
		}
		if int64(buf.Len()) > lim.MaxRequestBytes {
			return tooLarge("body", buf.Len())
		}
		c.Body = buf.Bytes()
	case c.BodyText != nil:
		if int64(len(*c.BodyText)) > lim.MaxRequestBytes {
			return tooLarge("body_text", len(*c.BodyText))
		}
	case c.BodyBase64 != "":
		// Refuse what is surely too large before decoding it.
		if int64(base64.StdEncoding.DecodedLen(len(c.BodyBase64))) > lim.MaxRequestBytes+2 {
			return tooLarge("body_base64", base64.StdEncoding.DecodedLen(len(c.BodyBase64)))
		}
		b, err := base64.StdEncoding.DecodeString(c.BodyBase64)
		if err != nil {
			return fieldErr("body_base64", "is not valid standard base64")
		}
		if int64(len(b)) > lim.MaxRequestBytes {
			return tooLarge("body_base64", len(b))
		}
	}
	return nil
}

// RequestBody returns the bytes to send and the Content-Type to use when the
// call does not set one.
func (c *Call) RequestBody() ([]byte, string) {
	switch {
	case c.Body != nil:
		return c.Body, "application/json"
	case c.BodyText != nil:
		return []byte(*c.BodyText), "text/plain; charset=utf-8"
	case c.BodyBase64 != "":
		b, _ := base64.StdEncoding.DecodeString(c.BodyBase64) // checked in Normalize
		return b, "application/octet-stream"
	}
	return nil, ""
}

// Fingerprint is a digest of the normalized call, used to tell a safe retry
// of an enqueue (same payload) from a conflicting reuse of its correlation ID.
func (c *Call) Fingerprint() string {
	b, _ := json.Marshal(c) // maps marshal with sorted keys: the encoding is canonical
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

func validateWebhookURL(raw string) error {
	if raw == "" {
		return fieldErr("webhook.url", "is required when webhook is given")
	}
	if len(raw) > maxPathBytes {
		return fieldErr("webhook.url", "is longer than %d bytes", maxPathBytes)
	}
	if u, ok := httpurl.Parse(raw); !ok || u.User != nil {
		return fieldErr("webhook.url", "must be an absolute http or https URL without userinfo")
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }
