package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/dashboard"
	"github.com/callq/callq/internal/telemetry"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

// stack is what the api, worker and dev commands run on.
type stack struct {
	cfg     *config
	log     zerolog.Logger
	rdb     redis.UniversalClient
	catalog *tasks.Catalog
	keyring *auth.Keyring
	records *tasks.Store
	creds   *auth.Store
	keys    *auth.KeyStore
	queues  map[string]int
	qnames  []string
	hooks   *auth.WebhookSecrets
	sched   []time.Duration
	metrics *prometheus.Registry
	tracing *telemetry.Tracing // OTLP export when OTEL_EXPORTER_OTLP_* say so
	prod    *producer.Producer // made by producer(), once
}

// loadCatalog is the integration catalog of c: the file --integrations
// (CALLQ_INTEGRATIONS) names, else catalogYAML (catalogOrExample's choice,
// for the commands that have one).
func (c *config) loadCatalog() (*tasks.Catalog, error) {
	switch {
	case c.integrations != "":
		return tasks.LoadCatalog(c.integrations)
	case c.catalogYAML != nil:
		return tasks.ParseCatalog(c.catalogYAML)
	}
	return nil, fmt.Errorf("no integration catalog: set CALLQ_INTEGRATIONS or --integrations (see deploy/integrations.example.yaml)")
}

func newStack(cfg *config, rdb redis.UniversalClient, log zerolog.Logger) (*stack, error) {
	s := &stack{cfg: cfg, log: log, rdb: rdb, metrics: prometheus.NewRegistry()}
	s.metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var err error
	if s.catalog, err = cfg.loadCatalog(); err != nil {
		return nil, err
	}
	if cfg.secretKey == "" {
		return nil, fmt.Errorf("CALLQ_SECRET_KEY is required: base64 of 32 random bytes (openssl rand -base64 32), or kid:key,kid:key")
	}
	if s.keyring, err = auth.ParseKeyring(cfg.secretKey); err != nil {
		return nil, fmt.Errorf("CALLQ_SECRET_KEY: %w", err)
	}
	if s.queues, s.qnames, err = parseQueues(cfg.queues); err != nil {
		return nil, err
	}
	if s.records, err = tasks.NewStore(rdb, &tasks.StoreConfig{ResultTTL: cfg.resultTTL}); err != nil {
		return nil, err
	}
	dirs, err := auth.ParseSourceDirs(cfg.sourceDirs)
	if err != nil {
		return nil, fmt.Errorf("CALLQ_SOURCE_DIRS: %w", err)
	}
	if s.creds, err = auth.NewStore(rdb, &auth.StoreConfig{Keyring: s.keyring, SourceDirs: dirs}); err != nil {
		return nil, err
	}
	if cfg.sourceRefs && len(dirs) == 0 {
		log.Warn().Msg("CALLQ_ALLOW_SOURCE_REFS is on without CALLQ_SOURCE_DIRS: a file: credential value may name any regular file the process can read outside /proc, /sys and /dev (service-account tokens, cloud credentials, an env file holding CALLQ_SECRET_KEY); set CALLQ_SOURCE_DIRS to the directories that hold credentials only")
	}
	s.keys = auth.NewKeyStore(rdb)
	if cfg.webhookSecret != "" {
		if s.hooks, err = auth.ParseWebhookSecrets(cfg.webhookSecret); err != nil {
			return nil, fmt.Errorf("CALLQ_WEBHOOK_SECRET: %w", err)
		}
	}
	if s.sched, err = parseSchedule(cfg.webhookSchedule); err != nil {
		return nil, err
	}
	if s.tracing, err = telemetry.Setup(context.Background(), nil); err != nil {
		return nil, err
	}
	if s.tracing.Provider() != nil {
		log.Info().Msg("tracing: exporting spans over OTLP/HTTP (OTEL_EXPORTER_OTLP_*)")
	}
	return s, nil
}

// shutdownTracing exports the spans left, within a few seconds.
func (s *stack) shutdownTracing() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.tracing.Shutdown(ctx); err != nil {
		s.log.Warn().Err(err).Msg("could not export the last spans")
	}
}

