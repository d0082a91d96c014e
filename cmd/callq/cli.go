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
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
)

// multiFlag collects a repeated KEY=VALUE flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// query is the repeated --query as a call's query, nil when there is none.
func (m multiFlag) query() (tasks.Query, error) {
	q := tasks.Query{}
	for _, kv := range m {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("%w: --query %q is not KEY=VALUE", errUsage, kv)
		}
		q[k] = append(q[k], v)
	}
	if len(q) == 0 {
		return nil, nil
	}
	return q, nil
}

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

// cmdFlags are a command's flags, the configuration it reads from the
// environment, and its usage.
type cmdFlags struct {
	*flag.FlagSet
	cmd *command
	cfg *config
}

// parse is parseInterleaved: -h and --help answer the usage, and a
// malformed environment variable is an error once the command line is
// right.
func (c *cmdFlags) parse(args []string) ([]string, error) {
	pos, err := parseInterleaved(c.FlagSet, args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return nil, &helpError{c.usage()}
	case err != nil:
		return nil, c.usageError(c.cfg.redactFlagError(strings.TrimPrefix(err.Error(), errUsage.Error()+": ")))
	}
	if err := c.cfg.envError(); err != nil {
		return nil, err
	}
	return pos, nil
}

// parseNoArgs is parse for a command that takes flags only.
func (c *cmdFlags) parseNoArgs(args []string) error {
	pos, err := c.parse(args)
	if err == nil && len(pos) > 0 {
		return c.usageError(fmt.Sprintf("unexpected argument %q", pos[0]))
	}
	return err
}

// parseArgs is parse for a command that takes n arguments.
func (c *cmdFlags) parseArgs(args []string, n int) ([]string, error) {
	pos, err := c.parse(args)
	if err == nil && len(pos) != n {
		return nil, c.usageError("")
	}
	return pos, err
}

// usage is the command's usage and its flags.
func (c *cmdFlags) usage() string {
	var b strings.Builder
	b.WriteString(c.cmd.usage())
	first := true
	c.VisitAll(func(f *flag.Flag) {
		if first {
			b.WriteString("\nFlags:\n")
			first = false
		}
		arg, usage := flag.UnquoteUsage(f)
		if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
			arg = ""
		} else if arg == "value" {
			arg = "VALUE"
		}
		fmt.Fprintf(&b, "  --%s\n        %s", strings.TrimSpace(f.Name+" "+arg), usage)
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" && f.DefValue != "0s" {
			fmt.Fprintf(&b, " (default %s)", f.DefValue)
		}
		b.WriteString("\n")
	})
	return b.String()
}

// usageError is wrong usage of the command (exit 2): why, and its usage.
func (c *cmdFlags) usageError(why string) error {
	if why == "" {
		why = "wrong arguments: " + c.cmd.synopsis
	}
	return &usageError{why: why, usage: c.usage()}
}

// exitCoder is an error that sets the process's exit code.
type exitCoder interface{ ExitCode() int }

// Exit codes beyond 0 (done), 1 (an error) and 2 (usage).
const (
	exitStillRunning = 3   // --wait ended before the call finished
	exitUnreachable  = 4   // the API is unreachable or refuses the key
	exitInterrupted  = 130 // Ctrl-C (128 + SIGINT); see interruptedError
)

// interruptedError is a request that a signal (Ctrl-C) cut short. The
// process exits 128 + the signal's number, as a shell reports a command a
// signal ended: 130 for SIGINT, 143 for SIGTERM. id is the call a --wait was
// waiting for, which the interrupt leaves running: the text says how to
// find it again.
type interruptedError struct {
	sig os.Signal
	id  string
}

func (e *interruptedError) Error() string {
	if e.id == "" {
		return fmt.Sprintf("interrupted (%s) before the API answered; the request may have reached it", e.sig)
	}
	arg := e.id
	if strings.HasPrefix(arg, "-") {
		arg = "-- " + arg // not a flag
	}
	return fmt.Sprintf("stopped waiting for call %s (%s); the call goes on, the interrupt does not cancel it.\n"+
		"Check it later with: callq calls get %s\n"+
		"(or wait again: callq calls get %s --wait 60s; cancel it: callq calls cancel %s)", e.id, e.sig, arg, arg, arg)
}

func (e *interruptedError) ExitCode() int {
	if s, ok := e.sig.(syscall.Signal); ok {
		return 128 + int(s)
	}
	return exitInterrupted
}

// interrupted is the interruptedError of a request made under ctx, when a
// signal ended ctx (signalContext); else nil.
func interrupted(ctx context.Context) *interruptedError {
	var sc *signalCause
	if errors.As(context.Cause(ctx), &sc) {
		return &interruptedError{sig: sc.sig}
	}
	return nil
}

