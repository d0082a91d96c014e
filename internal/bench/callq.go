package bench

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

// callqPipeline is a producer client over prod and a callq worker (not
// started) over work, as callq's own processes build them, with one asynq
// queue per logical queue.
func (h *harness) callqPipeline(prod, work redis.UniversalClient, metrics *worker.Metrics) (*producer.Client, *worker.Worker, func(), error) {
	return h.callqPipelineSharded(prod, work, 1, metrics)
}

// callqPipelineSharded is callqPipeline with each logical queue split into
// shards asynq queues (CALLQ_QUEUE_SHARDS), its metrics into metrics.
func (h *harness) callqPipelineSharded(prod, work redis.UniversalClient, shards int, metrics *worker.Metrics) (*producer.Client, *worker.Worker, func(), error) {
	prodStore, err := tasks.NewStore(prod, nil)
	if err != nil {
		return nil, nil, nil, err
	}
	workStore, err := tasks.NewStore(work, nil)
	if err != nil {
		return nil, nil, nil, err
	}
	closeAll := func() { _ = prodStore.Close(); _ = workStore.Close() }
	client, err := producer.NewClient(prod, tenant, &producer.Config{Catalog: h.catalog, Records: prodStore, QueueShards: shards})
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
		Concurrency: h.cfg.Concurrency, Logger: &h.nop, ShutdownTimeout: 5 * time.Second, QueueShards: shards,
		Metrics: metrics,
	})
	if err != nil {
		closeAll()
		return nil, nil, nil, err
	}
	return client, w, closeAll, nil
}

// callqSpec is what a callq throughput phase calls: the path, and whether
// with credIntegration's bearer credential.
type callqSpec struct {
	path    string
	cred    bool
	profile bool // CPU-profile the execution window (Config.CPUProfile)
}

// callqRun is one callq throughput phase's figures.
type callqRun struct {
	perS, goEnqueuePerS, cmdsPerCall, sentPerCall float64
	peakMB, startMB                               float64
	rssMethod                                     string
	cpu                                           cpuUse
}

// phaseCallq is the callq throughput phase without a credential.
func (h *harness) phaseCallq(ctx context.Context) error {
	r, err := h.runCallq(ctx, callqSpec{path: "/ok", profile: h.cfg.CPUProfile != "" && len(h.rounds.callq) == 0})
	if err != nil {
		return err
	}
	rs := &h.rounds
	rs.callq, rs.callqCmds = append(rs.callq, r.perS), append(rs.callqCmds, r.cmdsPerCall)
	rs.goEnqueue, rs.rss = append(rs.goEnqueue, r.goEnqueuePerS), append(rs.rss, r.peakMB)
	rs.cpu.add("callq", r.cpu.redisUS)
	h.notes.callqCPU = r.cpu
	h.notes.callqSentCmds = r.sentPerCall
	h.notes.rssStartMB, h.notes.rssMethod = r.startMB, r.rssMethod
	return nil
}

// phaseCallqCred is the callq throughput phase with a bearer credential
// on every call, stored sealed as a user would PUT it.
func (h *harness) phaseCallqCred(ctx context.Context) error {
	r, err := h.runCallq(ctx, callqSpec{path: credPath, cred: true})
	if err != nil {
		return err
	}
	rs := &h.rounds
	rs.callqCred, rs.callqCredCmds = append(rs.callqCred, r.perS), append(rs.callqCredCmds, r.cmdsPerCall)
	rs.cpu.add("callq_cred", r.cpu.redisUS)
	h.notes.callqCredCPU = r.cpu
	return nil
}

