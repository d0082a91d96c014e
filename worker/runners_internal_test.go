package worker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"
)

// Runners return what the handler returns, run as many handlers at once as
// there are runners, carry a panic back to the caller's goroutine with the
// handler's stack, and end when stopped (twice is allowed).
func TestRunners(t *testing.T) {
	t.Parallel()
	const n = 4
	errBoom := errors.New("boom")
	release := make(chan struct{})
	var inside sync.WaitGroup
	inside.Add(n)
	r := startRunners(n, func(ctx context.Context, task *asynq.Task) error {
		switch task.Type() {
		case "block":
			inside.Done()
			<-release
			return nil
		case "panic":
			panic("a handler with a bug")
		}
		return errBoom
	})

	require.ErrorIs(t, r.run(context.Background(), asynq.NewTask("fail", nil)), errBoom)

	// n handlers at once: all n are inside before any is let go.
	var done sync.WaitGroup
	for range n {
		done.Go(func() { require.NoError(t, r.run(context.Background(), asynq.NewTask("block", nil))) })
	}
	inside.Wait()
	close(release)
	done.Wait()

	func() {
		defer func() {
			p, ok := recover().(*runnerPanic)
			require.True(t, ok, "the panic comes back as a *runnerPanic")
			require.Equal(t, "a handler with a bug", p.value)
			require.Contains(t, p.Error(), "a handler with a bug")
			require.Contains(t, p.Error(), "worker.TestRunners", "the handler's stack is kept")
		}()
		_ = r.run(context.Background(), asynq.NewTask("panic", nil))
	}()
	require.ErrorIs(t, r.run(context.Background(), asynq.NewTask("fail", nil)), errBoom, "a runner survives a panic")

	// stop returns once every runner's goroutine has returned.
	stopped := make(chan struct{})
	go func() { r.stop(); r.stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("the runners did not end when stopped")
	}
}
