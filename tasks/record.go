package tasks

import (
	"encoding/json"
	"time"
)

// Status is where a call stands. The machine is
// queued → running → (retrying → running)* → succeeded | failed | canceled.
type Status string

// Statuses.
const (
	StatusQueued    Status = "queued"
	StatusRunning   Status = "running"
	StatusRetrying  Status = "retrying"
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
	StatusCanceled  Status = "canceled"
)

// Statuses returns every status, in the machine's order.
func Statuses() []Status {
	return []Status{StatusQueued, StatusRunning, StatusRetrying, StatusSucceeded, StatusFailed, StatusCanceled}
}

// Terminal reports whether s is final: no write changes a terminal record.
func (s Status) Terminal() bool {
	return s == StatusSucceeded || s == StatusFailed || s == StatusCanceled
}

// CanMove reports whether the machine allows from → to.
func CanMove(from, to Status) bool {
	if from.Terminal() {
		return false
	}
	switch to {
	case StatusRunning:
		return from == StatusQueued || from == StatusRetrying || from == StatusRunning // running→running: a lost attempt
	case StatusRetrying, StatusSucceeded:
		return from == StatusRunning
	case StatusFailed:
		return true // a call may fail before it runs (a credential gone, say)
	case StatusCanceled:
		return true
	}
	return false
}

// ErrorKind classifies why a call failed or was retried.
type ErrorKind string

// Error kinds.
const (
	KindValidation  ErrorKind = "validation"
	KindCredential  ErrorKind = "credential"
	KindTimeout     ErrorKind = "timeout"
	KindConnection  ErrorKind = "connection"
	KindTLS         ErrorKind = "tls"
	KindHTTPStatus  ErrorKind = "http_status"
	KindRateLimited ErrorKind = "rate_limited"
	KindCanceled    ErrorKind = "canceled"
	KindInternal    ErrorKind = "internal"
	// KindLost: the call's task is gone from asynq (deleted or archived
	// with asynq's own tools, or lost with Redis data) while its record had
	// not finished; the reconciler failed the call.
	KindLost ErrorKind = "lost"
)

// Record is what became of a call: the user's truth about it.
type Record struct {
	CorrelationID string     `json:"correlation_id"`
	Tenant        string     `json:"tenant"`
	Status        Status     `json:"status"`
	Integration   string     `json:"integration"`
	Method        string     `json:"method"`
	Path          string     `json:"path"`
	Credential    string     `json:"credential,omitempty"`
	Queue         string     `json:"queue"`
	Attempts      int        `json:"attempts"`
	MaxAttempts   int        `json:"max_attempts"`
	Response      *Response  `json:"response"`
	Error         *CallError `json:"error"`
	History       []Attempt  `json:"history"`
	CreatedAt     time.Time  `json:"created_at"`
	StartedAt     *time.Time `json:"started_at"`
	CompletedAt   *time.Time `json:"completed_at"`
	NextAttemptAt *time.Time `json:"next_attempt_at"`
	// Note says why a retrying call waits without spending an attempt: a
	// fleet-wide rate limit, a concurrency cap or an open circuit. It is
	// cleared by the next attempt.
	Note    string        `json:"note,omitempty"`
	Webhook *WebhookState `json:"webhook,omitempty"`
	// ReplayOf is the call this one replays, if it is a replay.
	ReplayOf string `json:"replay_of,omitempty"`
	// ReplayedBy is the latest replay of this call, if it was replayed.
	ReplayedBy string `json:"replayed_by,omitempty"`
	// Schedule is the schedule whose firing made this call, if one did.
	Schedule string `json:"schedule,omitempty"`
	// Trace is the W3C trace context the call was enqueued under, if it
	// came with one: its trace ID is the one to look the call up by in a
	// tracing backend.
	Trace *TraceContext `json:"trace,omitempty"`
}

// Summary is rec as a list shows it: without history, and with the
// response's status and size but not its headers or body.
func (r *Record) Summary() *Record {
	s := *r
	s.History = nil
	if r.Response != nil {
		s.Response = &Response{Status: r.Response.Status, Size: r.Response.Size,
			Truncated: r.Response.Truncated, BodyWithheld: r.Response.BodyWithheld}
	}
	return &s
}

// Response is the upstream's answer, as much of it as callq keeps.
type Response struct {
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers"`
	// Exactly one of Body (a JSON body), BodyText (UTF-8 text) and
	// BodyBase64 (anything else, or JSON cut short) is set when there was a
	// body, decoded from its Content-Encoding, unless it was withheld.
	Body       json.RawMessage `json:"body,omitempty"`
	BodyText   *string         `json:"body_text,omitempty"`
	BodyBase64 string          `json:"body_base64,omitempty"`
	Size       int64           `json:"size"`
	Truncated  bool            `json:"truncated"`
	// BodyWithheld says why no body is kept though the upstream sent one:
	// it came in a Content-Encoding callq cannot decode (br, zstd, unknown
	// or corrupt), so its bytes could not be redacted.
	BodyWithheld string `json:"body_withheld,omitempty"`
}

// CallError says why a call failed, or why its last attempt did.
type CallError struct {
	Kind       ErrorKind `json:"kind"`
	Message    string    `json:"message"`
	RetryAfter *Duration `json:"retry_after,omitempty"`
}

func (e *CallError) Error() string { return string(e.Kind) + ": " + e.Message }

// Attempt is one try at the upstream.
type Attempt struct {
	Attempt    int       `json:"attempt"`
	StartedAt  time.Time `json:"started_at,omitzero"` // unknown for an attempt lost before it was marked
	DurationMS int64     `json:"duration_ms"`
	Status     int       `json:"status,omitempty"`
	Error      string    `json:"error,omitempty"`
	// Note says what else happened in the attempt (a token refreshed after
	// a 401 and the request sent again, say).
	Note string `json:"note,omitempty"`
}

// WebhookState is the delivery state of a call's completion webhook.
type WebhookState struct {
	URL         string     `json:"url"`
	Status      string     `json:"status"`
	Attempts    int        `json:"attempts"`
	LastError   *string    `json:"last_error"`
	LastStatus  int        `json:"last_status,omitempty"`
	DeliveredAt *time.Time `json:"delivered_at,omitempty"`
}

// NewRecord is the record of a call just accepted.
func NewRecord(tenant string, c *Call, in *Integration, now time.Time) *Record {
	rec := &Record{
		CorrelationID: c.CorrelationID,
		Tenant:        tenant,
		Status:        StatusQueued,
		Integration:   c.Integration,
		Method:        c.Method,
		Path:          c.Path,
		Credential:    c.Credential,
		Queue:         c.Queue,
		MaxAttempts:   in.Retry.Merge(c.Retry).MaxAttempts,
		History:       []Attempt{},
		CreatedAt:     now.UTC(),
	}
	if c.Delay > 0 {
		t := now.Add(c.Delay.D()).UTC()
		rec.NextAttemptAt = &t
	}
	if c.Webhook != nil {
		rec.Webhook = &WebhookState{URL: c.Webhook.URL, Status: "pending"}
	}
	return rec
}
