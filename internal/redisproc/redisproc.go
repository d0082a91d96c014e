package redisproc

import (
	"bufio"
	"bytes"
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
	"time"
)

const (
	// Binary is the program Start looks up on PATH when Config.Bin is empty.
	Binary = "redis-server"

	// DBFilename is the dump file in Dir (--dbfilename) unless Args set
	// another.
	DBFilename  = "dump.rdb"
	logFilename = "redis.log"
	// nodesFilename is a cluster node's own state (cluster-config-file),
	// in its Dir: a Restart keeps the node's identity and its view.
	nodesFilename = "nodes.conf"

	readyTimeout  = 10 * time.Second // PING must answer within this.
	stopGrace     = 5 * time.Second  // SIGTERM -> SIGKILL.
	startAttempts = 5                // fresh-port attempts on a bind race.
	rebindWindow  = 10 * time.Second // Restart keeps retrying the same port this long.
)

// errAddrInUse marks a start that failed because the port was taken.
var errAddrInUse = errors.New("redisproc: address already in use")

// Config says how Start launches redis-server.
type Config struct {
	// Bin is the redis-server binary. Default: Binary, looked up on PATH.
	Bin string
	// Dir is the working directory, holding dump.rdb and redis.log; it is
	// created if needed. Default: a fresh os.MkdirTemp directory that Stop
	// removes.
	Dir string
	// Args are appended to the command line. They must not change --port,
	// --bind, --dir or --daemonize. With --requirepass, the readiness probe
	// authenticates with its password.
	Args []string
	// ConfFile is a redis.conf that redis-server reads first (its first
	// argument); the command line's options then override it. With a
	// ConfFile, persistence is the file's: Start turns off neither RDB
	// snapshots nor the AOF. Default: none, and persistence off.
	ConfFile string
	// Cluster runs the server as a Redis Cluster node (--cluster-enabled
	// yes, its nodes.conf in Dir) on a port below 55535 whose cluster bus
	// port, the port + 10000, was free too: the bus port Redis derives
	// (cluster-port is Redis 7's, and not every tool reads it). The node
	// holds no slots and knows no other node: StartCluster joins nodes.
	Cluster bool
}

// Server is a redis-server process on 127.0.0.1.
type Server struct {
	Addr string // 127.0.0.1:port
	URL  string // redis://127.0.0.1:port/0
	Dir  string // working dir holding dump.rdb and redis.log

	bin     string
	conf    string
	port    int
	extra   []string
	cluster bool // a cluster node: port + 10000 is reserved too
	rmDir   bool // Dir was created by Start and is removed by Stop

	mu      sync.Mutex
	proc    *process // current process; nil after stop
	stopped bool
}

// Start launches redis-server on a free 127.0.0.1 port, with persistence
// disabled unless cfg.ConfFile says otherwise, and waits until it answers
// PING (up to 10s). A nil cfg takes every default. Stop the server with
// [Server.Stop].
func Start(cfg *Config) (*Server, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	bin := cfg.Bin
	if bin == "" {
		var err error
		if bin, err = exec.LookPath(Binary); err != nil {
			return nil, fmt.Errorf("redisproc: %s not found on PATH; install it (apt-get install redis-server): %w", Binary, err)
		}
	}
	dir, rm := cfg.Dir, false
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "callq-redis-"); err != nil {
			return nil, fmt.Errorf("redisproc: %w", err)
		}
		rm = true
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("redisproc: %w", err)
	}
	extra := cfg.Args
	if cfg.Cluster {
		extra = append([]string{"--cluster-enabled", "yes", "--cluster-config-file", nodesFilename}, extra...)
	}
	s, err := startProcess(bin, cfg.ConfFile, dir, rm, cfg.Cluster, extra)
	if err != nil {
		if rm {
			_ = os.RemoveAll(dir)
		}
		return nil, err
	}
	return s, nil
}

func startProcess(bin, conf, dir string, rmDir, cluster bool, extra []string) (*Server, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("redisproc: %w", err)
	}
	var lastErr error
	for attempt := 0; attempt < startAttempts; attempt++ {
		reserve := reservePort
		if cluster {
			reserve = reserveClusterPort
		}
		port, err := reserve()
		if err != nil {
			return nil, err
		}
		p, err := launch(bin, conf, abs, port, extra)
		if err == nil {
			addr := hostPort(port)
			return &Server{
				Addr:    addr,
				URL:     "redis://" + addr + "/0",
				Dir:     abs,
				bin:     bin,
				conf:    conf,
				port:    port,
				extra:   extra,
				cluster: cluster,
				rmDir:   rmDir,
				proc:    p,
			}, nil
		}
		releasePorts(port, cluster)
		lastErr = err
		if !errors.Is(err, errAddrInUse) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("redisproc: gave up after %d attempts on fresh ports: %w", startAttempts, lastErr)
}

