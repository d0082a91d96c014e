package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/mccutchen/go-httpbin/v2/httpbin"
	"github.com/redis/go-redis/v9"

	"github.com/callq/callq/auth"
	deployfiles "github.com/callq/callq/deploy"
	"github.com/callq/callq/worker"
)

const (
	// devTenant is the tenant of callq dev's API key.
	devTenant = "dev"
	// devAPIAddr is where callq dev's API listens by default.
	devAPIAddr = "127.0.0.1:8080"
)

// exampleCatalogPath is where callq dev looks for the catalog first: in
// a checkout, its root.
const exampleCatalogPath = "deploy/integrations.example.yaml"

// builtinCatalogName is how the commands name the example catalog built
// into the binary.
const builtinCatalogName = "the example catalog built into callq (" + exampleCatalogPath + ")"

// catalogOrExample is how the commands that run without a catalog configured
// (dev, integrations) choose one: --integrations (CALLQ_INTEGRATIONS) when
// set; else deploy/integrations.example.yaml when it is where callq runs (a
// checkout); else the example catalog built into the binary, so that they
// work from any directory. It sets c.catalogYAML for the last two
// (loadCatalog reads it) and returns the catalog's name, for messages.
func (c *config) catalogOrExample() (string, error) {
	if c.integrations != "" {
		return c.integrations, nil
	}
	b, err := os.ReadFile(exampleCatalogPath)
	switch {
	case err == nil:
		c.catalogYAML = b
		return exampleCatalogPath, nil
	case errors.Is(err, fs.ErrNotExist):
		c.catalogYAML = deployfiles.ExampleCatalog
		return builtinCatalogName, nil
	}
	return "", err
}

// exampleHTTPBinURL is the example catalog's httpbin: where callq dev serves
// it by default (--httpbin-addr).
const exampleHTTPBinURL = "http://127.0.0.1:8090"

