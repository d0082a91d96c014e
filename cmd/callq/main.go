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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
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
