package worker_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/redistest"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

// failingUpstream answers 503 while failing is set, and to the bearer token
// "bad-token" always; 200 otherwise. It counts the requests it receives.
type failingUpstream struct {
	*httptest.Server
	failing  atomic.Bool
	requests atomic.Int64
	// inFlight and maxInFlight count the requests being answered to
	// /slow, which takes 50ms.
	inFlight, maxInFlight atomic.Int64
}

func newFailingUpstream(t *testing.T) *failingUpstream {
	u := &failingUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.requests.Add(1)
		if r.URL.Path == "/slow" {
			n := u.inFlight.Add(1)
			defer u.inFlight.Add(-1)
			for {
				m := u.maxInFlight.Load()
				if n <= m || u.maxInFlight.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(50 * time.Millisecond) // a slow upstream, on purpose
		}
		if u.failing.Load() || r.Header.Get("Authorization") == "Bearer bad-token" {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ok":true}`)
	}))
	t.Cleanup(u.Close)
	return u
}

// circuitEnv is a redis-server, the failing upstream and a worker with
// metrics, for the circuit breaker's tests.
type circuitEnv struct {
	rdb     *redis.Client
	up      *failingUpstream
	creds   *auth.Store
	records *tasks.Store
	clients map[string]*producer.Client // by tenant
	reg     *prometheus.Registry
	logs    *syncBuffer
}

func setupCircuit(t *testing.T) *circuitEnv {
	t.Helper()
	e := &circuitEnv{up: newFailingUpstream(t), reg: prometheus.NewRegistry(), logs: &syncBuffer{}, clients: map[string]*producer.Client{}}
	e.rdb = redistest.Start(t).Client(t)
	cat, err := tasks.ParseCatalog(fmt.Appendf(nil, `
integrations:
  flaky:
    base_url: %[1]s
    retry: {max_attempts: 10, initial_interval: 50ms, max_interval: 100ms, max_elapsed: 1m}
    circuit_breaker: {failures: 3, window: 1m, cooldown: 300ms}
  per-cred:
    base_url: %[1]s
    auth: {type: bearer}
    retry: {max_attempts: 3, initial_interval: 50ms, max_interval: 100ms, max_elapsed: 1m}
    circuit_breaker: {failures: 2, window: 1m, cooldown: 300ms, per: credential}
  guarded:
    base_url: %[1]s
    retry: {max_attempts: 15, initial_interval: 50ms, max_interval: 100ms, max_elapsed: 1m}
    circuit_breaker: {failures: 2, window: 1m, cooldown: 300ms}
    concurrency: 1
    rate_limit: {requests: 1000, per: 1s}
`, e.up.URL))
	require.NoError(t, err)
	key, _ := auth.GenerateKey()
	ring, err := auth.ParseKeyring(key)
	require.NoError(t, err)
	e.creds, err = auth.NewStore(e.rdb, &auth.StoreConfig{Keyring: ring})
	require.NoError(t, err)
	e.records, err = tasks.NewStore(e.rdb, nil)
	require.NoError(t, err)
	t.Cleanup(func() { e.records.Close() })
	for _, tenant := range []string{"acme", "globex"} {
		e.clients[tenant], err = producer.NewClient(e.rdb, tenant, &producer.Config{Catalog: cat, Records: e.records})
		require.NoError(t, err)
	}
	m, err := worker.NewMetrics(e.reg)
	require.NoError(t, err)
	log := zerolog.New(e.logs)
	w, err := worker.New(e.rdb, &worker.Config{Catalog: cat, Records: e.records, Credentials: e.creds, Keyring: ring,
		Concurrency: 10, Logger: &log, Metrics: m, ReconcileInterval: worker.ReconcileOff})
	require.NoError(t, err)
	require.NoError(t, w.Start())
	t.Cleanup(w.Shutdown)
	return e
}

// gauge reads callq_circuit_state of integration.
func (e *circuitEnv) gauge(t *testing.T, integration string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "callq_circuit_state" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == integration {
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no callq_circuit_state{integration=%q}", integration)
	return 0
}

func (e *circuitEnv) changes(t *testing.T, integration, to string) int {
	t.Helper()
	n, err := e.reg.Gather()
	require.NoError(t, err)
	for _, mf := range n {
		if mf.GetName() != "callq_circuit_changes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["integration"] == integration && labels["to"] == to {
				return int(m.GetCounter().GetValue())
			}
		}
	}
	return 0
}

