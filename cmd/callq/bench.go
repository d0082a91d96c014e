package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/redistest"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

// callq bench measures callq against raw asynq on this machine, in one run,
// on a redis-server it starts itself and a local upstream served in this
// process. See runBench's help text for what each figure means.

const (
	benchTenant      = "bench"
	benchIntegration = "bench"
	benchEnqueuers   = 32 // goroutines (or HTTP clients) that enqueue
	benchQueue       = tasks.DefaultQueue
)

// benchUpstreamBody is what the local upstream answers: a small JSON body.
var benchUpstreamBody = []byte(`{"ok":true,"id":364,"name":"callq-bench","tags":["a","b"]}` + "\n")

type benchConfig struct {
	calls         int
	concurrency   int
	rounds        int
	httpRequests  int
	waitSamples   int
	pickupSamples int
	json          bool
	cpuprofile    string
}

// benchLatency is a latency distribution in milliseconds.
type benchLatency struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
}

type benchMachine struct {
	Cores int    `json:"cores"`
	Go    string `json:"go"`
	Redis string `json:"redis"`
}

// benchResult is the --json output: exactly these keys.
type benchResult struct {
	AsynqNoopPerS             float64      `json:"asynq_noop_per_s"`
	AsynqHTTPPerS             float64      `json:"asynq_http_per_s"`
	CallqPerS                 float64      `json:"callq_per_s"`
	CallqVsAsynqHTTP          float64      `json:"callq_vs_asynq_http"`
	CallqVsAsynqNoop          float64      `json:"callq_vs_asynq_noop"`
	HTTPEnqueuePerS           float64      `json:"http_enqueue_per_s"`
	GoEnqueuePerS             float64      `json:"go_enqueue_per_s"`
	WaitLatencyMS             benchLatency `json:"wait_latency_ms"`
	IdlePickupMS              benchLatency `json:"idle_pickup_ms"`
	RedisCmdsPerCall          float64      `json:"redis_cmds_per_call"`
	AsynqHTTPRedisCmdsPerCall float64      `json:"asynq_http_redis_cmds_per_call"`
	WorkerPeakRSSMB           float64      `json:"worker_peak_rss_mb"`
	Machine                   benchMachine `json:"machine"`
	Calls                     int          `json:"calls"`
	Concurrency               int          `json:"concurrency"`
	Date                      string       `json:"date"`
}

// benchRounds keeps each round's throughput figures; the result is their
// median (peak RSS: their maximum).
type benchRounds struct {
	noop, http, callq, goEnqueue, httpCmds, callqCmds, rss []float64
}

// benchNotes is what the table shows beside the JSON figures.
type benchNotes struct {
	asynqNoopCmds     float64
	callqSentCmds     float64 // commands sent by callq's clients per call (no Lua inner commands)
	asynqHTTPSentCmds float64
	asynqNoopCPU      benchCPU
	asynqHTTPCPU      benchCPU
	callqCPU          benchCPU
	rssStartMB        float64
	rssMethod         string
	httpRequests      int
	waitSamples       int
	pickupSamples     int
	elapsed           time.Duration
}

const benchUsage = `Usage: callq bench [--calls 20000] [--concurrency 50] [--rounds 1] [--json] [--cpuprofile FILE]

Measures callq beside raw asynq on this machine, in one run, on a redis-server it
starts on a free port (FLUSHALL between phases) and a local upstream in this
process (200, a small JSON body). Needs redis-server on the PATH.

Flags:
`

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg benchConfig
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, benchUsage); fs.PrintDefaults() }
	fs.IntVar(&cfg.calls, "calls", 20000, "calls per throughput phase")
	fs.IntVar(&cfg.concurrency, "concurrency", worker.DefaultConcurrency, "worker concurrency, the same for asynq and callq")
	fs.IntVar(&cfg.rounds, "rounds", 1, "run the three throughput phases this many times, interleaved, and report medians")
	fs.IntVar(&cfg.httpRequests, "http-requests", 10000, "POST /v1/calls requests in the HTTP enqueue phase (at most --calls)")
	fs.IntVar(&cfg.waitSamples, "wait-samples", 200, "calls in the Wait latency phase")
	fs.IntVar(&cfg.pickupSamples, "pickup-samples", 100, "calls in the idle pickup phase")
	fs.BoolVar(&cfg.json, "json", false, "print one JSON object instead of the table")
	fs.StringVar(&cfg.cpuprofile, "cpuprofile", "", "write a CPU profile of the (first) callq throughput phase, worker start to last record, to this file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: bench takes no arguments, got %q", errUsage, fs.Args())
	}
	if cfg.calls < 1 || cfg.concurrency < 1 || cfg.rounds < 1 || cfg.httpRequests < 1 || cfg.waitSamples < 1 || cfg.pickupSamples < 1 {
		return fmt.Errorf("%w: --calls, --concurrency, --rounds, --http-requests, --wait-samples and --pickup-samples must be at least 1", errUsage)
	}
	cfg.httpRequests = min(cfg.httpRequests, cfg.calls)

	h := &benchHarness{cfg: cfg, progress: stderr}
	if err := h.setup(ctx); err != nil {
		h.close()
		return err
	}
	err := h.run(ctx)
	h.close()
	if err != nil {
		return err
	}
	if cfg.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(h.res)
	}
	h.printTable(stdout)
	return nil
}

