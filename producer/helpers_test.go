package producer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/mccutchen/go-httpbin/v2/httpbin"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/openapitest"
	"github.com/callq/callq/internal/redistest"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

// testCatalog has an integration without auth (httpbin), one with bearer
// auth and a default credential (bearer) and one with basic auth (basic).
// Nothing calls them unless a test sets up withUpstream: then a worker
// runs, and httpbin is a go-httpbin.
const testCatalog = `
integrations:
  httpbin:
    base_url: http://127.0.0.1:9/api
    auth: {type: none}
    timeout: 5s
    max_timeout: 20s
    retry: {max_attempts: 3, initial_interval: 1s, max_interval: 10s, multiplier: 2, max_elapsed: 5m}
  bearer:
    base_url: https://bearer.example
    auth: {type: bearer}
    default_credential: bearer-default
  basic:
    base_url: https://basic.example
    auth: {type: basic}
`

// env is one API over its own redis-server: the HTTP server, the client
// and stores behind it, and API keys.
type env struct {
	srv       *redistest.Server
	rdb       *redis.Client
	cat       *tasks.Catalog
	records   *tasks.Store
	creds     *auth.Store
	ring      *auth.Keyring
	keys      *auth.KeyStore
	prod      *producer.Producer // what the API is built over
	inspector *asynq.Inspector
	url       string

	adminKey      string // admin of tenant acme
	producerKey   string // producer of tenant acme
	producerKeyID string
	otherAdminKey string // admin of tenant other
}

type setupConfig struct {
	limits       *tasks.Limits
	maxSchedules int
	webhooks     bool
	handler      producer.HandlerConfig
	sourceDirs   auth.SourceDirs
	upstream     bool
	catalog      string
	publicURL    bool
	worker       func(*worker.Config)
	private      bool
}

// withPrivateWebhooks accepts calls and sessions with a webhook to a
// loopback receiver (CALLQ_WEBHOOK_ALLOW_PRIVATE).
func withPrivateWebhooks() setupOption {
	return func(c *setupConfig) { c.webhooks, c.private = true, true }
}

// withPublicURL sets HandlerConfig.PublicURL to the test server's own
// address, as CALLQ_PUBLIC_URL would.
func withPublicURL() setupOption {
	return func(c *setupConfig) { c.publicURL = true }
}

// withHandler changes the HandlerConfig (before PublicURL is set).
func withHandler(fn func(*producer.HandlerConfig)) setupOption {
	return func(c *setupConfig) { fn(&c.handler) }
}

// withWorker runs a worker over the catalog as it is, configured further
// by fn (which may be nil).
func withWorker(fn func(*worker.Config)) setupOption {
	return func(c *setupConfig) {
		if fn == nil {
			fn = func(*worker.Config) {}
		}
		c.worker = fn
	}
}

// withUpstream points the catalog's httpbin at a go-httpbin of the test's
// own and runs a worker, so that calls are made.
func withUpstream() setupOption {
	return func(c *setupConfig) { c.upstream = true }
}

type setupOption func(*setupConfig)

// withCatalog loads yaml instead of testCatalog.
func withCatalog(yaml string) setupOption {
	return func(c *setupConfig) { c.catalog = yaml }
}

func withLimits(l *tasks.Limits) setupOption {
	return func(c *setupConfig) { c.limits = l }
}

// withMaxSchedules bounds a tenant's schedules (Config.MaxSchedules).
func withMaxSchedules(n int) setupOption {
	return func(c *setupConfig) { c.maxSchedules = n }
}

func withMaxBodyBytes(n int64) setupOption {
	return func(c *setupConfig) { c.handler.MaxBodyBytes = n }
}

func withReady(fn func(context.Context) error) setupOption {
	return func(c *setupConfig) { c.handler.Ready = fn }
}

// withWebhooks accepts calls with a webhook, as with CALLQ_WEBHOOK_SECRET set.
func withWebhooks() setupOption {
	return func(c *setupConfig) { c.webhooks = true }
}

func withSourceRefs() setupOption {
	return func(c *setupConfig) { c.handler.AllowSourceRefs = true }
}

// withSourceDirs restricts file: values to dirs (CALLQ_SOURCE_DIRS).
func withSourceDirs(dirs ...string) setupOption {
	return func(c *setupConfig) { c.sourceDirs = dirs }
}

