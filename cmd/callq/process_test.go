package main

// Process-level tests: the callq binary is built once and run as separate
// `api` and `worker` processes against a real redis-server, with a real HTTP
// upstream. They check at-least-once delivery when a worker is SIGKILLed
// mid-call and the drain on SIGTERM.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mccutchen/go-httpbin/v2/httpbin"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/openapitest"
	"github.com/callq/callq/internal/redistest"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

// ---------------------------------------------------------------------------
// The binary, built once for the package.

var (
	buildOnce sync.Once
	buildDir  string
	buildBin  string
	buildErr  error

	// coverDir receives the coverage counters of every callq process the
	// tests run (GOCOVERDIR): CALLQ_TEST_COVERDIR to keep them for
	// `go tool covdata percent -i=DIR`, else a directory removed at the end.
	coverDir string
)

func TestMain(m *testing.M) {
	coverDir = os.Getenv("CALLQ_TEST_COVERDIR")
	keep := coverDir != ""
	var err error
	if keep {
		err = os.MkdirAll(coverDir, 0o755)
	} else {
		coverDir, err = os.MkdirTemp("", "callq-cover-")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "coverage directory:", err)
		os.Exit(1)
	}
	code := m.Run()
	for _, dir := range []string{buildDir, imageDir} {
		if dir != "" {
			_ = os.RemoveAll(dir)
		}
	}
	if !keep {
		_ = os.RemoveAll(coverDir)
	}
	os.Exit(code)
}

// callqBinary builds ./ (this package) once, with coverage of every callq
// package it runs, and returns the binary's path.
func callqBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "callq-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildDir = dir
		bin := filepath.Join(dir, "callq")
		start := time.Now()
		args := []string{"build", "-cover", "-coverpkg=github.com/callq/callq/...", "-o", bin, "./"}
		out, err := exec.Command("go", args...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
			return
		}
		buildBin = bin
		t.Logf("built %s in %s", bin, time.Since(start).Round(time.Millisecond))
	})
	if buildErr != nil {
		t.Fatalf("cannot build callq: %v", buildErr)
	}
	return buildBin
}

// ---------------------------------------------------------------------------
// Child processes and their logs.

// childEnv is the test's environment without any CALLQ_* or REDIS_URL a
// developer may have set, with GOCOVERDIR, plus extra.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "CALLQ_") || strings.HasPrefix(kv, "REDIS_URL=") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "GOCOVERDIR="+coverDir)
	return append(env, extra...)
}

// freeAddr returns a 127.0.0.1 address with a port that was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// child is one callq process, its stdout and stderr kept in files.
type child struct {
	name     string
	cmd      *exec.Cmd
	stdout   string // file path
	stderr   string // file path
	done     chan struct{}
	waitErr  error     // valid once done is closed
	exitedAt time.Time // valid once done is closed
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// exitCode is the exit status, -1 when killed by a signal. Only after done.
func (c *child) exitCode() int { return c.cmd.ProcessState.ExitCode() }

func (c *child) signal(sig syscall.Signal) error { return c.cmd.Process.Signal(sig) }

// kill SIGKILLs the process and waits until it is reaped.
func (c *child) kill() {
	if !c.exited() {
		_ = c.signal(syscall.SIGKILL)
	}
	<-c.done
}

// stop SIGTERMs the process, so that it exits as in production and writes
// its coverage counters, and SIGKILLs it if it has not exited within grace.
func (c *child) stop(grace time.Duration) {
	if !c.exited() {
		_ = c.signal(syscall.SIGTERM)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		c.kill()
	}
}

// logs returns what the process wrote so far.
func (c *child) logs() string {
	var b strings.Builder
	for _, p := range []string{c.stdout, c.stderr} {
		data, _ := os.ReadFile(p)
		b.Write(data)
	}
	return b.String()
}

// procs starts the processes of one test and, if the test fails, logs the
// tail of each one's output once all of them are stopped.
type procs struct {
	t   *testing.T
	bin string
	dir string

	mu   sync.Mutex
	list []*child
}

func newProcs(t *testing.T) *procs {
	p := &procs{t: t, bin: callqBinary(t), dir: t.TempDir()}
	// Registered before any process starts, so it runs after they are all
	// stopped (cleanups run last-in first-out) and sees their complete logs.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("process logs (tails):\n%s", p.tails(60))
		}
	})
	return p
}

