package redistest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// EnvURL names the environment variable that points Start at an
	// external Redis instead of launching one.
	EnvURL = "CALLQ_TEST_REDIS_URL"

	binary      = "redis-server"
	dbFilename  = "dump.rdb"
	logFilename = "redis.log"

	readyTimeout  = 10 * time.Second // PING must answer within this.
	stopGrace     = 5 * time.Second  // SIGTERM -> SIGKILL.
	startAttempts = 5                // fresh-port attempts on a bind race.
	rebindWindow  = 10 * time.Second // Restart keeps retrying the same port this long.
	cmdTimeout    = 30 * time.Second // FLUSHALL / SAVE / CONFIG GET.
)

// errAddrInUse marks a start that failed because the port was taken.
var errAddrInUse = errors.New("redistest: address already in use")

const missingMsg = "redistest: redis-server not found on PATH; install redis-server " +
	"(apt-get install redis-server) or set " + EnvURL

// Server is a redis-server process owned by a test (or by a TestMain / a
// benchmark harness).
type Server struct {
	Addr string // 127.0.0.1:port
	URL  string // redis://127.0.0.1:port/0
	Dir  string // working dir holding dump.rdb and redis.log ("" for an external server)

	external bool
	bin      string
	port     int
	extra    []string
	rmDir    bool // Dir was created by StartProcess and is removed on stop

	mu      sync.Mutex
	proc    *process // current process; nil after stop
	stopped bool
}

// Start launches redis-server on a free 127.0.0.1 port in a tb.TempDir(),
// waits until PING answers (up to 10s), registers tb.Cleanup to stop it
// (SIGTERM, then SIGKILL after 5s) and returns it.
//
// If CALLQ_TEST_REDIS_URL is set it returns a Server pointing there instead,
// after FLUSHALL, and launches no process.
//
// If redis-server is not on PATH the test is skipped, or failed when CI=true.
func Start(tb testing.TB) *Server {
	tb.Helper()
	if url := os.Getenv(EnvURL); url != "" {
		return startExternal(tb, url)
	}
	bin, err := exec.LookPath(binary)
	if err != nil {
		skipUnlessCI(tb, missingMsg)
	}
	s, err := startProcess(bin, tb.TempDir(), false, nil)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(func() {
		if err := s.shutdown(); err != nil {
			tb.Logf("%v", err)
		}
	})
	return s
}

// skipUnlessCI skips tb with msg, or fails it when CI=true: on CI a
// missing redis-server is a broken image, and a skipped test would pass it.
func skipUnlessCI(tb testing.TB, msg string) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf("%s (CI=true, so this is a failure, not a skip)", msg)
	}
	tb.Skip(msg)
}

// StartProcess is Start without testing.TB, for the benchmark harness and
// process-level helpers. It always launches a process (CALLQ_TEST_REDIS_URL
// is ignored) in dir, which is created if needed; an empty dir means a fresh
// os.MkdirTemp directory that stop removes. extraArgs are appended to the
// redis-server command line (they must not change --port, --bind, --dir or
// --daemonize). The returned stop func is idempotent; it returns an error only
// if redis-server had to be SIGKILLed or the temp dir could not be removed.
func StartProcess(dir string, extraArgs ...string) (*Server, func() error, error) {
	bin, err := exec.LookPath(binary)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", missingMsg, err)
	}
	rm := false
	if dir == "" {
		if dir, err = os.MkdirTemp("", "callq-redis-"); err != nil {
			return nil, nil, fmt.Errorf("redistest: %w", err)
		}
		rm = true
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("redistest: %w", err)
	}
	s, err := startProcess(bin, dir, rm, extraArgs)
	if err != nil {
		if rm {
			_ = os.RemoveAll(dir)
		}
		return nil, nil, err
	}
	return s, s.shutdown, nil
}

func startProcess(bin, dir string, rmDir bool, extra []string) (*Server, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("redistest: %w", err)
	}
	var lastErr error
	for attempt := 0; attempt < startAttempts; attempt++ {
		port, err := reservePort()
		if err != nil {
			return nil, err
		}
		p, err := launch(bin, abs, port, extra)
		if err == nil {
			addr := hostPort(port)
			return &Server{
				Addr:  addr,
				URL:   "redis://" + addr + "/0",
				Dir:   abs,
				bin:   bin,
				port:  port,
				extra: extra,
				rmDir: rmDir,
				proc:  p,
			}, nil
		}
		releasePort(port)
		lastErr = err
		if !errors.Is(err, errAddrInUse) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("redistest: gave up after %d attempts on fresh ports: %w", startAttempts, lastErr)
}

