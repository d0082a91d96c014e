package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	stdlog "log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/mccutchen/go-httpbin/v2/httpbin"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/redistest"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

// syncBuffer is a log sink shared by the worker's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// upstream is go-httpbin with a few extra routes, recording what it received.
type upstream struct {
	*httptest.Server
	mu       sync.Mutex
	received map[string][]http.Header // by X-Test-ID header
	flights  *flights                 // /inflight
}

func (u *upstream) headers(id string) []http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.received[id]
}

// env is a real redis-server, an upstream and a running worker, shared by
// the tests of this package: each test uses its own correlation IDs.
type env struct {
	rdb     *redis.Client
	redis   *redistest.Server
	up      *upstream
	other   *httptest.Server // another origin, to catch credentials leaving
	catalog *tasks.Catalog
	keyring *auth.Keyring
	creds   *auth.Store
	records *tasks.Store
	client  *producer.Client
	logs    *syncBuffer
}

var (
	sharedOnce sync.Once
	shared     *env
	sharedErr  error
)

func catalogYAML(upURL, tlsURL string) string {
	return fmt.Sprintf(`
integrations:
  bin:
    base_url: %[1]s
    timeout: 2s
    max_timeout: 5s
    retry: {max_attempts: 3, initial_interval: 50ms, max_interval: 100ms, max_elapsed: 30s}
  bin-bearer:
    base_url: %[1]s
    auth: {type: bearer}
    retry: {max_attempts: 2, initial_interval: 50ms, max_interval: 100ms}
  bin-query:
    base_url: %[1]s
    auth: {type: api_key, in: query, name: api_key}
    retry: {max_attempts: 2, initial_interval: 50ms}
  bin-key:
    base_url: %[1]s
    auth: {type: api_key}
    retry: {max_attempts: 1}
  bin-basic:
    base_url: %[1]s
    auth: {type: basic}
    retry: {max_attempts: 1}
  dd:
    base_url: %[1]s
    auth:
      type: headers
      headers:
        DD-API-KEY: "{{api_key}}"
        DD-APPLICATION-KEY: "{{app_key}}"
        Authorization: "Bearer {{pat}}"
  tls:
    base_url: %[2]s
    retry: {max_attempts: 3, initial_interval: 50ms}
  limited:
    base_url: %[1]s
    rate_limit: {requests: 2, per: 1s}
  down:
    base_url: http://127.0.0.1:1
    retry: {max_attempts: 2, initial_interval: 50ms, max_interval: 50ms}
  capped:
    base_url: %[1]s
    concurrency: 2
  capped-seq:
    base_url: %[1]s
    concurrency: 1
  capped-cred:
    base_url: %[1]s
    auth: {type: bearer}
    concurrency: 1
  capped-whole:
    base_url: %[1]s
    auth: {type: bearer}
    concurrency: {limit: 1, per: integration}
  capped-cancel:
    base_url: %[1]s
    timeout: 10s
    max_timeout: 10s
    concurrency: 1
  capped-timeout:
    base_url: %[1]s
    concurrency: 1
    retry: {max_attempts: 1}
  capped-many:
    base_url: %[1]s
    timeout: 20s
    max_timeout: 20s
    concurrency: 1
  capped-limited:
    base_url: %[1]s
    concurrency: 2
    rate_limit: {requests: 1, per: 1m}
`, upURL, tlsURL)
}

// setup returns the shared environment; the first call starts it.
func setup(t *testing.T) *env {
	t.Helper()
	sharedOnce.Do(func() { shared, sharedErr = startEnv() })
	require.NoError(t, sharedErr)
	return shared
}

