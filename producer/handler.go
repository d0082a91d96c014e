package producer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/tasks"
)

// HandlerConfig configures the HTTP API.
type HandlerConfig struct {
	// Client is the producer client the API works through; the API serves
	// every tenant with it, as each request's API key says. Required.
	Client *Client
	// Credentials is the credential store. Required.
	Credentials *auth.Store
	// Keys authenticates API keys. Required.
	Keys *auth.KeyStore
	// MaxWait bounds ?wait=. Default 60s.
	MaxWait time.Duration
	// MaxBodyBytes bounds a request body. Default: room for a call whose
	// body is at the limit (CALLQ_MAX_REQUEST_BYTES), base64 encoded.
	MaxBodyBytes int64
	// Ready reports whether the API can serve (Redis reachable). Default:
	// always ready.
	Ready func(context.Context) error
	// Logger receives one event per request that fails with a 5xx.
	Logger *zerolog.Logger
	// AllowSourceRefs lets admin keys store "env:NAME" and "file:/path"
	// credential values (CALLQ_ALLOW_SOURCE_REFS). Default false: such a
	// value makes the workers read their own environment or files and send
	// it upstream, which only the operator may decide; with several tenants,
	// one tenant's admin could otherwise read another's secrets. Turn it on
	// only when every admin key is the operator's.
	AllowSourceRefs bool
	// WebhookSecrets are CALLQ_WEBHOOK_SECRET: GET /v1/webhook-secret
	// answers a tenant's admin the secret derived from them for its tenant.
	// Default: none (the endpoint answers 404).
	WebhookSecrets *auth.WebhookSecrets
}

// Defaults for HandlerConfig.
const (
	DefaultMaxWait = 60 * time.Second
	maxJSONDepth   = 64
	maxBatch       = 1000
)

func (c *HandlerConfig) validate() error {
	switch {
	case c.Client == nil:
		return errors.New("Client is required.")
	case c.Credentials == nil:
		return errors.New("Credentials is required.")
	case c.Keys == nil:
		return errors.New("Keys is required.")
	case c.MaxWait < 0:
		return errors.New("MaxWait must not be negative.")
	}
	return nil
}

type handler struct {
	cfg HandlerConfig
	mux *http.ServeMux
	log zerolog.Logger
}

