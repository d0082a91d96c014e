package redistest

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// needProcess skips tests that assert per-process behaviour when the suite
// runs against an external CALLQ_TEST_REDIS_URL.
func needProcess(t *testing.T) {
	t.Helper()
	if os.Getenv(EnvURL) != "" {
		t.Skip("needs a redistest-owned process; " + EnvURL + " is set")
	}
}

func waitPing(t *testing.T, rdb *redis.Client) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := rdb.Ping(ctx).Err()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("PING after restart: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func portClosed(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
		return false
	}
	return true
}

func TestStartSetGet(t *testing.T) {
	needProcess(t)
	t.Parallel()
	srv := Start(t)
	if srv.URL != "redis://"+srv.Addr+"/0" {
		t.Fatalf("URL = %q, Addr = %q", srv.URL, srv.Addr)
	}
	if srv.Addr == "127.0.0.1:6379" {
		t.Fatal("started on the shared port 6379")
	}

	rdb := srv.Client(t)
	ctx := context.Background()
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	got, err := rdb.Get(ctx, "k").Result()
	if err != nil || got != "v" {
		t.Fatalf("GET k = %q, %v", got, err)
	}
}

func TestSaveRDB(t *testing.T) {
	needProcess(t)
	t.Parallel()
	srv := Start(t)
	rdb := srv.Client(t)
	if err := rdb.Set(context.Background(), "token", "s3cr3t-value", 0).Err(); err != nil {
		t.Fatal(err)
	}

	dump := srv.SaveRDB(t)
	if !bytes.HasPrefix(dump, []byte("REDIS")) {
		t.Fatalf("RDB header = %q", dump[:min(len(dump), 16)])
	}
	if !bytes.Contains(dump, []byte("s3cr3t-value")) {
		t.Fatal("value not found in RDB")
	}
	if _, err := os.Stat(filepath.Join(srv.Dir, "dump.rdb")); err != nil {
		t.Fatal(err)
	}
}

func TestRestartKeepsPortAndSavedData(t *testing.T) {
	needProcess(t)
	t.Parallel()
	srv := Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	if err := rdb.Set(ctx, "saved", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	srv.SaveRDB(t)
	if err := rdb.Set(ctx, "unsaved", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}

	addr := srv.Addr
	srv.Restart(t)
	if srv.Addr != addr {
		t.Fatalf("Addr changed: %s -> %s", addr, srv.Addr)
	}
	waitPing(t, rdb) // the same client reconnects to the same port
	if v := rdb.Get(ctx, "saved").Val(); v != "1" {
		t.Fatalf("saved key after restart = %q", v)
	}
	if n := rdb.Exists(ctx, "unsaved").Val(); n != 0 {
		t.Fatal("unsaved key survived restart")
	}

	srv.Restart(t) // twice in a row works too
	waitPing(t, rdb)
}

func TestKillThenRestart(t *testing.T) {
	needProcess(t)
	t.Parallel()
	srv := Start(t)
	rdb := srv.Client(t)
	waitPing(t, rdb)

	srv.Kill(t)
	if !portClosed(srv.Addr) {
		t.Fatal("port still accepting after Kill")
	}
	srv.Restart(t)
	waitPing(t, rdb)
}

func TestParallelServersAreIsolated(t *testing.T) {
	needProcess(t)
	t.Parallel()
	var mu sync.Mutex
	seen := map[string]bool{}
	for i := range 6 {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			srv := Start(t)
			mu.Lock()
			dup := seen[srv.Addr]
			seen[srv.Addr] = true
			mu.Unlock()
			if dup {
				t.Fatalf("address %s handed out twice", srv.Addr)
			}
			rdb := srv.Client(t)
			ctx := context.Background()
			if n := rdb.DBSize(ctx).Val(); n != 0 {
				t.Fatalf("fresh server has %d keys", n)
			}
			if err := rdb.Set(ctx, "k", i, 0).Err(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestStartProcess(t *testing.T) {
	t.Parallel()
	srv, stop, err := StartProcess("")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(srv.Dir, "redis.log")); err != nil {
		t.Fatal(err)
	}
	if portClosed(srv.Addr) {
		t.Fatal("server not listening")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	if !portClosed(srv.Addr) {
		t.Fatal("port still accepting after stop")
	}
	if _, err := os.Stat(srv.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temp dir not removed: %v", err)
	}
}

func TestStartProcessFailureIncludesLogTail(t *testing.T) {
	t.Parallel()
	_, _, err := StartProcess(t.TempDir(), "--no-such-option", "x")
	if err == nil || !strings.Contains(err.Error(), "no-such-option") {
		t.Fatalf("err = %v, want the redis log tail mentioning the bad option", err)
	}
}

func TestRestartWaitsForPortToFreeUp(t *testing.T) {
	needProcess(t)
	t.Parallel()
	srv := Start(t)
	rdb := srv.Client(t)
	srv.Kill(t)

	// Someone grabs the port while Redis is down and lets go a bit later.
	l, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(500 * time.Millisecond)
		l.Close()
	}()
	srv.Restart(t)
	waitPing(t, rdb)
}

// Not parallel: uses t.Setenv.
func TestExternalURL(t *testing.T) {
	owner, stop, err := StartProcess(t.TempDir())
	if err != nil {
		skipUnlessCI(t, err.Error())
	}
	t.Cleanup(func() { _ = stop() })
	ctx := context.Background()
	if err := owner.Client(t).Set(ctx, "leftover", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}

	t.Setenv(EnvURL, owner.URL)
	srv := Start(t)
	if srv.Addr != owner.Addr || srv.Dir != "" {
		t.Fatalf("external server = %+v", srv)
	}
	if n := srv.Client(t).Exists(ctx, "leftover").Val(); n != 0 {
		t.Fatal("Start did not FLUSHALL the external server")
	}

	var skipped bool
	t.Run("restart skips", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		srv.Restart(t)
	})
	if !skipped {
		t.Fatal("Restart did not skip for an external server")
	}
}

// Not parallel: uses t.Setenv.
func TestMissingBinary(t *testing.T) {
	t.Setenv(EnvURL, "")
	t.Setenv("CI", "false")
	t.Setenv("PATH", t.TempDir())

	var skipped bool
	t.Run("skips outside CI", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		Start(t)
	})
	if !skipped {
		t.Fatal("Start did not skip without redis-server")
	}

	_, _, err := StartProcess(t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "apt-get install redis-server") {
		t.Fatalf("StartProcess err = %v", err)
	}
}

// Under CI=true, Start without redis-server on PATH fails the test, saying
// why, instead of skipping it. The failing Start runs in a child test
// process (this test binary, run again) so that its failure is observed,
// not suffered.
func TestMissingBinaryFailsUnderCI(t *testing.T) {
	const childEnv = "REDISTEST_CHILD"
	if os.Getenv(childEnv) == "missing-under-ci" {
		Start(t)
		t.Log("Start returned without redis-server on PATH")
		return
	}
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestMissingBinaryFailsUnderCI$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"=missing-under-ci", "CI=true", "PATH="+t.TempDir(), EnvURL+"=")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("child test: err = %v, want exit status 1; output:\n%s", err, out)
	}
	for _, want := range []string{"--- FAIL: TestMissingBinaryFailsUnderCI", "redis-server not found on PATH",
		"apt-get install redis-server", "CI=true, so this is a failure, not a skip"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("child output lacks %q:\n%s", want, out)
		}
	}
	if bytes.Contains(out, []byte("--- SKIP")) || bytes.Contains(out, []byte("Start returned")) {
		t.Errorf("child test skipped or went on:\n%s", out)
	}
}
