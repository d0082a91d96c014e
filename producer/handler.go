package producer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/telemetry"
)

// HandlerConfig configures the HTTP API.
type HandlerConfig struct {
	// Producer is what the API works through: each request works in the
	// tenant its API key names (Producer.Tenant). Required.
	Producer *Producer
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
	// PublicURL is the address browsers reach callq at (CALLQ_PUBLIC_URL):
	// connect sessions' URLs and the OAuth2 callback are under it. https,
	// or http on a loopback host. Default none: the connect endpoints
	// answer 503 saying so.
	PublicURL string
	// ConnectAllowedOrigins are the origins a connect session's
	// redirect_uri may name (CALLQ_CONNECT_ALLOWED_ORIGINS, read with
	// ParseConnectOrigins). Default none: a session may name no
	// redirect_uri, and the browser ends on callq's own page.
	ConnectAllowedOrigins []string
	// ConnectHTTPClient makes the OAuth2 code exchanges. Default: a 10s
	// timeout (DefaultConnectTimeout), no redirects followed.
	ConnectHTTPClient *http.Client
	// Metrics counts requests, enqueued calls and 503s (NewMetrics).
	// Default: none.
	Metrics *Metrics
	// TracerProvider makes a server span of each request, the child of the
	// request's traceparent if it has one; a call enqueued under it keeps
	// the span's trace context. Default nil: no spans, and a call keeps the
	// request's traceparent and tracestate as they came.
	TracerProvider trace.TracerProvider
}

// Defaults for HandlerConfig.
const (
	DefaultMaxWait = 60 * time.Second
	maxJSONDepth   = 64
	maxBatch       = 1000
)

func (c *HandlerConfig) validate() error {
	switch {
	case c.Producer == nil:
		return errors.New("HandlerConfig.Producer is required")
	case c.Credentials == nil:
		return errors.New("HandlerConfig.Credentials is required")
	case c.Keys == nil:
		return errors.New("HandlerConfig.Keys is required")
	case c.MaxWait < 0:
		return errors.New("HandlerConfig.MaxWait must not be negative")
	}
	if c.PublicURL != "" {
		if _, err := ParsePublicURL(c.PublicURL); err != nil {
			return fmt.Errorf("HandlerConfig.PublicURL: %w", err)
		}
	}
	for _, o := range c.ConnectAllowedOrigins {
		if got, err := ParseConnectOrigins(o); err != nil || len(got) != 1 || got[0] != o {
			return fmt.Errorf("HandlerConfig.ConnectAllowedOrigins: %q is not an origin as ParseConnectOrigins answers it", o)
		}
	}
	return nil
}

