package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/rs/zerolog"

	"github.com/callq/callq/internal/flow"
	"github.com/callq/callq/tasks"
)

// Waits of a call that found no free slot: slotWait, plus up to
// slotJitter, so that the calls held at one moment do not all come back
// at the next. asynq schedules a retry in whole seconds (the second
// now+wait falls in) and moves due retries every DelayedTaskCheckInterval
// (250ms): a wait of 1s to 2s brings the call back between a few
// milliseconds and 2.25s later (about 1s on average). A shorter wait would
// round to "now" half the time, and make every held call poll Redis (and
// rewrite its record) four times a second.
const (
	slotWait   = time.Second
	slotJitter = time.Second
)

// concurrency takes a slot under the integration's fleet-wide cap for the
// call's tenant (and credential, unless the cap counts the integration as a
// whole), or holds the call back when every slot is taken. The slot is
// renewed while the attempt runs (keep) and released by the pass, on every
// way the run ends; a worker that dies holding it frees it when its lease
// ends (Config.SlotLease).
func (w *Worker) concurrency(ctx context.Context, r *run) (pass, *heldBack, error) {
	c, name := r.in.Concurrency, r.in.Name
	scope := flow.Scope{Tenant: r.tenant, Integration: name}
	if c.Per != tasks.ConcurrencyPerIntegration {
		scope.PerCredential, scope.Credential = true, r.call.Credential
	}
	slot, n, err := w.slots.Acquire(ctx, scope, c.Limit)
	if err != nil {
		return nil, nil, fmt.Errorf("concurrency: %w", err)
	}
	if slot == nil {
		of := ""
		if scope.PerCredential && scope.Credential != "" {
			of = fmt.Sprintf(" with credential %q", scope.Credential)
		}
		return nil, &heldBack{delay: slotWait + rand.N(slotJitter),
			note: fmt.Sprintf("waiting for a free slot: %d of %d requests to %q%s are in flight", n, c.Limit, name, of)}, nil
	}
	w.cfg.Metrics.slot(name, 1)
	log := r.log
	stop := w.keep(slot, log)
	return func(ctx context.Context, _ *outcome) {
		stop()
		if err := w.slots.Release(ctx, slot); err != nil {
			log.Warn().Err(err).Msg("could not release a concurrency slot; it frees when its lease ends")
		}
		w.cfg.Metrics.slot(name, -1)
	}, nil, nil
}

// keep renews slot every third of its lease until stop is called (which
// waits for a renewal under way), so that a long attempt keeps its slot
// while a dead worker's slot frees within a lease.
func (w *Worker) keep(slot *flow.Slot, log zerolog.Logger) (stop func()) {
	every := w.slots.Lease() / 3
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), every)
			err := w.slots.Renew(ctx, slot)
			cancel()
			switch {
			case errors.Is(err, flow.ErrLeaseLost):
				log.Warn().Int64("lease_ms", w.slots.Lease().Milliseconds()).
					Msg("concurrency slot lost: its lease ended before it was renewed (Redis or this worker stalled); another call may take it while this attempt runs")
				return
			case err != nil:
				log.Warn().Err(err).Msg("could not renew a concurrency slot; trying again")
			}
		}
	}()
	return func() { close(done); <-exited }
}