func startExternal(tb testing.TB, url string) *Server {
	tb.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatalf("redistest: bad %s=%q: %v", EnvURL, url, err)
	}
	c := redis.NewClient(opt)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if err := c.FlushAll(ctx).Err(); err != nil {
		tb.Fatalf("redistest: FLUSHALL on %s=%s: %v", EnvURL, opt.Addr, err)
	}
	return &Server{Addr: opt.Addr, URL: url, external: true}
}

// Client returns a go-redis client for the server, closed at cleanup.
func (s *Server) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	opt, err := redis.ParseURL(s.URL)
	if err != nil {
		tb.Fatalf("redistest: parse %q: %v", s.URL, err)
	}
	c := redis.NewClient(opt)
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// Restart stops the process (SIGTERM, waits) and starts it again on the same
// port and dir. Only what was saved to dump.rdb (SaveRDB / SAVE) survives,
// since the server runs with persistence disabled. Existing clients reconnect
// on their next command. Skips the test for CALLQ_TEST_REDIS_URL.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	if s.external {
		tb.Skip("redistest: Restart is not supported with " + EnvURL)
	}
	if err := s.restart(); err != nil {
		tb.Fatalf("%v", err)
	}
}

func (s *Server) restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("redistest: Restart after the server was stopped")
	}
	if s.proc != nil {
		// A slow shutdown ends in SIGKILL, which is fine for a restart.
		_ = s.proc.terminate(stopGrace)
		s.proc = nil
	}
	deadline := time.Now().Add(rebindWindow)
	for {
		p, err := launch(s.bin, s.Dir, s.port, s.extra)
		if err == nil {
			s.proc = p
			return nil
		}
		if !errors.Is(err, errAddrInUse) || time.Now().After(deadline) {
			return fmt.Errorf("redistest: restart on %s: %w", s.Addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Kill SIGKILLs the process (no shutdown, no save) and waits for it to die,
// for fault tests. Restart brings it back on the same port. Skips the test for
// CALLQ_TEST_REDIS_URL.
func (s *Server) Kill(tb testing.TB) {
	tb.Helper()
	if s.external {
		tb.Skip("redistest: Kill is not supported with " + EnvURL)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.proc.kill()
	}
}

// SaveRDB runs SAVE and returns the bytes of the resulting dump file
// (<dir>/dump.rdb), so tests can grep a snapshot for secrets. Skips the test
// for CALLQ_TEST_REDIS_URL, whose file system is not ours.
func (s *Server) SaveRDB(tb testing.TB) []byte {
	tb.Helper()
	if s.external {
		tb.Skip("redistest: SaveRDB is not supported with " + EnvURL)
	}
	opt, err := redis.ParseURL(s.URL)
	if err != nil {
		tb.Fatalf("redistest: parse %q: %v", s.URL, err)
	}
	c := redis.NewClient(opt)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if err := c.Save(ctx).Err(); err != nil {
		tb.Fatalf("redistest: SAVE on %s: %v", s.Addr, err)
	}
	// Honour a --dbfilename passed through StartProcess' extraArgs.
	name := dbFilename
	if kv, err := c.ConfigGet(ctx, "dbfilename").Result(); err == nil && kv["dbfilename"] != "" {
		name = kv["dbfilename"]
	}
	path := filepath.Join(s.Dir, name)
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("redistest: read RDB: %v", err)
	}
	return b
}

// shutdown stops the current process for good; idempotent.
func (s *Server) shutdown() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	var errs []error
	if s.proc != nil {
		errs = append(errs, s.proc.terminate(stopGrace))
		s.proc = nil
	}
	releasePort(s.port)
	if s.rmDir {
		errs = append(errs, os.RemoveAll(s.Dir))
	}
	return errors.Join(errs...)
}

// process is one redis-server child.
type process struct {
	cmd     *exec.Cmd
	done    chan struct{} // closed once cmd.Wait returned
	waitErr error         // valid after done is closed
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// terminate sends SIGTERM and escalates to SIGKILL after grace.
func (p *process) terminate(grace time.Duration) error {
	if p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
	}
	p.kill()
	return fmt.Errorf("redistest: redis-server (pid %d) ignored SIGTERM for %s; sent SIGKILL", p.cmd.Process.Pid, grace)
}

// launch starts redis-server on port and waits until it answers PING. An
// error wraps errAddrInUse when the port was taken.
func launch(bin, dir string, port int, extra []string) (*process, error) {
	logPath := filepath.Join(dir, logFilename)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("redistest: %w", err)
	}
	var logStart int64 // only this attempt's part of the log is inspected
	if st, err := logf.Stat(); err == nil {
		logStart = st.Size()
	}
	args := []string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--dbfilename", dbFilename,
		"--daemonize", "no",
		"--logfile", logPath,
	}
	args = append(args, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = sysProcAttr()
	err = cmd.Start()
	_ = logf.Close() // the child has its own descriptor
	if err != nil {
		return nil, fmt.Errorf("redistest: start %s: %w", bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()

	addr := hostPort(port)
	if err := waitReady(p, addr); err != nil {
		p.kill()
		log := readFrom(logPath, logStart)
		err = fmt.Errorf("redistest: redis-server on %s: %w\n--- %s (tail) ---\n%s", addr, err, logPath, tail(log, 30))
		if bytes.Contains(log, []byte("Address already in use")) {
			err = fmt.Errorf("%w: %w", errAddrInUse, err)
		}
		return nil, err
	}
	return p, nil
}

// waitReady polls until the server answers PING and INFO reports our pid
// (so that a foreign server that won a port race is not mistaken for ours).
func waitReady(p *process, addr string) error {
	pid := p.cmd.Process.Pid
	deadline := time.Now().Add(readyTimeout)
	var last error
	for {
		if p.exited() {
			return fmt.Errorf("exited before becoming ready (%v)", p.waitErr)
		}
		ok, err := probe(addr, pid)
		if ok {
			return nil
		}
		last = err
		if time.Now().After(deadline) {
			return fmt.Errorf("not answering PING after %s (last: %v)", readyTimeout, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// probe sends PING and INFO server over a raw RESP connection.
func probe(addr string, pid int) (bool, error) {
	conn, err := net.DialTimeout("tcp", addr, 250*time.Millisecond)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(conn, "*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n"); err != nil {
		return false, err
	}
	r := bufio.NewReader(conn)
	line, err := readLine(r)
	if err != nil {
		return false, err
	}
	if line != "+PONG" {
		return false, fmt.Errorf("PING: %s", line)
	}
	line, err = readLine(r)
	if err != nil {
		return false, err
	}
	if !strings.HasPrefix(line, "$") {
		return false, fmt.Errorf("INFO: %s", line)
	}
	n, err := strconv.Atoi(line[1:])
	if err != nil || n < 0 {
		return false, fmt.Errorf("INFO: bad length %q", line)
	}
	body := make([]byte, n+2)
	if _, err := io.ReadFull(r, body); err != nil {
		return false, err
	}
	for _, l := range strings.Split(string(body), "\r\n") {
		if v, ok := strings.CutPrefix(l, "process_id:"); ok {
			if v == strconv.Itoa(pid) {
				return true, nil
			}
			return false, fmt.Errorf("port answered by another redis-server (pid %s, ours %d)", v, pid)
		}
	}
	return false, errors.New("INFO server has no process_id")
}

func readLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func readFrom(path string, off int64) []byte {
	f, err := os.Open(path)
	if err != nil {
		return []byte(fmt.Sprintf("(cannot read log: %v)", err))
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(f, 1<<20))
	return b
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func hostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// Ports handed to live servers of this test binary; never handed out twice,
// which removes races between parallel tests of the same package. Races with
// other processes are handled by retrying on bind failure.
var (
	portsMu  sync.Mutex
	reserved = map[int]bool{}
)

func reservePort() (int, error) {
	for i := 0; i < 100; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("redistest: find free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		portsMu.Lock()
		if !reserved[port] {
			reserved[port] = true
			portsMu.Unlock()
			return port, nil
		}
		portsMu.Unlock()
	}
	return 0, errors.New("redistest: no free port found")
}

func releasePort(port int) {
	portsMu.Lock()
	delete(reserved, port)
	portsMu.Unlock()
}
