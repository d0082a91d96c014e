package main

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// `callq connect` against `callq api` configured by CALLQ_PUBLIC_URL and
// CALLQ_CONNECT_ALLOWED_ORIGINS: it prints the session's link; posting the
// hosted form there stores the credential and sends the browser back.
func TestCLIConnect(t *testing.T) {
	t.Parallel()
	d := deployWith(t, 0, "  billing:\n    base_url: https://billing.example\n    auth: {type: bearer}\n",
		"CALLQ_PUBLIC_URL=http://callq.localhost:8080", "CALLQ_CONNECT_ALLOWED_ORIGINS=http://localhost:3000")

	_, stderr, code := d.cli(nil, "connect", "cust-43", "--integration", "billing", "--redirect", "https://evil.example/done")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "redirect_uri")

	stdout, stderr, code := d.cli(nil, "connect", "cust-43", "--integration", "billing", "--redirect", "http://localhost:3000/done")
	require.Zero(t, code, stderr)
	link := strings.TrimSpace(stdout)
	token, ok := strings.CutPrefix(link, "http://callq.localhost:8080/connect/")
	require.True(t, ok, link)
	require.Contains(t, stderr, "works once")

	browser := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	// A link preview first: it uses nothing up.
	res, err := browser.Get(d.apiURL + "/connect/" + token)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	res, err = browser.PostForm(d.apiURL+"/connect/"+token, url.Values{"token": {"tok-cli-0123456"}})
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusSeeOther, res.StatusCode)
	require.Equal(t, "http://localhost:3000/done?credential=cust-43&status=connected", res.Header.Get("Location"))

	stdout, _, code = d.cli(nil, "creds", "list")
	require.Zero(t, code)
	require.Contains(t, stdout, `"cust-43"`)
	require.NotContains(t, d.procs.tails(1000), "tok-cli-0123456")

	_, _, code = d.cli(nil, "connect", "cust-43")
	require.Equal(t, 2, code, "--integration is required")
}