// NewHandler returns the HTTP API.
func NewHandler(cfg *HandlerConfig) (http.Handler, error) {
	if cfg == nil {
		cfg = &HandlerConfig{}
	}
	c := *cfg
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("producer: %w", err)
	}
	if c.MaxWait == 0 {
		c.MaxWait = DefaultMaxWait
	}
	if c.MaxBodyBytes == 0 {
		lim := int64(tasks.DefaultMaxRequestBytes)
		if l := c.Client.cfg.Limits; l != nil && l.MaxRequestBytes > 0 {
			lim = l.MaxRequestBytes
		}
		c.MaxBodyBytes = lim*4/3 + 64<<10
	}
	if c.Ready == nil {
		c.Ready = func(context.Context) error { return nil }
	}
	if c.Logger == nil {
		nop := zerolog.Nop()
		c.Logger = &nop
	}
	h := &handler{cfg: c, mux: http.NewServeMux(), log: c.Logger.With().Str("component", "api").Logger()}
	h.route("/healthz", map[string]http.HandlerFunc{"GET": h.healthz})
	h.route("/readyz", map[string]http.HandlerFunc{"GET": h.readyz})
	h.route("/v1/calls", map[string]http.HandlerFunc{"POST": h.authed(auth.RoleProducer, h.enqueue)})
	// "batch" is also a valid correlation ID: GET and DELETE reach that call.
	h.route("/v1/calls/batch", map[string]http.HandlerFunc{
		"POST":   h.authed(auth.RoleProducer, h.enqueueBatch),
		"GET":    h.authed(auth.RoleProducer, withID("batch", h.getCall)),
		"DELETE": h.authed(auth.RoleProducer, withID("batch", h.cancelCall)),
	})
	h.route("/v1/calls/{id}", map[string]http.HandlerFunc{
		"GET":    h.authed(auth.RoleProducer, h.getCall),
		"DELETE": h.authed(auth.RoleProducer, h.cancelCall),
	})
	h.route("/v1/calls/{id}/webhook/redeliver", map[string]http.HandlerFunc{"POST": h.authed(auth.RoleProducer, h.redeliverWebhook)})
	h.route("/v1/webhook-secret", map[string]http.HandlerFunc{"GET": h.authed(auth.RoleAdmin, h.webhookSecret)})
	h.route("/v1/credentials", map[string]http.HandlerFunc{"GET": h.authed(auth.RoleAdmin, h.listCredentials)})
	h.route("/v1/credentials/{ref}", map[string]http.HandlerFunc{
		"GET":    h.authed(auth.RoleAdmin, h.getCredential),
		"PUT":    h.authed(auth.RoleAdmin, h.putCredential),
		"DELETE": h.authed(auth.RoleAdmin, h.deleteCredential),
	})
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &APIError{Status: http.StatusNotFound, Code: CodeNotFound, Message: "no such endpoint: " + r.URL.Path})
	})
	return h, nil
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		// A panic is a defect; answer like one instead of dropping the
		// connection, and log it.
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			h.log.Error().Interface("panic", v).Str("path", r.URL.Path).Msg("handler panicked")
			writeError(w, &APIError{Status: http.StatusInternalServerError, Code: CodeInternal, Message: "internal error"})
		}
	}()
	h.mux.ServeHTTP(w, r)
}

// route registers one path with a handler per method, answering JSON 405
// for the others (the standard mux answers them in plain text).
func (h *handler) route(pattern string, byMethod map[string]http.HandlerFunc) {
	allowed := make([]string, 0, len(byMethod))
	for m := range byMethod {
		allowed = append(allowed, m)
	}
	slices.Sort(allowed)
	h.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if fn, ok := byMethod[r.Method]; ok {
			fn(w, r)
			return
		}
		if r.Method == http.MethodHead {
			if fn, ok := byMethod["GET"]; ok {
				fn(w, r)
				return
			}
		}
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeError(w, &APIError{Status: http.StatusMethodNotAllowed, Code: CodeMethodNotAllowed,
			Message: fmt.Sprintf("%s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, strings.Join(allowed, ", "))})
	})
}

// withID serves a fixed path as if it matched /v1/calls/{id}.
func withID(id string, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.SetPathValue("id", id)
		next(w, r)
	}
}

type ctxKey struct{}

// authed checks the API key and its role, and puts the key in the context.
func (h *handler) authed(role auth.Role, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		scheme, secret, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || secret == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="callq"`)
			writeError(w, &APIError{Status: http.StatusUnauthorized, Code: CodeUnauthorized, Message: "an API key is required: Authorization: Bearer <key>"})
			return
		}
		key, err := h.cfg.Keys.Authenticate(r.Context(), strings.TrimSpace(secret))
		if errors.Is(err, auth.ErrInvalidAPIKey) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="callq", error="invalid_token"`)
			writeError(w, &APIError{Status: http.StatusUnauthorized, Code: CodeUnauthorized, Message: "the API key is not valid"})
			return
		}
		if err != nil {
			h.unavailable(w, r, err)
			return
		}
		if role == auth.RoleAdmin && key.Role != auth.RoleAdmin {
			writeError(w, &APIError{Status: http.StatusForbidden, Code: CodeForbidden, Message: "this API key's role is " + string(key.Role) + "; managing credentials needs an admin key"})
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, key)))
	}
}

func (h *handler) client(r *http.Request) *Client {
	key := r.Context().Value(ctxKey{}).(*auth.APIKey)
	return h.cfg.Client.forTenant(key.Tenant)
}

