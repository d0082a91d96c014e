package worker

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/tasks"
)

// A secret the upstream echoes across the truncation point must not leave
// its prefix in the kept body: redaction happens before the cut.
func TestReadResponseRedactsAcrossTheCut(t *testing.T) {
	t.Parallel()
	const secret = "tok-9f8e7d6c5b4a3210"
	cat, err := tasks.ParseCatalog([]byte("integrations:\n  x:\n    base_url: https://x.example\n    auth: {type: bearer}\n"))
	require.NoError(t, err)
	in, _ := cat.Lookup("x")
	for cut := 1; cut < len(secret); cut++ {
		body := strings.Repeat("a", 100-cut) + secret + strings.Repeat("b", 50)
		resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/plain"}},
			Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body))}
		r, err := readResponse(resp, 100, auth.NewRedactor(secret), in)
		require.NoError(t, err)
		require.True(t, r.Truncated)
		want := strings.Repeat("a", 100-cut) + auth.Redacted
		require.Equal(t, want[:min(len(want), 100)], *r.BodyText, "nothing after the redaction")
		require.NotContains(t, *r.BodyText, secret[:cut], "cut %d: the secret's prefix leaked", cut)
		require.Equal(t, int64(len(body)), r.Size)
	}
}

// Redactions before the cut shrink the body; the bytes read past the cut
// (where a secret may be cut by the read) must not move into the kept part.
func TestReadResponseKeepsNothingPastTheCut(t *testing.T) {
	t.Parallel()
	const secret = "tok-9f8e7d6c5b4a3210"
	cat, err := tasks.ParseCatalog([]byte("integrations:\n  x:\n    base_url: https://x.example\n    auth: {type: bearer}\n"))
	require.NoError(t, err)
	in, _ := cat.Lookup("x")
	redactor := auth.NewRedactor(secret)
	const limit = 1000
	// 50 echoes fill the kept part and shrink to half; the read stops
	// MaxMatch+1 bytes past the cut, 8 bytes into another echo.
	readEnd := limit + redactor.MaxMatch() + 1
	body := strings.Repeat(secret, limit/len(secret))
	body += strings.Repeat("-", readEnd-8-len(body)) + secret
	resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/plain"}},
		Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body))}
	r, err := readResponse(resp, limit, redactor, in)
	require.NoError(t, err)
	require.True(t, r.Truncated)
	require.Equal(t, strings.Repeat(auth.Redacted, limit/len(secret)), *r.BodyText)
}

// Content-Encoding on an empty body (204, Content-Length: 0) withholds
// nothing, and identity is no encoding.
func TestReadResponseEmptyAndIdentity(t *testing.T) {
	t.Parallel()
	cat, err := tasks.ParseCatalog([]byte("integrations:\n  x:\n    base_url: https://x.example\n"))
	require.NoError(t, err)
	in, _ := cat.Lookup("x")
	for _, tc := range []struct{ encoding, body string }{{"gzip", ""}, {"br", ""}, {"identity", "plain"}, {"Identity, ", "plain"}} {
		resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/plain"}, "Content-Encoding": {tc.encoding}},
			Body: io.NopCloser(strings.NewReader(tc.body))}
		r, err := readResponse(resp, 100, auth.NewRedactor("secret-value"), in)
		require.NoError(t, err)
		require.Empty(t, r.BodyWithheld, tc.encoding)
		if tc.body == "" {
			require.Nil(t, r.BodyText)
		} else {
			require.Equal(t, tc.body, *r.BodyText)
		}
	}
}
