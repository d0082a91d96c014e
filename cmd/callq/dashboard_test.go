package main

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// signInDashboard signs in to the dashboard at base with key, as a browser
// would (following the redirects), and returns the calls page it lands on.
func signInDashboard(t *testing.T, base, key string) (*http.Response, string) {
	t.Helper()
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	read := func(res *http.Response, err error) (*http.Response, string) {
		t.Helper()
		require.NoError(t, err)
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		return res, string(b)
	}
	res, body := read(c.Get(base + "/ui/"))
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Equal(t, "/ui/login", res.Request.URL.Path)
	require.Contains(t, body, `<label for="key">API key</label>`)
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(body)
	require.NotNil(t, m, body)
	return read(c.PostForm(base+"/ui/login", url.Values{"csrf": {m[1]}, "key": {key}}))
}

// callq api serves the dashboard at /ui/ beside the API; an operator signs
// in with the key `callq keys create` made.
func TestProcessAPIServesDashboard(t *testing.T) {
	t.Parallel()
	d := deploy(t, 0)
	res, body := signInDashboard(t, d.apiURL, d.apiKey)
	require.Equal(t, http.StatusOK, res.StatusCode, body)
	require.Equal(t, "/ui/calls", res.Request.URL.Path)
	require.Contains(t, body, `<strong class="tenant">acme</strong>`)
	require.Contains(t, body, "<caption>Calls</caption>")
	require.Equal(t, "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
		res.Header.Get("Content-Security-Policy"))
	require.Equal(t, http.StatusOK, d.do(http.MethodGet, "/v1/calls", nil, nil), "the API is as it was")
}

// callq dev prints the dashboard's address, and serves it there.
func TestProcessDevPrintsDashboard(t *testing.T) {
	t.Parallel()
	p := newProcs(t)
	const key = "dev-dashboard-key-123"
	var addr string
	c := p.startListening(func() (*child, []string) {
		addr = freeAddr(t)
		c := p.start("dev", "", childEnv("CALLQ_DEV_API_KEY="+key), "dev", "--addr", addr, "--httpbin-addr", "",
			"--integrations", "../../deploy/integrations.example.yaml")
		return c, []string{"http://" + addr + "/ui/login"}
	})
	require.Contains(t, c.logs(), "dashboard:        http://"+addr+"/ui/ (sign in with the API key below)")
	res, body := signInDashboard(t, "http://"+addr, key)
	require.Equal(t, http.StatusOK, res.StatusCode, body)
	require.Contains(t, body, `<strong class="tenant">dev</strong>`)
}