// producer is the producer the API works through and the scheduler fires
// schedules with: one per process, so that a firing's call is checked as
// a call to the API is.
func (s *stack) producer() (*producer.Producer, error) {
	if s.prod != nil {
		return s.prod, nil
	}
	prod, err := producer.New(s.rdb, &producer.Config{
		Catalog:             s.catalog,
		Records:             s.records,
		Limits:              &tasks.Limits{MaxRequestBytes: s.cfg.maxRequestBytes, Queues: s.qnames},
		WebhooksEnabled:     s.hooks != nil,
		WebhookAllowPrivate: s.cfg.webhookPrivate,
		QueueShards:         s.cfg.queueShards,
		PreviousQueueShards: s.cfg.previousShards,
	})
	if err != nil {
		return nil, err
	}
	s.prod = prod
	return prod, nil
}

// runScheduler runs the fleet's scheduler (producer.Scheduler: one process
// of the fleet fires the schedules at a time) until ctx ends, unless
// CALLQ_SCHEDULER is off. wait returns once it has stopped and released
// its lease.
func (s *stack) runScheduler(ctx context.Context) (wait func(), err error) {
	if !s.cfg.scheduler {
		return func() {}, nil
	}
	prod, err := s.producer()
	if err != nil {
		return nil, err
	}
	sched, err := producer.NewScheduler(prod, &producer.SchedulerConfig{Logger: &s.log})
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sched.Run(ctx)
	}()
	return func() { <-done }, nil
}

func (s *stack) apiHandler() (http.Handler, error) {
	prod, err := s.producer()
	if err != nil {
		return nil, err
	}
	m, err := producer.NewMetrics(s.metrics)
	if err != nil {
		return nil, err
	}
	queues, err := telemetry.NewQueueCollector(s.rdb, nil)
	if err != nil {
		return nil, err
	}
	if err := s.metrics.Register(queues); err != nil {
		return nil, err
	}
	api, err := producer.NewHandler(&producer.HandlerConfig{
		Producer:    prod,
		Credentials: s.creds,
		Keys:        s.keys,
		Ready:       func(ctx context.Context) error { return s.rdb.Ping(ctx).Err() },
		Logger:      &s.log,

		AllowSourceRefs:       s.cfg.sourceRefs,
		WebhookSecrets:        s.hooks,
		PublicURL:             s.cfg.publicURL,
		ConnectAllowedOrigins: s.cfg.connectOrigins,
		Metrics:               m,
		TracerProvider:        s.tracing.Provider(),
	})
	if err != nil {
		return nil, err
	}
	ui, err := dashboard.New(&dashboard.Config{
		Producer:    prod,
		Keys:        s.keys,
		Credentials: s.creds,
		Catalog:     s.catalog,
		Redis:       s.rdb,
		Logger:      &s.log,
	})
	if err != nil {
		return nil, err
	}
	return newAPIMux(s.metricsHandler(), ui, api).ServeMux, nil
}

// apiMux is the API server's mux: the API, and next to it the metrics and
// the dashboard. It keeps the patterns it registers, which
// cmd/callq/openapi_test.go checks against the OpenAPI document: a route
// added here without its operation in producer/openapi.yaml fails there.
type apiMux struct {
	*http.ServeMux
	patterns []string
}

func newAPIMux(metrics, ui, api http.Handler) *apiMux {
	mux := &apiMux{ServeMux: http.NewServeMux()}
	mux.Handle("GET /metrics", metrics)
	mux.Handle("/ui/", ui)
	mux.Handle("/", api) // producer.Routes lists the API's own routes
	return mux
}

// Handle registers pattern, and keeps it.
func (m *apiMux) Handle(pattern string, h http.Handler) {
	m.patterns = append(m.patterns, pattern)
	m.ServeMux.Handle(pattern, h)
}

func (s *stack) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics, promhttp.HandlerOpts{})
}

// workerHTTP is what a worker serves on CALLQ_METRICS_ADDR: its metrics,
// and /healthz (the process answers) and /readyz (it reaches Redis) as the
// API has them, for liveness and readiness probes and `callq healthcheck
// --worker`.
func (s *stack) workerHTTP() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metricsHandler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeHealth(w, http.StatusOK, `{"status":"ok"}`)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.rdb.Ping(ctx).Err(); err != nil {
			writeHealth(w, http.StatusServiceUnavailable, `{"status":"unavailable","error":"redis unreachable"}`)
			return
		}
		writeHealth(w, http.StatusOK, `{"status":"ok"}`)
	})
	return mux
}

func writeHealth(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body+"\n")
}