// waitInterrupted is err, or the interruptedError naming the call id when a
// signal cut short the wait for it.
func waitInterrupted(ctx context.Context, id string, err error) error {
	if ie := interrupted(ctx); ie != nil && err != nil {
		ie.id = id
		return ie
	}
	return err
}

// exitCode is the process's exit code for err.
func exitCode(err error) int {
	var ec exitCoder
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage), errors.Is(err, errConfig):
		return 2
	case errors.As(err, &ec):
		return ec.ExitCode()
	}
	return 1
}

// apiError is an answer of the API other than 2xx.
type apiError struct {
	status int
	body   string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("callq API answered %d: %s", e.status, e.body)
}

func (e *apiError) ExitCode() int {
	if e.status == http.StatusUnauthorized || e.status == http.StatusForbidden {
		return exitUnreachable
	}
	return 1
}

// unreachableError is a request that got no answer from the API.
type unreachableError struct {
	base string
	err  error
}

func (e *unreachableError) Error() string { return fmt.Sprintf("callq API at %s: %v", e.base, e.err) }
func (e *unreachableError) Unwrap() error { return e.err }
func (e *unreachableError) ExitCode() int { return exitUnreachable }

// outcomeError is a call that did not succeed in the time --wait gave it.
type outcomeError struct {
	id     string
	status tasks.Status
}

func (e *outcomeError) Error() string {
	if e.status.Terminal() {
		return fmt.Sprintf("call %s %s", e.id, e.status)
	}
	return fmt.Sprintf("call %s is still %s: the wait ended first", e.id, e.status)
}

func (e *outcomeError) ExitCode() int {
	if e.status.Terminal() {
		return 1
	}
	return exitStillRunning
}

// printOutcome prints a waited-for record and returns its outcome: nil
// when the call succeeded.
func printOutcome(w io.Writer, record []byte) error {
	if err := printJSON(w, record); err != nil {
		return err
	}
	var r struct {
		CorrelationID string       `json:"correlation_id"`
		Status        tasks.Status `json:"status"`
	}
	if err := json.Unmarshal(record, &r); err != nil {
		return fmt.Errorf("callq API answered a record that is not JSON: %w", err)
	}
	if r.Status == tasks.StatusSucceeded {
		return nil
	}
	return &outcomeError{id: r.CorrelationID, status: r.Status}
}

// apiClient talks to callq's HTTP API for the CLI commands.
type apiClient struct {
	base string
	key  string
	http *http.Client
}

func newAPIClient(cfg *config) *apiClient {
	return &apiClient{base: strings.TrimSuffix(cfg.apiURL, "/"), key: cfg.apiKey, http: &http.Client{Timeout: 90 * time.Second}}
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
		return nil, c.failed(ctx, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, c.failed(ctx, err)
	}
	if resp.StatusCode >= 300 {
		return out, &apiError{status: resp.StatusCode, body: strings.TrimSpace(string(out))}
	}
	return out, nil
}