// setup starts a redis-server and the API over it, with keys for tenants
// acme (admin and producer) and other (admin).
func setup(tb testing.TB, opts ...setupOption) *env {
	tb.Helper()
	var sc setupConfig
	for _, o := range opts {
		o(&sc)
	}
	srv := redistest.Start(tb)
	rdb := srv.Client(tb)

	catalog := testCatalog
	if sc.catalog != "" {
		catalog = sc.catalog
	}
	if sc.upstream {
		up := httptest.NewServer(httpbin.New())
		tb.Cleanup(up.Close)
		catalog = strings.Replace(catalog, "http://127.0.0.1:9/api", up.URL, 1)
	}
	cat, err := tasks.ParseCatalog([]byte(catalog))
	require.NoError(tb, err)
	records, err := tasks.NewStore(rdb, nil)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = records.Close() })

	secret, err := auth.GenerateKey()
	require.NoError(tb, err)
	ring, err := auth.ParseKeyring(secret)
	require.NoError(tb, err)
	creds, err := auth.NewStore(rdb, &auth.StoreConfig{Keyring: ring, SourceDirs: sc.sourceDirs})
	require.NoError(tb, err)
	keys := auth.NewKeyStore(rdb)

	prod, err := producer.New(rdb, &producer.Config{Catalog: cat, Records: records, Limits: sc.limits,
		WebhooksEnabled: sc.webhooks, WebhookAllowPrivate: sc.private, MaxSchedules: sc.maxSchedules})
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = prod.Close() })

	if sc.upstream || sc.worker != nil {
		wc := &worker.Config{Catalog: cat, Records: records, Credentials: creds, Keyring: ring, Concurrency: 4}
		if sc.worker != nil {
			sc.worker(wc)
		}
		w, err := worker.New(rdb, wc)
		require.NoError(tb, err)
		require.NoError(tb, w.Start())
		tb.Cleanup(w.Shutdown)
	}

	ts := httptest.NewUnstartedServer(nil)
	hc := sc.handler
	hc.Producer, hc.Credentials, hc.Keys = prod, creds, keys
	if sc.publicURL {
		hc.PublicURL = "http://" + ts.Listener.Addr().String()
	}
	h, err := producer.NewHandler(&hc)
	require.NoError(tb, err)
	ts.Config.Handler = openapitest.Handler(tb, h)
	ts.Start()
	tb.Cleanup(ts.Close)

	inspector := asynq.NewInspectorFromRedisClient(rdb)
	tb.Cleanup(func() { _ = inspector.Close() })

	ctx := context.Background()
	_, adminKey, err := keys.Create(ctx, "acme", auth.RoleAdmin)
	require.NoError(tb, err)
	pk, producerKey, err := keys.Create(ctx, "acme", auth.RoleProducer)
	require.NoError(tb, err)
	_, otherAdminKey, err := keys.Create(ctx, "other", auth.RoleAdmin)
	require.NoError(tb, err)

	return &env{
		srv: srv, rdb: rdb, cat: cat, records: records, creds: creds, ring: ring, keys: keys,
		prod: prod, inspector: inspector, url: ts.URL,
		adminKey: adminKey, producerKey: producerKey, producerKeyID: pk.ID, otherAdminKey: otherAdminKey,
	}
}

// tenantClient is a Go client of tenant: a view of the producer the API
// is built over.
func (e *env) tenantClient(tb testing.TB, tenant string) *producer.Client {
	tb.Helper()
	c, err := e.prod.Tenant(tenant)
	require.NoError(tb, err)
	return c
}

// resp is an HTTP answer, read whole.
type resp struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into a generic map.
func (r *resp) JSON(tb testing.TB) map[string]any {
	tb.Helper()
	var m map[string]any
	require.NoError(tb, json.Unmarshal(r.Body, &m), "body: %s", r.Body)
	return m
}

// Record decodes the body as a record.
func (r *resp) Record(tb testing.TB) *tasks.Record {
	tb.Helper()
	var rec tasks.Record
	require.NoError(tb, json.Unmarshal(r.Body, &rec), "body: %s", r.Body)
	return &rec
}

// req is one request: Body is sent as is when it is a string or []byte,
// else as JSON.
type req struct {
	Method string
	Path   string
	Key    string
	Body   any
	Header map[string]string
}

func (e *env) do(tb testing.TB, r req) *resp {
	tb.Helper()
	return e.doCtx(tb, context.Background(), r)
}

