package redistest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/callq/callq/internal/redisproc"
)

const (
	// EnvURL names the environment variable that points Start at an
	// external Redis instead of launching one.
	EnvURL = "CALLQ_TEST_REDIS_URL"

	binary     = redisproc.Binary
	cmdTimeout = 30 * time.Second // FLUSHALL / SAVE / CONFIG GET.
)

const missingMsg = "redistest: redis-server not found on PATH; install redis-server " +
	"(apt-get install redis-server) or set " + EnvURL

// Server is a redis-server process owned by a test (or by a TestMain), or
// an external server (CALLQ_TEST_REDIS_URL).
type Server struct {
	Addr string // 127.0.0.1:port
	URL  string // redis://127.0.0.1:port/0
	Dir  string // working dir holding dump.rdb and redis.log ("" for an external server)

	external bool
	proc     *redisproc.Server // nil for an external server
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
	s, err := startProcess(bin, tb.TempDir(), nil)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(func() {
		if err := s.proc.Stop(); err != nil {
			tb.Logf("%v", err)
		}
	})
	return s
}

// StartConf is Start from a redis.conf (deploy/redis/redis.conf): a
// process of its own, always (CALLQ_TEST_REDIS_URL is ignored), with conf
// read first and extraArgs after the port, bind and directory options, so
// they override the file. Persistence is the file's: [Server.Kill] then
// [Server.Restart] shows what its append-only file kept. The server reads a
// copy of conf in its directory: CONFIG REWRITE, which a Sentinel sends to
// the replica it promotes, rewrites the copy, never conf.
func StartConf(tb testing.TB, conf string, extraArgs ...string) *Server {
	tb.Helper()
	bin, err := exec.LookPath(binary)
	if err != nil {
		skipUnlessCI(tb, missingMsg)
	}
	data, err := os.ReadFile(conf)
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	dir := tb.TempDir()
	copied := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(copied, data, 0o644); err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	p, err := redisproc.Start(&redisproc.Config{Bin: bin, Dir: dir, ConfFile: copied, Args: extraArgs})
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(func() {
		if err := p.Stop(); err != nil {
			tb.Logf("%v", err)
		}
	})
	return &Server{Addr: p.Addr, URL: p.URL, Dir: p.Dir, proc: p}
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

// StartProcess is Start without testing.TB, for a TestMain and
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
	s, err := startProcess(bin, dir, extraArgs)
	if err != nil {
		return nil, nil, err
	}
	return s, s.proc.Stop, nil
}

// startProcess launches redis-server through redisproc, in dir (an empty
// dir: a fresh temp dir, removed on stop).
func startProcess(bin, dir string, extra []string) (*Server, error) {
	p, err := redisproc.Start(&redisproc.Config{Bin: bin, Dir: dir, Args: extra})
	if err != nil {
		return nil, err
	}
	return &Server{Addr: p.Addr, URL: p.URL, Dir: p.Dir, proc: p}, nil
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
// since the server runs with persistence disabled (but for StartConf's, whose
// file may turn it on). Existing clients reconnect
// on their next command. Skips the test for CALLQ_TEST_REDIS_URL.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	if s.external {
		tb.Skip("redistest: Restart is not supported with " + EnvURL)
	}
	if err := s.proc.Restart(); err != nil {
		tb.Fatalf("%v", err)
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
	s.proc.Kill()
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
	name := redisproc.DBFilename
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

// Cluster is a Redis Cluster of redis-server processes (3 masters and 3
// replicas, internal/redisproc's StartCluster) owned by a test, or shared
// by a test package (SharedCluster).
type Cluster struct {
	*redisproc.Cluster
}

// StartCluster starts a cluster of 3 masters and 3 replicas, each node on
// a free port whose bus port (+10000) is free too, created with
// `redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`, and
// returns once every node reports cluster_state:ok, agrees with the others
// on masters, slots and replicas, and every replica is in sync (a few
// seconds: a master only turns ok 2s after its start). tb.Cleanup stops
// it. CALLQ_TEST_REDIS_URL is ignored: a cluster is always processes of
// its own. Without redis-server or redis-cli on PATH the test is skipped,
// or failed when CI=true.
func StartCluster(tb testing.TB) *Cluster {
	tb.Helper()
	c, err := startCluster(tb, tb.TempDir())
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(func() {
		if err := c.Stop(); err != nil {
			tb.Logf("%v", err)
		}
	})
	return c
}

// needClusterBinaries skips tb, or fails it when CI=true, without
// redis-server or redis-cli on PATH.
func needClusterBinaries(tb testing.TB) {
	tb.Helper()
	for _, bin := range []string{binary, redisproc.CLIBinary} {
		if _, err := exec.LookPath(bin); err != nil {
			skipUnlessCI(tb, "redistest: "+bin+" not found on PATH; install redis-server and redis-tools (apt-get install redis-server redis-tools)")
		}
	}
}

func startCluster(tb testing.TB, dir string) (*Cluster, error) {
	tb.Helper()
	needClusterBinaries(tb)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := redisproc.StartCluster(ctx, &redisproc.ClusterConfig{Dir: dir})
	if err != nil {
		return nil, err
	}
	return &Cluster{c}, nil
}

// Client returns a cluster client seeded with every node, closed at
// cleanup.
func (c *Cluster) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})
	tb.Cleanup(func() { _ = cc.Close() })
	return cc
}

// SharedCluster is one cluster for every test of a package that can share
// it (tests that use keys of their own: their own tenants, their own
// queues): started by the first Get, stopped by Stop, which the package's
// TestMain calls after m.Run. Starting a cluster takes seconds; sharing it
// keeps a package's cluster tests fast.
//
//	var cluster redistest.SharedCluster
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		cluster.Stop()
//		os.Exit(code)
//	}
type SharedCluster struct {
	mu      sync.Mutex
	c       *Cluster
	err     error
	started bool
}

// Get returns the package's cluster, starting it on first use; a start that
// failed fails every test that asks for it (or skips them, as StartCluster
// does, without the binaries).
func (s *SharedCluster) Get(tb testing.TB) *Cluster {
	tb.Helper()
	needClusterBinaries(tb)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		s.started = true
		// A directory outlives the test that happened to start it.
		dir, err := os.MkdirTemp("", "callq-shared-cluster-")
		if err == nil {
			s.c, s.err = startCluster(tb, dir)
		} else {
			s.err = err
		}
		if s.err != nil && dir != "" {
			_ = os.RemoveAll(dir)
		}
	}
	if s.err != nil {
		tb.Fatalf("the package's shared cluster: %v", s.err)
	}
	return s.c
}

// Stop stops the cluster, if one was started, and removes its directory.
func (s *SharedCluster) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c != nil {
		if err := s.c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "redistest: stopping the shared cluster:", err)
		}
		_ = os.RemoveAll(s.c.Dir)
		s.c = nil
	}
}