type benchHarness struct {
	cfg      benchConfig
	progress io.Writer
	res      benchResult
	notes    benchNotes
	rounds   benchRounds

	redis     *redistest.Server
	stopRedis func() error
	adm       *redis.Client // FLUSHALL, INFO, completion counting, checks: never counted as the system's
	up        *benchUpstream
	catalog   *tasks.Catalog
	keyring   *auth.Keyring
	nop       zerolog.Logger
}

func (h *benchHarness) logf(format string, args ...any) {
	fmt.Fprintf(h.progress, format+"\n", args...)
}

func (h *benchHarness) setup(ctx context.Context) error {
	h.nop = zerolog.Nop()
	srv, stop, err := redistest.StartProcess("")
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	h.redis, h.stopRedis = srv, stop
	h.adm = redis.NewClient(&redis.Options{Addr: srv.Addr})
	info, err := h.adm.Info(ctx, "server").Result()
	if err != nil {
		return fmt.Errorf("bench: redis INFO: %w", err)
	}
	if h.up, err = startBenchUpstream(); err != nil {
		return err
	}
	h.catalog, err = tasks.ParseCatalog(fmt.Appendf(nil, `
integrations:
  %s:
    base_url: %s
    timeout: 5s
`, benchIntegration, h.up.url))
	if err != nil {
		return fmt.Errorf("bench: catalog: %w", err)
	}
	key, err := auth.GenerateKey()
	if err != nil {
		return err
	}
	if h.keyring, err = auth.ParseKeyring(key); err != nil {
		return err
	}
	h.res.Machine = benchMachine{Cores: runtime.NumCPU(), Go: runtime.Version(), Redis: redisInfoField(info, "redis_version")}
	h.res.Calls, h.res.Concurrency = h.cfg.calls, h.cfg.concurrency
	h.res.Date = time.Now().UTC().Format(time.RFC3339)
	h.logf("callq bench: %d calls, concurrency %d, %d cores, %s, redis %s on %s, upstream %s",
		h.cfg.calls, h.cfg.concurrency, h.res.Machine.Cores, h.res.Machine.Go, h.res.Machine.Redis, srv.Addr, h.up.url)
	return nil
}

func (h *benchHarness) close() {
	if h.up != nil {
		h.up.close()
	}
	if h.adm != nil {
		_ = h.adm.Close()
	}
	if h.stopRedis != nil {
		if err := h.stopRedis(); err != nil {
			h.logf("bench: stopping redis-server: %v", err)
		}
	}
}

func (h *benchHarness) run(ctx context.Context) error {
	start := time.Now()
	type phase struct {
		name string
		fn   func(context.Context) error
	}
	var phases []phase
	for r := range h.cfg.rounds {
		round := ""
		if h.cfg.rounds > 1 {
			round = fmt.Sprintf(", round %d of %d", r+1, h.cfg.rounds)
		}
		phases = append(phases,
			phase{"asynq no-op" + round, h.phaseAsynqNoop},
			phase{"asynq + net/http" + round, h.phaseAsynqHTTP},
			phase{"callq" + round, h.phaseCallq})
	}
	phases = append(phases,
		phase{"HTTP enqueue", h.phaseHTTPEnqueue},
		phase{"Wait latency and idle pickup", h.phaseLatency})
	for i, p := range phases {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := h.adm.FlushAll(ctx).Err(); err != nil {
			return fmt.Errorf("bench: FLUSHALL: %w", err)
		}
		h.logf("[%d/%d] %s", i+1, len(phases), p.name)
		if err := p.fn(ctx); err != nil {
			return fmt.Errorf("bench: %s: %w", p.name, err)
		}
	}
	r := &h.res
	rs := &h.rounds
	r.AsynqNoopPerS, r.AsynqHTTPPerS, r.CallqPerS = benchMedian(rs.noop), benchMedian(rs.http), benchMedian(rs.callq)
	r.GoEnqueuePerS = benchMedian(rs.goEnqueue)
	r.RedisCmdsPerCall, r.AsynqHTTPRedisCmdsPerCall = benchMedian(rs.callqCmds), benchMedian(rs.httpCmds)
	r.WorkerPeakRSSMB = slices.Max(rs.rss)
	r.CallqVsAsynqHTTP = benchRound(benchRatio(r.CallqPerS, r.AsynqHTTPPerS), 3)
	r.CallqVsAsynqNoop = benchRound(benchRatio(r.CallqPerS, r.AsynqNoopPerS), 3)
	for _, v := range []*float64{&r.AsynqNoopPerS, &r.AsynqHTTPPerS, &r.CallqPerS, &r.HTTPEnqueuePerS, &r.GoEnqueuePerS} {
		*v = benchRound(*v, 0)
	}
	r.RedisCmdsPerCall = benchRound(r.RedisCmdsPerCall, 2)
	r.AsynqHTTPRedisCmdsPerCall = benchRound(r.AsynqHTTPRedisCmdsPerCall, 2)
	r.WorkerPeakRSSMB = benchRound(r.WorkerPeakRSSMB, 1)
	h.notes.elapsed = time.Since(start)
	h.logf("callq bench: done in %s", h.notes.elapsed.Round(100*time.Millisecond))
	return nil
}

