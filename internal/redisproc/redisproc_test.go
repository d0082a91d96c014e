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
	_, err = launch(bin, t.TempDir(), l.Addr().(*net.TCPAddr).Port, nil)
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
