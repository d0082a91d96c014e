package main

// callq's command tree: every command, its usage, and how a command line
// reaches it. Every command answers -h and --help with its own usage (exit
// 0, nothing else done); a wrong command line exits 2 with the usage.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// command is a node of the command tree: a group (subs) or a command that
// runs (run).
type command struct {
	name     string
	summary  string // one line, in the parent's list
	synopsis string // a command's: "callq calls get ID [--wait 30s]"
	about    string // a command's description, a few lines
	// settings names the environment a command reads (see settings); its
	// path when empty. "client" is every command that talks to the API.
	settings string
	run      func(ctx context.Context, x *invocation, args []string) error
	subs     []*command

	path string // "calls get", set by the tree's init
}

// invocation is a command being run: where its output goes.
type invocation struct {
	cmd            *command
	stdout, stderr io.Writer
}

// flags are the command's flags: those of the settings it reads
// (settings.go), to which the command adds its own before it parses.
func (x *invocation) flags() *cmdFlags {
	fs := flag.NewFlagSet(x.cmd.path, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // main prints errors, once
	tag := x.cmd.settings
	if tag == "" {
		tag = x.cmd.path
	}
	return &cmdFlags{FlagSet: fs, cmd: x.cmd, cfg: newConfig(fs, tag)}
}

// errUsage marks an error the user fixes by reading the usage.
var errUsage = errors.New("usage")

// usageError is a wrong command line (exit 2): why, and the usage of the
// command it was for.
type usageError struct {
	why   string
	usage string
}

func (e *usageError) Error() string        { return e.why }
func (e *usageError) Is(target error) bool { return target == errUsage }

// helpError is a command's -h or --help: run prints usage to stdout, and
// the command exits 0.
type helpError struct{ usage string }

func (e *helpError) Error() string { return "help requested" }

// run runs the command args names; -h prints its usage to stdout.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	err := root.dispatch(ctx, &invocation{stdout: stdout, stderr: stderr}, args)
	var help *helpError
	if errors.As(err, &help) {
		_, err = fmt.Fprint(stdout, help.usage)
	}
	return err
}

func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--help", "help":
		return true
	}
	return false
}

func (c *command) dispatch(ctx context.Context, x *invocation, args []string) error {
	if c.run != nil {
		x.cmd = c
		err := c.run(ctx, x, args)
		var ue *usageError
		if errors.Is(err, errUsage) && !errors.As(err, &ue) {
			err = &usageError{why: strings.TrimPrefix(err.Error(), errUsage.Error()+": "), usage: c.usage()}
		}
		return err
	}
	if len(args) == 0 {
		if c.path == "" {
			return &helpError{c.usage()}
		}
		return &usageError{why: "callq " + c.path + " needs a command", usage: c.commands()}
	}
	switch {
	case c.path == "" && args[0] == "help" && len(args) > 1:
		return c.dispatch(ctx, x, append(args[1:len(args):len(args)], "--help")) // callq help calls ls
	case isHelp(args[0]):
		return &helpError{c.usage()}
	case c.path == "" && args[0] == "--version":
		_, err := fmt.Fprintf(x.stdout, "callq %s\n", versionString())
		return err
	}
	for _, sub := range c.subs {
		if sub.name == args[0] {
			return sub.dispatch(ctx, x, args[1:])
		}
	}
	return &usageError{why: fmt.Sprintf("unknown command %q", strings.TrimSpace(c.path+" "+args[0])), usage: c.commands()}
}

// leaves are the commands under c that run, in order.
func (c *command) leaves() []*command {
	if c.run != nil {
		return []*command{c}
	}
	var out []*command
	for _, sub := range c.subs {
		out = append(out, sub.leaves()...)
	}
	return out
}

// usage is a group's list of commands, or a command's usage without its
// flags (cmdFlags.usage adds them); the root's adds the exit codes and the
// environment.
func (c *command) usage() string {
	if c.run != nil {
		return fmt.Sprintf("Usage: %s\n\n%s\n", c.synopsis, c.about)
	}
	if c.path == "" {
		return c.commands() + "\n" + exitCodesHelp + "\nEnvironment (a command's flag, where it has one, overrides the variable):\n" + settingsHelp()
	}
	return c.commands()
}