// failed is why a request got no answer: a signal, or the API unreachable.
func (c *apiClient) failed(ctx context.Context, err error) error {
	if ie := interrupted(ctx); ie != nil {
		return ie
	}
	return &unreachableError{base: c.base, err: err}
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

func runCall(ctx context.Context, x *invocation, args []string) error {
	fs := x.flags()
	integration := fs.String("integration", "", "integration name")
	credential := fs.String("credential", "", "credential reference")
	correlation := fs.String("correlation-id", "", "correlation ID (default: generated)")
	body := fs.String("body", "", "JSON body")
	timeout := fs.Duration("timeout", 0, "call timeout")
	delay := fs.Duration("delay", 0, "run the call this long from now")
	wait := waitFlag(fs)
	queue := fs.String("queue", "", "queue")
	var query, headers multiFlag
	fs.Var(&query, "query", "query parameter KEY=VALUE (repeatable)")
	fs.Var(&headers, "header", "header KEY=VALUE (repeatable)")
	pos, err := fs.parseArgs(args, 2)
	if err != nil {
		return err
	}
	if *integration == "" {
		return fs.usageError("--integration is required")
	}
	if err := checkWait(fs, *wait); err != nil {
		return err
	}
	call := tasks.Call{Integration: *integration, Method: pos[0], Path: pos[1], Credential: *credential,
		CorrelationID: *correlation, Timeout: tasks.Duration(*timeout), Delay: tasks.Duration(*delay), Queue: *queue}
	if call.Query, err = query.query(); err != nil {
		return err
	}
	if call.Headers, err = headers.pairs("header"); err != nil {
		return err
	}
	if *body != "" {
		call.Body = json.RawMessage(*body)
	}
	c := newAPIClient(fs.cfg)
	out, err := c.do(ctx, http.MethodPost, "/v1/calls", call)
	if err != nil {
		return err
	}
	if *wait <= 0 {
		return printJSON(x.stdout, out)
	}
	var ans struct {
		CorrelationID string `json:"correlation_id"`
	}
	if err := json.Unmarshal(out, &ans); err != nil {
		return err
	}
	if out, err = c.do(ctx, http.MethodGet, "/v1/calls/"+url.PathEscape(ans.CorrelationID)+"?wait="+wait.String(), nil); err != nil {
		return waitInterrupted(ctx, ans.CorrelationID, err)
	}
	return printOutcome(x.stdout, out)
}

// waitFlag is call's and get's --wait.
func waitFlag(fs *cmdFlags) *time.Duration {
	return fs.Duration("wait", 0, "wait up to this long for the outcome, at most "+formatDuration(producer.DefaultMaxWait)+"; the exit code says it (0, 1, 3; 130 on Ctrl-C, which leaves the call running)")
}

// checkWait refuses a --wait the API would refuse (400), before any
// request: else call would enqueue the call and then exit 1, the code of a
// failed call, for one that is still queued.
func checkWait(fs *cmdFlags, wait time.Duration) error {
	if wait < 0 || wait > producer.DefaultMaxWait {
		return fs.usageError(fmt.Sprintf("--wait %s: must be from 0s to %s, the API's longest wait", formatDuration(wait), formatDuration(producer.DefaultMaxWait)))
	}
	return nil
}

// runGet is `callq get` and `callq calls get`.
func runGet(ctx context.Context, x *invocation, args []string) error {
	fs := x.flags()
	wait := waitFlag(fs)
	pos, err := fs.parseArgs(args, 1)
	if err != nil {
		return err
	}
	if err := checkWait(fs, *wait); err != nil {
		return err
	}
	path := "/v1/calls/" + url.PathEscape(pos[0])
	if *wait > 0 {
		path += "?wait=" + wait.String()
	}
	out, err := newAPIClient(fs.cfg).do(ctx, http.MethodGet, path, nil)
	if err != nil {
		if *wait > 0 {
			return waitInterrupted(ctx, pos[0], err)
		}
		return err
	}
	if *wait > 0 {
		return printOutcome(x.stdout, out)
	}
	return printJSON(x.stdout, out)
}

func runCredsPut(ctx context.Context, x *invocation, args []string) error {
	fs := x.flags()
	integration := fs.String("integration", "", "integration name")
	var fields multiFlag
	fs.Var(&fields, "field", "credential field KEY=VALUE; VALUE may be env:NAME or file:/path (repeatable)")
	pos, err := fs.parseArgs(args, 1)
	if err != nil {
		return err
	}
	if *integration == "" || len(fields) == 0 {
		return fs.usageError("--integration and at least one --field are required")
	}
	f, err := fields.pairs("field")
	if err != nil {
		return err
	}
	out, err := newAPIClient(fs.cfg).do(ctx, http.MethodPut, "/v1/credentials/"+url.PathEscape(pos[0]), map[string]any{"integration": *integration, "fields": f})
	if err != nil {
		return err
	}
	return printJSON(x.stdout, out)
}

// runConnect is `callq connect`: a connect session's URL, for an
// operator connecting an account of their own.
func runConnect(ctx context.Context, x *invocation, args []string) error {
	fs := x.flags()
	integration := fs.String("integration", "", "integration name")
	redirect := fs.String("redirect", "", "where the browser goes after (an allowed origin)")
	expires := fs.Duration("expires-in", 0, "how long the link works (default 10m, at most 1h)")
	pos, err := fs.parseArgs(args, 1)
	if err != nil {
		return err
	}
	if *integration == "" {
		return fs.usageError("--integration is required")
	}
	body := map[string]any{"integration": *integration, "credential": pos[0]}
	if *redirect != "" {
		body["redirect_uri"] = *redirect
	}
	if *expires != 0 {
		body["expires_in"] = expires.String()
	}
	out, err := newAPIClient(fs.cfg).do(ctx, http.MethodPost, "/v1/connect/sessions", body)
	if err != nil {
		return err
	}
	var ans struct {
		URL       string `json:"url"`
		ExpiresAt string `json:"expires_at"`
	}
	if err := json.Unmarshal(out, &ans); err != nil || ans.URL == "" {
		return fmt.Errorf("the API's answer holds no url: %s", out)
	}
	_, err = fmt.Fprintf(x.stdout, "%s\n", ans.URL)
	if err == nil {
		_, err = fmt.Fprintf(x.stderr, "callq: open it in a browser to connect %s; it works once, until %s\n", pos[0], ans.ExpiresAt)
	}
	return err
}

func runCredsList(ctx context.Context, x *invocation, args []string) error {
	fs := x.flags()
	if err := fs.parseNoArgs(args); err != nil {
		return err
	}
	out, err := newAPIClient(fs.cfg).do(ctx, http.MethodGet, "/v1/credentials", nil)
	if err != nil {
		return err
	}
	return printJSON(x.stdout, out)
}

func runCredsRemove(ctx context.Context, x *invocation, args []string) error {
	fs := x.flags()
	pos, err := fs.parseArgs(args, 1)
	if err != nil {
		return err
	}
	if _, err := newAPIClient(fs.cfg).do(ctx, http.MethodDelete, "/v1/credentials/"+url.PathEscape(pos[0]), nil); err != nil {
		return err
	}
	b, _ := json.Marshal(map[string]string{"deleted": pos[0]})
	return printJSON(x.stdout, b)
}

// runReseal re-seals every stored secret under the first key of
// CALLQ_SECRET_KEY. Like keys, it talks to Redis directly: it is an
// operator's command, run once per key rotation.
func runReseal(ctx context.Context, x *invocation, args []string) error {
	fs := x.flags()
	if err := fs.parseNoArgs(args); err != nil {
		return err
	}
	ring, err := auth.ParseKeyring(fs.cfg.secretKey)
	if err != nil {
		return configErrorf("%v", err)
	}
	rdb, err := openRedis(ctx, fs.cfg.redisURL, fs.cfg.clusterAddrs, 0)
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
	if err := printJSON(x.stdout, b); err != nil {
		return err
	}
	if len(stats.Unreadable) > 0 {
		return fmt.Errorf("%d fields are sealed under keys no longer in CALLQ_SECRET_KEY; put those credentials again", len(stats.Unreadable))
	}
	return nil
}

// The keys commands manage API keys directly in Redis: it is how access is
// bootstrapped, before any key exists.

func runKeysCreate(ctx context.Context, x *invocation, args []string) error {
	fs := x.flags()
	tenant := fs.String("tenant", "", "tenant of the new key")
	role := fs.String("role", "producer", "producer or admin")
	if err := fs.parseNoArgs(args); err != nil {
		return err
	}
	r, err := auth.ParseRole(*role)
	if err != nil {
		return fs.usageError("--role: " + err.Error())
	}
	if *tenant == "" {
		return fs.usageError("--tenant is required")
	}
	rdb, err := openRedis(ctx, fs.cfg.redisURL, fs.cfg.clusterAddrs, 0)
	if err != nil {
		return err
	}
	defer rdb.Close()
	key, secret, err := auth.NewKeyStore(rdb).Create(ctx, *tenant, r)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(map[string]any{"id": key.ID, "tenant": key.Tenant, "role": key.Role, "created_at": key.CreatedAt, "key": secret})
	fmt.Fprintln(x.stderr, "callq: this is the only time the key is shown; store it now.")
	return printJSON(x.stdout, b)
}

func runKeysList(ctx context.Context, x *invocation, args []string) error {
	fs := x.flags()
	if err := fs.parseNoArgs(args); err != nil {
		return err
	}
	rdb, err := openRedis(ctx, fs.cfg.redisURL, fs.cfg.clusterAddrs, 0)
	if err != nil {
		return err
	}
	defer rdb.Close()
	keys, err := auth.NewKeyStore(rdb).List(ctx)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(map[string]any{"keys": keys})
	return printJSON(x.stdout, b)
}

func runKeysRevoke(ctx context.Context, x *invocation, args []string) error {
	fs := x.flags()
	pos, err := fs.parseArgs(args, 1)
	if err != nil {
		return err
	}
	rdb, err := openRedis(ctx, fs.cfg.redisURL, fs.cfg.clusterAddrs, 0)
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := auth.NewKeyStore(rdb).Revoke(ctx, pos[0]); err != nil {
		return err
	}
	b, _ := json.Marshal(map[string]string{"revoked": pos[0]})
	return printJSON(x.stdout, b)
}

func runIntegrations(_ context.Context, x *invocation, args []string) error {
	fs := x.flags()
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.parseNoArgs(args); err != nil {
		return err
	}
	name, err := fs.cfg.catalogOrExample()
	if err != nil {
		return err
	}
	cat, err := fs.cfg.loadCatalog()
	if err != nil {
		return err
	}
	if fs.cfg.integrations == "" {
		// Said on stderr: stdout stays the table or the JSON.
		fmt.Fprintf(x.stderr, "callq: no --integrations or CALLQ_INTEGRATIONS: %s\n", name)
	}
	if *asJSON {
		b, _ := json.Marshal(map[string]any{"integrations": cat.All()})
		return printJSON(x.stdout, b)
	}
	tw := tabwriter.NewWriter(x.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tBASE URL\tAUTH\tTIMEOUT\tMAX ATTEMPTS\tDEFAULT CREDENTIAL")
	for _, in := range cat.All() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", in.Name, in.BaseURL, in.Auth.Type, in.Timeout, in.Retry.MaxAttempts, in.DefaultCredential)
	}
	return tw.Flush()
}
