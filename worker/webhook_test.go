package worker_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/redistest"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

// webhookSecret is the workers' CALLQ_WEBHOOK_SECRET (the Standard Webhooks
// test vector's); receivers of tenant acme verify with acmeSecret, derived
// from it.
const webhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

var acmeSecret = func() string {
	ws, err := auth.ParseWebhookSecrets(webhookSecret)
	if err != nil {
		panic(err)
	}
	return ws.ForTenant("acme").Secrets()[0]
}()

// delivery is one POST a receiver got.
type delivery struct {
	headers http.Header
	body    []byte
	at      time.Time
}

// receiver is a real webhook receiver on loopback that answers from a
// script of statuses (the last repeats).
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	got      []delivery
	statuses []int
}

func newReceiver(t *testing.T, statuses ...int) *receiver {
	r := &receiver{statuses: statuses}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, delivery{headers: req.Header.Clone(), body: body, at: time.Now()})
		status := r.statuses[min(len(r.got), len(r.statuses))-1]
		r.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) deliveries() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.got...)
}

// hookEnv is a worker that signs webhooks and may reach loopback receivers,
// with a short redelivery schedule.
type hookEnv struct {
	rdb     *redis.Client
	client  *producer.Client
	records *tasks.Store
	catalog *tasks.Catalog
}

// setupHooks starts the environment; opts change the worker's Config.
func setupHooks(t *testing.T, allowPrivateWorker bool, opts ...func(*worker.Config)) *hookEnv {
	t.Helper()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(time.Second)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(up.Close)
	cat, err := tasks.ParseCatalog([]byte("integrations:\n  up:\n    base_url: " + up.URL + "\n"))
	require.NoError(t, err)
	key, _ := auth.GenerateKey()
	ring, err := auth.ParseKeyring(key)
	require.NoError(t, err)
	creds, err := auth.NewStore(rdb, &auth.StoreConfig{Keyring: ring})
	require.NoError(t, err)
	records, err := tasks.NewStore(rdb, nil)
	require.NoError(t, err)
	t.Cleanup(func() { records.Close() })
	client, err := producer.NewClient(rdb, "acme", &producer.Config{Catalog: cat, Records: records,
		WebhooksEnabled: true, WebhookAllowPrivate: true})
	require.NoError(t, err)
	secrets, err := auth.ParseWebhookSecrets(webhookSecret)
	require.NoError(t, err)
	log := zerolog.Nop()
	cfg := &worker.Config{Catalog: cat, Records: records, Credentials: creds, Keyring: ring,
		Concurrency: 10, Logger: &log, ShutdownTimeout: time.Second,
		WebhookSecrets: secrets, WebhookAllowPrivate: allowPrivateWorker,
		WebhookSchedule: []time.Duration{100 * time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond}}
	for _, o := range opts {
		o(cfg)
	}
	w, err := worker.New(rdb, cfg)
	require.NoError(t, err)
	require.NoError(t, w.Start())
	t.Cleanup(w.Shutdown)
	return &hookEnv{rdb: rdb, client: client, records: records, catalog: cat}
}

func (e *hookEnv) webhookState(t *testing.T, id string, want string) *tasks.Record {
	t.Helper()
	var rec *tasks.Record
	require.Eventually(t, func() bool {
		var err error
		rec, err = e.client.Get(context.Background(), id)
		return err == nil && rec.Webhook != nil && rec.Webhook.Status == want
	}, 20*time.Second, 20*time.Millisecond, "webhook state never became %s: %+v", want, rec)
	return rec
}

// verifyIndependently checks a delivery's signature with HMAC-SHA256 written
// out here, not with callq's own code.
func verifyIndependently(t *testing.T, d delivery) {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(acmeSecret, "whsec_"))
	require.NoError(t, err)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(d.headers.Get("webhook-id") + "." + d.headers.Get("webhook-timestamp") + "."))
	mac.Write(d.body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	require.Contains(t, strings.Fields(d.headers.Get("webhook-signature")), want)
	ts, err := strconv.ParseInt(d.headers.Get("webhook-timestamp"), 10, 64)
	require.NoError(t, err)
	require.InDelta(t, time.Now().Unix(), ts, 60, "the timestamp is of this attempt, in seconds")
	require.NoError(t, producer.VerifyWebhook(acmeSecret, d.headers, d.body))
	require.ErrorIs(t, producer.VerifyWebhook(webhookSecret, d.headers, d.body), producer.ErrWebhookSignature,
		"deliveries are signed with the tenant's secret, not the master")
}

