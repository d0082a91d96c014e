package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/mccutchen/go-httpbin/v2/httpbin"
	"github.com/redis/go-redis/v9"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/worker"
)

const (
	// devTenant is the tenant of callq dev's API key.
	devTenant = "dev"
	// devAPIAddr is where callq dev's API listens by default.
	devAPIAddr = "127.0.0.1:8080"
)

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, httpbinAddr, err := devConfig(args)
	if err != nil {
		return err
	}
	log, err := cfg.logger(stderr)
	if err != nil {
		return err
	}
	mr, err := startDevRedis(ctx)
	if err != nil {
		return err
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), PoolSize: worker.RedisPoolSize(cfg.concurrency)})
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
	apiKey := os.Getenv("CALLQ_DEV_API_KEY")
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
	if httpbinAddr != "" {
		hln, err := net.Listen("tcp", httpbinAddr)
		if err != nil {
			return fmt.Errorf("serve the demo httpbin on %s (set --httpbin-addr \"\" to skip it): %w", httpbinAddr, err)
		}
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
	fmt.Fprintf(stdout, `callq dev: API on http://%s, worker running, embedded Redis (nothing is kept when it stops).
WARNING: development mode. The secret key and API key below are for this process only; do not use dev mode in production.
  dashboard:        http://%s/ui/ (sign in with the API key below)
  integrations:     %s
  tenant:           %s
  CALLQ_API_KEY=%s
  webhook secret of tenant %s (receivers verify with it): %s
  (webhooks may reach private addresses in dev mode)
`, ln.Addr(), ln.Addr(), cfg.integrations, devTenant, apiKey, devTenant, s.hooks.ForTenant(devTenant).Secrets()[0])
	for _, w := range exposed {
		fmt.Fprintln(stdout, w)
	}
	return serveAPI(ctx, ln, h, log)
}

// devConfig reads callq dev's flags and environment: the server's, with
// console logs and a loopback API by default, and the demo httpbin's
// address.
func devConfig(args []string) (serverConfig, string, error) {
	var cfg serverConfig
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	cfg.flags(fs, "deploy/integrations.example.yaml")
	fs.Lookup("log-format").DefValue = "console"
	if os.Getenv("CALLQ_LOG_FORMAT") == "" {
		cfg.logFormat = "console"
	}
	// Loopback only unless asked: the dev API key is printed, and dev mode
	// lets it make the worker read its own environment and files.
	fs.Lookup("addr").DefValue = devAPIAddr
	if os.Getenv("CALLQ_API_ADDR") == "" {
		cfg.apiAddr = devAPIAddr
	}
	httpbinAddr := fs.String("httpbin-addr", "127.0.0.1:8090", "serve a local httpbin here for the example catalog (empty: none)")
	if err := fs.Parse(args); err != nil {
		return cfg, "", fmt.Errorf("%w: %v", errUsage, err)
	}
	return cfg, *httpbinAddr, cfg.envError()
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

// where says where a listener that is not loopback listens.
func where(addr net.Addr) string {
	if ta, ok := addr.(*net.TCPAddr); ok && ta.IP.IsUnspecified() {
		return fmt.Sprintf("on all interfaces (%s)", addr)
	}
	return "on " + addr.String()
}