type handler struct {
	cfg    HandlerConfig
	mux    *http.ServeMux
	log    zerolog.Logger
	routes []Route      // as registered, for Routes
	tracer trace.Tracer // nil: no spans
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
	// The OpenAPI document GET /openapi.json and GET /docs serve is parsed
	// once, now: a broken one stops the API from starting.
	if _, err := openapiDoc(); err != nil {
		return nil, err
	}
	if c.MaxWait == 0 {
		c.MaxWait = DefaultMaxWait
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = c.Producer.maxRequestBytes()*4/3 + 64<<10
	}
	if c.Ready == nil {
		c.Ready = func(context.Context) error { return nil }
	}
	c.PublicURL = strings.TrimSuffix(c.PublicURL, "/")
	if c.ConnectHTTPClient == nil {
		c.ConnectHTTPClient = &http.Client{
			Timeout: DefaultConnectTimeout,
			// A redirect would resend the client secret and the code.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if c.Logger == nil {
		nop := zerolog.Nop()
		c.Logger = &nop
	}
	h := &handler{cfg: c, mux: http.NewServeMux(), log: c.Logger.With().Str("component", "api").Logger()}
	if c.TracerProvider != nil {
		h.tracer = c.TracerProvider.Tracer("github.com/callq/callq/producer")
	}
	h.route("/healthz", map[string]http.HandlerFunc{"GET": h.healthz})
	h.route("/openapi.json", map[string]http.HandlerFunc{"GET": h.openapiJSON})
	h.route("/docs", map[string]http.HandlerFunc{"GET": h.docs})
	h.route("/readyz", map[string]http.HandlerFunc{"GET": h.readyz})
	h.route("/v1/calls", map[string]http.HandlerFunc{
		"POST": h.authed(auth.RoleProducer, h.enqueue),
		"GET":  h.authed(auth.RoleProducer, h.listCalls),
	})
	// "batch" and "replay" are also valid correlation IDs: GET and DELETE
	// reach those calls.
	h.route("/v1/calls/batch", map[string]http.HandlerFunc{
		"POST":   h.authed(auth.RoleProducer, h.enqueueBatch),
		"GET":    h.authed(auth.RoleProducer, withID("batch", h.getCall)),
		"DELETE": h.authed(auth.RoleProducer, withID("batch", h.cancelCall)),
	})
	h.route("/v1/calls/replay", map[string]http.HandlerFunc{
		"POST":   h.authed(auth.RoleProducer, h.replayCalls),
		"GET":    h.authed(auth.RoleProducer, withID("replay", h.getCall)),
		"DELETE": h.authed(auth.RoleProducer, withID("replay", h.cancelCall)),
	})
	h.route("/v1/calls/{id}", map[string]http.HandlerFunc{
		"GET":    h.authed(auth.RoleProducer, h.getCall),
		"DELETE": h.authed(auth.RoleProducer, h.cancelCall),
	})
	h.route("/v1/calls/{id}/replay", map[string]http.HandlerFunc{"POST": h.authed(auth.RoleProducer, h.replayCall)})
	h.route("/v1/calls/{id}/webhook/redeliver", map[string]http.HandlerFunc{"POST": h.authed(auth.RoleProducer, h.redeliverWebhook)})
	h.route("/v1/stats", map[string]http.HandlerFunc{"GET": h.authed(auth.RoleProducer, h.stats)})
	h.route("/v1/integrations", map[string]http.HandlerFunc{"GET": h.authed(auth.RoleProducer, h.integrations)})
	h.route("/v1/webhook-secret", map[string]http.HandlerFunc{"GET": h.authed(auth.RoleAdmin, h.webhookSecret)})
	h.route("/v1/credentials", map[string]http.HandlerFunc{"GET": h.authed(auth.RoleAdmin, h.listCredentials)})
	h.route("/v1/schedules", map[string]http.HandlerFunc{
		"GET":  h.authed(auth.RoleAdmin, h.listSchedules),
		"POST": h.authed(auth.RoleAdmin, h.createSchedule),
	})
	h.route("/v1/schedules/{id}", map[string]http.HandlerFunc{
		"GET":    h.authed(auth.RoleAdmin, h.getSchedule),
		"PUT":    h.authed(auth.RoleAdmin, h.putSchedule),
		"DELETE": h.authed(auth.RoleAdmin, h.deleteSchedule),
	})
	h.route("/v1/credentials/{ref}", map[string]http.HandlerFunc{
		"GET":    h.authed(auth.RoleAdmin, h.getCredential),
		"PUT":    h.authed(auth.RoleAdmin, h.putCredential),
		"DELETE": h.authed(auth.RoleAdmin, h.deleteCredential),
	})
	// Connect: the session call (admin), and the browser's pages, which
	// carry no API key: the session token in the path is their authority.
	h.route("/v1/connect/sessions", map[string]http.HandlerFunc{"POST": h.authed(auth.RoleAdmin, h.createConnectSession)})
	h.route("/connect/callback", map[string]http.HandlerFunc{"GET": h.connectCallback})
	h.route("/connect/{token}", map[string]http.HandlerFunc{"GET": h.connectStart, "POST": h.connectSubmit})
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &APIError{Status: http.StatusNotFound, Code: CodeNotFound, Message: "no such endpoint: " + r.URL.Path})
	})
	return h, nil
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Metrics == nil && h.tracer == nil {
		h.serve(w, telemetryRequest(r))
		return
	}
	rw := &statusWriter{ResponseWriter: w}
	var span trace.Span
	method := knownMethod(r.Method) // a client may send any token: the span's name is bounded too
	if method == "other" {
		method = "_OTHER" // as OpenTelemetry's HTTP conventions name it
	}
	if h.tracer != nil {
		var ctx context.Context
		ctx, span = h.tracer.Start(telemetry.Extract(r.Context(), r.Header), method,
			trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attribute.String("http.request.method", method)))
		r = r.WithContext(ctx)
	} else {
		r = telemetryRequest(r)
	}
	h.serve(rw, r)
	code := rw.code
	if code == 0 {
		code = http.StatusOK
	}
	// The mux sets the pattern it matched on r: the route, of bounded
	// cardinality, where the raw path is not.
	route := r.Pattern
	if route == "" || route == "/" {
		route = "unmatched"
	}
	h.cfg.Metrics.request(route, r.Method, code, rw.storeDown)
	if span != nil {
		span.SetName(method + " " + route)
		span.SetAttributes(attribute.String("http.route", route), attribute.Int("http.response.status_code", code))
		if code >= 500 {
			span.SetStatus(codes.Error, http.StatusText(code))
		}
		span.End()
	}
}

// telemetryRequest is r with its traceparent as its context's remote
// parent, for a call enqueued under it to keep; r itself when it has none.
func telemetryRequest(r *http.Request) *http.Request {
	if ctx := telemetry.Extract(r.Context(), r.Header); ctx != r.Context() {
		return r.WithContext(ctx)
	}
	return r
}

// statusWriter remembers the status code a handler answered, and whether
// it answered so because Redis could not be reached (storeDown).
type statusWriter struct {
	http.ResponseWriter
	code      int
	storeDown bool
}

// storeDown notes that w's answer is a 503 because Redis could not be
// reached, for callq_http_unavailable_total: a 503 for another reason
// (connect not configured) is not an outage of the store.
func storeDown(w http.ResponseWriter) {
	if sw, ok := w.(*statusWriter); ok {
		sw.storeDown = true
	}
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (h *handler) serve(w http.ResponseWriter, r *http.Request) {
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
	for _, m := range allowed {
		h.routes = append(h.routes, Route{Method: m, Pattern: pattern})
	}
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
			writeError(w, &APIError{Status: http.StatusForbidden, Code: CodeForbidden, Message: "this API key's role is " + string(key.Role) + "; managing credentials and schedules needs an admin key"})
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, key)))
	}
}

func (h *handler) client(r *http.Request) *Client {
	key := r.Context().Value(ctxKey{}).(*auth.APIKey)
	return h.cfg.Producer.tenant(key.Tenant)
}

func (h *handler) unavailable(w http.ResponseWriter, r *http.Request, err error) {
	h.log.Error().Err(err).Str("path", r.URL.Path).Msg("request failed")
	storeDown(w)
	writeError(w, &APIError{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: "callq cannot reach its store; try again"})
}

func (h *handler) tenant(r *http.Request) string {
	return r.Context().Value(ctxKey{}).(*auth.APIKey).Tenant
}