// newClient is a go-redis client sized as callq sizes a worker's
// (worker.RedisPoolSize), for every phase alike, counting the commands it
// sends into n.
func (h *benchHarness) newClient(n *atomic.Int64) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: h.redis.Addr, PoolSize: worker.RedisPoolSize(h.cfg.concurrency)})
	if n != nil {
		c.AddHook(benchCmdCounter{n: n})
	}
	return c
}

// benchRedisSnap is what one INFO tells of Redis's work so far.
type benchRedisSnap struct {
	cmds int64   // total_commands_processed
	cpu  float64 // used_cpu_user + used_cpu_sys, seconds
}

// snapshot reads INFO stats and cpu. Redis counts an INFO after answering
// it, so each snapshot taken before the last one of a window adds one
// command to that window's delta: subtract them.
func (h *benchHarness) snapshot(ctx context.Context) (benchRedisSnap, error) {
	info, err := h.adm.Info(ctx, "stats", "cpu").Result()
	if err != nil {
		return benchRedisSnap{}, fmt.Errorf("INFO: %w", err)
	}
	cmds, err := strconv.ParseInt(redisInfoField(info, "total_commands_processed"), 10, 64)
	if err != nil {
		return benchRedisSnap{}, fmt.Errorf("INFO stats: %w", err)
	}
	user, _ := strconv.ParseFloat(redisInfoField(info, "used_cpu_user"), 64)
	sys, _ := strconv.ParseFloat(redisInfoField(info, "used_cpu_sys"), 64)
	return benchRedisSnap{cmds: cmds, cpu: user + sys}, nil
}

// benchCPU is where CPU went over an execution window, per call.
type benchCPU struct {
	redisUS, procUS float64 // microseconds per call; procUS < 0 when unknown
}

func (c benchCPU) String() string {
	proc := "n/a"
	if c.procUS >= 0 {
		proc = fmt.Sprintf("%.0f µs", c.procUS)
	}
	return fmt.Sprintf("CPU per call: redis-server %.0f µs, this process %s", c.redisUS, proc)
}

func benchMeasureCPU(n int, before, after benchRedisSnap, procBefore, procAfter time.Duration) benchCPU {
	u := benchCPU{redisUS: (after.cpu - before.cpu) * 1e6 / float64(n), procUS: -1}
	if procBefore >= 0 && procAfter >= 0 {
		u.procUS = float64((procAfter-procBefore)/time.Microsecond) / float64(n)
	}
	return u
}

// asynqServerConfig is the asynq configuration of callq's worker: the same
// concurrency, queues and intervals, logging off.
func (h *benchHarness) asynqServerConfig() asynq.Config {
	return asynq.Config{
		Concurrency:              h.cfg.concurrency,
		Queues:                   worker.DefaultQueues(),
		TaskCheckInterval:        worker.DefaultTaskCheckInterval,
		DelayedTaskCheckInterval: worker.DefaultDelayedTaskCheckInterval,
		ShutdownTimeout:          5 * time.Second,
		Logger:                   worker.NewAsynqLogger(&h.nop),
		LogLevel:                 asynq.FatalLevel,
	}
}

// benchAsynqRun is one raw asynq throughput phase: enqueue every task with no
// server running, then start a server and time it to the last task done.
type benchAsynqRun struct {
	perS, enqueuePerS, cmdsPerCall, sentPerCall float64
	cpu                                         benchCPU
}

func (h *benchHarness) runAsynq(ctx context.Context, taskType string, payload []byte, handle func(context.Context) error) (benchAsynqRun, error) {
	var out benchAsynqRun
	n := h.cfg.calls
	var sent atomic.Int64
	prod, work := h.newClient(&sent), h.newClient(&sent)
	defer prod.Close()
	defer work.Close()
	client := asynq.NewClientFromRedisClient(prod)
	defer client.Close()

	before, err := h.snapshot(ctx)
	if err != nil {
		return out, err
	}
	t0 := time.Now()
	err = benchConcurrent(ctx, n, benchEnqueuers, func(int) error {
		_, err := client.EnqueueContext(ctx, asynq.NewTask(taskType, payload), asynq.Queue(benchQueue))
		return err
	})
	if err != nil {
		return out, fmt.Errorf("enqueue: %w", err)
	}
	enq := time.Since(t0)
	out.enqueuePerS = float64(n) / enq.Seconds()

	var processed, failed atomic.Int64
	done := make(chan struct{})
	mux := asynq.NewServeMux()
	mux.HandleFunc(taskType, func(ctx context.Context, _ *asynq.Task) error {
		err := handle(ctx)
		if err != nil {
			failed.Add(1)
		}
		if processed.Add(1) == int64(n) {
			close(done)
		}
		if err != nil {
			return fmt.Errorf("%w: %w", err, asynq.SkipRetry) // counted once, never run again
		}
		return nil
	})
	srv := asynq.NewServerFromRedisClient(work, h.asynqServerConfig())
	started, err := h.snapshot(ctx)
	if err != nil {
		return out, err
	}
	proc0 := benchProcessCPU()
	t1 := time.Now()
	if err := srv.Start(mux); err != nil {
		return out, err
	}
	werr := benchWaitDone(ctx, done, func() string { return fmt.Sprintf("%d of %d tasks processed", processed.Load(), n) })
	elapsed := time.Since(t1)
	proc1 := benchProcessCPU()
	after, ierr := h.snapshot(ctx)
	sentCmds := sent.Load()
	srv.Shutdown()
	if werr != nil {
		return out, werr
	}
	if ierr != nil {
		return out, ierr
	}
	if f := failed.Load(); f > 0 {
		return out, fmt.Errorf("%d of %d tasks failed", f, n)
	}
	out.perS = float64(n) / elapsed.Seconds()
	out.cmdsPerCall = float64(after.cmds-before.cmds-2) / float64(n)
	out.sentPerCall = float64(sentCmds) / float64(n)
	out.cpu = benchMeasureCPU(n, started, after, proc0, proc1)
	h.logf("      enqueued %d in %s (%.0f/s), processed in %s: %.0f/s, %.2f Redis commands per task; %s",
		n, enq.Round(time.Millisecond), out.enqueuePerS, elapsed.Round(time.Millisecond), out.perS, out.cmdsPerCall, out.cpu)
	return out, nil
}