func TestWebhookDeliveredSigned(t *testing.T) {
	t.Parallel()
	e := setupHooks(t, true)
	r := newReceiver(t, 204)
	_, err := e.client.Enqueue(context.Background(), &tasks.Call{Integration: "up", Method: "GET", Path: "/ok",
		CorrelationID: "hook-ok", Webhook: &tasks.Webhook{URL: r.URL + "/hooks/callq"}})
	require.NoError(t, err)
	rec := e.webhookState(t, "hook-ok", tasks.WebhookDelivered)
	require.Equal(t, 1, rec.Webhook.Attempts)
	require.NotNil(t, rec.Webhook.DeliveredAt)
	require.Equal(t, 204, rec.Webhook.LastStatus)

	got := r.deliveries()
	require.Len(t, got, 1)
	verifyIndependently(t, got[0])
	require.True(t, strings.HasPrefix(got[0].headers.Get("webhook-id"), "msg_"))
	require.Equal(t, "application/json", got[0].headers.Get("Content-Type"))
	var ev producer.WebhookEvent
	require.NoError(t, json.Unmarshal(got[0].body, &ev))
	require.Equal(t, "call.succeeded", ev.Type)
	require.Equal(t, "hook-ok", ev.Data.CorrelationID)
	require.Equal(t, tasks.StatusSucceeded, ev.Data.Status)
	require.Equal(t, 200, ev.Data.Response.Status)
	require.JSONEq(t, `{"ok":true}`, string(ev.Data.Response.Body))
	require.WithinDuration(t, *ev.Data.CompletedAt, ev.Timestamp, time.Second)
}

func TestWebhookRedeliveredWithSameID(t *testing.T) {
	t.Parallel()
	e := setupHooks(t, true)
	r := newReceiver(t, 500, 200)
	_, err := e.client.Enqueue(context.Background(), &tasks.Call{Integration: "up", Method: "GET", Path: "/status/404",
		CorrelationID: "hook-retry", Webhook: &tasks.Webhook{URL: r.URL}})
	require.NoError(t, err)
	rec := e.webhookState(t, "hook-retry", tasks.WebhookDelivered)
	require.Equal(t, 2, rec.Webhook.Attempts)
	got := r.deliveries()
	require.Len(t, got, 2)
	require.Equal(t, got[0].headers.Get("webhook-id"), got[1].headers.Get("webhook-id"), "one id per event")
	require.Equal(t, got[0].body, got[1].body, "the same event")
	verifyIndependently(t, got[0])
	verifyIndependently(t, got[1])

	// A redelivery on request: the same event again.
	_, err = e.client.RedeliverWebhook(context.Background(), "hook-retry")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(r.deliveries()) == 3 }, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, got[0].headers.Get("webhook-id"), r.deliveries()[2].headers.Get("webhook-id"))
	e.webhookState(t, "hook-retry", tasks.WebhookDelivered)

	// That redelivery is done, so another may be queued: asynq frees its
	// task ID once the handler has returned, a moment after the record
	// says delivered.
	require.Eventually(t, func() bool {
		_, err := e.client.RedeliverWebhook(context.Background(), "hook-retry")
		require.True(t, err == nil || errors.Is(err, producer.ErrRedeliveryPending), "%v", err)
		return err == nil
	}, 10*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool { return len(r.deliveries()) == 4 }, 10*time.Second, 20*time.Millisecond)
	e.webhookState(t, "hook-retry", tasks.WebhookDelivered)
}