// Restart stops the process (SIGTERM, waits) and starts it again on the same
// port and dir. Only what was saved to dump.rdb (SAVE) survives, since the
// server runs with persistence disabled (unless a ConfFile turns it on).
// Existing clients reconnect on their next command.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("redisproc: Restart after the server was stopped")
	}
	if s.proc != nil {
		// A slow shutdown ends in SIGKILL, which is fine for a restart.
		_ = s.proc.terminate(stopGrace)
		s.proc = nil
	}
	deadline := time.Now().Add(rebindWindow)
	for {
		p, err := launch(s.bin, s.conf, s.Dir, s.port, s.extra)
		if err == nil {
			s.proc = p
			return nil
		}
		if !errors.Is(err, errAddrInUse) || time.Now().After(deadline) {
			return fmt.Errorf("redisproc: restart on %s: %w", s.Addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Kill SIGKILLs the process (no shutdown, no save) and waits for it to die,
// for fault tests. Restart brings it back on the same port.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.proc.kill()
	}
}

// Stop stops the process for good (SIGTERM, then SIGKILL after 5s) and
// removes a Dir that Start created. It is idempotent; it returns an error
// only if redis-server had to be SIGKILLed or Dir could not be removed.
func (s *Server) Stop() error {
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
	releasePorts(s.port, s.cluster)
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
	return fmt.Errorf("redisproc: redis-server (pid %d) ignored SIGTERM for %s; sent SIGKILL", p.cmd.Process.Pid, grace)
}

// launch starts redis-server on port, reading conf first when it is not
// empty, and waits until it answers PING. An error wraps errAddrInUse when
// the port was taken.
func launch(bin, conf, dir string, port int, extra []string) (*process, error) {
	logPath := filepath.Join(dir, logFilename)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("redisproc: %w", err)
	}
	var logStart int64 // only this attempt's part of the log is inspected
	if st, err := logf.Stat(); err == nil {
		logStart = st.Size()
	}
	var args []string
	if conf != "" {
		args = append(args, conf) // redis-server takes its file first
	}
	args = append(args,
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--dir", dir,
		"--dbfilename", DBFilename,
		"--daemonize", "no",
		"--logfile", logPath,
	)
	if conf == "" {
		args = append(args, "--save", "", "--appendonly", "no")
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
		return nil, fmt.Errorf("redisproc: start %s: %w", bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()

	addr := hostPort(port)
	if err := waitReady(p, addr, requirePass(extra)); err != nil {
		p.kill()
		log := readFrom(logPath, logStart)
		err = fmt.Errorf("redisproc: redis-server on %s: %w\n--- %s (tail) ---\n%s", addr, err, logPath, tail(log, 30))
		if bytes.Contains(log, []byte("Address already in use")) {
			err = fmt.Errorf("%w: %w", errAddrInUse, err)
		}
		return nil, err
	}
	return p, nil
}

// waitReady polls until the server answers PING and INFO reports our pid
// (so that a foreign server that won a port race is not mistaken for ours).
func waitReady(p *process, addr, password string) error {
	pid := p.cmd.Process.Pid
	deadline := time.Now().Add(readyTimeout)
	var last error
	for {
		if p.exited() {
			return fmt.Errorf("exited before becoming ready (%v)", p.waitErr)
		}
		ok, err := probe(addr, pid, password)
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

// requirePass is the password Args set with --requirepass, for the probe.
func requirePass(args []string) string {
	pw := ""
	for i, a := range args {
		if a == "--requirepass" && i+1 < len(args) {
			pw = args[i+1]
		}
	}
	return pw
}

// probe sends PING and INFO server over a raw RESP connection, after AUTH
// when password is not empty.
func probe(addr string, pid int, password string) (bool, error) {
	conn, err := net.DialTimeout("tcp", addr, 250*time.Millisecond)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	r := bufio.NewReader(conn)
	if password != "" {
		if _, err := fmt.Fprintf(conn, "*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n", len(password), password); err != nil {
			return false, err
		}
		line, err := readLine(r)
		if err != nil {
			return false, err
		}
		if line != "+OK" {
			return false, fmt.Errorf("AUTH: %s", line)
		}
	}
	if _, err := io.WriteString(conn, "*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n"); err != nil {
		return false, err
	}
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

// Ports handed to live servers of this process; never handed out twice,
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
			return 0, fmt.Errorf("redisproc: find free port: %w", err)
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
	return 0, errors.New("redisproc: no free port found")
}

// maxClusterPort bounds a cluster node's port: its bus port, the port +
// 10000, must be a port.
const maxClusterPort = 65535 - 10000

// reserveClusterPort is reservePort for a cluster node: a port below
// maxClusterPort whose bus port is free as well, both reserved.
func reserveClusterPort() (int, error) {
	for i := 0; i < 200; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("redisproc: find free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if port >= maxClusterPort {
			_ = l.Close()
			continue
		}
		bus, err := net.Listen("tcp", hostPort(port+10000))
		_ = l.Close()
		if err != nil {
			continue
		}
		_ = bus.Close()
		portsMu.Lock()
		if !reserved[port] && !reserved[port+10000] {
			reserved[port], reserved[port+10000] = true, true
			portsMu.Unlock()
			return port, nil
		}
		portsMu.Unlock()
	}
	return 0, fmt.Errorf("redisproc: no free port below %d with a free bus port (port + 10000) found", maxClusterPort)
}

func releasePort(port int) {
	portsMu.Lock()
	delete(reserved, port)
	portsMu.Unlock()
}

// releasePorts releases port, and its bus port for a cluster node.
func releasePorts(port int, cluster bool) {
	releasePort(port)
	if cluster {
		releasePort(port + 10000)
	}
}
