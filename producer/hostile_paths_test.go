package producer_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// Every way a path might leave the integration's origin, refused over HTTP
// with 400 naming the field: credentials reach only their integration.
func TestHostilePathsRefusedWith400(t *testing.T) {
	t.Parallel()
	e := setup(t)
	hostile := []string{
		"http://evil.example/x", "https://evil.example", "https:evil.example", "javascript:alert(1)",
		"//evil.example/x", "///evil.example", "/\\evil.example", "\\\\evil.example", "/%5cevil.example",
		"/%5C%5Cevil.example", "@evil.example", "evil.example", "user:pass@evil.example",
		"/x\r\nHost: evil.example", "/x\nX-Injected: 1", "/x%0d%0aHost:%20evil", "/x%00", "/x\x00", "/x\t",
		"/..", "/../admin", "/a/../../b", "/%2e%2e/admin", "/%2E%2E/", "/.%2e/x", "/%2e./x",
		"/%252e%252e/admin", "/%252f%252fevil.example", "/%25%32%65",
		"/\u2215\u2215evil.example", "/\uff0e\uff0e/admin", "/%E2%88%95%E2%88%95evil.example",
		"/%EF%BC%8F%EF%BC%8Fevil.example", "/%EF%BC%8E%EF%BC%8E/admin", "/%E2%80%A4%E2%80%A4/admin",
		"/%EF%B8%B0/admin", "/x%E2%81%87", "/x%EF%B8%96y=1", "/http%E2%A9%B4//evil.example", "/%E2%92%88/admin",
		"/x?api_key=mine", "/x#frag", "/caf\u00e9", "/%c0%ae%c0%ae/admin", "/http://evil.example",
		"",
	}
	if len(hostile) < 30 {
		t.Fatalf("only %d cases", len(hostile))
	}
	for _, p := range hostile {
		r := e.post(t, call(map[string]any{"path": p}))
		if r.Status != http.StatusBadRequest {
			t.Errorf("path %q: status %d, want 400: %s", p, r.Status, r.Body)
			continue
		}
		requireError(t, r, http.StatusBadRequest, "invalid_field", "path")
	}
}

// Encoded "/", "?", "#" and "%" are data inside a segment, and encoded
// non-ASCII text is fine: the positive control of the refusals above.
func TestEncodedSyntaxInsideASegmentAccepted(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, p := range []string{"/projects/group%2Fproject", "/files/a%3Fb%23c", "/tags/100%25", "/caf%C3%A9", "/users/@me"} {
		r := e.post(t, call(map[string]any{"path": p}))
		require.Equal(t, http.StatusAccepted, r.Status, "path %q: %s", p, r.Body)
		require.Equal(t, p, e.get(t, r.JSON(t)["correlation_id"].(string)).Record(t).Path, "kept as sent")
	}
}
