// Command callq is the one binary of callq: the API, the worker, the
// embedded dev mode, and a CLI over the HTTP API. commands.go holds the
// command tree, settings.go the environment it reads.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"
)

func main() {
	// Logs stamp times in milliseconds (zerolog's own default is seconds).
	zerolog.TimeFieldFormat = logTimeFormat
	ctx, stop := signalContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if err == nil {
		return
	}
	var ue *usageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "callq: %s\n\n%s", ue.why, ue.usage)
	case errors.Is(err, errConfig):
		fmt.Fprintf(os.Stderr, "callq: %v\n(\"callq help\" lists every variable and what it takes)\n", err)
	default:
		fmt.Fprintf(os.Stderr, "callq: %v\n", err)
	}
	stop()
	os.Exit(exitCode(err))
}

// signalCause is why a command's context ends on a signal: which one, so
// that a CLI command it cuts short exits 128 + its number (interruptedError).
type signalCause struct{ sig os.Signal }

func (c *signalCause) Error() string { return c.sig.String() + " signal received" }

// signalContext is signal.NotifyContext whose context.Cause, after a signal,
// is a *signalCause naming it (NotifyContext's cause only says it in text).
// Like NotifyContext, later signals are ignored until stop.
func signalContext(parent context.Context, sigs ...os.Signal) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sigs...)
	go func() {
		select {
		case s := <-ch:
			cancel(&signalCause{sig: s})
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		cancel(nil)
	}
}