// A redelivery waiting for its retry is pending: another is refused with
// ErrRedeliveryPending until it has given up, then one may be queued again.
func TestWebhookRedeliveryPendingRefusesAnother(t *testing.T) {
	t.Parallel()
	e := setupHooks(t, true)
	var mu sync.Mutex
	n := 0
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		n++
		switch n {
		case 1: // the first delivery
			w.WriteHeader(http.StatusOK)
		case 2: // the redelivery, told to come back in 3s
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(http.StatusServiceUnavailable)
		default: // its retry, and later ones: the receiver gives up
			w.WriteHeader(http.StatusGone)
		}
	}))
	t.Cleanup(recv.Close)
	deliveries := func() int { mu.Lock(); defer mu.Unlock(); return n }
	ctx := context.Background()
	_, err := e.client.Enqueue(ctx, &tasks.Call{Integration: "up", Method: "GET", Path: "/x",
		CorrelationID: "hook-busy", Webhook: &tasks.Webhook{URL: recv.URL}})
	require.NoError(t, err)
	e.webhookState(t, "hook-busy", tasks.WebhookDelivered)

	_, err = e.client.RedeliverWebhook(ctx, "hook-busy")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return deliveries() == 2 }, 10*time.Second, 20*time.Millisecond)
	_, err = e.client.RedeliverWebhook(ctx, "hook-busy")
	require.ErrorIs(t, err, producer.ErrRedeliveryPending, "the redelivery waits for its retry")

	rec := e.webhookState(t, "hook-busy", tasks.WebhookFailed)
	require.Equal(t, 2, rec.Webhook.Attempts)
	require.Equal(t, 3, deliveries())
	require.Eventually(t, func() bool {
		_, err := e.client.RedeliverWebhook(ctx, "hook-busy")
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "a redelivery that gave up is no longer pending")
	require.Eventually(t, func() bool { return deliveries() == 4 }, 10*time.Second, 20*time.Millisecond)
}

func TestWebhookGoneStops(t *testing.T) {
	t.Parallel()
	e := setupHooks(t, true)
	r := newReceiver(t, 410)
	_, err := e.client.Enqueue(context.Background(), &tasks.Call{Integration: "up", Method: "GET", Path: "/x",
		CorrelationID: "hook-gone", Webhook: &tasks.Webhook{URL: r.URL}})
	require.NoError(t, err)
	rec := e.webhookState(t, "hook-gone", tasks.WebhookFailed)
	require.Equal(t, 410, rec.Webhook.LastStatus)
	require.Contains(t, *rec.Webhook.LastError, "410")
	time.Sleep(1500 * time.Millisecond) // past any retry the schedule could make
	require.Len(t, r.deliveries(), 1, "410 is delivered once")

	// The positive control: a delivery made now is seen, once.
	_, err = e.client.RedeliverWebhook(context.Background(), "hook-gone")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(r.deliveries()) == 2 }, 30*time.Second, 20*time.Millisecond)
	e.webhookState(t, "hook-gone", tasks.WebhookFailed)
	time.Sleep(1500 * time.Millisecond)
	require.Len(t, r.deliveries(), 2, "a redelivery answered 410 is not retried either")
}

func TestWebhookGivesUpAfterSchedule(t *testing.T) {
	t.Parallel()
	e := setupHooks(t, true)
	r := newReceiver(t, 503)
	_, err := e.client.Enqueue(context.Background(), &tasks.Call{Integration: "up", Method: "GET", Path: "/x",
		CorrelationID: "hook-down", Webhook: &tasks.Webhook{URL: r.URL}})
	require.NoError(t, err)
	rec := e.webhookState(t, "hook-down", tasks.WebhookFailed)
	require.Equal(t, 4, rec.Webhook.Attempts, "the first delivery and one per schedule entry")
	require.Len(t, r.deliveries(), 4)
	require.Contains(t, *rec.Webhook.LastError, "503")
}

func TestWebhookRefusesLoopbackWithoutFlag(t *testing.T) {
	t.Parallel()
	e := setupHooks(t, false)
	r := newReceiver(t, 200)
	port := r.URL[strings.LastIndex(r.URL, ":")+1:]
	// The API let it through (as it would a DNS name); the worker checks the
	// address it dials.
	_, err := e.client.Enqueue(context.Background(), &tasks.Call{Integration: "up", Method: "GET", Path: "/x",
		CorrelationID: "hook-private", Webhook: &tasks.Webhook{URL: "http://localhost:" + port + "/hook"}})
	require.NoError(t, err)
	rec := e.webhookState(t, "hook-private", tasks.WebhookFailed)
	require.Contains(t, *rec.Webhook.LastError, "loopback")
	require.Empty(t, r.deliveries())
}

