// Command callq is the one binary of callq: the API, the worker, the
// embedded dev mode, and a CLI over the HTTP API.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/callq/callq/internal/bench"
	"github.com/callq/callq/worker"
)

// usage takes the defaults of bench's --calls and --concurrency.
var usage = fmt.Sprintf(`callq: an asynchronous executor of outbound API calls.

Usage:
  callq dev [--integrations FILE] [--addr 127.0.0.1:8080]
                                                   API and worker in one process on an embedded Redis
  callq api                                        the HTTP API (production)
  callq worker                                     a worker (production); SIGTERM drains
  callq call --integration NAME METHOD PATH [--query k=v]... [--header k=v]... [--body JSON]
             [--credential REF] [--correlation-id ID] [--timeout 10s] [--delay 1m] [--wait 30s]
  callq get ID [--wait 30s]                        the same as callq calls get
  callq calls ls [--status S]... [--integration I] [--since 1h] [--until T] [--limit N]
                 [--cursor C] [--all] [--json]    list calls, newest first
  callq calls get ID [--wait 30s]
  callq calls replay ID [--as NEW_ID]
  callq calls replay --status failed --since 1h [--integration I] [--until T] [--limit N]
                     [--dry-run] [--again]        replay the finished calls a filter matches
  callq calls cancel ID
  callq stats [--since 1h] [--until T] [--json]    counts by status and integration; queue depths
  callq schedules ls [--json] | get ID | rm ID
  callq schedules add ID --cron "*/5 * * * *" [--timezone TZ] --integration NAME METHOD PATH
                      [--body JSON] [--credential REF] [--replace]   a call made on a schedule
  callq creds put REF --integration NAME --field KEY=VALUE...
  callq creds list | rm REF
  callq creds reseal                               re-seal every secret under CALLQ_SECRET_KEY's first key
  callq keys create --tenant T --role producer|admin | list | revoke ID
  callq integrations [--integrations FILE]         list the catalog
  callq healthcheck [--url URL | --worker]         exit 0 when callq's /readyz answers 200 (for images with no curl)
  callq bench [--calls %d] [--concurrency %d] [--json] [--cpuprofile FILE]
                                                   measure callq beside raw asynq on a local redis-server
  callq --version                                  the version this binary was built as

Configuration comes from flags and the environment: REDIS_URL, CALLQ_INTEGRATIONS,
CALLQ_SECRET_KEY, CALLQ_API_ADDR, CALLQ_CONCURRENCY, CALLQ_QUEUES, CALLQ_RESULT_TTL,
CALLQ_MAX_REQUEST_BYTES, CALLQ_MAX_RESPONSE_BYTES, CALLQ_SHUTDOWN_TIMEOUT,
CALLQ_RECONCILE_INTERVAL, CALLQ_CREDENTIAL_CACHE_TTL, CALLQ_SCHEDULER, CALLQ_LOG_LEVEL, CALLQ_LOG_FORMAT;
the CLI commands use CALLQ_URL (default http://127.0.0.1:8080) and CALLQ_API_KEY.
"callq COMMAND -h" describes call, get, calls, stats and schedules.
`, bench.DefaultCalls, worker.DefaultConcurrency)

// errUsage marks an error the user fixes by reading the usage.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, errUsage) {
			fmt.Fprintf(os.Stderr, "callq: %v\n\n%s", err, usage)
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "callq: %v\n", err)
		os.Exit(1)
	}
}

// run runs the command args names; a command's -h prints its usage to
// stdout.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	err := dispatch(ctx, args, stdout, stderr)
	var help *helpError
	if errors.As(err, &help) {
		_, err = fmt.Fprint(stdout, help.usage)
	}
	return err
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stdout, usage)
		return nil
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "dev":
		return runDev(ctx, rest, stdout, stderr)
	case "api":
		return runAPI(ctx, rest, stderr)
	case "worker":
		return runWorker(ctx, rest, stderr)
	case "call":
		return runCall(ctx, rest, stdout)
	case "get":
		return runGet(ctx, "callq get", rest, stdout)
	case "calls":
		return runCalls(ctx, rest, stdout, stderr)
	case "stats":
		return runStats(ctx, rest, stdout)
	case "schedules":
		return runSchedules(ctx, rest, stdout, stderr)
	case "creds":
		return runCreds(ctx, rest, stdout)
	case "keys":
		return runKeys(ctx, rest, stdout, stderr)
	case "integrations":
		return runIntegrations(rest, stdout)
	case "bench":
		return runBench(ctx, rest, stdout, stderr)
	case "healthcheck":
		return runHealthcheck(ctx, rest, stdout)
	case "--version":
		_, err := fmt.Fprintf(stdout, "callq %s\n", versionString())
		return err
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
}
