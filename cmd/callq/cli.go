package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/tasks"
)

// multiFlag collects a repeated KEY=VALUE flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func (m multiFlag) pairs(name string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range m {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%w: --%s %q is not KEY=VALUE", errUsage, name, kv)
		}
		out[k] = v
	}
	return out, nil
}

// parseInterleaved parses flags that may come before, between and after the
// positional arguments, as in "callq call --integration github GET /x --wait 5s".
// Its errors are errUsage; -h and --help also flag.ErrHelp.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, fmt.Errorf("%w: %w", errUsage, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// helpError is a command's -h or --help: run prints usage to stdout, and
// the command exits 0.
type helpError struct{ usage string }

func (e *helpError) Error() string { return "help requested" }

// cmdFlags are a CLI command's flags and its usage.
type cmdFlags struct {
	*flag.FlagSet
	synopsis string // "callq calls get ID [--wait 30s]"
	about    string // what the command does, a few lines
}

func newCmdFlags(name, synopsis, about string) *cmdFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // run prints errors, once
	return &cmdFlags{FlagSet: fs, synopsis: synopsis, about: about}
}

// parse is parseInterleaved, -h and --help answering the usage.
func (c *cmdFlags) parse(args []string) ([]string, error) {
	pos, err := parseInterleaved(c.FlagSet, args)
	if errors.Is(err, flag.ErrHelp) {
		return nil, &helpError{c.usage()}
	}
	return pos, err
}

// parseNoArgs is parse for a command that takes flags only.
func (c *cmdFlags) parseNoArgs(args []string) error {
	pos, err := c.parse(args)
	if err == nil && len(pos) > 0 {
		return c.usageError(fmt.Sprintf("unexpected argument %q", pos[0]))
	}
	return err
}

func (c *cmdFlags) usage() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: %s\n\n%s\n", c.synopsis, c.about)
	n := 0
	c.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		b.WriteString("\nFlags:\n")
		c.SetOutput(&b)
		c.PrintDefaults()
		c.SetOutput(io.Discard)
	}
	return b.String()
}

// usageError is wrong usage of the command (exit 2): why, and its synopsis.
func (c *cmdFlags) usageError(why string) error {
	if why == "" {
		return fmt.Errorf("%w: %s", errUsage, c.synopsis)
	}
	return fmt.Errorf("%w: %s: %s", errUsage, why, c.synopsis)
}

// apiClient talks to callq's HTTP API for the CLI commands.
type apiClient struct {
	base string
	key  string
	http *http.Client
}

func newAPIClient() *apiClient {
	return &apiClient{base: strings.TrimSuffix(env("CALLQ_URL", "http://127.0.0.1:8080"), "/"),
		key: os.Getenv("CALLQ_API_KEY"), http: &http.Client{Timeout: 90 * time.Second}}
}

// do sends a request and returns the JSON answer; a non-2xx answer is an
// error carrying the API's error body.
func (c *apiClient) do(ctx context.Context, method, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("callq API at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		return out, fmt.Errorf("callq API answered %d: %s", resp.StatusCode, strings.TrimSpace(string(out)))
	}
	return out, nil
}