func (h *benchHarness) phaseAsynqNoop(ctx context.Context) error {
	r, err := h.runAsynq(ctx, "bench:noop", nil, func(context.Context) error { return nil })
	if err != nil {
		return err
	}
	h.rounds.noop = append(h.rounds.noop, r.perS)
	h.notes.asynqNoopCmds, h.notes.asynqNoopCPU = r.cmdsPerCall, r.cpu
	return nil
}

func (h *benchHarness) phaseAsynqHTTP(ctx context.Context) error {
	// The same transport settings as callq's per-integration client.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 0
	tr.MaxIdleConnsPerHost = h.cfg.concurrency
	hc := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	url := h.up.url + "/ok"
	h.up.hits.Store(0)
	r, err := h.runAsynq(ctx, "bench:http", []byte(`{"path":"/ok"}`), func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("upstream answered %d", resp.StatusCode)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if hits := h.up.hits.Load(); hits != int64(h.cfg.calls) {
		return fmt.Errorf("the upstream received %d requests for %d tasks", hits, h.cfg.calls)
	}
	h.rounds.http = append(h.rounds.http, r.perS)
	h.rounds.httpCmds = append(h.rounds.httpCmds, r.cmdsPerCall)
	h.notes.asynqHTTPSentCmds, h.notes.asynqHTTPCPU = r.sentPerCall, r.cpu
	return nil
}

// callqPipeline is a producer client over prod and a callq worker (not
// started) over work, as callq's own processes build them.
func (h *benchHarness) callqPipeline(prod, work *redis.Client) (*producer.Client, *worker.Worker, func(), error) {
	prodStore, err := tasks.NewStore(prod, nil)
	if err != nil {
		return nil, nil, nil, err
	}
	workStore, err := tasks.NewStore(work, nil)
	if err != nil {
		return nil, nil, nil, err
	}
	closeAll := func() { _ = prodStore.Close(); _ = workStore.Close() }
	client, err := producer.NewClient(prod, benchTenant, &producer.Config{Catalog: h.catalog, Records: prodStore})
	if err != nil {
		closeAll()
		return nil, nil, nil, err
	}
	creds, err := auth.NewStore(work, &auth.StoreConfig{Keyring: h.keyring})
	if err != nil {
		closeAll()
		return nil, nil, nil, err
	}
	w, err := worker.New(work, &worker.Config{
		Catalog: h.catalog, Records: workStore, Credentials: creds, Keyring: h.keyring,
		Concurrency: h.cfg.concurrency, Logger: &h.nop, ShutdownTimeout: 5 * time.Second,
	})
	if err != nil {
		closeAll()
		return nil, nil, nil, err
	}
	return client, w, closeAll, nil
}

// phaseCallq enqueues every call with the Go client (no worker running:
// that is go_enqueue_per_s), then starts a callq worker in this process and
// times it to the last terminal record, counted on the completion channel.
func (h *benchHarness) phaseCallq(ctx context.Context) error {
	n := h.cfg.calls
	var sent atomic.Int64
	prod, work := h.newClient(&sent), h.newClient(&sent)
	defer prod.Close()
	defer work.Close()
	client, w, closeAll, err := h.callqPipeline(prod, work)
	if err != nil {
		return err
	}
	defer closeAll()

	// Count completions as the worker publishes them, on a connection of
	// the harness's own, subscribed before the window opens.
	ps := h.adm.Subscribe(ctx, tasks.DefaultPrefix+":done")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		return fmt.Errorf("subscribe to completions: %w", err)
	}
	var completed atomic.Int64
	done := make(chan struct{})
	go func() {
		for {
			if _, err := ps.ReceiveMessage(context.Background()); err != nil {
				return
			}
			if completed.Add(1) == int64(n) {
				close(done)
			}
		}
	}()

	h.up.hits.Store(0)
	before, err := h.snapshot(ctx)
	if err != nil {
		return err
	}
	ids := make([]string, n)
	t0 := time.Now()
	err = benchConcurrent(ctx, n, benchEnqueuers, func(i int) error {
		res, err := client.Enqueue(ctx, &tasks.Call{Integration: benchIntegration, Method: http.MethodGet, Path: "/ok"})
		if err != nil {
			return err
		}
		ids[i] = res.Record.CorrelationID
		return nil
	})
	if err != nil {
		return fmt.Errorf("enqueue: %w", err)
	}
	enq := time.Since(t0)
	goEnqueue := float64(n) / enq.Seconds()

	// Start the worker from a low, known memory baseline.
	runtime.GC()
	debug.FreeOSMemory()
	started, err := h.snapshot(ctx)
	if err != nil {
		return err
	}
	rss := startBenchRSSWatch()
	var prof *os.File
	if h.cfg.cpuprofile != "" && len(h.rounds.callq) == 0 { // the first round only
		if prof, err = os.Create(h.cfg.cpuprofile); err != nil {
			return err
		}
		defer prof.Close()
		if err := pprof.StartCPUProfile(prof); err != nil {
			return err
		}
	}
	proc0 := benchProcessCPU()
	t1 := time.Now()
	if err := w.Start(); err != nil {
		if prof != nil {
			pprof.StopCPUProfile()
		}
		return err
	}
	werr := benchWaitDone(ctx, done, func() string { return fmt.Sprintf("%d of %d calls finished", completed.Load(), n) })
	elapsed := time.Since(t1)
	proc1 := benchProcessCPU()
	if prof != nil {
		pprof.StopCPUProfile()
	}
	peak, startMB, method := rss.stop()
	after, ierr := h.snapshot(ctx)
	sentCmds := sent.Load()
	w.Shutdown()
	if werr != nil {
		return werr
	}
	if ierr != nil {
		return ierr
	}
	perS := float64(n) / elapsed.Seconds()
	cmds := float64(after.cmds-before.cmds-2) / float64(n)
	h.notes.callqCPU = benchMeasureCPU(n, started, after, proc0, proc1)
	h.notes.callqSentCmds = float64(sentCmds) / float64(n)
	h.notes.rssStartMB, h.notes.rssMethod = startMB, method

	// Every record must have succeeded, once: outside the measured window.
	failed, err := h.countNotSucceeded(ctx, client, ids)
	if err != nil {
		return err
	}
	if hits := h.up.hits.Load(); hits != int64(n) || failed > 0 {
		return fmt.Errorf("%d of %d records did not succeed; the upstream received %d requests", failed, n, hits)
	}
	rs := &h.rounds
	rs.callq, rs.callqCmds = append(rs.callq, perS), append(rs.callqCmds, cmds)
	rs.goEnqueue, rs.rss = append(rs.goEnqueue, goEnqueue), append(rs.rss, peak)
	h.logf("      enqueued %d in %s (go_enqueue %.0f/s), executed in %s: %.0f/s, %.2f Redis commands per call, peak RSS %.1f MB; %s",
		n, enq.Round(time.Millisecond), goEnqueue, elapsed.Round(time.Millisecond), perS, cmds, peak, h.notes.callqCPU)
	if prof != nil {
		h.logf("      CPU profile of the execution window written to %s", h.cfg.cpuprofile)
	}
	return nil
}