func (s *stack) worker() (*worker.Worker, error) {
	m, err := worker.NewMetrics(s.metrics)
	if err != nil {
		return nil, err
	}
	return worker.New(s.rdb, &worker.Config{
		Metrics:          m,
		TracerProvider:   s.tracing.Provider(),
		Catalog:          s.catalog,
		Records:          s.records,
		Credentials:      s.creds,
		Keyring:          s.keyring,
		Concurrency:      s.cfg.concurrency,
		Queues:           s.queues,
		MaxResponseBytes: s.cfg.maxResponseBytes,

		QueueShards:         s.cfg.queueShards,
		PreviousQueueShards: s.cfg.previousShards,

		ShutdownTimeout: s.cfg.shutdownTimeout,
		Logger:          &s.log,

		CredentialCacheTTL: credentialCacheTTL(s.cfg.credCacheTTL),

		ReconcileInterval: s.cfg.reconcile,

		WebhookSecrets:      s.hooks,
		WebhookAllowPrivate: s.cfg.webhookPrivate,
		WebhookSchedule:     s.sched,
		WebhookConcurrency:  s.cfg.hookConcurrency,
	})
}

// serveAPI serves h on ln until ctx ends, then drains requests in flight.
func serveAPI(ctx context.Context, ln net.Listener, h http.Handler, log zerolog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      producer.DefaultMaxWait + 15*time.Second, // room for ?wait=60s
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info().Str("addr", ln.Addr().String()).Msg("API listening")
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), producer.DefaultMaxWait+5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// openStack parses a production command's flags, connects to Redis and
// builds the stack; close releases what it opened.
func openStack(ctx context.Context, x *invocation, args []string, poolSize func(*config) int) (s *stack, closeStack func(), err error) {
	fs := x.flags()
	if err := fs.parseNoArgs(args); err != nil {
		return nil, nil, err
	}
	cfg := fs.cfg
	log, err := cfg.logger(x.stderr)
	if err != nil {
		return nil, nil, err
	}
	rdb, err := openRedis(ctx, cfg.redisURL, cfg.clusterAddrs, poolSize(cfg))
	if err != nil {
		return nil, nil, err
	}
	if s, err = newStack(cfg, rdb, log); err != nil {
		_ = rdb.Close()
		return nil, nil, err
	}
	return s, func() { s.shutdownTracing(); _ = s.records.Close(); _ = rdb.Close() }, nil
}

func runAPI(ctx context.Context, x *invocation, args []string) error {
	s, closeStack, err := openStack(ctx, x, args, func(*config) int { return 0 })
	if err != nil {
		return err
	}
	defer closeStack()
	h, err := s.apiHandler()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", s.cfg.apiAddr)
	if err != nil {
		return err
	}
	return serveAPI(ctx, ln, h, s.log)
}

func runWorker(ctx context.Context, x *invocation, args []string) error {
	s, closeStack, err := openStack(ctx, x, args, func(c *config) int { return worker.RedisPoolSize(c.concurrency, c.hookConcurrency) })
	if err != nil {
		return err
	}
	defer closeStack()
	w, err := s.worker()
	if err != nil {
		return err
	}
	if s.cfg.metricsAddr != "" {
		// Off by default: several workers often share a host.
		ln, err := net.Listen("tcp", s.cfg.metricsAddr)
		if err != nil {
			return fmt.Errorf("CALLQ_METRICS_ADDR: %w", err)
		}
		srv := &http.Server{Handler: s.workerHTTP(), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		s.log.Info().Str("addr", ln.Addr().String()).Msg("metrics listening")
	}
	waitScheduler, err := s.runScheduler(ctx)
	if err != nil {
		return err
	}
	defer waitScheduler()
	ev := s.log.Info().Int("concurrency", s.cfg.concurrency).Int("webhook_concurrency", cmp.Or(s.cfg.hookConcurrency, s.cfg.concurrency)).
		Str("queues", s.cfg.queues).
		Int("queue_shards", s.cfg.queueShards).Ints("previous_queue_shards", s.cfg.previousShards)
	if s.cfg.reconcile == worker.ReconcileOff {
		ev = ev.Str("reconciler", "off")
	} else {
		ev = ev.Int64("reconcile_interval_ms", s.cfg.reconcile.Milliseconds())
	}
	ev.Str("scheduler", onOffString(s.cfg.scheduler)).Msg("worker starting")
	err = w.Run(ctx)
	s.log.Info().Msg("worker stopped")
	return err
}

// credentialCacheTTL is CALLQ_CREDENTIAL_CACHE_TTL as worker.Config takes
// it: 0 turns the cache off.
func credentialCacheTTL(d time.Duration) time.Duration {
	if d == 0 {
		return worker.CredentialCacheOff
	}
	return d
}