// start runs the callq binary with args in dir (the test's directory when
// empty). The process is stopped at cleanup if still running: SIGTERM, then
// SIGKILL after 10s.
func (p *procs) start(name, dir string, env []string, args ...string) *child {
	p.t.Helper()
	cmd := exec.Command(p.bin, args...)
	cmd.Env = env
	cmd.Dir = dir
	return p.startCmd(name, cmd)
}

// startCmd is start for a command the caller prepared: another binary, or
// attributes of its own (a chroot, a user).
func (p *procs) startCmd(name string, cmd *exec.Cmd) *child {
	t := p.t
	t.Helper()
	p.mu.Lock()
	for i := 2; slices.ContainsFunc(p.list, func(c *child) bool { return c.name == name }); i++ {
		name = fmt.Sprintf("%s-%d", strings.SplitN(name, "-", 2)[0], i)
	}
	p.mu.Unlock()
	c := &child{
		name:   name,
		stdout: filepath.Join(p.dir, name+".stdout.log"),
		stderr: filepath.Join(p.dir, name+".stderr.log"),
		done:   make(chan struct{}),
	}
	outf, err := os.Create(c.stdout)
	require.NoError(t, err)
	errf, err := os.Create(c.stderr)
	require.NoError(t, err)
	c.cmd = cmd
	c.cmd.Stdout, c.cmd.Stderr = outf, errf
	err = c.cmd.Start()
	_ = outf.Close() // the child holds its own descriptors
	_ = errf.Close()
	args := cmd.Args[1:]
	require.NoError(t, err, "start callq %s", strings.Join(args, " "))
	go func() {
		c.waitErr = c.cmd.Wait()
		c.exitedAt = time.Now()
		close(c.done)
	}()
	p.mu.Lock()
	p.list = append(p.list, c)
	p.mu.Unlock()
	t.Cleanup(func() { c.stop(10 * time.Second) })
	t.Logf("started %s (pid %d): callq %s", name, c.cmd.Process.Pid, strings.Join(args, " "))
	return c
}

// tails is the last n lines of every process's output.
func (p *procs) tails(n int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for _, c := range p.list {
		state := "running"
		if c.exited() {
			state = fmt.Sprintf("exited: %v", c.waitErr)
		}
		for _, f := range []struct{ label, path string }{{"stdout", c.stdout}, {"stderr", c.stderr}} {
			data, _ := os.ReadFile(f.path)
			if len(data) == 0 {
				continue
			}
			fmt.Fprintf(&b, "--- %s (pid %d, %s) %s, last %d lines ---\n%s\n", c.name, c.cmd.Process.Pid, state, f.label, n, tailLines(data, n))
		}
	}
	return b.String()
}

func tailLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitHTTP polls each URL until it answers 200; it fails if c exits or the
// bound passes.
func waitHTTP(c *child, bound time.Duration, urls ...string) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(bound)
	for _, url := range urls {
		var last string
		for {
			if c.exited() {
				return fmt.Errorf("%s exited (%v) before %s answered 200", c.name, c.waitErr, url)
			}
			resp, err := client.Get(url)
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
				last = fmt.Sprintf("%d %s", resp.StatusCode, body)
			} else {
				last = err.Error()
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s did not answer 200 within %s (last: %s)", url, bound, last)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// startListening starts a server process through launch, which picks fresh
// free addresses each time and returns the process and the URLs that answer
// 200 once it is up. A port can be taken by someone else between the pick
// and the process's bind: then it tries again with fresh addresses.
func (p *procs) startListening(launch func() (*child, []string)) *child {
	t := p.t
	t.Helper()
	const tries = 3
	for i := 1; ; i++ {
		c, urls := launch()
		err := waitHTTP(c, 20*time.Second, urls...)
		if err == nil {
			return c
		}
		if i < tries && c.exited() && strings.Contains(c.logs(), "address already in use") {
			t.Logf("%s: a chosen port was taken before it could bind it; trying fresh ports", c.name)
			continue
		}
		t.Fatalf("%s did not come up: %v", c.name, err)
	}
}

// ---------------------------------------------------------------------------
// The upstream: answers /slow after a delay and remembers every request;
// go-httpbin answers every other path.

type hit struct{ start, end time.Time }

type upstream struct {
	*httptest.Server
	delay time.Duration

	mu    sync.Mutex
	hits  map[string][]*hit // by X-Test-Call
	total int
	// While holding, requests to /slow after the first holdAfter wait for
	// held to close before their delay.
	holding   bool
	holdAfter int
	held      chan struct{}
}

// hold makes the requests to /slow after the first n (every one for 0) wait
// until release is called (and the test ends at the latest): a test can then
// act while a worker's calls are in flight, however slow the machine.
func (u *upstream) hold(t *testing.T, n int) (release func()) {
	u.mu.Lock()
	u.holding, u.holdAfter, u.held = true, n, make(chan struct{})
	held := u.held
	u.mu.Unlock()
	var once sync.Once
	release = func() { once.Do(func() { close(held) }) }
	t.Cleanup(release) // before the server's Close, which waits for its handlers
	return release
}

func newUpstream(t *testing.T, delay time.Duration) *upstream {
	u := &upstream{delay: delay, hits: map[string][]*hit{}}
	bin := httpbin.New()
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/slow" {
			bin.ServeHTTP(w, r)
			return
		}
		h := &hit{start: time.Now()}
		id := r.Header.Get("X-Test-Call")
		u.mu.Lock()
		u.hits[id] = append(u.hits[id], h)
		u.total++
		var held chan struct{}
		if u.holding && u.total > u.holdAfter {
			held = u.held
		}
		u.mu.Unlock()
		if held != nil {
			<-held
		}
		time.Sleep(u.delay) // on purpose not cut short when the client goes away
		u.mu.Lock()
		h.end = time.Now()
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.total
}

// startedAfter returns, for each request that reached the upstream after
// since, how long after since it arrived.
func (u *upstream) startedAfter(since time.Time) []time.Duration {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []time.Duration
	for _, hs := range u.hits {
		for _, h := range hs {
			if h.start.After(since) {
				out = append(out, h.start.Sub(since))
			}
		}
	}
	slices.Sort(out)
	return out
}

// hitsOf returns copies of the requests that carried id.
func (u *upstream) hitsOf(id string) []hit {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]hit, 0, len(u.hits[id]))
	for _, h := range u.hits[id] {
		out = append(out, *h)
	}
	return out
}

// ---------------------------------------------------------------------------
// A deployment: redis-server, the upstream, `callq api`, an admin key; the
// test starts workers.

type deployment struct {
	t        *testing.T
	procs    *procs
	up       *upstream
	redis    *redistest.Server
	env      []string // for api and worker processes
	api      *child
	apiURL   string
	proxyURL string // validatingURL's
	apiKey   string
	http     *http.Client
	workerNo int
}

// deploy starts Redis, an upstream and `callq api` (with extraEnv added to
// the environment of api and workers). The catalog's integration slow
// retries (5 attempts), bin does not.
func deploy(t *testing.T, upstreamDelay time.Duration, extraEnv ...string) *deployment {
	t.Helper()
	return deployWith(t, upstreamDelay, "", extraEnv...)
}

// deployWith is deploy with more integrations in the catalog: extra is YAML
// appended to its integrations map, each entry indented by two spaces.
func deployWith(t *testing.T, upstreamDelay time.Duration, extra string, extraEnv ...string) *deployment {
	t.Helper()
	d := &deployment{t: t, procs: newProcs(t), http: validatingClient(t)}
	d.redis = redistest.Start(t)
	d.up = newUpstream(t, upstreamDelay)

	catalog := filepath.Join(t.TempDir(), "integrations.yaml")
	require.NoError(t, os.WriteFile(catalog, fmt.Appendf(nil, `integrations:
  slow:
    base_url: %[1]s
    auth: {type: none}
    timeout: 10s
    retry: {max_attempts: 5}
  bin:
    base_url: %[1]s
    auth: {type: none}
    retry: {max_attempts: 1}
%[2]s`, d.up.URL, extra), 0o644))
	secret, err := auth.GenerateKey()
	require.NoError(t, err)

	d.apiKey = createAdminKey(t, d.procs.bin, d.redis.URL)

	d.env = childEnv(
		"REDIS_URL="+d.redis.URL,
		"CALLQ_INTEGRATIONS="+catalog,
		"CALLQ_SECRET_KEY="+secret,
		"CALLQ_LOG_LEVEL=debug",
	)
	d.env = append(d.env, extraEnv...)
	d.api = d.procs.startListening(func() (*child, []string) {
		addr := freeAddr(t)
		d.apiURL = "http://" + addr
		c := d.procs.start("api", "", append(slices.Clone(d.env), "CALLQ_API_ADDR="+addr), "api")
		return c, []string{d.apiURL + "/healthz", d.apiURL + "/readyz"}
	})
	return d
}