func printJSON(w io.Writer, b []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, b, "", "  "); err != nil {
		_, err = w.Write(b)
		return err
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

func runCall(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newCmdFlags("call", "callq call --integration NAME METHOD PATH [--query k=v]... [--header k=v]... [--body JSON] [--credential REF] [--correlation-id ID] [--timeout 10s] [--delay 1m] [--queue Q] [--wait 30s]",
		"Enqueues a call and prints the API's answer; with --wait, the record once the\ncall finishes or the wait runs out (at most 60s).")
	integration := fs.String("integration", "", "integration name")
	credential := fs.String("credential", "", "credential reference")
	correlation := fs.String("correlation-id", "", "correlation ID (default: generated)")
	body := fs.String("body", "", "JSON body")
	timeout := fs.Duration("timeout", 0, "call timeout")
	delay := fs.Duration("delay", 0, "run the call this long from now")
	wait := fs.Duration("wait", 0, "wait up to this long for the outcome")
	queue := fs.String("queue", "", "queue")
	var query, headers multiFlag
	fs.Var(&query, "query", "query parameter KEY=VALUE (repeatable)")
	fs.Var(&headers, "header", "header KEY=VALUE (repeatable)")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 2 || *integration == "" {
		return fs.usageError("")
	}
	call := tasks.Call{Integration: *integration, Method: pos[0], Path: pos[1], Credential: *credential,
		CorrelationID: *correlation, Timeout: tasks.Duration(*timeout), Delay: tasks.Duration(*delay), Queue: *queue}
	q := tasks.Query{}
	for _, kv := range query {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("%w: --query %q is not KEY=VALUE", errUsage, kv)
		}
		q[k] = append(q[k], v)
	}
	if len(q) > 0 {
		call.Query = q
	}
	if call.Headers, err = headers.pairs("header"); err != nil {
		return err
	}
	if *body != "" {
		call.Body = json.RawMessage(*body)
	}
	c := newAPIClient()
	out, err := c.do(ctx, http.MethodPost, "/v1/calls", call)
	if err != nil {
		return err
	}
	if *wait > 0 {
		var ans struct {
			CorrelationID string `json:"correlation_id"`
		}
		if err := json.Unmarshal(out, &ans); err != nil {
			return err
		}
		if out, err = c.do(ctx, http.MethodGet, "/v1/calls/"+url.PathEscape(ans.CorrelationID)+"?wait="+wait.String(), nil); err != nil {
			return err
		}
	}
	return printJSON(stdout, out)
}

// runGet is `callq get` and `callq calls get`.
func runGet(ctx context.Context, name string, args []string, stdout io.Writer) error {
	fs := newCmdFlags(name, name+" ID [--wait 30s]",
		"Prints a call's record. With --wait, holds until the call finishes or the wait\nruns out (at most 60s), then prints the record as it stands.")
	wait := fs.Duration("wait", 0, "wait up to this long for the outcome")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fs.usageError("")
	}
	path := "/v1/calls/" + url.PathEscape(pos[0])
	if *wait > 0 {
		path += "?wait=" + wait.String()
	}
	out, err := newAPIClient().do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	return printJSON(stdout, out)
}