func (e *circuitEnv) enqueue(t *testing.T, tenant string, n int, call tasks.Call) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		c := call
		c.CorrelationID = fmt.Sprintf("%s-%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), uid(), i)
		_, err := e.clients[tenant].Enqueue(t.Context(), &c)
		require.NoError(t, err)
		ids[i] = c.CorrelationID
	}
	return ids
}

func (e *circuitEnv) wait(t *testing.T, tenant string, ids []string) []*tasks.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var recs []*tasks.Record
	for _, id := range ids {
		rec, err := e.clients[tenant].Wait(ctx, id)
		require.NoError(t, err, "call %s did not finish: %+v", id, rec)
		recs = append(recs, rec)
	}
	return recs
}

var openNote = regexp.MustCompile(`^circuit open for "flaky": [0-9]+ consecutive failures; next probe at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`)

// An upstream that fails opens the circuit: the calls wait without
// spending attempts, their records saying why, one probe a cooldown reaches
// the upstream, and when it heals the probe closes the circuit and every
// call succeeds. The metrics and the log show each change.
func TestCircuitBreakerHoldsCallsWhileTheUpstreamFails(t *testing.T) {
	t.Parallel()
	e := setupCircuit(t)
	require.Zero(t, e.gauge(t, "flaky"), "the gauge shows closed before any call")
	e.up.failing.Store(true)
	ids := e.enqueue(t, "acme", 6, tasks.Call{Integration: "flaky", Method: "GET", Path: "/x"})

	require.Eventually(t, func() bool { return e.changes(t, "flaky", "open") >= 1 }, 20*time.Second, 5*time.Millisecond,
		"three failures open the circuit")
	// A held call shows retrying, with a note saying why and when.
	require.Eventually(t, func() bool {
		for _, id := range ids {
			rec, err := e.clients["acme"].Get(t.Context(), id)
			require.NoError(t, err)
			if rec.Status == tasks.StatusRetrying && openNote.MatchString(rec.Note) && rec.NextAttemptAt != nil {
				return true
			}
		}
		return false
	}, 20*time.Second, 5*time.Millisecond, "a held call's record has the circuit's note")
	require.Equal(t, float64(2), e.gauge(t, "flaky"), "the gauge shows open")
	// Probes fail and open it again: one request a cooldown.
	require.Eventually(t, func() bool { return e.changes(t, "flaky", "half_open") >= 3 }, 20*time.Second, 5*time.Millisecond,
		"probes go through, once a cooldown")
	whileOpen := e.up.requests.Load()
	probes := e.changes(t, "flaky", "half_open")
	require.LessOrEqual(t, whileOpen, int64(len(ids)+probes+3),
		"the upstream saw the first attempts and a probe a cooldown, not every call's retries")

	e.up.failing.Store(false)
	recs := e.wait(t, "acme", ids)
	attempts := 0
	for _, rec := range recs {
		require.Equal(t, tasks.StatusSucceeded, rec.Status, "no call fails because of the open circuit: %+v", rec.Error)
		require.Empty(t, rec.Note)
		attempts += rec.Attempts
	}
	require.Equal(t, e.up.requests.Load(), int64(attempts), "every attempt is a request: waiting spends none")
	require.Zero(t, e.gauge(t, "flaky"), "closed again")
	require.Equal(t, 1, e.changes(t, "flaky", "closed"))

	logs := e.logs.String()
	require.Regexp(t, `"level":"warn"[^\n]*"integration":"flaky"[^\n]*"from":"closed","to":"open","failures":3[^\n]*"message":"circuit open: consecutive failures"`, logs)
	require.Regexp(t, `"level":"warn"[^\n]*"from":"half_open","to":"open"[^\n]*"message":"circuit open again: the probe call failed"`, logs)
	require.Regexp(t, `"level":"info"[^\n]*"from":"half_open","to":"closed"[^\n]*"message":"circuit closed: the probe call was answered"`, logs)
	require.Regexp(t, `"level":"info"[^\n]*"from":"open","to":"half_open"[^\n]*"message":"circuit half-open: this call is its probe"`, logs)
}

