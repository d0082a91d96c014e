package producer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/redistest"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

func ExampleClient_Enqueue() {
	ctx := context.Background()
	rdb := exampleRedis() // redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer rdb.Close()
	cat, err := tasks.ParseCatalog([]byte(`
integrations:
  github:
    base_url: https://api.github.com
`))
	if err != nil {
		panic(err)
	}
	client, err := producer.NewClient(rdb, "acme", &producer.Config{Catalog: cat})
	if err != nil {
		panic(err)
	}
	defer client.Close()

	call := &tasks.Call{Integration: "github", Method: "GET", Path: "/repositories"}
	res, err := client.Enqueue(ctx, call, producer.WithCorrelationID("order-981"))
	if err != nil {
		panic(err)
	}
	fmt.Println(res.Record.CorrelationID, res.Record.Status, res.Duplicate)

	// The same call again is a safe retry: nothing new is queued.
	res, err = client.Enqueue(ctx, call, producer.WithCorrelationID("order-981"))
	if err != nil {
		panic(err)
	}
	fmt.Println(res.Record.CorrelationID, res.Record.Status, res.Duplicate)

	// Another call under a taken ID is refused; the error holds the call
	// that has it.
	other := &tasks.Call{Integration: "github", Method: "DELETE", Path: "/repositories"}
	_, err = client.Enqueue(ctx, other, producer.WithCorrelationID("order-981"))
	var conflict *producer.ConflictError
	if errors.As(err, &conflict) {
		fmt.Println("taken by", conflict.Existing.Method, conflict.Existing.Path)
	}

	// An invalid call names the field at fault.
	_, err = client.Enqueue(ctx, &tasks.Call{Integration: "github", Method: "GET", Path: "//evil.example"})
	var invalid *tasks.FieldError
	if errors.As(err, &invalid) {
		fmt.Println(invalid.Field, invalid.Message)
	}
	// Output:
	// order-981 queued false
	// order-981 queued true
	// taken by GET /repositories
	// path must not begin with "//", which names another host
}