func (e *env) doCtx(tb testing.TB, ctx context.Context, r req) *resp {
	tb.Helper()
	var body io.Reader
	switch b := r.Body.(type) {
	case nil:
	case string:
		body = strings.NewReader(b)
	case []byte:
		body = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		require.NoError(tb, err)
		body = bytes.NewReader(j)
	}
	hr, err := http.NewRequestWithContext(ctx, r.Method, e.url+r.Path, body)
	require.NoError(tb, err)
	if r.Key != "" {
		hr.Header.Set("Authorization", "Bearer "+r.Key)
	}
	if body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	for k, v := range r.Header {
		hr.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(hr)
	require.NoError(tb, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(tb, err)
	return &resp{Status: res.StatusCode, Header: res.Header, Body: b}
}

// post enqueues body as the acme producer.
func (e *env) post(tb testing.TB, body any, header ...string) *resp {
	tb.Helper()
	h := map[string]string{}
	for i := 0; i+1 < len(header); i += 2 {
		h[header[i]] = header[i+1]
	}
	return e.do(tb, req{Method: http.MethodPost, Path: "/v1/calls", Key: e.producerKey, Body: body, Header: h})
}

// get reads /v1/calls/{id}[?query] as the acme producer.
func (e *env) get(tb testing.TB, idAndQuery string) *resp {
	tb.Helper()
	return e.do(tb, req{Method: http.MethodGet, Path: "/v1/calls/" + idAndQuery, Key: e.producerKey})
}

// apiError is the error body of the API.
type apiError struct {
	Error *struct {
		Code    string  `json:"code"`
		Message string  `json:"message"`
		Field   *string `json:"field"`
	} `json:"error"`
}

// requireError checks status and the JSON error shape: code, a non-empty
// message and field (an empty field means none may be given).
func requireError(tb testing.TB, r *resp, status int, code, field string) {
	tb.Helper()
	require.Equal(tb, status, r.Status, "body: %s", r.Body)
	require.Equal(tb, "application/json", r.Header.Get("Content-Type"))
	var ae apiError
	require.NoError(tb, json.Unmarshal(r.Body, &ae), "body: %s", r.Body)
	require.NotNil(tb, ae.Error, "body: %s", r.Body)
	require.Equal(tb, code, ae.Error.Code, "body: %s", r.Body)
	require.NotEmpty(tb, ae.Error.Message, "body: %s", r.Body)
	if field == "" {
		require.Nil(tb, ae.Error.Field, "body: %s", r.Body)
	} else {
		require.NotNil(tb, ae.Error.Field, "body: %s", r.Body)
		require.Equal(tb, field, *ae.Error.Field, "body: %s", r.Body)
	}
}

// errorField returns the error's field ("" if none) after checking the
// shape of the error body.
func errorField(tb testing.TB, r *resp) string {
	tb.Helper()
	var ae apiError
	require.NoError(tb, json.Unmarshal(r.Body, &ae), "body: %s", r.Body)
	require.NotNil(tb, ae.Error, "body: %s", r.Body)
	require.NotEmpty(tb, ae.Error.Code)
	require.NotEmpty(tb, ae.Error.Message)
	if ae.Error.Field == nil {
		return ""
	}
	return *ae.Error.Field
}

// call is a valid call body; fields in extra are added or replaced, and a
// nil value removes the field.
func call(extra map[string]any) map[string]any {
	c := map[string]any{"integration": "httpbin", "method": "GET", "path": "/get", "query": map[string]any{"since": "364"}}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

// taskInfo is asynq's view of a call's task, or an error matching
// asynq.ErrTaskNotFound.
func (e *env) taskInfo(tenant, queue, id string) (*asynq.TaskInfo, error) {
	return e.inspector.GetTaskInfo(queue, tasks.TaskID(tenant, id))
}

// queueSize is the number of tasks in an asynq queue, 0 if it does not
// exist.
func (e *env) queueSize(tb testing.TB, queue string) int {
	tb.Helper()
	qs, err := e.inspector.Queues()
	require.NoError(tb, err)
	if !slices.Contains(qs, queue) {
		return 0
	}
	info, err := e.inspector.GetQueueInfo(queue)
	require.NoError(tb, err)
	return info.Size
}

// complete finishes a call through the record store as a worker would:
// Begin an attempt, then Write a terminal record. It is safe to call from
// any goroutine.
func (e *env) complete(ctx context.Context, tenant, id string, status tasks.Status) error {
	started := time.Now().UTC()
	b, err := e.records.Begin(ctx, tenant, id, tasks.RunMarker{Attempt: 1, StartedAt: started, Worker: "test-worker"})
	if err != nil {
		return err
	}
	rec := b.Record
	done := time.Now().UTC()
	rec.Status = status
	rec.Attempts = 1
	rec.StartedAt = &started
	rec.CompletedAt = &done
	rec.NextAttemptAt = nil
	rec.Response = &tasks.Response{Status: 200, Headers: map[string]string{"Content-Type": "application/json"}, Body: json.RawMessage(`{"ok":true}`), Size: 11}
	rec.History = append(rec.History, tasks.Attempt{Attempt: 1, StartedAt: started, DurationMS: 1, Status: 200})
	return e.records.Write(ctx, rec, b.Version)
}

// finish is complete for the test goroutine.
func (e *env) finish(tb testing.TB, tenant, id string, status tasks.Status) {
	tb.Helper()
	require.NoError(tb, e.complete(context.Background(), tenant, id, status))
}
