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
		require.Len(t, *r.BodyText, 100)
		require.NotContains(t, *r.BodyText, secret[:cut], "cut %d: the secret's prefix leaked", cut)
		require.Equal(t, int64(len(body)), r.Size)
	}
}