// createAdminKey makes an admin key of tenant acme the way an operator
// bootstraps access (`callq keys create`) and returns its secret.
func createAdminKey(t *testing.T, bin, redisURL string) string {
	t.Helper()
	return createAdminKeyEnv(t, bin, []string{"REDIS_URL=" + redisURL})
}

// createAdminKeyEnv is createAdminKey with the environment env (REDIS_URL,
// CALLQ_REDIS_CLUSTER_ADDRS).
func createAdminKeyEnv(t *testing.T, bin string, env []string) string {
	t.Helper()
	keys := exec.Command(bin, "keys", "create", "--tenant", "acme", "--role", "admin")
	keys.Env = childEnv(env...)
	var stderr bytes.Buffer
	keys.Stderr = &stderr
	out, err := keys.Output()
	require.NoError(t, err, "callq keys create: %s", stderr.String())
	var created struct {
		Key    string `json:"key"`
		Tenant string `json:"tenant"`
	}
	require.NoError(t, json.Unmarshal(out, &created), "callq keys create printed %q", out)
	require.NotEmpty(t, created.Key, "callq keys create printed %q", out)
	require.Equal(t, "acme", created.Tenant)
	return created.Key
}

// startWorker starts a `callq worker` process with concurrency 20.
func (d *deployment) startWorker() *child {
	d.workerNo++
	return d.procs.start(fmt.Sprintf("worker%d", d.workerNo), "", append(slices.Clone(d.env), "CALLQ_CONCURRENCY=20"), "worker")
}

// cli runs the callq binary as a user would, with the deployment's
// environment, CALLQ_URL and the admin key, then env.
func (d *deployment) cli(env []string, args ...string) (stdout, stderr string, code int) {
	d.t.Helper()
	cmd := exec.Command(d.procs.bin, args...)
	cmd.Env = append(append(slices.Clone(d.env), "CALLQ_URL="+d.validatingURL(), "CALLQ_API_KEY="+d.apiKey), env...)
	return runCmd(d.t, cmd)
}

// runCmd runs a command that exits by itself and returns its stdout,
// stderr and exit code; failing to start it fails the test.
func runCmd(t testing.TB, cmd *exec.Cmd) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), errOut.String(), ee.ExitCode()
	}
	require.NoError(t, err, "%s", strings.Join(cmd.Args, " "))
	return out.String(), errOut.String(), 0
}

// validatingClient is the HTTP client of a deployment's own requests: their
// requests and the API's answers are checked against the OpenAPI document
// (openapitest.Transport).
func validatingClient(t *testing.T) *http.Client {
	return &http.Client{Timeout: 60 * time.Second, Transport: openapitest.Transport(t, nil)}
}

// validatingURL is the API's URL through a reverse proxy that checks each
// request and answer against the OpenAPI document (openapitest.Handler): for
// the CLI, a client in another process.
func (d *deployment) validatingURL() string {
	d.t.Helper()
	if d.proxyURL == "" {
		d.proxyURL = validatingProxy(d.t, d.apiURL)
	}
	return d.proxyURL
}

// validatingProxy serves apiURL's API through a reverse proxy that checks
// each request and answer against the OpenAPI document, until the test
// ends, and returns its URL.
func validatingProxy(t *testing.T, apiURL string) string {
	t.Helper()
	target, err := url.Parse(apiURL)
	require.NoError(t, err)
	proxy := httptest.NewServer(openapitest.Handler(t, httputil.NewSingleHostReverseProxy(target)))
	t.Cleanup(proxy.Close)
	return proxy.URL
}

// do sends an API request with the admin key and decodes a JSON answer
// into out.
func (d *deployment) do(method, path string, body any, out any) int {
	d.t.Helper()
	return d.doAs(d.apiKey, method, path, body, out)
}

// doAs is do with another API key.
func (d *deployment) doAs(key, method, path string, body any, out any) int {
	d.t.Helper()
	return d.doAt(d.apiURL, key, method, path, body, out)
}

