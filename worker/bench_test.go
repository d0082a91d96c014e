package worker_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/redistest"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

// BenchmarkProcessCall times one full ProcessCall round, as an asynq worker
// goroutine runs it, against a real redis-server and a local upstream:
// decode the payload, mark the record running (a Lua script), resolve the
// credential, GET the upstream, read and redact the response, write the
// terminal record and publish its completion (a Lua script). Creating the
// records is done before the timer starts. bearer_credential reads the
// credential from Redis on each call (the worker's cache not running, as
// with CALLQ_CREDENTIAL_CACHE_TTL=0); bearer_credential_cached as a started
// worker does. It asserts nothing about speed.
func BenchmarkProcessCall(b *testing.B) {
	srv := redistest.Start(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	b.Cleanup(func() { _ = rdb.Close() })
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true,"id":364,"name":"callq-bench","tags":["a","b"]}`))
	}))
	b.Cleanup(up.Close)

	cat, err := tasks.ParseCatalog(fmt.Appendf(nil, `
integrations:
  open:
    base_url: %[1]s
  bearer:
    base_url: %[1]s
    auth: {type: bearer}
`, up.URL))
	if err != nil {
		b.Fatal(err)
	}
	key, _ := auth.GenerateKey()
	ring, err := auth.ParseKeyring(key)
	if err != nil {
		b.Fatal(err)
	}
	creds, err := auth.NewStore(rdb, &auth.StoreConfig{Keyring: ring})
	if err != nil {
		b.Fatal(err)
	}
	records, err := tasks.NewStore(rdb, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = records.Close() })
	// Not started: the benchmark calls its handler directly.
	w, err := worker.New(rdb, &worker.Config{Catalog: cat, Records: records, Credentials: creds, Keyring: ring})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	const tenant = "acme"
	if _, err := creds.Put(ctx, tenant, "bench-token", "bearer", map[string]string{"token": "s3cr3t-bench-token-0123456789"}); err != nil {
		b.Fatal(err)
	}

	for _, tc := range []struct {
		name, integration, credential string
		cached                        bool
	}{
		{"no_auth", "open", "", false},
		{"bearer_credential", "bearer", "bench-token", false},
		// As a started worker runs: the credential read once, then kept.
		{"bearer_credential_cached", "bearer", "bench-token", true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			if tc.cached {
				wctx, stop := context.WithCancel(ctx)
				defer stop()
				worker.WatchCredentials(wctx, w)
			}
			ids := make([]string, b.N)
			taskList := make([]*asynq.Task, b.N)
			for i := range b.N {
				call := &tasks.Call{Integration: tc.integration, Method: "GET", Path: "/things",
					Query: tasks.Query{"since": {"364"}}, Credential: tc.credential}
				in, err := call.Normalize(cat, nil)
				if err != nil {
					b.Fatal(err)
				}
				rec := tasks.NewRecord(tenant, call, in, time.Now())
				if taskList[i], err = tasks.NewCallTask(rec, call, in); err != nil {
					b.Fatal(err)
				}
				if err := records.Create(ctx, rec, call.Fingerprint(), 0, taskList[i].Payload()); err != nil {
					b.Fatal(err)
				}
				ids[i] = call.CorrelationID
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if err := w.ProcessCall(ctx, taskList[i]); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			rec, err := records.Get(ctx, tenant, ids[b.N-1])
			if err != nil {
				b.Fatal(err)
			}
			if rec.Status != tasks.StatusSucceeded {
				b.Fatalf("the last call ended %s: %+v", rec.Status, rec.Error)
			}
		})
	}
}
