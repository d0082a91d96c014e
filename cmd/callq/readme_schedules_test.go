package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
)

// The README's schedules commands, run as written (bar `callq`, replaced by
// the built binary) against `callq dev`, whose scheduler then fires the
// schedule they add.
func TestReadmeSchedules(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	require.NoError(t, err)
	script := markedScript(t, string(readme), "<!-- schedules-cli:begin -->", "<!-- schedules-cli:end -->")
	for _, line := range strings.Split(strings.TrimSpace(script), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			require.True(t, strings.HasPrefix(line, "callq "), "a README schedules example that is not a callq command: %q", line)
		}
	}

	p := newProcs(t)
	example, err := os.ReadFile(filepath.Join(root, "deploy", "integrations.example.yaml"))
	require.NoError(t, err)
	var apiURL string
	dev := p.startListening(func() (*child, []string) {
		apiAddr, httpbinAddr := freeAddr(t), freeAddr(t)
		apiURL = "http://" + apiAddr
		catalog := filepath.Join(t.TempDir(), "integrations.yaml")
		require.NoError(t, os.WriteFile(catalog, []byte(strings.ReplaceAll(string(example), readmeHTTPBin, httpbinAddr)), 0o644))
		c := p.start("dev", root, childEnv("CALLQ_DEV_API_KEY="+devAPIKey),
			"dev", "--addr", apiAddr, "--httpbin-addr", httpbinAddr, "--integrations", catalog)
		return c, []string{apiURL + "/healthz", apiURL + "/readyz", "http://" + httpbinAddr + "/get"}
	})

	apiURL = validatingProxy(t, apiURL) // the CLI's requests and the API's answers, checked against the OpenAPI document
	script = regexp.MustCompile(`(?m)^callq `).ReplaceAllString(script, shellQuote(p.bin)+" ")
	out, _ := runScript(t, "schedules examples", root, script, childEnv("CALLQ_URL="+apiURL, "CALLQ_API_KEY="+devAPIKey))

	// Two schedules added (JSON), the table, the removal.
	dec := json.NewDecoder(strings.NewReader(out))
	var added []producer.Schedule
	for range 2 {
		var s producer.Schedule
		require.NoError(t, dec.Decode(&s), out)
		added = append(added, s)
	}
	require.Equal(t, "heartbeat", added[0].ID)
	require.Equal(t, "nightly-sync", added[1].ID)
	require.Equal(t, "Europe/Paris", added[1].Timezone)
	require.JSONEq(t, `{"sync": "full"}`, string(added[1].Call.Body))
	rest, err := io.ReadAll(dec.Buffered())
	require.NoError(t, err)
	table, removed, ok := strings.Cut(strings.TrimSpace(string(rest)), "\n{")
	require.True(t, ok, out)
	lines := strings.Split(strings.TrimSpace(table), "\n")
	require.Len(t, lines, 3, table)
	require.Regexp(t, `^ID +CRON +TIMEZONE +INTEGRATION +METHOD +PATH +NEXT RUN +LAST RUN +LAST ERROR$`, lines[0])
	require.Regexp(t, `^heartbeat +@every 1s +UTC +httpbin +GET +/get +\S+Z +(\S+Z|-) +-$`, lines[1])
	require.Regexp(t, `^nightly-sync +30 2 \* \* \* +Europe/Paris +httpbin +POST +/post +\S+Z +- +-$`, lines[2])
	require.JSONEq(t, `{"deleted": "nightly-sync"}`, "{"+removed)

	// callq dev's scheduler fires heartbeat; its calls succeed.
	get := func(path string, v any) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, apiURL+path, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+devAPIKey)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, path)
		require.NoError(t, json.NewDecoder(resp.Body).Decode(v))
	}
	require.Eventually(t, func() bool {
		var page listAnswer
		get("/v1/calls?status=succeeded&limit=50", &page)
		n := 0
		for _, rec := range page.Calls {
			if rec.Schedule == "heartbeat" && strings.HasPrefix(rec.CorrelationID, "sched-heartbeat-") && rec.Status == tasks.StatusSucceeded {
				n++
			}
		}
		return n >= 2
	}, 30*time.Second, 100*time.Millisecond, "callq dev did not fire the heartbeat schedule")
	var hb producer.Schedule
	get("/v1/schedules/heartbeat", &hb)
	require.NotNil(t, hb.LastRunAt)
	require.Nil(t, hb.LastError)

	require.NoError(t, dev.signal(syscall.SIGTERM))
	select {
	case <-dev.done:
		require.Zero(t, dev.exitCode(), "callq dev exited with %v after SIGTERM", dev.waitErr)
	case <-time.After(60 * time.Second):
		t.Fatal("callq dev still running 60s after SIGTERM")
	}
}
