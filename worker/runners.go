package worker

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"

	"github.com/hibiken/asynq"
)

// runners run call handlers on long-lived goroutines. asynq starts a new
// goroutine for every task, and a call's path (the payload's decoding, the
// request, the record's encoding and its write) is deep enough that such a
// goroutine's stack grows, and is copied, three or four times per call: 7
// to 10 µs of a worker's CPU per call in callq bench's profile. A runner's
// stack grows once and stays grown across calls (the GC halves an idle one
// at most once per cycle). The handoff costs two channel operations.
type runners struct {
	jobs    chan runJob
	wg      sync.WaitGroup
	done    sync.Pool // of chan runResult
	stopped sync.Once
}

type runJob struct {
	ctx  context.Context
	t    *asynq.Task
	done chan runResult
}

type runResult struct {
	err   error
	panic *runnerPanic
}

// runnerPanic carries a panic of a handler, with its stack, back to asynq's
// goroutine, which panics with it again so that asynq recovers it (and
// retries the task) as it would have on its own goroutine.
type runnerPanic struct {
	value any
	stack []byte
}

func (p *runnerPanic) Error() string {
	return fmt.Sprintf("%v [in a call handler; its stack:\n%s]", p.value, p.stack)
}

// startRunners starts n runners of handle.
func startRunners(n int, handle asynq.HandlerFunc) *runners {
	r := &runners{jobs: make(chan runJob)}
	r.done.New = func() any { return make(chan runResult, 1) }
	r.wg.Add(n)
	for range n {
		go func() {
			defer r.wg.Done()
			for j := range r.jobs {
				j.done <- runOne(handle, j)
			}
		}()
	}
	return r
}

func runOne(handle asynq.HandlerFunc, j runJob) (res runResult) {
	defer func() {
		if v := recover(); v != nil {
			res.panic = &runnerPanic{value: v, stack: debug.Stack()}
		}
	}()
	return runResult{err: handle(j.ctx, j.t)}
}

// run runs the handler on a runner and returns what it returned. There are
// as many runners as asynq runs handlers at once, so a runner is free.
func (r *runners) run(ctx context.Context, t *asynq.Task) error {
	done := r.done.Get().(chan runResult)
	r.jobs <- runJob{ctx: ctx, t: t, done: done}
	res := <-done
	r.done.Put(done)
	if res.panic != nil {
		panic(res.panic)
	}
	return res.err
}

// stop ends the runners once no handler runs (after asynq's Shutdown). A
// worker may be shut down more than once.
func (r *runners) stop() {
	r.stopped.Do(func() { close(r.jobs) })
	r.wg.Wait()
}