func TestWebhookOnCancel(t *testing.T) {
	t.Parallel()
	e := setupHooks(t, true)
	r := newReceiver(t, 200)
	_, err := e.client.Enqueue(context.Background(), &tasks.Call{Integration: "up", Method: "GET", Path: "/x",
		CorrelationID: "hook-cancel", Webhook: &tasks.Webhook{URL: r.URL}}, producer.WithDelay(time.Hour))
	require.NoError(t, err)
	_, err = e.client.Cancel(context.Background(), "hook-cancel")
	require.NoError(t, err)
	e.webhookState(t, "hook-cancel", tasks.WebhookDelivered)
	var ev producer.WebhookEvent
	require.NoError(t, json.Unmarshal(r.deliveries()[0].body, &ev))
	require.Equal(t, "call.canceled", ev.Type)
}

// A worker that wrote the terminal record and died before queueing the
// webhook leaves its call task to be run again; that run finds the record
// finished and queues the webhook.
func TestWebhookQueuedAfterCrashBetweenCompletionAndWebhook(t *testing.T) {
	t.Parallel()
	e := setupHooks(t, true)
	r := newReceiver(t, 200)
	ctx := context.Background()
	_, err := e.client.Enqueue(ctx, &tasks.Call{Integration: "up", Method: "GET", Path: "/x",
		CorrelationID: "hook-crash", Webhook: &tasks.Webhook{URL: r.URL}}, producer.WithDelay(2*time.Second))
	require.NoError(t, err)
	// What the dead worker did: mark the attempt, write the outcome.
	begun, err := e.records.Begin(ctx, "acme", "hook-crash", tasks.RunMarker{Attempt: 1, StartedAt: time.Now(), Worker: "dead"})
	require.NoError(t, err)
	rec := begun.Record
	now := time.Now().UTC()
	rec.Status, rec.StartedAt, rec.CompletedAt = tasks.StatusSucceeded, &now, &now
	rec.History = []tasks.Attempt{{Attempt: 1, StartedAt: now, Status: 200}}
	rec.Attempts, rec.Response = 1, &tasks.Response{Status: 200, Headers: map[string]string{}}
	require.NoError(t, e.records.Write(ctx, rec, begun.Version))
	require.Empty(t, r.deliveries())

	e.webhookState(t, "hook-crash", tasks.WebhookDelivered)
	require.Len(t, r.deliveries(), 1)
	verifyIndependently(t, r.deliveries()[0])
}

func TestWebhookURLRefusedAtEnqueue(t *testing.T) {
	t.Parallel()
	e := setupHooks(t, true)
	strict, err := producer.NewClient(e.rdb, "acme", &producer.Config{Catalog: e.catalog, WebhooksEnabled: true})
	require.NoError(t, err)
	disabled, err := producer.NewClient(e.rdb, "acme", &producer.Config{Catalog: e.catalog})
	require.NoError(t, err)
	for _, url := range []string{"ftp://x.example/hook", "not a url", "http://", "/relative"} {
		_, err := strict.Enqueue(context.Background(), &tasks.Call{Integration: "up", Method: "GET", Path: "/x", Webhook: &tasks.Webhook{URL: url}})
		var fe *tasks.FieldError
		require.ErrorAs(t, err, &fe, url)
		require.Equal(t, "webhook.url", fe.Field)
	}
	for _, url := range []string{"http://127.0.0.1/h", "http://10.0.0.1/h", "http://169.254.169.254/latest", "http://[::1]/h", "http://localhost:9/h"} {
		_, err := strict.Enqueue(context.Background(), &tasks.Call{Integration: "up", Method: "GET", Path: "/x", Webhook: &tasks.Webhook{URL: url}})
		var fe *tasks.FieldError
		require.ErrorAs(t, err, &fe, url)
		require.Equal(t, "webhook.url", fe.Field)
	}
	_, err = disabled.Enqueue(context.Background(), &tasks.Call{Integration: "up", Method: "GET", Path: "/x", Webhook: &tasks.Webhook{URL: "https://svc.example/hook"}})
	var fe *tasks.FieldError
	require.ErrorAs(t, err, &fe)
	require.Contains(t, fe.Message, "CALLQ_WEBHOOK_SECRET")
}