// startEnv lives for the whole test binary (see TestMain).
func startEnv() (*env, error) {
	srv, stop, err := redistest.StartProcess("")
	if err != nil {
		return nil, err
	}
	cleanups = append(cleanups, func() { _ = stop() })
	e := &env{logs: &syncBuffer{}}
	e.up = newUpstream()
	cleanups = append(cleanups, e.up.Close)
	tlsSrv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	tlsSrv.Config.ErrorLog = stdlog.New(io.Discard, "", 0) // the refused handshakes are the point
	tlsSrv.StartTLS()
	cleanups = append(cleanups, tlsSrv.Close)
	e.other = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		otherHits.Add(1)
		if r.Header.Get("Authorization") != "" {
			otherWithAuth.Add(1)
		}
	}))
	cleanups = append(cleanups, e.other.Close)

	e.rdb = redis.NewClient(&redis.Options{Addr: srv.Addr})
	if e.catalog, err = tasks.ParseCatalog([]byte(catalogYAML(e.up.URL, tlsSrv.URL))); err != nil {
		return nil, err
	}
	key, _ := auth.GenerateKey()
	if e.keyring, err = auth.ParseKeyring(key); err != nil {
		return nil, err
	}
	if e.creds, err = auth.NewStore(e.rdb, &auth.StoreConfig{Keyring: e.keyring}); err != nil {
		return nil, err
	}
	if e.records, err = tasks.NewStore(e.rdb, nil); err != nil {
		return nil, err
	}
	if e.client, err = producer.NewClient(e.rdb, "acme", &producer.Config{Catalog: e.catalog, Records: e.records}); err != nil {
		return nil, err
	}
	log := zerolog.New(e.logs).Level(zerolog.DebugLevel)
	w, err := worker.New(e.rdb, &worker.Config{
		Catalog: e.catalog, Records: e.records, Credentials: e.creds, Keyring: e.keyring,
		Concurrency: 20, MaxResponseBytes: 4096, Logger: &log, ShutdownTimeout: 2 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	if err := w.Start(); err != nil {
		return nil, err
	}
	cleanups = append(cleanups, w.Shutdown)
	e.redis = srv
	return e, nil
}

var (
	cleanups      []func()
	otherHits     atomic.Int64
	otherWithAuth atomic.Int64
)

func TestMain(m *testing.M) {
	code := m.Run()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	os.Exit(code)
}

// newUpstream serves go-httpbin plus /ratelimited: 429 with Retry-After
// (from ?after=) on the first request of each X-Test-ID, then 200;
// /echo/{form}, the request's headers echoed in that form (serveEcho); and
// /inflight, which counts the requests in flight (flights).
func newUpstream() *upstream {
	u := &upstream{received: map[string][]http.Header{}, flights: newFlights()}
	bin := httpbin.New()
	var flaky sync.Map
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		if id := r.Header.Get("X-Test-ID"); id != "" {
			u.received[id] = append(u.received[id], r.Header.Clone())
		}
		u.mu.Unlock()
		if strings.HasPrefix(r.URL.Path, "/echo/") {
			serveEcho(w, r)
			return
		}
		if r.URL.Path == "/inflight" {
			u.flights.ServeHTTP(w, r)
			return
		}
		if r.URL.Path == "/ratelimited" {
			v, _ := flaky.LoadOrStore(r.Header.Get("X-Test-ID"), &atomic.Int64{})
			if v.(*atomic.Int64).Add(1) == 1 {
				w.Header().Set("Retry-After", r.URL.Query().Get("after"))
				w.WriteHeader(http.StatusTooManyRequests)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"ok":true}`)
			return
		}
		bin.ServeHTTP(w, r)
	}))
	return u
}

// run enqueues a call for tenant acme and waits for its final record.
func (e *env) run(t *testing.T, call *tasks.Call, opts ...producer.Option) *tasks.Record {
	t.Helper()
	if call.CorrelationID == "" {
		call.CorrelationID = strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()) + "-" + uid()
	}
	res, err := e.client.Enqueue(context.Background(), call, opts...)
	require.NoError(t, err)
	require.False(t, res.Duplicate)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rec, err := e.client.Wait(ctx, call.CorrelationID)
	require.NoError(t, err, "call %s did not finish; record: %+v", call.CorrelationID, rec)
	require.Equal(t, len(rec.History), rec.Attempts, "attempts counts the history")
	return rec
}

// inspector is asynq's view of the worker's queues.
func (e *env) inspector() *asynq.Inspector { return asynq.NewInspectorFromRedisClient(e.rdb) }

func (e *env) putCred(t *testing.T, ref, integration string, fields map[string]string) {
	t.Helper()
	_, err := e.creds.Put(context.Background(), "acme", ref, integration, fields)
	require.NoError(t, err)
}

func TestCallSucceeds(t *testing.T) {
	t.Parallel()
	e := setup(t)
	rec := e.run(t, &tasks.Call{Integration: "bin", Method: "POST", Path: "/anything/x",
		Query: tasks.Query{"since": {"364"}}, Body: json.RawMessage(`{"name": "x"}`)})
	require.Equal(t, tasks.StatusSucceeded, rec.Status)
	require.Equal(t, 1, rec.Attempts)
	require.Nil(t, rec.Error)
	require.Equal(t, 200, rec.Response.Status)
	require.NotNil(t, rec.StartedAt)
	require.NotNil(t, rec.CompletedAt)
	var echo struct {
		Method string              `json:"method"`
		Args   map[string][]string `json:"args"`
		JSON   map[string]any      `json:"json"`
	}
	require.NoError(t, json.Unmarshal(rec.Response.Body, &echo))
	require.Equal(t, "POST", echo.Method)
	require.Equal(t, []string{"364"}, echo.Args["since"])
	require.Equal(t, "x", echo.JSON["name"])
	require.Equal(t, 200, rec.History[0].Status)
}

func TestServerErrorRetriedThenFailed(t *testing.T) {
	t.Parallel()
	e := setup(t)
	rec := e.run(t, &tasks.Call{Integration: "bin", Method: "GET", Path: "/status/503",
		Retry: &tasks.RetryPolicy{MaxAttempts: 2}})
	require.Equal(t, tasks.StatusFailed, rec.Status)
	require.Equal(t, 2, rec.Attempts)
	require.Len(t, rec.History, 2)
	for i, a := range rec.History {
		require.Equal(t, i+1, a.Attempt)
		require.Equal(t, 503, a.Status)
	}
	require.Equal(t, 503, rec.Response.Status, "the last response is kept")
	require.Equal(t, tasks.KindHTTPStatus, rec.Error.Kind)
	require.Contains(t, rec.Error.Message, "503")
}

func TestClientErrorNotRetried(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, status := range []int{404, 400, 501} {
		rec := e.run(t, &tasks.Call{Integration: "bin", Method: "GET", Path: fmt.Sprintf("/status/%d", status)})
		require.Equal(t, tasks.StatusFailed, rec.Status)
		require.Equal(t, 1, rec.Attempts, "status %d is not retried", status)
		require.Equal(t, status, rec.Response.Status)
	}
}

func TestRedirectIsTheResult(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.putCred(t, "redirect-tok", "bin-bearer", map[string]string{"token": "redirect-secret-token"})
	before := otherWithAuth.Load()
	rec := e.run(t, &tasks.Call{Integration: "bin-bearer", Method: "GET", Path: "/redirect-to",
		Query: tasks.Query{"url": {e.other.URL + "/steal"}}, Credential: "redirect-tok"})
	require.Equal(t, tasks.StatusSucceeded, rec.Status)
	require.Equal(t, 302, rec.Response.Status)
	require.Equal(t, e.other.URL+"/steal", rec.Response.Headers["Location"])
	require.Equal(t, before, otherWithAuth.Load(), "the redirect was not followed with the credential")
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	e := setup(t)
	rec := e.run(t, &tasks.Call{Integration: "bin", Method: "GET", Path: "/delay/3",
		Timeout: tasks.Duration(300 * time.Millisecond), Retry: &tasks.RetryPolicy{MaxAttempts: 2}})
	require.Equal(t, tasks.StatusFailed, rec.Status)
	require.Equal(t, tasks.KindTimeout, rec.Error.Kind)
	require.Equal(t, 2, rec.Attempts, "timeouts are retried")
	for _, a := range rec.History {
		require.Less(t, a.DurationMS, int64(2000), "the attempt was cut at its timeout")
		require.Contains(t, a.Error, "300ms")
	}
}

func TestConnectionRefusedRetried(t *testing.T) {
	t.Parallel()
	e := setup(t)
	rec := e.run(t, &tasks.Call{Integration: "down", Method: "GET", Path: "/x"})
	require.Equal(t, tasks.StatusFailed, rec.Status)
	require.Equal(t, tasks.KindConnection, rec.Error.Kind)
	require.Equal(t, 2, rec.Attempts)
	require.Nil(t, rec.Response)
}

func TestTLSVerificationNotRetried(t *testing.T) {
	t.Parallel()
	e := setup(t)
	rec := e.run(t, &tasks.Call{Integration: "tls", Method: "GET", Path: "/"})
	require.Equal(t, tasks.StatusFailed, rec.Status)
	require.Equal(t, tasks.KindTLS, rec.Error.Kind)
	require.Equal(t, 1, rec.Attempts)
}

func TestRetryAfterHonoured(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := "retry-after-" + uid()
	rec := e.run(t, &tasks.Call{Integration: "bin", Method: "GET", Path: "/ratelimited",
		Query: tasks.Query{"after": {"2"}}, Headers: map[string]string{"X-Test-ID": id}})
	require.Equal(t, tasks.StatusSucceeded, rec.Status)
	require.Equal(t, 2, rec.Attempts)
	require.Equal(t, 429, rec.History[0].Status)
	gap := rec.History[1].StartedAt.Sub(rec.History[0].StartedAt)
	// asynq schedules in whole seconds: a 2s wait fires after at least 1s,
	// and the backoff alone (at most 100ms) could not explain that.
	require.GreaterOrEqual(t, gap, time.Second, "the second attempt waited for Retry-After")
}

func TestRetryAfterPastBudgetFailsRateLimited(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := "retry-after-long-" + uid()
	rec := e.run(t, &tasks.Call{Integration: "bin", Method: "GET", Path: "/ratelimited",
		Query: tasks.Query{"after": {"3600"}}, Headers: map[string]string{"X-Test-ID": id}})
	require.Equal(t, tasks.StatusFailed, rec.Status)
	require.Equal(t, 1, rec.Attempts, "no waiting an hour")
	require.Equal(t, tasks.KindRateLimited, rec.Error.Kind)
	require.NotNil(t, rec.Error.RetryAfter)
	require.Equal(t, time.Hour, rec.Error.RetryAfter.D())
	require.Equal(t, 429, rec.Response.Status)
}

func TestResponseTruncated(t *testing.T) {
	t.Parallel()
	e := setup(t)
	rec := e.run(t, &tasks.Call{Integration: "bin", Method: "GET", Path: "/bytes/10000"})
	require.Equal(t, tasks.StatusSucceeded, rec.Status)
	require.True(t, rec.Response.Truncated)
	require.Equal(t, int64(10000), rec.Response.Size)
	require.NotEmpty(t, rec.Response.BodyBase64)
	require.LessOrEqual(t, len(rec.Response.BodyBase64), 4096*4/3+4)
}

func TestDatadogHeaders(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.putCred(t, "dd-keys", "dd", map[string]string{"api_key": "dd-api-0001", "app_key": "dd-app-0002"})
	e.putCred(t, "dd-pat", "dd", map[string]string{"api_key": "dd-api-0003", "app_key": "dd-app-0004", "pat": "ddpat-0005"})

	idKeys, idPat := "dd-keys-"+uid(), "dd-pat-"+uid()
	rec := e.run(t, &tasks.Call{Integration: "dd", Method: "GET", Path: "/headers", Credential: "dd-keys",
		Headers: map[string]string{"X-Test-ID": idKeys}})
	require.Equal(t, tasks.StatusSucceeded, rec.Status)
	got := e.up.headers(idKeys)
	require.Len(t, got, 1)
	require.Equal(t, "dd-api-0001", got[0].Get("DD-API-KEY"))
	require.Equal(t, "dd-app-0002", got[0].Get("DD-APPLICATION-KEY"))
	require.Empty(t, got[0].Values("Authorization"), "no pat, no Authorization header")

	rec = e.run(t, &tasks.Call{Integration: "dd", Method: "GET", Path: "/headers", Credential: "dd-pat",
		Headers: map[string]string{"X-Test-ID": idPat}})
	require.Equal(t, tasks.StatusSucceeded, rec.Status)
	got = e.up.headers(idPat)
	require.Len(t, got, 1)
	require.Equal(t, "dd-api-0003", got[0].Get("DD-API-KEY"))
	require.Equal(t, "dd-app-0004", got[0].Get("DD-APPLICATION-KEY"))
	require.Equal(t, "Bearer ddpat-0005", got[0].Get("Authorization"))

	// httpbin echoed the headers: the record holds none of the values.
	b, _ := json.Marshal(rec)
	for _, secret := range []string{"dd-api-0003", "dd-app-0004", "ddpat-0005"} {
		require.NotContains(t, string(b), secret)
	}
	require.Contains(t, string(b), auth.Redacted)
}

func TestFileCredentialRotation(t *testing.T) {
	t.Parallel()
	e := setup(t)
	path := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(path, []byte("file-token-one\n"), 0o600))
	e.putCred(t, "rotating", "bin-bearer", map[string]string{"token": "file:" + path})

	id1 := "rot1-" + uid()
	rec := e.run(t, &tasks.Call{Integration: "bin-bearer", Method: "GET", Path: "/bearer", Credential: "rotating",
		Headers: map[string]string{"X-Test-ID": id1}})
	require.Equal(t, tasks.StatusSucceeded, rec.Status)
	require.Equal(t, "Bearer file-token-one", e.up.headers(id1)[0].Get("Authorization"))

	require.NoError(t, os.WriteFile(path, []byte("file-token-two\n"), 0o600))
	id2 := "rot2-" + uid()
	rec = e.run(t, &tasks.Call{Integration: "bin-bearer", Method: "GET", Path: "/bearer", Credential: "rotating",
		Headers: map[string]string{"X-Test-ID": id2}})
	require.Equal(t, tasks.StatusSucceeded, rec.Status)
	require.Equal(t, "Bearer file-token-two", e.up.headers(id2)[0].Get("Authorization"), "the rotated file took effect on the next call")
}

func TestCredentialProblemsFailClearly(t *testing.T) {
	t.Parallel()
	e := setup(t)
	rec := e.run(t, &tasks.Call{Integration: "bin-bearer", Method: "GET", Path: "/bearer", Credential: "nope"})
	require.Equal(t, tasks.StatusFailed, rec.Status)
	require.Equal(t, tasks.KindCredential, rec.Error.Kind)
	require.Contains(t, rec.Error.Message, `"nope" does not exist`)

	e.putCred(t, "dd-only", "dd", map[string]string{"api_key": "a-key-value", "app_key": "b-key-value"})
	rec = e.run(t, &tasks.Call{Integration: "bin-bearer", Method: "GET", Path: "/bearer", Credential: "dd-only"})
	require.Equal(t, tasks.StatusFailed, rec.Status)
	require.Equal(t, tasks.KindCredential, rec.Error.Kind)
	require.Contains(t, rec.Error.Message, `belongs to integration "dd"`)

	// Another tenant's credential of the same name is never used.
	_, err := e.creds.Put(context.Background(), "other", "theirs", "bin-bearer", map[string]string{"token": "other-tenant-token"})
	require.NoError(t, err)
	rec = e.run(t, &tasks.Call{Integration: "bin-bearer", Method: "GET", Path: "/bearer", Credential: "theirs"})
	require.Equal(t, tasks.StatusFailed, rec.Status)
	require.Equal(t, tasks.KindCredential, rec.Error.Kind)

	// An env: source the worker does not have fails the call, naming the
	// variable.
	e.putCred(t, "env-missing", "bin-bearer", map[string]string{"token": "env:TEST_SURELY_UNSET_VAR_7F"})
	rec = e.run(t, &tasks.Call{Integration: "bin-bearer", Method: "GET", Path: "/bearer", Credential: "env-missing"})
	require.Equal(t, tasks.StatusFailed, rec.Status)
	require.Equal(t, tasks.KindCredential, rec.Error.Kind)
	require.Contains(t, rec.Error.Message, "TEST_SURELY_UNSET_VAR_7F")
	require.Equal(t, 1, rec.Attempts, "a credential error is not retried")
}

func TestWaitWokenByCompletion(t *testing.T) {
	t.Parallel()
	e := setup(t)
	call := &tasks.Call{Integration: "bin", Method: "GET", Path: "/delay/1", CorrelationID: "wait-" + uid()}
	_, err := e.client.Enqueue(context.Background(), call)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rec, err := e.client.Wait(ctx, call.CorrelationID)
	require.NoError(t, err, "woken by the completion, not by the deadline")
	require.Equal(t, tasks.StatusSucceeded, rec.Status)
	require.NotNil(t, rec.CompletedAt)
}

func TestCancelQueued(t *testing.T) {
	t.Parallel()
	e := setup(t)
	call := &tasks.Call{Integration: "bin", Method: "GET", Path: "/anything/cancel-queued", CorrelationID: "cancel-q-" + uid(),
		Headers: map[string]string{"X-Test-ID": "cancel-queued"}}
	_, err := e.client.Enqueue(context.Background(), call, producer.WithDelay(1500*time.Millisecond))
	require.NoError(t, err)
	rec, err := e.client.Cancel(context.Background(), call.CorrelationID)
	require.NoError(t, err)
	require.Equal(t, tasks.StatusCanceled, rec.Status)
	_, err = e.inspector().GetTaskInfo("default", tasks.TaskID("acme", call.CorrelationID))
	require.ErrorIs(t, err, asynq.ErrTaskNotFound, "nothing is left to run")
	// The positive control: the same call, queued after it with the same
	// delay and not canceled, reaches the upstream; by then the canceled
	// one would have.
	control := *call
	control.CorrelationID, control.Headers = "cancel-q-control-"+uid(), map[string]string{"X-Test-ID": "cancel-queued-control"}
	_, err = e.client.Enqueue(context.Background(), &control, producer.WithDelay(1500*time.Millisecond))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(e.up.headers("cancel-queued-control")) > 0 }, 30*time.Second, 20*time.Millisecond)
	require.Empty(t, e.up.headers("cancel-queued"), "a canceled call never reaches the upstream")
	rec, err = e.client.Get(context.Background(), call.CorrelationID)
	require.NoError(t, err)
	require.Equal(t, tasks.StatusCanceled, rec.Status)
	_, err = e.client.Cancel(context.Background(), call.CorrelationID)
	require.ErrorIs(t, err, producer.ErrFinished)
}

func TestCancelRunning(t *testing.T) {
	t.Parallel()
	e := setup(t)
	call := &tasks.Call{Integration: "bin", Method: "GET", Path: "/delay/4", CorrelationID: "cancel-r-" + uid(),
		Timeout: tasks.Duration(5 * time.Second)}
	_, err := e.client.Enqueue(context.Background(), call)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		rec, err := e.client.Get(context.Background(), call.CorrelationID)
		return err == nil && rec.Status == tasks.StatusRunning
	}, 10*time.Second, 20*time.Millisecond)
	rec, err := e.client.Cancel(context.Background(), call.CorrelationID)
	require.NoError(t, err)
	require.Equal(t, tasks.StatusCanceled, rec.Status)
	require.Contains(t, rec.Error.Message, "may have received")
	// Once the attempt's handler has returned, whatever it wrote is written.
	taskID := tasks.TaskID("acme", call.CorrelationID)
	require.Eventually(t, func() bool {
		info, err := e.inspector().GetTaskInfo("default", taskID)
		return err != nil || info.State != asynq.TaskStateActive
	}, 30*time.Second, 20*time.Millisecond, "the canceled attempt never ended")
	rec, err = e.client.Get(context.Background(), call.CorrelationID)
	require.NoError(t, err)
	require.Equal(t, tasks.StatusCanceled, rec.Status, "a canceled record stays canceled")
}

func TestSecretsStayOut(t *testing.T) {
	t.Parallel()
	e := setup(t)
	const bearer, queryKey = "sekrit-bearer-7f3a9c", "sekrit-query-key-51d2"
	e.putCred(t, "leak-bearer", "bin-bearer", map[string]string{"token": bearer})
	e.putCred(t, "leak-query", "bin-query", map[string]string{"key": queryKey})

	var recs []*tasks.Record
	// httpbin's /bearer and /anything echo the token and the URL back.
	recs = append(recs, e.run(t, &tasks.Call{Integration: "bin-bearer", Method: "GET", Path: "/bearer", Credential: "leak-bearer"}))
	recs = append(recs, e.run(t, &tasks.Call{Integration: "bin-bearer", Method: "GET", Path: "/status/500", Credential: "leak-bearer"}))
	recs = append(recs, e.run(t, &tasks.Call{Integration: "bin-query", Method: "GET", Path: "/anything/q", Credential: "leak-query"}))
	recs = append(recs, e.run(t, &tasks.Call{Integration: "bin-query", Method: "GET", Path: "/delay/3", Credential: "leak-query",
		Timeout: tasks.Duration(200 * time.Millisecond)}))
	require.Equal(t, tasks.StatusSucceeded, recs[0].Status)
	require.Equal(t, tasks.StatusSucceeded, recs[2].Status)
	require.Equal(t, tasks.KindTimeout, recs[3].Error.Kind)

	for _, rec := range recs {
		b, err := json.Marshal(rec)
		require.NoError(t, err)
		require.NotContains(t, string(b), bearer)
		require.NotContains(t, string(b), queryKey)
	}
	require.NotContains(t, e.logs.String(), bearer, "worker logs (debug level) hold no secret")
	require.NotContains(t, e.logs.String(), queryKey)
	require.Contains(t, e.logs.String(), `"correlation_id"`, "the logs were captured")

	dump := e.redis.SaveRDB(t)
	require.True(t, bytes.HasPrefix(dump, []byte("REDIS")))
	require.NotContains(t, string(dump), bearer, "an RDB snapshot holds no literal secret")
	require.NotContains(t, string(dump), queryKey)
}

// uid returns a short unique suffix (the random end of a UUIDv7; its start
// is a timestamp shared by calls made in the same millisecond).
func uid() string { id := tasks.NewCorrelationID(); return id[len(id)-12:] }

// A secret sealed under a key the worker's ring no longer holds fails its
// call with kind credential, saying which key, and the worker goes on.
func TestCredentialUnderRemovedKeyFailsClearly(t *testing.T) {
	t.Parallel()
	e := setup(t)
	gone, _ := auth.GenerateKey()
	ring, err := auth.ParseKeyring("retired-2025:" + gone)
	require.NoError(t, err)
	oldStore, err := auth.NewStore(e.rdb, &auth.StoreConfig{Keyring: ring})
	require.NoError(t, err)
	_, err = oldStore.Put(context.Background(), "acme", "under-old-key", "bin-bearer", map[string]string{"token": "sealed-under-retired-key"})
	require.NoError(t, err)

	rec := e.run(t, &tasks.Call{Integration: "bin-bearer", Method: "GET", Path: "/bearer", Credential: "under-old-key"})
	require.Equal(t, tasks.StatusFailed, rec.Status)
	require.Equal(t, tasks.KindCredential, rec.Error.Kind)
	require.Contains(t, rec.Error.Message, "retired-2025")
	require.Contains(t, rec.Error.Message, "CALLQ_SECRET_KEY")
	require.Equal(t, 1, rec.Attempts)

	rec = e.run(t, &tasks.Call{Integration: "bin", Method: "GET", Path: "/get"})
	require.Equal(t, tasks.StatusSucceeded, rec.Status, "the worker goes on")
}

// A first attempt writes its record as a compare-and-set on the version the
// producer created. When something else wrote the record meanwhile (a
// shutdown-interrupted run recording itself, whose task asynq requeued
// without counting a retry), the attempt is folded into the record as it is
// now: nothing recorded is lost, attempts stay numbered 1..n.
func TestFirstAttemptMergesIntoARecordThatChanged(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	id := "merge-" + uid()
	_, err := e.client.Enqueue(ctx, &tasks.Call{Integration: "bin", Method: "GET", Path: "/get", CorrelationID: id},
		producer.WithDelay(time.Second))
	require.NoError(t, err)
	_, err = e.records.Update(ctx, "acme", id, func(r *tasks.Record) error {
		r.Status = tasks.StatusRetrying
		r.History = append(r.History, tasks.Attempt{Attempt: 1, StartedAt: time.Now().UTC(), Error: "attempt interrupted: the worker shut down"})
		r.Attempts = 1
		return nil
	})
	require.NoError(t, err)

	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	rec, err := e.client.Wait(wctx, id)
	require.NoError(t, err)
	require.Equal(t, tasks.StatusSucceeded, rec.Status)
	require.Len(t, rec.History, 2, "%+v", rec.History)
	require.Equal(t, 2, rec.Attempts)
	require.Contains(t, rec.History[0].Error, "shut down")
	require.Equal(t, 2, rec.History[1].Attempt)
	require.Equal(t, 200, rec.History[1].Status)
}

// When asynq would archive a call's task instead of retrying it (its
// retries spent on runs that made no attempt, or a catalog that allows more
// attempts than the one that queued it), the worker fails the call instead
// of leaving its record retrying forever.
func TestRetriesSpentFailsTheCall(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	call := &tasks.Call{Integration: "bin", Method: "GET", Path: "/status/503", CorrelationID: "spent-" + uid()}
	in, err := call.Normalize(e.catalog, nil)
	require.NoError(t, err)
	rec := tasks.NewRecord("acme", call, in, time.Now())
	task, err := tasks.NewCallTask(rec, call, in)
	require.NoError(t, err)
	err = e.records.Create(ctx, rec, call.Fingerprint(), 0, task.Payload())
	require.NoError(t, err)
	q := asynq.NewClientFromRedisClient(e.rdb)
	_, err = q.Enqueue(task, asynq.MaxRetry(0)) // as if every retry was spent
	require.NoError(t, err)

	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	got, err := e.client.Wait(wctx, call.CorrelationID)
	require.NoError(t, err, "the record must not stay retrying")
	require.Equal(t, tasks.StatusFailed, got.Status)
	require.Equal(t, 1, got.Attempts)
	require.Contains(t, got.Error.Message, "retries are spent")
}

// A fleet-wide rate limit holds calls back without spending their attempts:
// 6 calls at once under 2 per second (burst 2) cannot all reach the
// upstream in under 2 seconds, and each succeeds on its first attempt.
func TestRateLimitHoldsCallsWithoutSpendingAttempts(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	id := "ratelimit-" + uid()
	ids := make([]string, 6)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%d", id, i)
		_, err := e.client.Enqueue(ctx, &tasks.Call{Integration: "limited", Method: "GET", Path: "/anything/rl",
			CorrelationID: ids[i], Headers: map[string]string{"X-Test-ID": id}})
		require.NoError(t, err)
	}
	// The last call cannot go before 2s: meanwhile its record says why it
	// waits, and when it will try again.
	require.Eventually(t, func() bool {
		rec, err := e.client.Get(ctx, ids[5])
		return err == nil && rec.Status == tasks.StatusRetrying && rec.NextAttemptAt != nil &&
			rec.Note == "waiting for the fleet-wide rate limit of 2 per 1s" && rec.Attempts == 0
	}, 10*time.Second, 5*time.Millisecond, "a held call shows retrying with a note")
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, cid := range ids {
		rec, err := e.client.Wait(wctx, cid)
		require.NoError(t, err)
		require.Equal(t, tasks.StatusSucceeded, rec.Status)
		require.Equal(t, 1, rec.Attempts, "waiting for the limit spends no attempt")
		require.Empty(t, rec.Note, "the attempt clears the note")
		require.Nil(t, rec.NextAttemptAt)
	}
	got := e.up.headers(id)
	require.Len(t, got, 6)
	var first, last time.Time
	for _, cid := range ids {
		rec, err := e.client.Get(ctx, cid)
		require.NoError(t, err)
		at := rec.History[0].StartedAt
		if first.IsZero() || at.Before(first) {
			first = at
		}
		if at.After(last) {
			last = at
		}
	}
	// GCRA, 2 per second with a burst of 2: the 6th request is allowed 2s
	// after the first at the earliest.
	require.GreaterOrEqual(t, last.Sub(first), 1900*time.Millisecond, "the limit held the calls back")
}