func (h *benchHarness) countNotSucceeded(ctx context.Context, client *producer.Client, ids []string) (int, error) {
	var bad atomic.Int64
	err := benchConcurrent(ctx, len(ids), 16, func(i int) error {
		rec, err := client.Get(ctx, ids[i])
		if err != nil {
			return err
		}
		if rec.Status != tasks.StatusSucceeded || rec.Attempts != 1 {
			bad.Add(1)
		}
		return nil
	})
	return int(bad.Load()), err
}

// phaseHTTPEnqueue drives POST /v1/calls of the real API handler with
// benchEnqueuers keep-alive clients; no worker runs.
func (h *benchHarness) phaseHTTPEnqueue(ctx context.Context) error {
	n := h.cfg.httpRequests
	rdb := h.newClient(nil)
	defer rdb.Close()
	store, err := tasks.NewStore(rdb, nil)
	if err != nil {
		return err
	}
	defer store.Close()
	client, err := producer.NewClient(rdb, "default", &producer.Config{Catalog: h.catalog, Records: store})
	if err != nil {
		return err
	}
	defer client.Close()
	creds, err := auth.NewStore(rdb, &auth.StoreConfig{Keyring: h.keyring})
	if err != nil {
		return err
	}
	keys := auth.NewKeyStore(rdb, "")
	_, secret, err := keys.Create(ctx, benchTenant, auth.RoleProducer)
	if err != nil {
		return err
	}
	handler, err := producer.NewHandler(&producer.HandlerConfig{Client: client, Credentials: creds, Keys: keys, Logger: &h.nop})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	tr := &http.Transport{MaxIdleConns: 0, MaxIdleConnsPerHost: benchEnqueuers, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	url := "http://" + ln.Addr().String() + "/v1/calls"
	body := []byte(`{"integration":"` + benchIntegration + `","method":"GET","path":"/ok"}`)
	authz := "Bearer " + secret

	t0 := time.Now()
	err = benchConcurrent(ctx, n, benchEnqueuers, func(int) error {
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

// phaseLatency runs a callq worker and measures, one call at a time, how
// soon a blocked Wait learns of a completion and how soon an idle worker
// picks a call up.
func (h *benchHarness) phaseLatency(ctx context.Context) error {
	prod, work := h.newClient(nil), h.newClient(nil)
	defer prod.Close()
	defer work.Close()
	client, w, closeAll, err := h.callqPipeline(prod, work)
	if err != nil {
		return err
	}
	defer closeAll()
	if err := w.Start(); err != nil {
		return err
	}
	defer w.Shutdown()

	enqueue1 := func(path string) (string, error) {
		res, err := client.Enqueue(ctx, &tasks.Call{Integration: benchIntegration, Method: http.MethodGet, Path: path})
		if err != nil {
			return "", err
		}
		return res.Record.CorrelationID, nil
	}
	wait := func(id string) (*tasks.Record, error) {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		rec, err := client.Wait(wctx, id)
		if err == nil && rec.Status != tasks.StatusSucceeded {
			err = fmt.Errorf("call %s %s: %+v", id, rec.Status, rec.Error)
		}
		return rec, err
	}
	// Warm up: connections, the waiter's subscription, the worker's pool.
	for range 3 {
		id, err := enqueue1("/ok")
		if err != nil {
			return err
		}
		if _, err := wait(id); err != nil {
			return err
		}
	}

	// Wait latency: the upstream holds each request until a Wait goroutine
	// is blocked on the call, then lets it go.
	waitMS := make([]float64, 0, h.cfg.waitSamples)
	for i := range h.cfg.waitSamples {
		path := fmt.Sprintf("/hold/%d", i)
		probe := h.up.watch(path, true)
		id, err := enqueue1(path)
		if err != nil {
			return err
		}
		if _, err := probe.arrival(ctx); err != nil {
			return fmt.Errorf("wait sample %d: %w", i, err)
		}
		type waited struct {
			rec *tasks.Record
			at  time.Time
			err error
		}
		ch := make(chan waited, 1)
		go func() {
			rec, err := wait(id)
			ch <- waited{rec, time.Now(), err}
		}()
		time.Sleep(10 * time.Millisecond) // Wait has subscribed and read the running record by now
		close(probe.release)
		r := <-ch
		h.up.unwatch(path)
		if r.err != nil {
			return fmt.Errorf("wait sample %d: %w", i, r.err)
		}
		if r.rec.CompletedAt == nil {
			return fmt.Errorf("wait sample %d: record has no completed_at", i)
		}
		waitMS = append(waitMS, benchMS(r.at.Sub(*r.rec.CompletedAt)))
	}
	h.res.WaitLatencyMS = benchPercentiles(waitMS)
	h.notes.waitSamples = len(waitMS)
	h.logf("      wait latency over %d calls: p50 %.3f ms, p99 %.3f ms", len(waitMS), h.res.WaitLatencyMS.P50, h.res.WaitLatencyMS.P99)

	// Idle pickup: Enqueue returning → the upstream receiving the request,
	// after a random 50–150ms pause with nothing queued.
	pickMS := make([]float64, 0, h.cfg.pickupSamples)
	for i := range h.cfg.pickupSamples {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50*time.Millisecond + rand.N(100*time.Millisecond)):
		}
		path := fmt.Sprintf("/pickup/%d", i)
		probe := h.up.watch(path, false)
		id, err := enqueue1(path)
		returned := time.Now()
		if err != nil {
			return err
		}
		at, err := probe.arrival(ctx)
		if err != nil {
			return fmt.Errorf("pickup sample %d: %w", i, err)
		}
		pickMS = append(pickMS, benchMS(at.Sub(returned)))
		if _, err := wait(id); err != nil { // the worker is idle again before the next pause
			return err
		}
		h.up.unwatch(path)
	}
	h.res.IdlePickupMS = benchPercentiles(pickMS)
	h.notes.pickupSamples = len(pickMS)
	h.logf("      idle pickup over %d calls: p50 %.3f ms, p99 %.3f ms", len(pickMS), h.res.IdlePickupMS.P50, h.res.IdlePickupMS.P99)
	return nil
}

func (h *benchHarness) printTable(out io.Writer) {
	r, n, rs := &h.res, &h.notes, &h.rounds
	// each notes a figure's rounds when there were several.
	each := func(v []float64, format string) string {
		if len(v) < 2 {
			return ""
		}
		parts := make([]string, len(v))
		for i, x := range v {
			parts[i] = fmt.Sprintf(format, x)
		}
		return fmt.Sprintf("; median of %d rounds: %s", len(v), strings.Join(parts, " "))
	}
	perRound := func(a, b []float64) []float64 {
		out := make([]float64, min(len(a), len(b)))
		for i := range out {
			out[i] = benchRatio(a[i], b[i])
		}
		return out
	}
	fmt.Fprintf(out, "callq bench: %d calls at concurrency %d, %d round(s); %d cores, %s, redis %s; %s; took %s\n\n",
		r.Calls, r.Concurrency, h.cfg.rounds, r.Machine.Cores, r.Machine.Go, r.Machine.Redis, r.Date, n.elapsed.Round(100*time.Millisecond))
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	row := func(name, value, note string) { fmt.Fprintf(tw, "%s\t%s\t%s\n", name, value, note) }
	lat := func(l benchLatency) string { return fmt.Sprintf("p50 %.3f  p99 %.3f", l.P50, l.P99) }
	row("metric", "value", "what")
	row("asynq_noop_per_s", fmt.Sprintf("%.0f", r.AsynqNoopPerS), "raw asynq, no-op handler: the engine's ceiling; "+n.asynqNoopCPU.String()+each(rs.noop, "%.0f"))
	row("asynq_http_per_s", fmt.Sprintf("%.0f", r.AsynqHTTPPerS), "raw asynq, handler GETs the upstream with net/http, reads the body, stores nothing; "+n.asynqHTTPCPU.String()+each(rs.http, "%.0f"))
	row("callq_per_s", fmt.Sprintf("%.0f", r.CallqPerS), "callq worker in process: GET, response kept, terminal record written and published in one round trip; "+n.callqCPU.String()+each(rs.callq, "%.0f"))
	row("callq_vs_asynq_http", fmt.Sprintf("%.3f", r.CallqVsAsynqHTTP), "callq_per_s / asynq_http_per_s"+strings.Replace(each(perRound(rs.callq, rs.http), "%.3f"), "median of", "per round of", 1))
	row("callq_vs_asynq_noop", fmt.Sprintf("%.3f", r.CallqVsAsynqNoop), "callq_per_s / asynq_noop_per_s"+strings.Replace(each(perRound(rs.callq, rs.noop), "%.3f"), "median of", "per round of", 1))
	row("http_enqueue_per_s", fmt.Sprintf("%.0f", r.HTTPEnqueuePerS), fmt.Sprintf("POST /v1/calls, %d keep-alive clients, %d requests, no worker", benchEnqueuers, n.httpRequests))
	row("go_enqueue_per_s", fmt.Sprintf("%.0f", r.GoEnqueuePerS), fmt.Sprintf("producer.Client.Enqueue, %d goroutines, no worker (the enqueue step of the callq phase)", benchEnqueuers)+each(rs.goEnqueue, "%.0f"))
	row("wait_latency_ms", lat(r.WaitLatencyMS), fmt.Sprintf("record completed_at (stamped by the worker just before its terminal write) to Wait returning; %d calls one at a time, Wait blocked first", n.waitSamples))
	row("idle_pickup_ms", lat(r.IdlePickupMS), fmt.Sprintf("Enqueue returning to the upstream receiving the request, idle worker, random 50-150ms pauses; %d calls", n.pickupSamples))
	row("redis_cmds_per_call", fmt.Sprintf("%.2f", r.RedisCmdsPerCall), fmt.Sprintf("callq phase, enqueue + execution: INFO total_commands_processed delta / calls (%.2f sent by clients; the rest run inside Lua scripts)", n.callqSentCmds))
	row("asynq_http_redis_cmds_per_call", fmt.Sprintf("%.2f", r.AsynqHTTPRedisCmdsPerCall), fmt.Sprintf("the same for the asynq + net/http phase (%.2f sent by clients; no-op phase: %.2f)", n.asynqHTTPSentCmds, n.asynqNoopCmds))
	row("worker_peak_rss_mb", fmt.Sprintf("%.1f", r.WorkerPeakRSSMB), fmt.Sprintf("peak RSS of this process (worker in process, with the harness and upstream) over the callq execution window; %s; %.1f MB at its start%s", n.rssMethod, n.rssStartMB, strings.Replace(each(rs.rss, "%.1f"), "median", "maximum", 1)))
	tw.Flush()
	fmt.Fprintf(out, "\nThroughput phases are enqueue-first: all %d tasks are queued with no worker running, then the worker\n"+
		"(asynq.Server or callq's, with callq's queues critical=6,default=3,low=1, TaskCheckInterval %s and\n"+
		"DelayedTaskCheckInterval %s) is started, and calls/s runs from its start to the last completion\n"+
		"(counted in the handler for asynq, on the callq:done completion channel for callq).\n"+
		"Redis command counts include the enqueue; the harness's own INFO commands are subtracted.\n"+
		"CPU per call is over the execution window only; this process holds the worker, the upstream and the harness.\n",
		r.Calls, worker.DefaultTaskCheckInterval, worker.DefaultDelayedTaskCheckInterval)
}

// --- the local upstream ---

type benchUpstream struct {
	srv  *http.Server
	url  string
	hits atomic.Int64

	mu     sync.Mutex
	probes map[string]*benchProbe
}

// benchProbe watches one path: the time its request arrived, and, when
// release is not nil, a hold on the answer until release is closed.
type benchProbe struct {
	arrived chan time.Time
	release chan struct{}
}

func (p *benchProbe) arrival(ctx context.Context) (time.Time, error) {
	select {
	case t := <-p.arrived:
		return t, nil
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	case <-time.After(30 * time.Second):
		return time.Time{}, errors.New("the upstream did not receive the request within 30s")
	}
}

func startBenchUpstream() (*benchUpstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: upstream: %w", err)
	}
	u := &benchUpstream{url: "http://" + ln.Addr().String(), probes: map[string]*benchProbe{}}
	u.srv = &http.Server{Handler: u, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = u.srv.Serve(ln) }()
	return u, nil
}

var benchBodyLen = strconv.Itoa(len(benchUpstreamBody))

func (u *benchUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	u.hits.Add(1)
	if r.URL.Path != "/ok" {
		u.mu.Lock()
		p := u.probes[r.URL.Path]
		u.mu.Unlock()
		if p != nil {
			select {
			case p.arrived <- now:
			default:
			}
			if p.release != nil {
				select {
				case <-p.release:
				case <-r.Context().Done():
				}
			}
		}
	}
	hdr := w.Header()
	hdr["Content-Type"] = []string{"application/json"}
	hdr["Content-Length"] = []string{benchBodyLen}
	_, _ = w.Write(benchUpstreamBody)
}

func (u *benchUpstream) watch(path string, hold bool) *benchProbe {
	p := &benchProbe{arrived: make(chan time.Time, 1)}
	if hold {
		p.release = make(chan struct{})
	}
	u.mu.Lock()
	u.probes[path] = p
	u.mu.Unlock()
	return p
}

func (u *benchUpstream) unwatch(path string) {
	u.mu.Lock()
	delete(u.probes, path)
	u.mu.Unlock()
}

func (u *benchUpstream) close() { _ = u.srv.Close() }

// --- measuring helpers ---

// benchCmdCounter is a go-redis hook counting the commands a client sends.
type benchCmdCounter struct{ n *atomic.Int64 }

func (c benchCmdCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c benchCmdCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}

func (c benchCmdCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// benchConcurrent calls fn(0..n-1) from workers goroutines and returns the
// first error.
func benchConcurrent(ctx context.Context, n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n))
					return
				}
			}
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// benchWaitDone waits for done, giving up after a generous bound.
func benchWaitDone(ctx context.Context, done <-chan struct{}, status func() string) error {
	t := time.NewTimer(5 * time.Minute)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w (%s)", ctx.Err(), status())
	case <-t.C:
		return fmt.Errorf("gave up after 5m: %s", status())
	}
}

