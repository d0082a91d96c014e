package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
)

// phaseLatency runs a callq worker and measures, one call at a time, how
// soon a blocked Wait learns of a completion and how soon an idle worker
// picks a call up.
func (h *harness) phaseLatency(ctx context.Context) error {
	prod, work := h.newClient(nil), h.newClient(nil)
	defer prod.Close()
	defer work.Close()
	client, w, closeAll, err := h.callqPipeline(prod, work, nil)
	if err != nil {
		return err
	}
	defer closeAll()
	if err := w.Start(); err != nil {
		return err
	}
	defer w.Shutdown()

	c := oneCall{client}
	// Warm up: connections, the waiter's subscription, the worker's pool.
	for range 3 {
		id, err := c.enqueue(ctx, "/ok")
		if err != nil {
			return err
		}
		if _, err := c.wait(ctx, id); err != nil {
			return err
		}
	}

	if err := h.measureWait(ctx, c); err != nil {
		return err
	}
	return h.measurePickup(ctx, c)
}

// oneCall enqueues and waits for one call to the upstream at a time.
type oneCall struct{ client *producer.Client }

func (c oneCall) enqueue(ctx context.Context, path string) (string, error) {
	res, err := c.client.Enqueue(ctx, &tasks.Call{Integration: integration, Method: http.MethodGet, Path: path})
	if err != nil {
		return "", err
	}
	return res.Record.CorrelationID, nil
}

// wait waits up to 30s for the call's outcome, which must be a success.
func (c oneCall) wait(ctx context.Context, id string) (*tasks.Record, error) {
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rec, err := c.client.Wait(wctx, id)
	if err == nil && rec.Status != tasks.StatusSucceeded {
		err = fmt.Errorf("call %s %s: %+v", id, rec.Status, rec.Error)
	}
	return rec, err
}

// measureWait is the Wait latency: the upstream holds each request until a
// Wait goroutine is blocked on the call, then lets it go.
func (h *harness) measureWait(ctx context.Context, c oneCall) error {
	waitMS := make([]float64, 0, h.cfg.WaitSamples)
	for i := range h.cfg.WaitSamples {
		path := fmt.Sprintf("/hold/%d", i)
		probe := h.up.watch(path, true)
		id, err := c.enqueue(ctx, path)
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
			rec, err := c.wait(ctx, id)
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
		waitMS = append(waitMS, ms(r.at.Sub(*r.rec.CompletedAt)))
	}
	h.res.WaitLatencyMS = percentiles(waitMS)
	h.notes.waitSamples = len(waitMS)
	h.logf("      wait latency over %d calls: p50 %.3f ms, p99 %.3f ms", len(waitMS), h.res.WaitLatencyMS.P50, h.res.WaitLatencyMS.P99)
	return nil
}

// measurePickup is the idle pickup: Enqueue returning → the upstream
// receiving the request, after a random 50–150ms pause with nothing queued.
func (h *harness) measurePickup(ctx context.Context, c oneCall) error {
	pickMS := make([]float64, 0, h.cfg.PickupSamples)
	for i := range h.cfg.PickupSamples {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50*time.Millisecond + rand.N(100*time.Millisecond)):
		}
		path := fmt.Sprintf("/pickup/%d", i)
		probe := h.up.watch(path, false)
		id, err := c.enqueue(ctx, path)
		returned := time.Now()
		if err != nil {
			return err
		}
		at, err := probe.arrival(ctx)
		if err != nil {
			return fmt.Errorf("pickup sample %d: %w", i, err)
		}
		pickMS = append(pickMS, ms(at.Sub(returned)))
		if _, err := c.wait(ctx, id); err != nil { // the worker is idle again before the next pause
			return err
		}
		h.up.unwatch(path)
	}
	h.res.IdlePickupMS = percentiles(pickMS)
	h.notes.pickupSamples = len(pickMS)
	h.logf("      idle pickup over %d calls: p50 %.3f ms, p99 %.3f ms", len(pickMS), h.res.IdlePickupMS.P50, h.res.IdlePickupMS.P99)
	return nil
}