// Tenants have their own circuits, and so do credentials when the breaker
// is per credential: a failing credential's calls wait (and fail, after
// their attempts, of the upstream's 503, never of the circuit), the
// others' go at once.
func TestCircuitBreakerPerTenantAndCredential(t *testing.T) {
	t.Parallel()
	e := setupCircuit(t)
	ctx := t.Context()
	_, err := e.creds.Put(ctx, "acme", "bad", "per-cred", map[string]string{"token": "bad-token"})
	require.NoError(t, err)
	_, err = e.creds.Put(ctx, "acme", "good", "per-cred", map[string]string{"token": "good-token"})
	require.NoError(t, err)

	bad := e.enqueue(t, "acme", 3, tasks.Call{Integration: "per-cred", Method: "GET", Path: "/x", Credential: "bad"})
	require.Eventually(t, func() bool { return e.changes(t, "per-cred", "open") >= 1 }, 20*time.Second, 5*time.Millisecond)
	require.Equal(t, float64(2), e.gauge(t, "per-cred"))

	// Another credential's circuit is closed.
	good := e.wait(t, "acme", e.enqueue(t, "acme", 2, tasks.Call{Integration: "per-cred", Method: "GET", Path: "/x", Credential: "good"}))
	for _, rec := range good {
		require.Equal(t, tasks.StatusSucceeded, rec.Status)
		require.Equal(t, 1, rec.Attempts)
	}

	// So is another tenant's circuit of an integration per integration.
	e.up.failing.Store(true)
	acme := e.enqueue(t, "acme", 3, tasks.Call{Integration: "flaky", Method: "GET", Path: "/x"})
	require.Eventually(t, func() bool { return e.changes(t, "flaky", "open") >= 1 }, 20*time.Second, 5*time.Millisecond)
	e.up.failing.Store(false)
	globex := e.wait(t, "globex", e.enqueue(t, "globex", 2, tasks.Call{Integration: "flaky", Method: "GET", Path: "/x"}))
	for _, rec := range globex {
		require.Equal(t, tasks.StatusSucceeded, rec.Status)
		require.Equal(t, 1, rec.Attempts, "acme's open circuit does not hold globex's calls")
	}
	for _, rec := range e.wait(t, "acme", acme) {
		require.Equal(t, tasks.StatusSucceeded, rec.Status)
	}

	for _, rec := range e.wait(t, "acme", bad) {
		require.Equal(t, tasks.StatusFailed, rec.Status)
		require.Equal(t, tasks.KindHTTPStatus, rec.Error.Kind, "the upstream's failure, not the circuit's")
		require.Equal(t, "upstream answered 503 Service Unavailable (after 3 attempts)", rec.Error.Message)
		require.Equal(t, 3, rec.Attempts)
	}
	require.Equal(t, float64(2), e.gauge(t, "per-cred"), "the bad credential's circuit stays open")
}

// The circuit breaker before a concurrency cap and a rate limit: the three
// gates together hold the calls while the circuit is open and one at a
// time after, and every call succeeds once the upstream heals, each
// attempt one request.
func TestCircuitBreakerWithConcurrencyAndRateLimit(t *testing.T) {
	t.Parallel()
	e := setupCircuit(t)
	e.up.failing.Store(true)
	ids := e.enqueue(t, "acme", 4, tasks.Call{Integration: "guarded", Method: "GET", Path: "/slow"})
	require.Eventually(t, func() bool { return e.changes(t, "guarded", "half_open") >= 2 }, 30*time.Second, 5*time.Millisecond,
		"the circuit opens and probes")
	e.up.failing.Store(false)
	attempts := 0
	for _, rec := range e.wait(t, "acme", ids) {
		require.Equal(t, tasks.StatusSucceeded, rec.Status, "%+v", rec.Error)
		attempts += rec.Attempts
	}
	require.Equal(t, e.up.requests.Load(), int64(attempts), "every attempt is a request")
	require.Equal(t, int64(1), e.up.maxInFlight.Load(), "the cap held: one request in flight at a time")
	require.Zero(t, e.gauge(t, "guarded"))
}