func ExampleClient_Wait() {
	ctx := context.Background()
	rdb := exampleRedis() // redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer rdb.Close()

	// An upstream API, and a catalog that names it.
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"order": 981, "state": "shipped"}`)
	}))
	defer upstream.Close()
	cat, err := tasks.ParseCatalog(fmt.Appendf(nil, "integrations:\n  shop:\n    base_url: %s\n", upstream.URL))
	if err != nil {
		panic(err)
	}
	stop := startExampleWorker(rdb, cat) // what `callq worker` runs
	defer stop()

	client, err := producer.NewClient(rdb, "acme", &producer.Config{Catalog: cat})
	if err != nil {
		panic(err)
	}
	defer client.Close()
	call := &tasks.Call{Integration: "shop", Method: "GET", Path: "/orders/981"}
	if _, err := client.Enqueue(ctx, call, producer.WithCorrelationID("order-981")); err != nil {
		panic(err)
	}

	// Wait until the call has finished, for 30s at most.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rec, err := client.Wait(wctx, "order-981")
	if err != nil {
		fmt.Println("not finished:", err) // rec is the call as it stands
		return
	}
	fmt.Println(rec.Status, rec.Attempts, rec.Response.Status)
	// Output:
	// succeeded 1 200
}

func ExampleClient_Replay() {
	ctx := context.Background()
	rdb := exampleRedis() // redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer rdb.Close()

	// An upstream that is down, then back; a catalog that does not retry.
	var down atomic.Bool
	down.Store(true)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, `{"order": 981}`)
	}))
	defer upstream.Close()
	cat, err := tasks.ParseCatalog(fmt.Appendf(nil, "integrations:\n  shop:\n    base_url: %s\n    retry: {max_attempts: 1}\n", upstream.URL))
	if err != nil {
		panic(err)
	}
	stop := startExampleWorker(rdb, cat)
	defer stop()
	client, err := producer.NewClient(rdb, "acme", &producer.Config{Catalog: cat})
	if err != nil {
		panic(err)
	}
	defer client.Close()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	call := &tasks.Call{Integration: "shop", Method: "POST", Path: "/orders/981/ship", Body: []byte(`{"carrier": "ups"}`)}
	if _, err := client.Enqueue(ctx, call, producer.WithCorrelationID("order-981")); err != nil {
		panic(err)
	}
	if _, err := client.Wait(wctx, "order-981"); err != nil {
		panic(err)
	}

	// What failed in the last hour.
	failed := tasks.Filter{Statuses: []tasks.Status{tasks.StatusFailed}, Since: time.Now().Add(-time.Hour)}
	page, err := client.List(ctx, failed, "", 50)
	if err != nil {
		panic(err)
	}
	for _, c := range page.Calls {
		fmt.Println(c.CorrelationID, c.Status, c.Response.Status)
	}

	// The upstream is back: make the call again.
	down.Store(false)
	res, err := client.Replay(ctx, "order-981", producer.ReplayAs("order-981-again"))
	if err != nil {
		panic(err)
	}
	rec, err := client.Wait(wctx, res.Record.CorrelationID)
	if err != nil {
		panic(err)
	}
	fmt.Println(rec.CorrelationID, rec.ReplayOf, rec.Status)
	orig, err := client.Get(ctx, "order-981")
	if err != nil {
		panic(err)
	}
	fmt.Println("order-981 replayed by", orig.ReplayedBy)

	// Replaying everything that failed again replays nothing new.
	many, err := client.ReplayMany(ctx, producer.ReplayRequest{Filter: failed})
	if err != nil {
		panic(err)
	}
	fmt.Println(many.Replayed, many.Skipped)
	// Output:
	// order-981 failed 503
	// order-981-again order-981 succeeded
	// order-981 replayed by order-981-again
	// 0 1
}

func ExampleProducer_Tenant() {
	ctx := context.Background()
	rdb := exampleRedis() // redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer rdb.Close()
	cat, err := tasks.ParseCatalog([]byte("integrations:\n  github:\n    base_url: https://api.github.com\n"))
	if err != nil {
		panic(err)
	}

	// One Producer per process; a Client per tenant costs nothing.
	p, err := producer.New(rdb, &producer.Config{Catalog: cat})
	if err != nil {
		panic(err)
	}
	defer p.Close()
	for _, tenant := range []string{"acme", "globex"} {
		client, err := p.Tenant(tenant)
		if err != nil {
			panic(err)
		}
		// Tenants do not share correlation IDs: each gets its own call.
		res, err := client.Enqueue(ctx, &tasks.Call{Integration: "github", Method: "GET", Path: "/repositories"},
			producer.WithCorrelationID("order-981"))
		if err != nil {
			panic(err)
		}
		fmt.Println(res.Record.Tenant, res.Record.CorrelationID, res.Duplicate)
	}
	// Output:
	// acme order-981 false
	// globex order-981 false
}

// A webhook receiver in Go, as the README shows it.
func ExampleVerifyWebhook() {
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" // the receiver's CALLQ_WEBHOOK_SECRET

	receiver := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 2<<20))
		if err != nil || producer.VerifyWebhook(secret, r.Header, body) != nil {
			http.Error(w, "invalid signature", http.StatusUnauthorized)
			return
		}
		var ev producer.WebhookEvent
		_ = json.Unmarshal(body, &ev)
		fmt.Println(ev.Type, ev.Data.CorrelationID, r.Header.Get("webhook-id"))
		w.WriteHeader(http.StatusNoContent)
	})

	// What a callq worker sends.
	body := []byte(`{"type":"call.succeeded","timestamp":"2026-11-23T12:00:00Z","data":{"correlation_id":"order-981","status":"succeeded"}}`)
	signer, _ := auth.ParseWebhookSecrets(secret)
	ts := time.Now().Unix()
	req := httptest.NewRequest(http.MethodPost, "/hooks/callq", bytes.NewReader(body))
	req.Header.Set("webhook-id", "msg_2kqAaB9")
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", signer.Sign("msg_2kqAaB9", ts, body))
	rec := httptest.NewRecorder()
	receiver.ServeHTTP(rec, req)
	fmt.Println(rec.Code)

	// A forged one.
	req = httptest.NewRequest(http.MethodPost, "/hooks/callq", bytes.NewReader(body))
	req.Header.Set("webhook-id", "msg_2kqAaB9")
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", "v1,Zm9yZ2Vk")
	rec = httptest.NewRecorder()
	receiver.ServeHTTP(rec, req)
	fmt.Println(rec.Code)
	// Output:
	// call.succeeded order-981 msg_2kqAaB9
	// 204
	// 401
}

var exampleServer struct {
	once sync.Once
	addr string
	stop func() error
	err  error
}

// exampleRedis is a client of the examples' redis-server, emptied: the
// first call starts the server, TestMain stops it.
func exampleRedis() *redis.Client {
	s := &exampleServer
	s.once.Do(func() {
		var srv *redistest.Server
		if srv, s.stop, s.err = redistest.StartProcess(""); s.err == nil {
			s.addr = srv.Addr
		}
	})
	if s.err != nil {
		panic(s.err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: s.addr})
	if err := rdb.FlushAll(context.Background()).Err(); err != nil {
		panic(err)
	}
	return rdb
}

// startExampleWorker runs a worker of cat's calls over rdb until stop.
func startExampleWorker(rdb *redis.Client, cat *tasks.Catalog) (stop func()) {
	key, err := auth.GenerateKey()
	if err != nil {
		panic(err)
	}
	ring, err := auth.ParseKeyring(key)
	if err != nil {
		panic(err)
	}
	creds, err := auth.NewStore(rdb, &auth.StoreConfig{Keyring: ring})
	if err != nil {
		panic(err)
	}
	records, err := tasks.NewStore(rdb, nil)
	if err != nil {
		panic(err)
	}
	w, err := worker.New(rdb, &worker.Config{Catalog: cat, Records: records, Credentials: creds, Keyring: ring, Concurrency: 2})
	if err != nil {
		panic(err)
	}
	if err := w.Start(); err != nil {
		panic(err)
	}
	return func() {
		w.Shutdown()
		_ = records.Close()
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if exampleServer.stop != nil {
		_ = exampleServer.stop()
	}
	os.Exit(code)
}