// benchRSSWatch follows this process's resident memory over a window: the
// kernel's high-water mark (VmHWM) after resetting it through
// /proc/self/clear_refs, and VmRSS sampled every 50ms in case the reset is
// not allowed.
type benchRSSWatch struct {
	hwmReset bool
	startKB  int64
	peakKB   atomic.Int64
	quit     chan struct{}
	done     chan struct{}
}

func startBenchRSSWatch() *benchRSSWatch {
	w := &benchRSSWatch{quit: make(chan struct{}), done: make(chan struct{})}
	w.hwmReset = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	w.startKB, _ = benchProcStatusKB("VmRSS")
	w.peakKB.Store(w.startKB)
	go func() {
		defer close(w.done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-w.quit:
				return
			case <-t.C:
				if kb, ok := benchProcStatusKB("VmRSS"); ok && kb > w.peakKB.Load() {
					w.peakKB.Store(kb)
				}
			}
		}
	}()
	return w
}

// stop returns the peak and starting RSS in MB and how the peak was taken.
func (w *benchRSSWatch) stop() (peakMB, startMB float64, method string) {
	close(w.quit)
	<-w.done
	peak := w.peakKB.Load()
	if kb, ok := benchProcStatusKB("VmRSS"); ok {
		peak = max(peak, kb)
	}
	method = "VmRSS sampled every 50ms"
	if w.hwmReset {
		if kb, ok := benchProcStatusKB("VmHWM"); ok {
			peak = max(peak, kb)
			method = "kernel VmHWM, reset at the window's start"
		}
	}
	if peak == 0 {
		method = "not available (no /proc)"
	}
	return float64(peak) / 1024, float64(w.startKB) / 1024, method
}

// benchProcStatusKB reads a "Name:   123 kB" line of /proc/self/status.
func benchProcStatusKB(name string) (int64, bool) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), name+":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		return kb, err == nil
	}
	return 0, false
}

// benchProcessCPU is the user+system CPU time this process has used, from
// /proc/self/stat (in clock ticks, taken as the usual 100 per second), or -1
// where there is no /proc.
func benchProcessCPU() time.Duration {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return -1
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3, the state
	if len(f) < 13 {
		return -1
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// redisInfoField reads one "name:value" line of an INFO answer.
func redisInfoField(info, name string) string {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// benchPercentiles returns the nearest-rank p50 and p99 of samples, in ms.
func benchPercentiles(samples []float64) benchLatency {
	if len(samples) == 0 {
		return benchLatency{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return benchLatency{P50: benchRound(rank(0.50), 3), P99: benchRound(rank(0.99), 3)}
}

// median of v; 0 for none.
func benchMedian(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func benchMS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// round rounds v to places decimal places.
func benchRound(v float64, places int) float64 {
	p := math.Pow(10, float64(places))
	return math.Round(v*p) / p
}

func benchRatio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