// commands is a group's usage: the commands under it.
func (c *command) commands() string {
	var b strings.Builder
	if c.path == "" {
		b.WriteString("callq: an asynchronous executor of outbound API calls.\n\nUsage: callq COMMAND [ARGUMENTS] [FLAGS]\n\nCommands:\n")
	} else {
		fmt.Fprintf(&b, "Usage: callq %s COMMAND [ARGUMENTS] [FLAGS]\n\nCommands:\n", c.path)
	}
	width := 0
	leaves := c.leaves()
	for _, l := range leaves {
		width = max(width, len(l.path))
	}
	for _, l := range leaves {
		fmt.Fprintf(&b, "  callq %-*s  %s\n", width, l.path, l.summary)
	}
	if c.path == "" {
		fmt.Fprintf(&b, "  callq %-*s  %s\n", width, "--version", "the version, one line")
	}
	fmt.Fprintf(&b, "\n\"callq %sCOMMAND -h\" describes a command and its flags.\n", strings.TrimLeft(c.path+" ", " "))
	return b.String()
}

// exitCodesHelp says what callq's exit codes mean.
const exitCodesHelp = `Exit codes:
    0  done; for call --wait and get --wait: the call succeeded
    1  an error; for call --wait and get --wait: the call failed or was canceled
    2  a wrong command line, or a malformed environment variable or flag value
    3  call --wait and get --wait: the call was still queued or running when the wait ended
    4  the API is unreachable, or refused the API key (401, 403)
  130  interrupted (Ctrl-C, SIGINT) while waiting for the API; for --wait the call
       goes on, and stderr names it and the command that checks it
  143  the same, on SIGTERM
`

