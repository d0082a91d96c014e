package main

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// nonLoopbackIPv4 is an address of this machine other than loopback, or
// nil when it has none.
func nonLoopbackIPv4(t *testing.T) net.IP {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	require.NoError(t, err)
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP
		}
	}
	return nil
}

// devListening waits until callq dev prints where its API listens, and
// returns that address; or, if it exits first, "" and what it printed.
func devListening(t *testing.T, c *child) (addr, out string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		logs := c.logs()
		if _, rest, ok := strings.Cut(logs, "API on http://"); ok {
			if a, _, ok := strings.Cut(rest, ","); ok {
				return a, logs
			}
		}
		if c.exited() {
			return "", c.logs()
		}
		require.True(t, time.Now().Before(deadline), "callq dev did not say where it listens within 30s:\n%s", logs)
		time.Sleep(20 * time.Millisecond)
	}
}

// reachable reports whether a TCP connection to addr succeeds.
func reachable(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err == nil {
		_ = conn.Close()
	}
	return err == nil
}

// callq dev listens on 127.0.0.1 by default, API and httpbin: its dev API
// key and env:/file: credentials are not reachable from other machines.
func TestProcessDevListensOnLoopbackByDefault(t *testing.T) {
	t.Parallel()
	p := newProcs(t)
	// No --addr, no --httpbin-addr, no CALLQ_API_ADDR: the defaults.
	c := p.start("dev", "", childEnv(), "dev", "--integrations", "../../deploy/integrations.example.yaml")
	addr, out := devListening(t, c)
	if addr == "" {
		// Someone else holds the port: the failure still names the address
		// the default tried.
		require.Contains(t, out, "listen tcp 127.0.0.1:", "callq dev exited:\n%s", out)
		t.Logf("callq dev could not bind its default address (taken); it tried 127.0.0.1:\n%s", out)
		return
	}
	require.Equal(t, "127.0.0.1:8080", addr, "%s", out)
	require.NotContains(t, out, "all interfaces")
	require.NoError(t, waitHTTP(c, 20*time.Second, "http://127.0.0.1:8080/healthz", "http://127.0.0.1:8090/get"))
	if ip := nonLoopbackIPv4(t); ip != nil {
		for _, port := range []string{"8080", "8090"} {
			require.False(t, reachable(net.JoinHostPort(ip.String(), port)), "callq dev is reachable on %s:%s", ip, port)
		}
	}
}

// --addr :PORT opts into every interface, with a warning (and the positive
// control of the test above: the same probe does reach it then).
func TestProcessDevAllInterfacesWarns(t *testing.T) {
	t.Parallel()
	p := newProcs(t)
	var port string
	c := p.startListening(func() (*child, []string) {
		_, port, _ = net.SplitHostPort(freeAddr(t))
		hb := freeAddr(t)
		c := p.start("dev", "", childEnv(), "dev", "--addr", ":"+port, "--httpbin-addr", hb,
			"--integrations", "../../deploy/integrations.example.yaml")
		return c, []string{"http://127.0.0.1:" + port + "/healthz"}
	})
	_, out := devListening(t, c)
	require.Contains(t, out, "WARNING: the API listens on all interfaces")
	require.Contains(t, out, "dev API key")
	if ip := nonLoopbackIPv4(t); ip != nil {
		require.True(t, reachable(net.JoinHostPort(ip.String(), port)), "callq dev --addr :%s is not reachable on %s", port, ip)
	} else {
		t.Log("this machine has no non-loopback IPv4 address: reachability not probed")
	}
}