func (h *handler) unavailable(w http.ResponseWriter, r *http.Request, err error) {
	h.log.Error().Err(err).Str("path", r.URL.Path).Msg("request failed")
	writeError(w, &APIError{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: "callq cannot reach its store; try again"})
}

func (h *handler) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (h *handler) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := h.cfg.Ready(ctx); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": "redis unreachable"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readBody reads a JSON request body within the size and depth limits.
func (h *handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *APIError) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, &APIError{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge, Message: fmt.Sprintf("the request body is larger than %d bytes", h.cfg.MaxBodyBytes)}
	}
	if err != nil {
		return nil, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidJSON, Message: "the request body could not be read"}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidJSON, Message: "the request body is empty; send a JSON object"}
	}
	if jsonDepth(body) > maxJSONDepth {
		return nil, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidJSON, Message: fmt.Sprintf("the JSON is nested deeper than %d levels", maxJSONDepth)}
	}
	return body, nil
}

// jsonDepth returns the deepest nesting of objects and arrays in b.
func jsonDepth(b []byte) int {
	depth, deepest, inString, escaped := 0, 0, false, false
	for _, c := range b {
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			depth++
			deepest = max(deepest, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return deepest
}

var callFields = []string{"integration", "method", "path", "query", "headers", "body", "body_text", "body_base64",
	"credential", "correlation_id", "timeout", "retry", "webhook", "delay", "queue"}

var nestedFields = map[string][]string{
	"retry":   {"max_attempts", "initial_interval", "max_interval", "multiplier", "max_elapsed"},
	"webhook": {"url"},
}

// unknownKey returns a key of m that is not in allowed (keys are matched
// exactly: encoding/json would also take "Method" for "method").
func unknownKey(m map[string]json.RawMessage, allowed []string) (string, bool) {
	for k := range m {
		if !slices.Contains(allowed, k) {
			return k, true
		}
	}
	return "", false
}

// decodeCall reads a call, naming the field at fault when it cannot.
func decodeCall(raw json.RawMessage) (*tasks.Call, *APIError) {
	bad := func(field, msg string) *APIError {
		code := CodeInvalidField
		if field == "" {
			code = CodeInvalidJSON
		}
		return &APIError{Status: http.StatusBadRequest, Code: code, Message: msg, Field: field}
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return nil, bad("", "the body must be a JSON object")
	}
	if k, ok := unknownKey(fields, callFields); ok {
		return nil, bad(k, fmt.Sprintf("unknown field %q", k))
	}
	// Objects inside a call are checked too: a typo such as
	// "retry": {"max_attempt": 10} must not fall back to a default.
	for name, allowed := range nestedFields {
		var inner map[string]json.RawMessage
		if v, ok := fields[name]; ok && json.Unmarshal(v, &inner) == nil {
			if k, ok := unknownKey(inner, allowed); ok {
				return nil, bad(name+"."+k, fmt.Sprintf("unknown field %q", k))
			}
		}
	}
	var call tasks.Call
	if err := json.Unmarshal(raw, &call); err != nil {
		// Find the field at fault by decoding each alone.
		for _, k := range callFields {
			v, ok := fields[k]
			if !ok {
				continue
			}
			one, _ := json.Marshal(map[string]json.RawMessage{k: v})
			var probe tasks.Call
			if ferr := json.Unmarshal(one, &probe); ferr != nil {
				var te *json.UnmarshalTypeError
				msg := ferr.Error()
				if errors.As(ferr, &te) {
					msg = fmt.Sprintf("must be %s, not %s", jsonType(te.Type.Kind().String()), te.Value)
					if te.Field != "" && te.Field != k {
						return nil, bad(te.Field, msg)
					}
				}
				return nil, bad(k, msg)
			}
		}
		return nil, bad("", err.Error())
	}
	return &call, nil
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "int", "int64", "float64":
		return "a number"
	case "map", "struct":
		return "an object"
	case "slice":
		return "an array"
	case "bool":
		return "a boolean"
	}
	return kind
}

func fieldError(err error) *APIError {
	var fe *tasks.FieldError
	if errors.As(err, &fe) {
		if fe.TooLarge {
			return &APIError{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge, Message: fe.Message, Field: fe.Field}
		}
		return &APIError{Status: http.StatusBadRequest, Code: CodeInvalidField, Message: fe.Message, Field: fe.Field}
	}
	return nil
}

type enqueueAnswer struct {
	CorrelationID string       `json:"correlation_id"`
	Status        tasks.Status `json:"status"`
	URL           string       `json:"url"`
}

func (h *handler) enqueue(w http.ResponseWriter, r *http.Request) {
	body, aerr := h.readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	call, aerr := decodeCall(body)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if hdr := r.Header.Get("Correlation-Id"); hdr != "" {
		if call.CorrelationID != "" && call.CorrelationID != hdr {
			writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidField, Field: "correlation_id",
				Message: "the Correlation-Id header and the correlation_id field disagree"})
			return
		}
		call.CorrelationID = hdr
	}
	status, v, aerr := h.enqueueOne(r.Context(), h.client(r), call)
	if aerr != nil {
		if aerr.Status >= 500 {
			h.log.Error().Str("message", aerr.Message).Msg("enqueue failed")
		}
		writeError(w, aerr)
		return
	}
	if status == http.StatusAccepted {
		w.Header().Set("Location", v.(enqueueAnswer).URL)
	}
	writeJSON(w, status, v)
}

