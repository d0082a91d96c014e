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

	"github.com/redis/go-redis/v9"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

// callqPipeline is a producer client over prod and a callq worker (not
// started) over work, as callq's own processes build them, with one asynq
// queue per logical queue.
func (h *harness) callqPipeline(prod, work redis.UniversalClient) (*producer.Client, *worker.Worker, func(), error) {
	return h.callqPipelineSharded(prod, work, 1)
}

// callqPipelineSharded is callqPipeline with each logical queue split into
// shards asynq queues (CALLQ_QUEUE_SHARDS).
func (h *harness) callqPipelineSharded(prod, work redis.UniversalClient, shards int) (*producer.Client, *worker.Worker, func(), error) {
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
func (h *harness) phaseCallq(ctx context.Context) error {
	n := h.cfg.Calls
	var sent atomic.Int64
	prod, work := h.newClient(&sent), h.newClient(&sent)
	defer prod.Close()
	defer work.Close()
	client, w, closeAll, err := h.callqPipeline(prod, work)
	if err != nil {
		return err
	}
	defer closeAll()

	completed, done, stopCounting, err := countCompletions(ctx, h.adm, n)
	if err != nil {
		return err
	}
	defer stopCounting()

	h.up.hits.Store(0)
	before, err := h.snapshot(ctx)
	if err != nil {
		return err
	}
	ids, enq, err := enqueueCalls(ctx, client, n)
	if err != nil {
		return err
	}
	goEnqueue := float64(n) / enq.Seconds()

	// Start the worker from a low, known memory baseline.
	runtime.GC()
	debug.FreeOSMemory()
	started, err := h.snapshot(ctx)
	if err != nil {
		return err
	}
	rss := startRSSWatch()
	profiled := h.cfg.CPUProfile != "" && len(h.rounds.callq) == 0 // the first round only
	stopProfile := func() {}
	if profiled {
		if stopProfile, err = startCPUProfile(h.cfg.CPUProfile); err != nil {
			return err
		}
	}
	proc0 := processCPU()
	t1 := time.Now()
	if err := w.Start(); err != nil {
		stopProfile()
		return err
	}
	werr := waitDone(ctx, done, func() string { return fmt.Sprintf("%d of %d calls finished", completed.Load(), n) })
	elapsed := time.Since(t1)
	proc1 := processCPU()
	stopProfile()
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
	h.notes.callqCPU = measureCPU(n, started, after, proc0, proc1)
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
	if profiled {
		h.logf("      CPU profile of the execution window written to %s", h.cfg.CPUProfile)
	}
	return nil
}

// countCompletions counts completions as the worker publishes them, on a
// connection of rdb, the harness's own, subscribed before it returns
// (before the window opens); done is closed at the nth.
func countCompletions(ctx context.Context, rdb redis.UniversalClient, n int) (completed *atomic.Int64, done <-chan struct{}, stop func(), err error) {
	ps := rdb.Subscribe(ctx, rediskeys.DoneChannel)
	if _, err := ps.Receive(ctx); err != nil {
		_ = ps.Close()
		return nil, nil, nil, fmt.Errorf("subscribe to completions: %w", err)
	}
	completed = new(atomic.Int64)
	all := make(chan struct{})
	go func() {
		for {
			if _, err := ps.ReceiveMessage(context.Background()); err != nil {
				return
			}
			if completed.Add(1) == int64(n) {
				close(all)
			}
		}
	}()
	return completed, all, func() { _ = ps.Close() }, nil
}

// enqueueCalls enqueues n calls with the Go client from enqueuers
// goroutines and returns their IDs and how long it took.
func enqueueCalls(ctx context.Context, client *producer.Client, n int) ([]string, time.Duration, error) {
	ids := make([]string, n)
	t0 := time.Now()
	err := concurrent(ctx, n, enqueuers, func(i int) error {
		res, err := client.Enqueue(ctx, &tasks.Call{Integration: integration, Method: http.MethodGet, Path: "/ok"})
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