// runCallq enqueues every call with the Go client (no worker running:
// that is go_enqueue_per_s), then starts a callq worker in this process and
// times it to the last terminal record, counted by the worker (countFinished).
func (h *harness) runCallq(ctx context.Context, spec callqSpec) (callqRun, error) {
	var out callqRun
	n := h.cfg.Calls
	var sent atomic.Int64
	prod, work := h.newClient(&sent), h.newClient(&sent)
	defer prod.Close()
	defer work.Close()
	completed, done, metrics, stopCounting, err := countFinished(n)
	if err != nil {
		return out, err
	}
	defer stopCounting()
	client, w, closeAll, err := h.callqPipeline(prod, work, metrics)
	if err != nil {
		return out, err
	}
	defer closeAll()
	call := tasks.Call{Integration: integration, Method: http.MethodGet, Path: spec.path}
	if spec.cred {
		call.Integration, call.Credential = credIntegration, credRef
		if err := h.putCredential(ctx, prod); err != nil {
			return out, err
		}
	}

	h.up.hits.Store(0)
	h.up.credHits.Store(0)
	before, err := h.snapshot(ctx)
	if err != nil {
		return out, err
	}
	ids, enq, err := enqueueCalls(ctx, client, n, &call)
	if err != nil {
		return out, err
	}
	out.goEnqueuePerS = float64(n) / enq.Seconds()

	// Start the worker from a low, known memory baseline.
	runtime.GC()
	debug.FreeOSMemory()
	started, err := h.snapshot(ctx)
	if err != nil {
		return out, err
	}
	rss := startRSSWatch()
	stopProfile := func() {}
	if spec.profile {
		if stopProfile, err = startCPUProfile(h.cfg.CPUProfile); err != nil {
			return out, err
		}
	}
	proc0 := processCPU()
	t1 := time.Now()
	if err := w.Start(); err != nil {
		stopProfile()
		return out, err
	}
	werr := waitDone(ctx, done, func() string { return fmt.Sprintf("%d of %d calls finished", completed.Load(), n) })
	elapsed := time.Since(t1)
	proc1 := processCPU()
	stopProfile()
	out.peakMB, out.startMB, out.rssMethod = rss.stop()
	after, ierr := h.snapshot(ctx)
	sentCmds := sent.Load()
	w.Shutdown()
	if werr != nil {
		return out, werr
	}
	if ierr != nil {
		return out, ierr
	}
	out.perS = float64(n) / elapsed.Seconds()
	out.cmdsPerCall = float64(after.cmds-before.cmds-2) / float64(n)
	out.cpu = measureCPU(n, started, after, proc0, proc1)
	out.sentPerCall = float64(sentCmds) / float64(n)

	// Every record must have succeeded, once: outside the measured window.
	failed, err := h.countNotSucceeded(ctx, client, ids)
	if err != nil {
		return out, err
	}
	if hits := h.up.hits.Load(); hits != int64(n) || failed > 0 {
		return out, fmt.Errorf("%d of %d records did not succeed; the upstream received %d requests", failed, n, hits)
	}
	if spec.cred && h.up.credHits.Load() != int64(n) {
		return out, fmt.Errorf("the upstream received the credential's token on %d of %d calls", h.up.credHits.Load(), n)
	}
	h.logf("      enqueued %d in %s (go_enqueue %.0f/s), executed in %s: %.0f/s, %.2f Redis commands per call, peak RSS %.1f MB; %s",
		n, enq.Round(time.Millisecond), out.goEnqueuePerS, elapsed.Round(time.Millisecond), out.perS, out.cmdsPerCall, out.peakMB, out.cpu)
	if spec.profile {
		h.logf("      CPU profile of the execution window written to %s", h.cfg.CPUProfile)
	}
	return out, nil
}

// putCredential stores credIntegration's credential, its token sealed, as
// PUT /v1/credentials/{ref} does.
func (h *harness) putCredential(ctx context.Context, rdb redis.UniversalClient) error {
	store, err := auth.NewStore(rdb, &auth.StoreConfig{Keyring: h.keyring})
	if err != nil {
		return err
	}
	_, err = store.Put(ctx, tenant, credRef, credIntegration, map[string]string{"token": h.token})
	return err
}

// countFinished counts the calls the worker finishes, from the worker's
// own metrics (worker.Metrics' callq_calls_finished_total), read in this
// process every 2ms: a terminal write publishes only the calls
// someone waits for, and reading Redis would count in the figures. done is
// closed at the nth.
func countFinished(n int) (completed *atomic.Int64, done <-chan struct{}, metrics *worker.Metrics, stop func(), err error) {
	reg := prometheus.NewRegistry()
	if metrics, err = worker.NewMetrics(reg); err != nil {
		return nil, nil, nil, nil, err
	}
	completed = new(atomic.Int64)
	all, quit, exited := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
			}
			if completed.Store(finishedCalls(reg)); completed.Load() >= int64(n) {
				close(all)
				return
			}
		}
	}()
	return completed, all, metrics, func() { close(quit); <-exited }, nil
}

// finishedCalls sums callq_calls_finished_total over its labels.
func finishedCalls(reg *prometheus.Registry) int64 {
	mfs, _ := reg.Gather()
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "callq_calls_finished_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return int64(sum)
}

// enqueueCalls enqueues n copies of call with the Go client from enqueuers
// goroutines and returns their IDs and how long it took.
func enqueueCalls(ctx context.Context, client *producer.Client, n int, call *tasks.Call) ([]string, time.Duration, error) {
	ids := make([]string, n)
	t0 := time.Now()
	err := concurrent(ctx, n, enqueuers, func(i int) error {
		c := *call
		res, err := client.Enqueue(ctx, &c)
		if err != nil {
			return err
		}
		ids[i] = res.Record.CorrelationID
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("enqueue: %w", err)
	}
	return ids, time.Since(t0), nil
}

// startCPUProfile profiles this process into path until stop.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); _ = f.Close() }, nil
}

func (h *harness) countNotSucceeded(ctx context.Context, client *producer.Client, ids []string) (int, error) {
	var bad atomic.Int64
	err := concurrent(ctx, len(ids), 16, func(i int) error {
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
