package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"

	"github.com/callq/callq/worker"
)

// asynqServerConfig is the asynq configuration of callq's worker: the same
// concurrency, queues and intervals, logging off.
func (h *harness) asynqServerConfig() asynq.Config {
	return asynq.Config{
		Concurrency:              h.cfg.Concurrency,
		Queues:                   worker.DefaultQueues(),
		TaskCheckInterval:        worker.DefaultTaskCheckInterval,
		DelayedTaskCheckInterval: worker.DefaultDelayedTaskCheckInterval,
		ShutdownTimeout:          5 * time.Second,
		Logger:                   worker.NewAsynqLogger(&h.nop),
		LogLevel:                 asynq.FatalLevel,
	}
}

// asynqRun is one raw asynq throughput phase: enqueue every task with no
// server running, then start a server and time it to the last task done.
type asynqRun struct {
	perS, enqueuePerS, cmdsPerCall, sentPerCall float64
	cpu                                         cpuUse
}

func (h *harness) runAsynq(ctx context.Context, taskType string, payload []byte, handle func(context.Context) error) (asynqRun, error) {
	var out asynqRun
	n := h.cfg.Calls
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
	err = concurrent(ctx, n, enqueuers, func(int) error {
		_, err := client.EnqueueContext(ctx, asynq.NewTask(taskType, payload), asynq.Queue(queue))
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
	proc0 := processCPU()
	t1 := time.Now()
	if err := srv.Start(mux); err != nil {
		return out, err
	}
	werr := waitDone(ctx, done, func() string { return fmt.Sprintf("%d of %d tasks processed", processed.Load(), n) })
	elapsed := time.Since(t1)
	proc1 := processCPU()
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
	out.cpu = measureCPU(n, started, after, proc0, proc1)
	h.logf("      enqueued %d in %s (%.0f/s), processed in %s: %.0f/s, %.2f Redis commands per task; %s",
		n, enq.Round(time.Millisecond), out.enqueuePerS, elapsed.Round(time.Millisecond), out.perS, out.cmdsPerCall, out.cpu)
	return out, nil
}

func (h *harness) phaseAsynqNoop(ctx context.Context) error {
	r, err := h.runAsynq(ctx, "bench:noop", nil, func(context.Context) error { return nil })
	if err != nil {
		return err
	}
	h.rounds.noop = append(h.rounds.noop, r.perS)
	h.rounds.cpu.add("asynq_noop", r.cpu.redisUS)
	h.notes.asynqNoopCmds, h.notes.asynqNoopCPU = r.cmdsPerCall, r.cpu
	return nil
}

func (h *harness) phaseAsynqHTTP(ctx context.Context) error {
	r, err := h.runAsynqHTTP(ctx, "/ok", false)
	if err != nil {
		return err
	}
	h.rounds.http = append(h.rounds.http, r.perS)
	h.rounds.httpCmds = append(h.rounds.httpCmds, r.cmdsPerCall)
	h.rounds.cpu.add("asynq_http", r.cpu.redisUS)
	h.notes.asynqHTTPSentCmds, h.notes.asynqHTTPCPU = r.sentPerCall, r.cpu
	return nil
}

// phaseAsynqHTTPCred is the baseline of the credential phase: the same
// handler sending a bearer token it reads from the environment on each
// call, so it pays no Redis read.
func (h *harness) phaseAsynqHTTPCred(ctx context.Context) error {
	r, err := h.runAsynqHTTP(ctx, credPath, true)
	if err != nil {
		return err
	}
	h.rounds.httpCred = append(h.rounds.httpCred, r.perS)
	h.notes.asynqHTTPCredCPU = r.cpu
	return nil
}

// runAsynqHTTP is an asynq throughput phase whose handler GETs path of the
// upstream with net/http and reads the body, storing nothing; with bearer,
// it sends the token of tokenEnv.
func (h *harness) runAsynqHTTP(ctx context.Context, path string, bearer bool) (asynqRun, error) {
	// The same transport settings as callq's per-integration client.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 0
	tr.MaxIdleConnsPerHost = h.cfg.Concurrency
	hc := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	url := h.up.url + path
	h.up.hits.Store(0)
	h.up.credHits.Store(0)
	r, err := h.runAsynq(ctx, "bench:http", []byte(`{"path":"`+path+`"}`), func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if bearer {
			req.Header.Set("Authorization", "Bearer "+os.Getenv(tokenEnv))
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
		return r, err
	}
	if hits := h.up.hits.Load(); hits != int64(h.cfg.Calls) {
		return r, fmt.Errorf("the upstream received %d requests for %d tasks", hits, h.cfg.Calls)
	}
	if bearer && h.up.credHits.Load() != int64(h.cfg.Calls) {
		return r, fmt.Errorf("the upstream received the token on %d of %d tasks", h.up.credHits.Load(), h.cfg.Calls)
	}
	return r, nil
}
