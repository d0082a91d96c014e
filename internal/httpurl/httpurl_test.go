package httpurl_test

import (
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/httpurl"
)

func TestParse(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{"https://api.example", "http://127.0.0.1:8080/x?y#z", "HTTPS://API.example/", "https://u:p@api.example"} {
		u, ok := httpurl.Parse(raw)
		require.True(t, ok, raw)
		require.NotEmpty(t, u.Host, raw)
	}
	for _, raw := range []string{"", "api.example", "/path", "ftp://api.example", "https://", "https:///x", "https:api.example", "javascript:alert(1)", "https://api.example/%zz", "http://[::1"} {
		u, ok := httpurl.Parse(raw)
		require.False(t, ok, raw)
		require.Nil(t, u, raw)
	}
	require.False(t, httpurl.Is(&url.URL{Scheme: "https"}), "no host")
	require.True(t, httpurl.Is(&url.URL{Scheme: "http", Host: "h"}))
}