// enqueueOne answers 202 with a new call, 200 with an existing record.
func (h *handler) enqueueOne(ctx context.Context, c *Client, call *tasks.Call) (int, any, *APIError) {
	res, err := c.Enqueue(ctx, call)
	switch {
	case errors.Is(err, ErrConflict):
		return 0, nil, &APIError{Status: http.StatusConflict, Code: CodeConflict, Field: "correlation_id",
			Message: fmt.Sprintf("correlation_id %q is already used by a call with a different payload", res.Record.CorrelationID)}
	case err != nil:
		if fe := fieldError(err); fe != nil {
			return 0, nil, fe
		}
		return 0, nil, &APIError{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: "the call could not be queued; try again: " + err.Error()}
	case res.Duplicate:
		return http.StatusOK, res.Record, nil
	}
	return http.StatusAccepted, enqueueAnswer{CorrelationID: res.Record.CorrelationID, Status: res.Record.Status,
		URL: "/v1/calls/" + res.Record.CorrelationID}, nil
}

type batchItem struct {
	Status int       `json:"status"`
	Result any       `json:"result,omitempty"`
	Error  *APIError `json:"error,omitempty"`
}

func (h *handler) enqueueBatch(w http.ResponseWriter, r *http.Request) {
	body, aerr := h.readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	var top map[string]json.RawMessage
	var calls []json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidJSON, Message: `the body must be {"calls": [...]}`})
		return
	}
	if k, ok := unknownKey(top, []string{"calls"}); ok {
		writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidField, Field: k, Message: fmt.Sprintf(`unknown field %q; the body is {"calls": [...]}`, k)})
		return
	}
	if err := json.Unmarshal(top["calls"], &calls); err != nil {
		writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidField, Field: "calls", Message: "must be an array of calls"})
		return
	}
	req := struct{ Calls []json.RawMessage }{calls}
	if len(req.Calls) == 0 || len(req.Calls) > maxBatch {
		writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidField, Field: "calls", Message: fmt.Sprintf("must hold 1 to %d calls", maxBatch)})
		return
	}
	c := h.client(r)
	items := make([]batchItem, len(req.Calls))
	for i, raw := range req.Calls {
		call, aerr := decodeCall(raw)
		if aerr == nil {
			var status int
			var v any
			status, v, aerr = h.enqueueOne(r.Context(), c, call)
			if aerr == nil {
				items[i] = batchItem{Status: status, Result: v}
				continue
			}
		}
		items[i] = batchItem{Status: aerr.Status, Error: aerr}
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": items})
}

