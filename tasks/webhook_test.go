package tasks_test

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/tasks"
)

// TestCheckWebhookAddrRefusesWrappedPrivateAddresses: every IPv6 form that
// carries an IPv4 address, or tunnels to one, is judged by the address it
// carries; local-use NAT64 and Teredo are refused whatever they carry.
func TestCheckWebhookAddrRefusesWrappedPrivateAddresses(t *testing.T) {
	t.Parallel()
	refused := []struct {
		addr string
		want string // in the error
	}{
		{"127.0.0.1", "loopback"},
		{"::1", "loopback"},
		{"::", "unspecified"},
		{"::ffff:127.0.0.1", "loopback"},
		// IPv4-compatible (::a.b.c.d, deprecated by RFC 4291).
		{"::127.0.0.1", "IPv4-compatible address of 127.0.0.1, which is loopback"},
		{"::10.0.0.1", "IPv4-compatible address of 10.0.0.1, which is private"},
		{"::169.254.169.254", "IPv4-compatible address of 169.254.169.254, which is link-local"},
		{"::192.168.1.1", "private"},
		// SIIT IPv4-translated (::ffff:0:a.b.c.d, RFC 2765).
		{"::ffff:0:127.0.0.1", "SIIT IPv4-translated address of 127.0.0.1, which is loopback"},
		{"::ffff:0:10.1.2.3", "private"},
		{"::ffff:0:169.254.169.254", "link-local"},
		// NAT64, well-known prefix (64:ff9b::/96, RFC 6052).
		{"64:ff9b::127.0.0.1", "NAT64 address of 127.0.0.1, which is loopback"},
		{"64:ff9b::a9fe:a9fe", "link-local"},
		{"64:ff9b::100.64.0.1", "reserved (100.64.0.0/10)"},
		// Local-use NAT64 (64:ff9b:1::/48, RFC 8215): refused whatever it
		// carries, in the /96 form or the /48 one (127.0.0.1 split around
		// the u-octet).
		{"64:ff9b:1::a9fe:a9fe", "local-use NAT64 (64:ff9b:1::/48)"},
		{"64:ff9b:1:7f00:0:100::", "local-use NAT64 (64:ff9b:1::/48)"},
		{"64:ff9b:1::808:808", "local-use NAT64 (64:ff9b:1::/48)"},
		// Teredo (2001::/32, RFC 4380): refused whatever it carries; the
		// error names the client address (the last 32 bits, inverted).
		{"2001:0:4136:e378:8000:63bf:f5ff:fffe", "Teredo (2001::/32) tunnel to 10.0.0.1"},
		{"2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo (2001::/32) tunnel to 127.0.0.1"},
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo (2001::/32) tunnel to 192.0.2.45"},
		// 6to4 (2002::/16, RFC 3056): the IPv4 address in bits 16-47.
		{"2002:7f00:1::1", "6to4 address of 127.0.0.1, which is loopback"},
		{"2002:a00:1::1", "private"},
		{"2002:a9fe:a9fe::1", "link-local"},
		{"2002:c0a8:101:1::1", "private"},
		// Site-local (fec0::/10): deprecated, still routed where in use.
		{"fec0::1", "reserved (fec0::/10)"},
	}
	for _, tc := range refused {
		t.Run(tc.addr, func(t *testing.T) {
			err := tasks.CheckWebhookAddr(netip.MustParseAddr(tc.addr))
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
			require.Contains(t, err.Error(), "CALLQ_WEBHOOK_ALLOW_PRIVATE")
			if netip.MustParseAddr(tc.addr).Is6() {
				// A zone makes every netip.Prefix.Contains false, while the
				// kernel ignores it outside link-local: the zoned form of
				// each address is refused the same.
				zoned := netip.MustParseAddr(tc.addr + "%eth0")
				err = tasks.CheckWebhookAddr(zoned)
				require.Error(t, err, "zoned %s", zoned)
				require.Contains(t, err.Error(), tc.want)
			}
		})
	}

	// The same forms of public addresses are not refused: the check is
	// about where a delivery lands, not about the form.
	for _, addr := range []string{
		"8.8.8.8", "2606:4700:4700::1111", "::8.8.8.8", "::ffff:0:8.8.8.8", "::ffff:8.8.8.8",
		"64:ff9b::8.8.8.8", "2002:808:808::1", "2001:db8::1",
	} {
		require.NoError(t, tasks.CheckWebhookAddr(netip.MustParseAddr(addr)), addr)
	}
}
