package redisproc

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
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
// the append-only file.
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
	srv, err := Start(&Config{Bin: bin, ConfFile: conf, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	send := func(cmd string) string {
		t.Helper()
		conn, err := net.Dial("tcp", srv.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Write([]byte(cmd + "\r\n")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 256)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:n])
	}
	if got := send("CONFIG GET appendonly"); !strings.Contains(got, "yes") {
		t.Fatalf("appendonly = %q, want yes from the file", got)
	}
	if got := send("SET k v"); got != "+OK\r\n" {
		t.Fatalf("SET: %q", got)
	}
	srv.Kill()
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if got := send("GET k"); got != "$1\r\nv\r\n" {
		t.Fatalf("after SIGKILL and restart, GET k = %q, want v from the AOF", got)
	}
}