// root is the command tree.
var root = &command{subs: []*command{
	{name: "dev", summary: "API and worker in one process on an embedded Redis, for development",
		synopsis: "callq dev [--addr 127.0.0.1:8080] [--httpbin-addr 127.0.0.1:8090] [--integrations FILE] [flags]",
		about: "Runs the API, a worker and the scheduler in one process on an embedded Redis\n" +
			"(nothing is kept when it stops), and a local httpbin for the example catalog.\n" +
			"It prints the export lines for CALLQ_URL and CALLQ_API_KEY. The catalog is\n" +
			"--integrations, else deploy/integrations.example.yaml if there is one here,\n" +
			"else the example catalog built into this binary. Not for production.",
		run: func(ctx context.Context, x *invocation, args []string) error { return runDev(ctx, x, args) }},
	{name: "api", summary: "the HTTP API (production)",
		synopsis: "callq api [flags]",
		about:    "Serves the HTTP API, /metrics and the dashboard on --addr.",
		run:      func(ctx context.Context, x *invocation, args []string) error { return runAPI(ctx, x, args) }},
	{name: "worker", summary: "a worker (production); SIGTERM drains",
		synopsis: "callq worker [flags]",
		about: "Runs the calls: takes them from the queues, makes the requests, keeps the\n" +
			"outcomes and delivers the webhooks, on slots of their own\n" +
			"(--webhook-concurrency). On SIGTERM it stops taking calls and deliveries and\n" +
			"lets the ones in flight finish, up to --shutdown-timeout.",
		run: func(ctx context.Context, x *invocation, args []string) error { return runWorker(ctx, x, args) }},
	{name: "call", settings: "client", summary: "enqueue a call; --wait for its outcome",
		synopsis: "callq call --integration NAME METHOD PATH [--query k=v]... [--header k=v]... [--body JSON] [--credential REF] [--correlation-id ID] [--timeout 10s] [--delay 1m] [--queue Q] [--wait 30s]",
		about: "Enqueues a call and prints the API's answer; with --wait, the record once the\n" +
			"call finishes or the wait runs out (at most 60s), and the exit code says how it\n" +
			"ended: 0 succeeded, 1 failed or canceled, 3 still queued or running. Ctrl-C\n" +
			"stops the waiting, not the call (exit 130): stderr says how to check it later.",
		run: runCall},
	{name: "get", settings: "client", summary: "a call's record (the same as callq calls get)",
		synopsis: "callq get ID [--wait 30s]", about: getAbout, run: runGet},
	{name: "calls", summary: "list, get, replay and cancel calls", subs: []*command{
		{name: "ls", settings: "client", summary: "list calls, newest first",
			synopsis: "callq calls ls [--status S]... [--integration I] [--since 1h] [--until T] [--limit N] [--cursor C] [--all] [--json]",
			about: "Lists the calls, newest first, as a table (or the API's JSON with --json).\n" +
				"Filters combine; a repeated --status matches any of them. When more calls\n" +
				"may follow, the --cursor of the next page is printed to stderr; --all\n" +
				"follows the cursors to the end.",
			run: runCallsList},
		{name: "get", settings: "client", summary: "a call's record",
			synopsis: "callq calls get ID [--wait 30s]", about: getAbout, run: runGet},
		{name: "replay", settings: "client", summary: "make a finished call again, or every call a filter matches",
			synopsis: "callq calls replay ID [--as NEW_ID] | --status S... [--integration I] [--since 1h] [--until T] [--limit N] [--dry-run] [--again]",
			about: "With an ID, makes a new call from a finished call's stored request (same\n" +
				"integration, method, path, query, headers, body, credential, webhook and queue),\n" +
				"under NEW_ID or a generated one. With a filter instead, replays every finished\n" +
				"call it matches, up to --limit; a call replayed before is skipped unless\n" +
				"--again, so running the same command twice replays nothing new. --dry-run\n" +
				"lists what would be replayed. Prints the API's JSON.",
			run: runCallsReplay},
		{name: "cancel", settings: "client", summary: "cancel a call that has not finished",
			synopsis: "callq calls cancel ID",
			about: "Cancels a call that has not finished: a queued or retrying call never runs\n" +
				"again; a running one has its request aborted. Prints the record; a finished\n" +
				"call is an error (409).",
			run: runCallsCancel},
	}},
	{name: "stats", settings: "client", summary: "counts by status and integration; queue depths",
		synopsis: "callq stats [--since 1h] [--until T] [--json]",
		about: "Counts the tenant's calls created in the window by status and by integration,\n" +
			"and shows the depth of each queue: asynq's tasks, fleet-wide, since every\n" +
			"tenant shares the queues.",
		run: runStats},
	{name: "schedules", summary: "calls made on a schedule", subs: []*command{
		{name: "ls", settings: "client", summary: "list the schedules",
			synopsis: "callq schedules ls [--json]",
			about: "Lists the tenant's schedules by ID, as a table (or the API's JSON with --json):\n" +
				"when each fires next, its last run and why its last firing enqueued no call,\n" +
				"if it did not. Times are UTC.",
			run: runSchedulesList},
		{name: "get", settings: "client", summary: "a schedule",
			synopsis: "callq schedules get ID",
			about:    "Prints a schedule, with its next run, last run, last correlation ID and last\nerror, as the API's JSON.",
			run:      runSchedulesGet},
		{name: "add", settings: "client", summary: "add (or --replace) a schedule",
			synopsis: `callq schedules add ID --cron "*/5 * * * *" [--timezone TZ] --integration NAME METHOD PATH [--query k=v]... [--header k=v]... [--body JSON] [--credential REF] [--timeout 10s] [--queue Q] [--replace]`,
			about: "Adds a schedule: at each instant --cron names, in --timezone (default UTC), the\n" +
				"call is enqueued under the correlation ID sched-ID-<unix seconds>. --cron takes\n" +
				"five fields (minute hour day-of-month month day-of-week), a descriptor\n" +
				"(@hourly, @daily, @weekly, @monthly, @yearly) or @every 30s. An ID in use is an\n" +
				"error (409) unless --replace, which replaces that schedule. Prints the API's JSON.",
			run: runSchedulesAdd},
		{name: "rm", settings: "client", summary: "delete a schedule",
			synopsis: "callq schedules rm ID",
			about:    "Deletes a schedule: it fires no more (within a second or two). The calls it\nmade are kept.",
			run:      runSchedulesRemove},
	}},
	{name: "creds", summary: "credentials: stored sealed, used by reference", subs: []*command{
		{name: "put", settings: "client", summary: "store a credential",
			synopsis: "callq creds put REF --integration NAME --field KEY=VALUE...",
			about: "Stores the credential REF of an integration (PUT /v1/credentials/REF; admin).\n" +
				"A VALUE may be env:NAME or file:/path, read by the worker, where the API\n" +
				"allows them (CALLQ_ALLOW_SOURCE_REFS). Prints the field names, never values.",
			run: runCredsPut},
		{name: "list", settings: "client", summary: "the credentials' references and field names",
			synopsis: "callq creds list",
			about:    "Lists the tenant's credentials: references, integrations and field names; never\nvalues (admin).",
			run:      runCredsList},
		{name: "rm", settings: "client", summary: "delete a credential",
			synopsis: "callq creds rm REF",
			about:    "Deletes the credential REF (admin).",
			run:      runCredsRemove},
		{name: "reseal", summary: "re-seal every secret under CALLQ_SECRET_KEY's first key (Redis directly)",
			synopsis: "callq creds reseal [--redis-url URL]",
			about: "Re-seals every stored secret under the first key of CALLQ_SECRET_KEY, after a\n" +
				"key rotation. It talks to Redis directly, not to the API.",
			run: runReseal},
	}},
	{name: "connect", settings: "client", summary: "print a link that connects an account (OAuth2 or a form)",
		synopsis: "callq connect REF --integration NAME [--redirect URL] [--expires-in 10m]",
		about: "Opens a connect session for the credential REF of an integration (POST\n" +
			"/v1/connect/sessions; admin) and prints its URL: open it in a browser to\n" +
			"connect the account, through the provider's consent (oauth2) or a form of the\n" +
			"auth type's fields. The link works once, until it expires; opening it (a chat's\n" +
			"link preview, say) does not use it up, finishing does. --redirect is where\n" +
			"the browser goes after, an origin in CALLQ_CONNECT_ALLOWED_ORIGINS; without it,\n" +
			"callq's own page says how it went.",
		run: runConnect},
	{name: "keys", summary: "API keys (Redis directly: how access is bootstrapped)", subs: []*command{
		{name: "create", summary: "create an API key; its secret is shown once",
			synopsis: "callq keys create --tenant T [--role producer|admin] [--redis-url URL]",
			about: "Creates an API key of a tenant and prints it: the only time its secret is\n" +
				"shown. It talks to Redis directly, so it works before any key exists.",
			run: runKeysCreate},
		{name: "list", summary: "the API keys, without their secrets",
			synopsis: "callq keys list [--redis-url URL]",
			about:    "Lists every API key: ID, tenant, role and creation time; never the secret.",
			run:      runKeysList},
		{name: "revoke", summary: "revoke an API key",
			synopsis: "callq keys revoke ID [--redis-url URL]",
			about:    "Revokes the API key ID: it is refused from its next request, and its dashboard\nsessions end.",
			run:      runKeysRevoke},
	}},
	{name: "integrations", summary: "the integration catalog, as loaded",
		synopsis: "callq integrations [--integrations FILE] [--json]",
		about: "Loads the catalog and lists its integrations, as a table or JSON. The catalog is\n" +
			"--integrations (CALLQ_INTEGRATIONS), else deploy/integrations.example.yaml if\n" +
			"there is one here, else the example catalog built into this binary, as callq\n" +
			"dev chooses it; stderr says which when it is not --integrations. It reads the\n" +
			"file only: GET /v1/integrations is the API's catalog, with its circuits' state.",
		run: runIntegrations},
	{name: "healthcheck", summary: "exit 0 when /readyz answers 200 (for images with no curl)",
		synopsis: "callq healthcheck [--url URL | --worker] [--timeout 3s]",
		about: "Exits 0 when callq answers 200 at /readyz (it reaches Redis), 1 with the reason\n" +
			"otherwise: for Docker's HEALTHCHECK and exec probes, in an image with no curl.\n" +
			"The default URL is the API's, on this host: http://127.0.0.1:PORT/readyz with\n" +
			"CALLQ_API_ADDR's port (8080); --worker checks a worker's, on CALLQ_METRICS_ADDR.",
		run: runHealthcheck},
	{name: "bench", summary: "measure callq beside raw asynq on a local redis-server",
		synopsis: "callq bench [--calls N] [--concurrency N] [--rounds N] [--json] [--cpuprofile FILE] | --cluster [--queue-shards N] ...",
		about:    benchAbout,
		run:      runBench},
	{name: "version", summary: "the version, commit and Go version of this binary",
		synopsis: "callq version",
		about:    "Prints the module version, the VCS commit it was built from and the Go version,\nfrom the binary's build information. callq --version prints the version alone.",
		run:      runVersion},
}}

const getAbout = "Prints a call's record. With --wait, holds until the call finishes or the wait\n" +
	"runs out (at most 60s), then prints the record as it stands, and the exit code\n" +
	"says how it ended: 0 succeeded, 1 failed or canceled, 3 still queued or running.\n" +
	"Ctrl-C stops the waiting, not the call (exit 130)."

func init() {
	var walk func(c *command, path string)
	walk = func(c *command, path string) {
		c.path = path
		for _, sub := range c.subs {
			walk(sub, strings.TrimSpace(path+" "+sub.name))
		}
	}
	walk(root, "")
}