func runDev(ctx context.Context, x *invocation, args []string) error {
	fs := x.flags()
	httpbinAddr := fs.String("httpbin-addr", "127.0.0.1:8090", "serve a local httpbin here for the example catalog (empty: none)")
	if err := fs.parseNoArgs(args); err != nil {
		return err
	}
	cfg := fs.cfg
	example := cfg.integrations == ""
	catalogName, err := cfg.catalogOrExample()
	if err != nil {
		return err
	}
	log, err := cfg.logger(x.stderr)
	if err != nil {
		return err
	}
	var hln net.Listener
	if *httpbinAddr != "" {
		if hln, err = net.Listen("tcp", *httpbinAddr); err != nil {
			return fmt.Errorf("serve the demo httpbin on %s (set --httpbin-addr \"\" to skip it): %w", *httpbinAddr, err)
		}
		defer hln.Close()
		if example {
			// The example catalog's httpbin is the one served here, wherever
			// --httpbin-addr puts it, not whatever listens on its default.
			cfg.catalogYAML = bytes.ReplaceAll(cfg.catalogYAML, []byte(exampleHTTPBinURL), []byte("http://"+clientAddr(hln.Addr())))
		}
	}
	mr, err := startDevRedis(ctx)
	if err != nil {
		return err
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), PoolSize: worker.RedisPoolSize(cfg.concurrency, cfg.hookConcurrency)})
	defer rdb.Close()

	if cfg.secretKey == "" {
		if cfg.secretKey, err = auth.GenerateKey(); err != nil {
			return err
		}
	}
	if cfg.webhookSecret == "" {
		if cfg.webhookSecret, err = auth.GenerateWebhookSecret(); err != nil {
			return err
		}
	}
	cfg.webhookPrivate = true // receivers in development are on this machine
	cfg.sourceRefs = true     // one tenant, and its admin is the developer
	s, err := newStack(cfg, rdb, log)
	if err != nil {
		return err
	}
	defer s.records.Close()
	defer s.shutdownTracing()
	apiKey := cfg.devAPIKey
	if apiKey != "" {
		if _, err := s.keys.CreateWithSecret(ctx, devTenant, auth.RoleAdmin, apiKey); err != nil {
			return fmt.Errorf("CALLQ_DEV_API_KEY: %w", err)
		}
	} else if _, apiKey, err = s.keys.Create(ctx, devTenant, auth.RoleAdmin); err != nil {
		return err
	}

	h, err := s.apiHandler()
	if err != nil {
		return err
	}
	w, err := s.worker()
	if err != nil {
		return err
	}
	if err := w.Start(); err != nil {
		return err
	}
	defer w.Shutdown()
	waitScheduler, err := s.runScheduler(ctx)
	if err != nil {
		return err
	}
	defer waitScheduler()
	ln, err := net.Listen("tcp", cfg.apiAddr)
	if err != nil {
		return err
	}
	var exposed []string
	if !isLoopback(ln.Addr()) {
		exposed = append(exposed, fmt.Sprintf("WARNING: the API listens %s, not only on this machine: whoever reaches it can use the dev API key printed here and store env: and file: credentials, which make the worker send its environment and files upstream. Use the default --addr %s unless you mean it.", where(ln.Addr()), devAPIAddr))
	}
	httpbinURL := "none (--httpbin-addr \"\")"
	if hln != nil {
		httpbinURL = "http://" + hln.Addr().String()
		hsrv := &http.Server{Handler: httpbin.New(), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = hsrv.Serve(hln) }()
		defer hsrv.Close()
		if !isLoopback(hln.Addr()) {
			exposed = append(exposed, fmt.Sprintf("WARNING: the demo httpbin listens %s, not only on this machine.", where(hln.Addr())))
		}
	}
	for _, w := range exposed {
		log.Warn().Msg(w)
	}
	apiURL := "http://" + clientAddr(ln.Addr())
	fmt.Fprintf(x.stdout, `callq dev: API on http://%s, worker running, embedded Redis (nothing is kept when it stops).
WARNING: development mode. The secret key and API key below are for this process only; do not use dev mode in production.
  dashboard:        %s/ui/ (sign in with the API key below)
  integrations:     %s
  httpbin:          %s
  tenant:           %s
  webhook secret of tenant %s (receivers verify with it): %s
  (webhooks may reach private addresses in dev mode)

To use the CLI or curl from another shell, with this dev API key:
  export CALLQ_URL=%s CALLQ_API_KEY=%s
`, ln.Addr(), apiURL, catalogName, httpbinURL, devTenant, devTenant, s.hooks.ForTenant(devTenant).Secrets()[0], apiURL, apiKey)
	for _, w := range exposed {
		fmt.Fprintln(x.stdout, w)
	}
	return serveAPI(ctx, ln, h, log)
}

// startDevRedis starts the embedded Redis, its clock following the wall
// clock until ctx ends.
func startDevRedis(ctx context.Context) (*miniredis.Miniredis, error) {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		return nil, fmt.Errorf("start the embedded Redis: %w", err)
	}
	// miniredis expires keys only when its clock moves; move it with the
	// wall clock so record TTLs behave as on Redis.
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				mr.FastForward(now.Sub(last))
				last = now
			}
		}
	}()
	return mr, nil
}

// isLoopback reports whether addr is a loopback address: only this machine
// can reach it.
func isLoopback(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// clientAddr is where a client on this machine reaches a listener on addr:
// a wildcard host is 127.0.0.1.
func clientAddr(addr net.Addr) string {
	if ta, ok := addr.(*net.TCPAddr); ok && ta.IP.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(ta.Port))
	}
	return addr.String()
}

// where says where a listener that is not loopback listens.
func where(addr net.Addr) string {
	if ta, ok := addr.(*net.TCPAddr); ok && ta.IP.IsUnspecified() {
		return fmt.Sprintf("on all interfaces (%s)", addr)
	}
	return "on " + addr.String()
}
