package producer_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// Literal webhook addresses that carry or tunnel to a private IPv4 address
// are refused at enqueue (400 naming webhook.url); the same forms of a
// public address are accepted.
func TestWebhookWrappedPrivateAddressesRefusedAtEnqueue(t *testing.T) {
	t.Parallel()
	e := setup(t, withWebhooks())
	for _, host := range []string{
		"[::127.0.0.1]", "[::10.0.0.1]", "[::169.254.169.254]", // IPv4-compatible
		"[::ffff:0:127.0.0.1]", "[::ffff:0:192.168.0.1]", // SIIT
		"[64:ff9b:1::a9fe:a9fe]", "[64:ff9b:1:7f00:0:100::]", // local-use NAT64
		"[2001:0:4136:e378:8000:63bf:f5ff:fffe]",  // Teredo to 10.0.0.1
		"[2002:7f00:1::1]", "[2002:a9fe:a9fe::1]", // 6to4
		"[64:ff9b::a9fe:a9fe]", "[::ffff:127.0.0.1]", "127.0.0.1", "localhost",
	} {
		r := e.post(t, call(map[string]any{"webhook": map[string]any{"url": "https://" + host + "/hook"}}))
		requireError(t, r, http.StatusBadRequest, "invalid_field", "webhook.url")
		require.Contains(t, string(r.Body), "CALLQ_WEBHOOK_ALLOW_PRIVATE", host)
	}
	for _, host := range []string{"[::8.8.8.8]", "[::ffff:0:8.8.8.8]", "[64:ff9b::808:808]", "[2002:808:808::1]", "hooks.example"} {
		r := e.post(t, call(map[string]any{"webhook": map[string]any{"url": "https://" + host + "/hook"}}))
		require.Equal(t, http.StatusAccepted, r.Status, "%s: %s", host, r.Body)
	}
}