// doAt is doAs against the API at base (another API process).
func (d *deployment) doAt(base, key, method, path string, body any, out any) int {
	d.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(d.t, err)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, base+path, rd)
	require.NoError(d.t, err)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.http.Do(req)
	require.NoError(d.t, err, "%s %s", method, path)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(d.t, err)
	if out != nil && resp.StatusCode < 300 {
		require.NoError(d.t, json.Unmarshal(data, out), "%s %s answered %d %s", method, path, resp.StatusCode, data)
	}
	if resp.StatusCode >= 300 {
		d.t.Logf("%s %s answered %d %s", method, path, resp.StatusCode, data)
	}
	return resp.StatusCode
}

// enqueue POSTs one GET /slow call, the ID also sent upstream as X-Test-Call.
func (d *deployment) enqueue(id string) { d.t.Helper(); d.enqueueWith(id, nil) }

// enqueueWith is enqueue with more fields of the call (retry, timeout...).
func (d *deployment) enqueueWith(id string, fields map[string]any) {
	d.t.Helper()
	var ans struct {
		CorrelationID string `json:"correlation_id"`
		Status        string `json:"status"`
	}
	call := map[string]any{
		"integration": "slow", "method": "GET", "path": "/slow",
		"headers": map[string]string{"X-Test-Call": id}, "correlation_id": id,
	}
	maps.Copy(call, fields)
	code := d.do(http.MethodPost, "/v1/calls", call, &ans)
	require.Equal(d.t, http.StatusAccepted, code, "enqueue %s", id)
	require.Equal(d.t, id, ans.CorrelationID)
	require.Equal(d.t, "queued", ans.Status)
}

// waitAllTerminal polls GET /v1/calls/{id}?wait= until every call is
// terminal, or fails the test at deadline with the statuses it saw.
func (d *deployment) waitAllTerminal(ids []string, deadline time.Time) map[string]*tasks.Record {
	d.t.Helper()
	recs := map[string]*tasks.Record{}
	for _, id := range ids {
		for {
			wait := min(30*time.Second, time.Until(deadline).Truncate(time.Second))
			if wait < time.Second {
				wait = time.Second
			}
			var rec tasks.Record
			code := d.do(http.MethodGet, "/v1/calls/"+id+"?wait="+wait.String(), nil, &rec)
			require.Equal(d.t, http.StatusOK, code, "GET /v1/calls/%s", id)
			recs[id] = &rec
			if rec.Status.Terminal() {
				break
			}
			if time.Now().After(deadline) {
				var b strings.Builder
				for _, id := range ids {
					if r := recs[id]; r != nil {
						fmt.Fprintf(&b, "  %s: %s (attempts %d)\n", id, r.Status, r.Attempts)
					} else {
						fmt.Fprintf(&b, "  %s: not looked at yet\n", id)
					}
				}
				d.t.Fatalf("calls not all terminal by the deadline; %s is still %s:\n%s", id, rec.Status, b.String())
			}
		}
	}
	return recs
}

// requireNoErrorLogs fails if any of the processes logged at error level.
func requireNoErrorLogs(t *testing.T, cs ...*child) {
	t.Helper()
	for _, c := range cs {
		for _, l := range strings.Split(c.logs(), "\n") {
			require.NotContains(t, l, `"level":"error"`, "%s logged an error", c.name)
		}
	}
}

func historyString(rec *tasks.Record) string {
	b, _ := json.MarshalIndent(rec.History, "", "  ")
	return string(b)
}

// ---------------------------------------------------------------------------
// The tests.

