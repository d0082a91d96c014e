package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
)

// phaseHTTPEnqueue drives POST /v1/calls of the real API handler with
// enqueuers keep-alive clients; no worker runs.
func (h *harness) phaseHTTPEnqueue(ctx context.Context) error {
	n := h.cfg.HTTPRequests
	rdb := h.newClient(nil)
	defer rdb.Close()
	api, err := h.startAPI(ctx, rdb)
	if err != nil {
		return err
	}
	defer api.close()

	tr := &http.Transport{MaxIdleConns: 0, MaxIdleConnsPerHost: enqueuers, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	url := api.url + "/v1/calls"
	body := []byte(`{"integration":"` + integration + `","method":"GET","path":"/ok"}`)
	authz := "Bearer " + api.secret

	t0 := time.Now()
	err = concurrent(ctx, n, enqueuers, func(int) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", authz)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("POST /v1/calls answered %d: %s", resp.StatusCode, bytes.TrimSpace(b))
		}
		return nil
	})
	elapsed := time.Since(t0)
	if err != nil {
		return err
	}
	h.res.HTTPEnqueuePerS = float64(n) / elapsed.Seconds()
	h.notes.httpRequests = n
	h.logf("      %d requests in %s: %.0f/s", n, elapsed.Round(time.Millisecond), h.res.HTTPEnqueuePerS)
	return nil
}

// api is the real API handler served on a loopback port, with a producer
// key of the bench tenant.
type api struct {
	url    string
	secret string
	close  func()
}

// startAPI serves the API over rdb.
func (h *harness) startAPI(ctx context.Context, rdb *redis.Client) (*api, error) {
	store, err := tasks.NewStore(rdb, nil)
	if err != nil {
		return nil, err
	}
	prod, err := producer.New(rdb, &producer.Config{Catalog: h.catalog, Records: store})
	if err != nil {
		_ = store.Close()
		return nil, err
	}
	fail := func(err error) (*api, error) {
		_ = prod.Close()
		_ = store.Close()
		return nil, err
	}
	creds, err := auth.NewStore(rdb, &auth.StoreConfig{Keyring: h.keyring})
	if err != nil {
		return fail(err)
	}
	keys := auth.NewKeyStore(rdb)
	_, secret, err := keys.Create(ctx, tenant, auth.RoleProducer)
	if err != nil {
		return fail(err)
	}
	handler, err := producer.NewHandler(&producer.HandlerConfig{Producer: prod, Credentials: creds, Keys: keys, Logger: &h.nop})
	if err != nil {
		return fail(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10}
	go func() { _ = srv.Serve(ln) }()
	return &api{url: "http://" + ln.Addr().String(), secret: secret, close: func() {
		_ = srv.Close()
		_ = prod.Close()
		_ = store.Close()
	}}, nil
}