func runCreds(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: callq creds put|list|rm", errUsage)
	}
	if args[0] == "reseal" {
		return runReseal(ctx, args[1:], stdout)
	}
	c := newAPIClient()
	switch args[0] {
	case "put":
		fs := flag.NewFlagSet("creds put", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		integration := fs.String("integration", "", "integration name")
		var fields multiFlag
		fs.Var(&fields, "field", "credential field KEY=VALUE; VALUE may be env:NAME or file:/path (repeatable)")
		pos, err := parseInterleaved(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 1 || *integration == "" || len(fields) == 0 {
			return fmt.Errorf("%w: callq creds put REF --integration NAME --field KEY=VALUE...", errUsage)
		}
		f, err := fields.pairs("field")
		if err != nil {
			return err
		}
		out, err := c.do(ctx, http.MethodPut, "/v1/credentials/"+url.PathEscape(pos[0]), map[string]any{"integration": *integration, "fields": f})
		if err != nil {
			return err
		}
		return printJSON(stdout, out)
	case "list":
		out, err := c.do(ctx, http.MethodGet, "/v1/credentials", nil)
		if err != nil {
			return err
		}
		return printJSON(stdout, out)
	case "rm":
		if len(args) != 2 {
			return fmt.Errorf("%w: callq creds rm REF", errUsage)
		}
		if _, err := c.do(ctx, http.MethodDelete, "/v1/credentials/"+url.PathEscape(args[1]), nil); err != nil {
			return err
		}
		return printJSON(stdout, []byte(fmt.Sprintf(`{"deleted": %q}`, args[1])))
	}
	return fmt.Errorf("%w: unknown creds command %q", errUsage, args[0])
}

// runReseal re-seals every stored secret under the first key of
// CALLQ_SECRET_KEY. Like keys, it talks to Redis directly: it is an
// operator's command, run once per key rotation.
func runReseal(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("creds reseal", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	redisURL := fs.String("redis-url", env("REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis URL (REDIS_URL)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	ring, err := auth.ParseKeyring(os.Getenv("CALLQ_SECRET_KEY"))
	if err != nil {
		return fmt.Errorf("CALLQ_SECRET_KEY: %w", err)
	}
	rdb, err := openRedis(ctx, *redisURL, 0)
	if err != nil {
		return err
	}
	defer rdb.Close()
	store, err := auth.NewStore(rdb, &auth.StoreConfig{Keyring: ring})
	if err != nil {
		return err
	}
	stats, err := store.Reseal(ctx)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(map[string]any{"primary_key": ring.PrimaryID(), "resealed": stats})
	if err := printJSON(stdout, b); err != nil {
		return err
	}
	if len(stats.Unreadable) > 0 {
		return fmt.Errorf("%d fields are sealed under keys no longer in CALLQ_SECRET_KEY; put those credentials again", len(stats.Unreadable))
	}
	return nil
}

// runKeys manages API keys directly in Redis: it is how access is
// bootstrapped, before any key exists.
func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: callq keys create|list|revoke", errUsage)
	}
	fs := flag.NewFlagSet("keys", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	redisURL := fs.String("redis-url", env("REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis URL (REDIS_URL)")
	tenant := fs.String("tenant", "", "tenant of the new key")
	role := fs.String("role", "producer", "producer or admin")
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return err
	}
	rdb, err := openRedis(ctx, *redisURL, 0)
	if err != nil {
		return err
	}
	defer rdb.Close()
	return keysCommand(ctx, rdb, args[0], pos, *tenant, *role, stdout, stderr)
}

func keysCommand(ctx context.Context, rdb redis.UniversalClient, cmd string, pos []string, tenant, role string, stdout, stderr io.Writer) error {
	ks := auth.NewKeyStore(rdb)
	switch cmd {
	case "create":
		r, err := auth.ParseRole(role)
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		if tenant == "" {
			return fmt.Errorf("%w: callq keys create --tenant T --role producer|admin", errUsage)
		}
		key, secret, err := ks.Create(ctx, tenant, r)
		if err != nil {
			return err
		}
		b, _ := json.Marshal(map[string]any{"id": key.ID, "tenant": key.Tenant, "role": key.Role, "created_at": key.CreatedAt, "key": secret})
		fmt.Fprintln(stderr, "callq: this is the only time the key is shown; store it now.")
		return printJSON(stdout, b)
	case "list":
		keys, err := ks.List(ctx)
		if err != nil {
			return err
		}
		b, _ := json.Marshal(map[string]any{"keys": keys})
		return printJSON(stdout, b)
	case "revoke":
		if len(pos) != 1 {
			return fmt.Errorf("%w: callq keys revoke ID", errUsage)
		}
		if err := ks.Revoke(ctx, pos[0]); err != nil {
			return err
		}
		return printJSON(stdout, []byte(fmt.Sprintf(`{"revoked": %q}`, pos[0])))
	}
	return fmt.Errorf("%w: unknown keys command %q", errUsage, cmd)
}

func runIntegrations(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("integrations", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	file := fs.String("integrations", env("CALLQ_INTEGRATIONS", "deploy/integrations.example.yaml"), "catalog file")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	cat, err := tasks.LoadCatalog(*file)
	if err != nil {
		return err
	}
	if *asJSON {
		b, _ := json.Marshal(map[string]any{"integrations": cat.All()})
		return printJSON(stdout, b)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tBASE URL\tAUTH\tTIMEOUT\tMAX ATTEMPTS\tDEFAULT CREDENTIAL")
	for _, in := range cat.All() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", in.Name, in.BaseURL, in.Auth.Type, in.Timeout, in.Retry.MaxAttempts, in.DefaultCredential)
	}
	return tw.Flush()
}