func (h *handler) getCall(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c := h.client(r)
	wait, aerr := h.parseWait(r.URL.Query().Get("wait"))
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	var rec *tasks.Record
	var err error
	if wait > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		rec, err = c.Wait(ctx, id)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil {
			// The wait ran out: answer the record as it stands. If it ran
			// out before the record was read at all, read it now, under
			// the request's context: the wait's has expired.
			if rec == nil {
				rec, err = c.Get(r.Context(), id)
			} else {
				err = nil
			}
		}
	} else {
		rec, err = c.Get(r.Context(), id)
	}
	h.answerRecord(w, r, rec, err, http.StatusOK)
}

func (h *handler) parseWait(v string) (time.Duration, *APIError) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		secs, nerr := strconv.ParseFloat(v, 64)
		if nerr != nil {
			return 0, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidField, Field: "wait", Message: `must be a duration such as "30s"`}
		}
		d = time.Duration(secs * float64(time.Second))
	}
	if d < 0 || d > h.cfg.MaxWait {
		return 0, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidField, Field: "wait", Message: fmt.Sprintf("must be between 0s and %s", h.cfg.MaxWait)}
	}
	return d, nil
}

func (h *handler) answerRecord(w http.ResponseWriter, r *http.Request, rec *tasks.Record, err error, status int) {
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, &APIError{Status: http.StatusNotFound, Code: CodeNotFound, Message: fmt.Sprintf("no call %q", r.PathValue("id"))})
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads this answer.
	case err != nil:
		h.unavailable(w, r, err)
	default:
		writeJSON(w, status, rec)
	}
}

func (h *handler) cancelCall(w http.ResponseWriter, r *http.Request) {
	rec, err := h.client(r).Cancel(r.Context(), r.PathValue("id"))
	if errors.Is(err, ErrFinished) {
		writeError(w, &APIError{Status: http.StatusConflict, Code: CodeConflict,
			Message: fmt.Sprintf("call %q has already finished (%s) and cannot be canceled", rec.CorrelationID, rec.Status)})
		return
	}
	h.answerRecord(w, r, rec, err, http.StatusOK)
}

func (h *handler) redeliverWebhook(w http.ResponseWriter, r *http.Request) {
	rec, err := h.client(r).RedeliverWebhook(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, ErrNoWebhook):
		writeError(w, &APIError{Status: http.StatusConflict, Code: CodeConflict, Message: fmt.Sprintf("call %q was enqueued without a webhook", rec.CorrelationID)})
	case errors.Is(err, ErrNotFinished):
		writeError(w, &APIError{Status: http.StatusConflict, Code: CodeConflict, Message: fmt.Sprintf("call %q has not finished (%s); its webhook is sent when it does", rec.CorrelationID, rec.Status)})
	case errors.Is(err, ErrRedeliveryPending):
		writeError(w, &APIError{Status: http.StatusConflict, Code: CodeConflict, Message: fmt.Sprintf("a redelivery of call %q's webhook is already pending; its outcome shows in the record's webhook block", rec.CorrelationID)})
	default:
		h.answerRecord(w, r, rec, err, http.StatusAccepted)
	}
}

// webhookSecret answers the tenant's webhook secrets, current first: what
// its receivers verify deliveries with.
func (h *handler) webhookSecret(w http.ResponseWriter, r *http.Request) {
	if h.cfg.WebhookSecrets == nil {
		writeError(w, &APIError{Status: http.StatusNotFound, Code: CodeNotFound, Message: "webhooks are not configured on this callq (CALLQ_WEBHOOK_SECRET is not set)"})
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{"tenant": h.tenant(r), "secrets": h.cfg.WebhookSecrets.ForTenant(h.tenant(r)).Secrets()})
}