// TestProcessWorkerKilledMidCall SIGKILLs a worker while its calls are at
// the upstream and checks that asynq's lease recovery lets a second worker
// finish every call, with the cut-off attempt kept in the history.
func TestProcessWorkerKilledMidCall(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("takes 60-120s: waits for asynq's lease recovery")
	}
	d := deploy(t, 2*time.Second)
	w1 := d.startWorker()

	const n = 20
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("kill-%02d", i)
		d.enqueue(ids[i])
	}

	// Wait until the worker is mid-call on a good part of them.
	deadline := time.Now().Add(20 * time.Second)
	for d.up.count() < n/2 {
		if w1.exited() {
			t.Fatalf("worker1 exited (%v) before calling the upstream", w1.waitErr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the upstream received %d requests in 20s; expected at least %d", d.up.count(), n/2)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)

	killSent := time.Now()
	require.NoError(t, w1.signal(syscall.SIGKILL))
	<-w1.done
	killDone := time.Now()
	require.Equal(t, -1, w1.exitCode(), "worker1 should have died of SIGKILL: %v", w1.waitErr)
	seenAtKill := d.up.count()
	t.Logf("SIGKILLed worker1 (pid %d) with %d upstream requests seen", w1.cmd.Process.Pid, seenAtKill)

	// The calls whose request had reached the upstream and had not been
	// answered when worker1 died: no outcome can have been recorded for them.
	var inFlight []string
	for _, id := range ids {
		hs := d.up.hitsOf(id)
		if len(hs) > 0 && hs[0].start.Before(killSent) && (hs[0].end.IsZero() || hs[0].end.After(killDone)) {
			inFlight = append(inFlight, id)
		}
	}
	require.NotEmpty(t, inFlight, "no call was in flight at the kill; the test proved nothing")
	t.Logf("%d calls in flight at the kill: %v", len(inFlight), inFlight)

	w2 := d.startWorker()
	recs := d.waitAllTerminal(ids, killSent.Add(4*time.Minute))
	allDone := time.Now()
	var lastCompleted time.Time
	for _, rec := range recs {
		if rec.CompletedAt != nil && rec.CompletedAt.After(lastCompleted) {
			lastCompleted = *rec.CompletedAt
		}
	}
	t.Logf("recovery: every call terminal %s after the SIGKILL (last completed_at %s after it)",
		allDone.Sub(killSent).Round(100*time.Millisecond), lastCompleted.Sub(killSent).Round(100*time.Millisecond))
	require.False(t, w2.exited(), "worker2 exited: %v", w2.waitErr)

	lostMark := fmt.Sprintf(":%d stopped", w1.cmd.Process.Pid) // the worker name is hostname:pid
	for _, id := range ids {
		rec := recs[id]
		hist := historyString(rec)
		require.Equal(t, tasks.StatusSucceeded, rec.Status, "call %s: error %+v, history %s", id, rec.Error, hist)
		require.Equal(t, len(rec.History), rec.Attempts, "call %s: attempts must equal len(history) %s", id, hist)
		require.NotEmpty(t, rec.History, "call %s", id)
		require.NotNil(t, rec.Response, "call %s", id)
		require.Equal(t, http.StatusOK, rec.Response.Status, "call %s", id)
		require.JSONEq(t, `{"ok":true}`, string(rec.Response.Body), "call %s", id)
		last := rec.History[len(rec.History)-1]
		require.Equal(t, http.StatusOK, last.Status, "call %s: the last attempt should be the success: %s", id, hist)
		require.Empty(t, last.Error, "call %s: %s", id, hist)
		for i, a := range rec.History {
			require.Equal(t, i+1, a.Attempt, "call %s: attempts are numbered 1..n: %s", id, hist)
			if i < len(rec.History)-1 {
				// The upstream always answers 200 within the timeout, so an
				// attempt before the last can only be one that was cut off.
				require.Contains(t, a.Error, "interrupted", "call %s: attempt %d: %s", id, a.Attempt, hist)
				if a.Attempt > 1 {
					// Later attempts mark themselves running first, so the
					// record names the worker they were lost with; a first
					// attempt writes nothing before its request.
					require.Contains(t, a.Error, lostMark, "call %s: the interrupted attempt should name worker1: %s", id, hist)
				}
			}
		}
		hs := d.up.hitsOf(id)
		require.NotEmpty(t, hs, "call %s never reached the upstream but succeeded", id)
		require.LessOrEqual(t, len(hs), rec.Attempts, "call %s reached the upstream more often than it has attempts: %s", id, hist)
	}
	t.Logf("history of %s, in flight at the kill: %s", inFlight[0], historyString(recs[inFlight[0]]))
	for _, id := range inFlight {
		rec := recs[id]
		hist := historyString(rec)
		require.GreaterOrEqual(t, len(rec.History), 2, "call %s was in flight at the kill: its history should hold the interrupted attempt and a later success: %s", id, hist)
		require.Contains(t, rec.History[0].Error, "interrupted", "call %s: %s", id, hist)
		require.Contains(t, rec.History[0].Error, "the upstream may have received the request", "call %s: %s", id, hist)
		require.Len(t, d.up.hitsOf(id), 2, "call %s: once before the kill, once after recovery", id)
	}
	require.Contains(t, w2.logs(), "previous attempt was interrupted", "worker2 should log the interrupted attempts")
	requireNoErrorLogs(t, d.api, w2)
}

// TestProcessWorkerSIGTERMDrains SIGTERMs a worker under load with short
// calls: it must finish its calls in flight and exit 0 within its
// ShutdownTimeout (no call interrupted); a second worker then takes the
// rest, and every call succeeds after exactly one attempt.
func TestProcessWorkerSIGTERMDrains(t *testing.T) {
	t.Parallel()
	d := deploy(t, 300*time.Millisecond)
	// The upstream holds the requests after the first 30 until worker1 has
	// stopped taking calls: at the SIGTERM its 20 slots are full and most
	// of the queue is untaken, however slow the machine (unheld, a slow
	// test could see worker1 drain the whole queue before its SIGTERM).
	const passed, concurrency = 30, 20 // startWorker's
	release := d.up.hold(t, passed)
	w1 := d.startWorker()

	const n = 150
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("term-%03d", i)
		// The longest timeout: a held call waits from its request to the
		// release, and must still be answered in its first attempt.
		d.enqueueWith(ids[i], map[string]any{"timeout": "30s"})
	}
	require.Eventually(t, func() bool {
		if w1.exited() {
			t.Fatalf("worker1 exited (%v) before calling the upstream", w1.waitErr)
		}
		return d.up.count() >= passed+concurrency
	}, 60*time.Second, 5*time.Millisecond, "worker1 fills its slots with held calls")

	termSent := time.Now()
	require.NoError(t, w1.signal(syscall.SIGTERM))
	seenAtTerm := d.up.count()
	// asynq logs this once it has stopped taking tasks; then the calls in
	// flight may finish.
	require.Eventually(t, func() bool { return strings.Contains(w1.logs(), "Waiting for all workers to finish") },
		60*time.Second, 5*time.Millisecond, "worker1 stops taking calls on SIGTERM")
	release()
	select {
	case <-w1.done:
	case <-time.After(worker.DefaultShutdownTimeout + 15*time.Second):
		t.Fatalf("worker1 still running %s after SIGTERM", worker.DefaultShutdownTimeout+15*time.Second)
	}
	took := w1.exitedAt.Sub(termSent)
	t.Logf("worker1 exited %s after SIGTERM (status %d); the upstream had seen %d requests at SIGTERM, %d at exit",
		took.Round(time.Millisecond), w1.exitCode(), seenAtTerm, d.up.count())
	if late := d.up.startedAfter(termSent); len(late) > 0 {
		t.Logf("%d requests of worker1 reached the upstream after the SIGTERM was sent, at %v", len(late), late)
	}
	require.Equal(t, 0, w1.exitCode(), "worker1 should exit 0 on SIGTERM: %v", w1.waitErr)
	require.Contains(t, w1.logs(), "worker stopped")
	require.LessOrEqual(t, d.up.count(), passed+concurrency, "worker1 took calls after it stopped taking them")

	// After the exit nothing is running: calls are either finished or were
	// never taken.
	for _, id := range ids {
		var rec tasks.Record
		require.Equal(t, http.StatusOK, d.do(http.MethodGet, "/v1/calls/"+id, nil, &rec))
		require.NotEqual(t, tasks.StatusRunning, rec.Status, "call %s is still running after worker1 exited: %s", id, historyString(&rec))
	}

	w2 := d.startWorker()
	recs := d.waitAllTerminal(ids, time.Now().Add(90*time.Second))
	require.False(t, w2.exited(), "worker2 exited: %v", w2.waitErr)
	for _, id := range ids {
		rec := recs[id]
		hist := historyString(rec)
		require.Equal(t, tasks.StatusSucceeded, rec.Status, "call %s: error %+v, history %s", id, rec.Error, hist)
		require.Equal(t, 1, rec.Attempts, "call %s: a drained worker interrupts nothing: %s", id, hist)
		require.Len(t, rec.History, 1, "call %s: %s", id, hist)
		require.Equal(t, http.StatusOK, rec.History[0].Status, "call %s: %s", id, hist)
		require.Len(t, d.up.hitsOf(id), 1, "call %s reached the upstream more than once", id)
	}
	// Nothing in worker1's log about giving calls back unfinished.
	sc := bufio.NewScanner(strings.NewReader(w1.logs()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		require.NotContains(t, line, `"outcome":"interrupted"`, "worker1 cut a call short while draining")
	}
	requireNoErrorLogs(t, d.api, w1, w2)
}
