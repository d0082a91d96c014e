package worker

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/tasks"
)

func TestWebhookClientRefusesPrivateAddresses(t *testing.T) {
	t.Parallel()
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("a refused delivery reached the receiver: %s", r.URL)
	}))
	defer receiver.Close()
	port := receiver.URL[strings.LastIndex(receiver.URL, ":")+1:]

	client := newWebhookClient(false)
	client.Timeout = 2 * time.Second
	for _, url := range []string{
		"http://127.0.0.1:" + port + "/hook",
		"http://localhost:" + port + "/hook", // a name that resolves to loopback
		"http://[::1]:" + port + "/hook",
		"http://10.0.0.1/hook",
		"http://192.168.1.1/hook",
		"http://172.16.0.1/hook",
		"http://169.254.169.254/latest/meta-data/", // cloud metadata
		"http://[fe80::1]/hook",
		"http://[fd00::1]/hook",
		"http://0.0.0.0:" + port + "/hook",
		"http://100.64.0.1/hook",
		"http://[::ffff:127.0.0.1]:" + port + "/hook",
		"http://[64:ff9b::a9fe:a9fe]/hook", // NAT64 wrapping of 169.254.169.254
	} {
		_, err := client.Post(url, "application/json", strings.NewReader("{}"))
		require.Error(t, err, url)
		var ae *addrError
		require.True(t, errors.As(err, &ae), "%s: refused by the address check, got %v", url, err)
		require.Contains(t, ae.Error(), "CALLQ_WEBHOOK_ALLOW_PRIVATE", url)
	}

	allowed := newWebhookClient(true)
	resp, err := allowed.Post(receiverOK(t), "application/json", strings.NewReader("{}"))
	require.NoError(t, err, "with the flag, loopback is allowed")
	resp.Body.Close()
}

// TestWebhookClientRefusesWrappedPrivateAddresses dials, through the real
// client, IPv6 forms that carry or tunnel to private IPv4 addresses: the
// dialer's guard refuses each with the classifier's own error, before any
// connection is tried.
func TestWebhookClientRefusesWrappedPrivateAddresses(t *testing.T) {
	t.Parallel()
	client := newWebhookClient(false)
	client.Timeout = 5 * time.Second
	for _, addr := range []string{
		"::127.0.0.1",                          // IPv4-compatible
		"::169.254.169.254",                    // IPv4-compatible
		"::ffff:0:127.0.0.1",                   // SIIT
		"::ffff:0:10.0.0.1",                    // SIIT
		"64:ff9b:1::a9fe:a9fe",                 // local-use NAT64
		"2001:0:4136:e378:8000:63bf:f5ff:fffe", // Teredo to 10.0.0.1
		"2002:a9fe:a9fe::1",                    // 6to4
	} {
		// The zoned form too: a zone makes every prefix check false, and
		// the kernel ignores it outside link-local addresses.
		for _, host := range []string{addr, addr + "%251"} {
			_, err := client.Post("http://["+host+"]:8080/hook", "application/json", strings.NewReader("{}"))
			var ae *addrError
			require.True(t, errors.As(err, &ae), "%s: refused by the address check, got %v", host, err)
			want := tasks.CheckWebhookAddr(netip.MustParseAddr(addr))
			require.Error(t, want, addr)
			require.Equal(t, want.Error(), ae.Error(), host)
		}
	}
}

func receiverOK(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestWebhookClientDoesNotFollowRedirects(t *testing.T) {
	t.Parallel()
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("the redirect was followed")
	}))
	defer target.Close()
	src := httptest.NewServer(http.RedirectHandler(target.URL, http.StatusTemporaryRedirect))
	defer src.Close()
	resp, err := newWebhookClient(true).Post(src.URL, "application/json", strings.NewReader("{}"))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusTemporaryRedirect, resp.StatusCode)
}

func TestJitterBounds(t *testing.T) {
	t.Parallel()
	for range 1000 {
		d := jitter(10 * time.Second)
		require.GreaterOrEqual(t, d, 9*time.Second)
		require.LessOrEqual(t, d, 11*time.Second)
	}
}
