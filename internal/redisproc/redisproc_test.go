package redisproc

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestLaunchOnTakenPortIsAddrInUse(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath(Binary)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v (CI=true, so this is a failure, not a skip)", err)
		}
		t.Skip(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = launch(bin, "", t.TempDir(), l.Addr().(*net.TCPAddr).Port, nil)
	if !errors.Is(err, errAddrInUse) {
		t.Fatalf("err = %v, want errAddrInUse", err)
	}
	if !strings.Contains(err.Error(), "Address already in use") {
		t.Fatalf("err lacks the log tail: %v", err)
	}
}

// Not parallel: uses t.Setenv.
func TestStartWithoutBinaryNamesTheFix(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := Start(nil)
	if !errors.Is(err, exec.ErrNotFound) || !strings.Contains(err.Error(), "apt-get install redis-server") {
		t.Fatalf("Start err = %v, want exec.ErrNotFound and how to install redis-server", err)
	}
}

// With a ConfFile, the file's settings hold (persistence included) and the
// command line still sets the port and directory; Restart after Kill loads
// the append-only file. A --requirepass in Args is the probe's password.
func TestConfFileKeepsItsPersistence(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath(Binary)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v (CI=true, so this is a failure, not a skip)", err)
		}
		t.Skip(err)
	}
	conf := t.TempDir() + "/redis.conf"
	if err := os.WriteFile(conf, []byte("appendonly yes\nappendfsync always\nport 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv, err := Start(&Config{Bin: bin, ConfFile: conf, Dir: t.TempDir(), Args: []string{"--requirepass", "pw"}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, Password: "pw", MaxRetries: -1})
	defer rdb.Close()
	if got, err := rdb.ConfigGet(ctx, "appendonly").Result(); err != nil || got["appendonly"] != "yes" {
		t.Fatalf("appendonly = %v (%v), want yes from the file", got, err)
	}
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if got, err := rdb.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("after SIGKILL and restart, GET k = %q (%v), want v from the AOF", got, err)
	}
	anon := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer anon.Close()
	if err := anon.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("PING without the password: %v, want NOAUTH", err)
	}
}