// credentialView is a credential as the API shows it: field names, never values.
type credentialView struct {
	Ref         string    `json:"ref"`
	Integration string    `json:"integration"`
	Fields      []string  `json:"fields"`
	UpdatedAt   time.Time `json:"updated_at"`
}

func viewCredential(c *auth.Credential) credentialView {
	return credentialView{Ref: c.Ref, Integration: c.Integration, Fields: c.FieldNames(), UpdatedAt: c.UpdatedAt}
}

func (h *handler) tenant(r *http.Request) string {
	return r.Context().Value(ctxKey{}).(*auth.APIKey).Tenant
}

func (h *handler) putCredential(w http.ResponseWriter, r *http.Request) {
	body, aerr := h.readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	var req struct {
		Integration string            `json:"integration"`
		Fields      map[string]string `json:"fields"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidJSON,
			Message: `the body must be {"integration": "...", "fields": {"name": "value"}} with string values`})
		return
	}
	in, ok := h.cfg.Client.cfg.Catalog.Lookup(req.Integration)
	if !ok {
		writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidField, Field: "integration",
			Message: fmt.Sprintf("unknown integration %q", req.Integration)})
		return
	}
	for _, f := range in.Auth.RequiredFields() {
		if req.Fields[f] == "" {
			writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidField, Field: "fields." + f,
				Message: fmt.Sprintf("is required by integration %q (auth type %s)", in.Name, in.Auth.Type)})
			return
		}
	}
	if !h.cfg.AllowSourceRefs {
		for name, v := range req.Fields {
			if auth.IsSourceRef(v) {
				writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidField, Field: "fields." + name,
					Message: "env: and file: values read the workers' own environment and files; this API refuses them (the operator can allow them with CALLQ_ALLOW_SOURCE_REFS=true when every admin is the operator)"})
				return
			}
		}
	}
	cred, err := h.cfg.Credentials.Put(r.Context(), h.tenant(r), r.PathValue("ref"), req.Integration, req.Fields)
	var fe *auth.FieldError
	if errors.As(err, &fe) {
		writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidField, Field: fe.Field, Message: fe.Message})
		return
	}
	if err != nil {
		h.unavailable(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, viewCredential(cred))
}

func (h *handler) getCredential(w http.ResponseWriter, r *http.Request) {
	cred, err := h.cfg.Credentials.Get(r.Context(), h.tenant(r), r.PathValue("ref"))
	if h.credentialError(w, r, err) {
		return
	}
	writeJSON(w, http.StatusOK, viewCredential(cred))
}

func (h *handler) deleteCredential(w http.ResponseWriter, r *http.Request) {
	err := h.cfg.Credentials.Delete(r.Context(), h.tenant(r), r.PathValue("ref"))
	if h.credentialError(w, r, err) {
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) credentialError(w http.ResponseWriter, r *http.Request, err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, auth.ErrCredentialNotFound):
		writeError(w, &APIError{Status: http.StatusNotFound, Code: CodeNotFound, Message: fmt.Sprintf("no credential %q", r.PathValue("ref"))})
	default:
		var fe *auth.FieldError
		if errors.As(err, &fe) {
			writeError(w, &APIError{Status: http.StatusNotFound, Code: CodeNotFound, Message: fmt.Sprintf("no credential %q", r.PathValue("ref"))})
			return true
		}
		h.unavailable(w, r, err)
	}
	return true
}

func (h *handler) listCredentials(w http.ResponseWriter, r *http.Request) {
	creds, err := h.cfg.Credentials.List(r.Context(), h.tenant(r))
	if err != nil {
		h.unavailable(w, r, err)
		return
	}
	out := make([]credentialView, 0, len(creds))
	for _, c := range creds {
		out = append(out, viewCredential(c))
	}
	writeJSON(w, http.StatusOK, map[string]any{"credentials": out})
}
