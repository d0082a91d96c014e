package main

// The README's quick start, then its CLI examples, run as written (bar the
// addresses and `go run ./cmd/callq` or `callq`, replaced by the built
// binary) against `callq dev`.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const (
	quickstartBegin = "<!-- quickstart:begin -->"
	quickstartEnd   = "<!-- quickstart:end -->"
	cliBegin        = "<!-- cli:begin -->"
	cliEnd          = "<!-- cli:end -->"
	readmeAPIURL    = "http://127.0.0.1:8080"
	readmeHTTPBin   = "127.0.0.1:8090"
	readmeGoRun     = "go run ./cmd/callq"
	devAPIKey       = "dev-key-change-me"
	demoSecret      = "s3cr3t-demo-token"
)

// markedScript returns the ```sh block between the markers begin and end.
func markedScript(t *testing.T, readme, begin, end string) string {
	t.Helper()
	_, after, ok := strings.Cut(readme, begin)
	require.True(t, ok, "README.md has no %s", begin)
	section, _, ok := strings.Cut(after, end)
	require.True(t, ok, "README.md has no %s after %s", end, begin)
	_, block, ok := strings.Cut(section, "```sh\n")
	require.True(t, ok, "the section after %s has no ```sh block:\n%s", begin, section)
	script, _, ok := strings.Cut(block, "\n```")
	require.True(t, ok, "the ```sh block after %s is not closed:\n%s", begin, section)
	return script + "\n"
}

// runScript runs script with bash -euo pipefail in dir and returns its
// stdout and stderr; it fails the test if the script fails.
func runScript(t *testing.T, name, dir, script string, env []string) (string, string) {
	t.Helper()
	t.Logf("%s script:\n%s", name, script)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = dir
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	runErr := cmd.Run()
	out, errOut := stdout.String(), stderr.String()
	t.Logf("%s ran in %s; stdout:\n%s\nstderr:\n%s", name, time.Since(start).Round(time.Millisecond), out, errOut)
	require.NoError(t, runErr, "the %s failed", name)
	return out, errOut
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func TestReadmeQuickstart(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	require.NoError(t, err)
	script := markedScript(t, string(readme), quickstartBegin, quickstartEnd)
	cliScript := markedScript(t, string(readme), cliBegin, cliEnd)

	p := newProcs(t)
	example, err := os.ReadFile(filepath.Join(root, "deploy", "integrations.example.yaml"))
	require.NoError(t, err)
	require.Contains(t, string(example), readmeHTTPBin, "the example catalog no longer points at the dev httpbin")

	var apiURL string
	dev := p.startListening(func() (*child, []string) {
		apiAddr, httpbinAddr := freeAddr(t), freeAddr(t)
		apiURL = "http://" + apiAddr
		// The example catalog, pointed at this run's httpbin.
		catalog := filepath.Join(t.TempDir(), "integrations.yaml")
		require.NoError(t, os.WriteFile(catalog, []byte(strings.ReplaceAll(string(example), readmeHTTPBin, httpbinAddr)), 0o644))
		c := p.start("dev", root, childEnv("CALLQ_DEV_API_KEY="+devAPIKey),
			"dev", "--addr", apiAddr, "--httpbin-addr", httpbinAddr, "--integrations", catalog)
		return c, []string{apiURL + "/healthz", apiURL + "/readyz", "http://" + httpbinAddr + "/get"}
	})

	// The script as written, with this run's addresses and the built binary.
	require.Contains(t, script, readmeAPIURL)
	require.Contains(t, script, readmeGoRun)
	// Through a proxy that checks the API's exchanges against the OpenAPI
	// document.
	script = strings.ReplaceAll(script, readmeAPIURL, validatingProxy(t, apiURL))
	script = strings.ReplaceAll(script, readmeGoRun, shellQuote(p.bin))
	out, errOut := runScript(t, "quick start", root, script, childEnv())

	// The outputs, in order: enqueue answer, waited record, the 503 call,
	// creds put, the bearer call, creds list.
	var vals []json.RawMessage
	dec := json.NewDecoder(strings.NewReader(out))
	for {
		var v json.RawMessage
		if err := dec.Decode(&v); errors.Is(err, io.EOF) {
			break
		} else {
			require.NoError(t, err, "the quick start's output is not a sequence of JSON values")
		}
		vals = append(vals, v)
	}
	require.Len(t, vals, 6, "one JSON answer per command")

	type record struct {
		CorrelationID string `json:"correlation_id"`
		Status        string `json:"status"`
		Attempts      int    `json:"attempts"`
		MaxAttempts   int    `json:"max_attempts"`
		Response      *struct {
			Status int             `json:"status"`
			Body   json.RawMessage `json:"body"`
		} `json:"response"`
		Error *struct {
			Kind    string `json:"kind"`
			Message string `json:"message"`
		} `json:"error"`
		History []json.RawMessage `json:"history"`
	}
	decode := func(i int) record {
		var r record
		require.NoError(t, json.Unmarshal(vals[i], &r), "answer %d: %s", i+1, vals[i])
		return r
	}

	// 1. curl POST /v1/calls
	require.Contains(t, out, `"status":"queued"`)
	enq := decode(0)
	require.Equal(t, "order-981", enq.CorrelationID, "%s", vals[0])
	require.Equal(t, "queued", enq.Status, "%s", vals[0])

	// 2. curl GET /v1/calls/order-981?wait=30s
	require.Contains(t, string(vals[1]), `"status":"succeeded"`)
	require.Contains(t, string(vals[1]), `"since"`)
	got := decode(1)
	require.Equal(t, "order-981", got.CorrelationID)
	require.Equal(t, 1, got.Attempts, "%s", vals[1])
	require.NotNil(t, got.Response, "%s", vals[1])
	require.Equal(t, 200, got.Response.Status, "%s", vals[1])
	var echo struct {
		Args map[string][]string `json:"args"`
	}
	require.NoError(t, json.Unmarshal(got.Response.Body, &echo), "%s", vals[1])
	require.Equal(t, []string{"364"}, echo.Args["since"], "httpbin should echo the query: %s", vals[1])

	// 3. callq call ... GET /status/503 --wait 30s
	require.Contains(t, string(vals[2]), `"status": "failed"`)
	failed := decode(2)
	require.Equal(t, "failed", failed.Status, "%s", vals[2])
	require.Equal(t, 3, failed.Attempts, "%s", vals[2])
	require.Len(t, failed.History, 3, "%s", vals[2])
	require.NotNil(t, failed.Response, "%s", vals[2])
	require.Equal(t, 503, failed.Response.Status, "%s", vals[2])
	require.NotNil(t, failed.Error, "%s", vals[2])
	require.Equal(t, "http_status", failed.Error.Kind, "%s", vals[2])

	// 4. callq creds put demo ...
	var put struct {
		Ref         string   `json:"ref"`
		Integration string   `json:"integration"`
		Fields      []string `json:"fields"`
	}
	require.NoError(t, json.Unmarshal(vals[3], &put), "%s", vals[3])
	require.Equal(t, "demo", put.Ref)
	require.Equal(t, "httpbin-bearer", put.Integration)
	require.Equal(t, []string{"token"}, put.Fields)

	// 5. callq call --integration httpbin-bearer GET /bearer --credential demo --wait 30s
	bearer := decode(4)
	require.Equal(t, "succeeded", bearer.Status, "%s", vals[4])
	require.NotNil(t, bearer.Response, "%s", vals[4])
	require.Equal(t, 200, bearer.Response.Status, "%s", vals[4])

	// 6. callq creds list
	require.Contains(t, string(vals[5]), `"demo"`)
	require.Contains(t, string(vals[5]), `"token"`)

	// The secret never shows: not in any answer, nor in callq dev's output.
	require.NotContains(t, out, demoSecret, "the credential's value reached the quick start's output")
	require.NotContains(t, errOut, demoSecret, "the credential's value reached the quick start's stderr")

	testReadmeCLI(t, cliScript, p.bin, root, validatingProxy(t, apiURL), got.CorrelationID, failed.CorrelationID)

	// Stop dev mode so that its logs are complete, then read them.
	require.NoError(t, dev.signal(syscall.SIGTERM))
	select {
	case <-dev.done:
		require.Zero(t, dev.exitCode(), "callq dev exited with %v after SIGTERM", dev.waitErr)
	case <-time.After(60 * time.Second):
		t.Fatal("callq dev still running 60s after SIGTERM")
	}
	devOut, err := os.ReadFile(dev.stdout)
	require.NoError(t, err)
	devErr, err := os.ReadFile(dev.stderr)
	require.NoError(t, err)
	require.NotContains(t, string(devOut), demoSecret, "the credential's value reached callq dev's stdout")
	require.NotContains(t, string(devErr), demoSecret, "the credential's value reached callq dev's logs")
	require.Contains(t, string(devOut), "WARNING: development mode", "callq dev should warn that it is for development")
	require.Contains(t, string(devOut), "CALLQ_API_KEY="+devAPIKey, "callq dev should print its API key")
	require.Contains(t, string(devOut), apiURL, "callq dev should print where its API listens")
}

// testReadmeCLI runs the README's CLI examples, after the quick start whose
// order-981 succeeded and whose call failedID failed.
func testReadmeCLI(t *testing.T, script, bin, root, apiURL, succeededID, failedID string) {
	t.Helper()
	// Every command is callq's, so that every one runs the built binary.
	for _, line := range strings.Split(strings.TrimSpace(script), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			require.True(t, strings.HasPrefix(line, "callq "), "a README CLI example that is not a callq command: %q", line)
		}
	}
	script = regexp.MustCompile(`(?m)^callq `).ReplaceAllString(script, shellQuote(bin)+" ")
	out, _ := runScript(t, "CLI examples", root, script, childEnv("CALLQ_URL="+apiURL, "CALLQ_API_KEY="+devAPIKey))

	// calls ls --status failed --since 1h: the table, the failed call only.
	table, rest, ok := strings.Cut(out, "\n{")
	require.True(t, ok, "no JSON after the table:\n%s", out)
	lines := strings.Split(strings.TrimSpace(table), "\n")
	require.Len(t, lines, 2, "a header and the one failed call:\n%s", table)
	require.Regexp(t, `^CORRELATION ID +STATUS +INTEGRATION +METHOD +PATH +ATTEMPTS +HTTP +ERROR +CREATED +REPLAY OF$`, lines[0])
	require.Regexp(t, `^`+regexp.QuoteMeta(failedID)+` +failed +httpbin +GET +/status/503 +3/3 +503 +http_status +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ +-$`, lines[1])

	// Then JSON answers, and the stats table.
	rest = "{" + rest
	var vals []map[string]any
	dec := json.NewDecoder(strings.NewReader(rest))
	for strings.HasPrefix(strings.TrimSpace(rest[dec.InputOffset():]), "{") {
		var v map[string]any
		require.NoError(t, dec.Decode(&v), "not a sequence of JSON objects then the stats:\n%s", rest)
		vals = append(vals, v)
	}
	stats := strings.TrimSpace(rest[dec.InputOffset():])
	require.Len(t, vals, 7, "ls --json, dry run, replay, replay --as, get, call, cancel:\n%s", rest)

	// calls ls --integration httpbin --limit 1 --json: order-981 and the
	// failed call are httpbin's, so a cursor follows.
	require.Len(t, vals[0]["calls"], 1, "%v", vals[0])
	require.NotEmpty(t, vals[0]["next_cursor"], "%v", vals[0])

	// The dry run, then the replay, of the failed call.
	require.Equal(t, map[string]any{"replayed": 1.0, "skipped": 0.0, "dry_run": true,
		"calls": []any{map[string]any{"replay_of": failedID}}}, vals[1])
	require.Equal(t, 1.0, vals[2]["replayed"], "%v", vals[2])
	require.Equal(t, false, vals[2]["dry_run"], "%v", vals[2])
	replayed := vals[2]["calls"].([]any)
	require.Len(t, replayed, 1)
	require.Equal(t, failedID, replayed[0].(map[string]any)["replay_of"])
	require.NotEmpty(t, replayed[0].(map[string]any)["correlation_id"])

	// replay order-981 --as order-981-again, and its outcome.
	require.Equal(t, "order-981-again", vals[3]["correlation_id"], "%v", vals[3])
	require.Equal(t, succeededID, vals[3]["replay_of"], "%v", vals[3])
	require.Equal(t, "order-981-again", vals[4]["correlation_id"], "%v", vals[4])
	require.Equal(t, "succeeded", vals[4]["status"], "%v", vals[4])
	require.Equal(t, succeededID, vals[4]["replay_of"], "%v", vals[4])

	// A call due in an hour, canceled.
	require.Equal(t, "order-982", vals[5]["correlation_id"], "%v", vals[5])
	require.Equal(t, "queued", vals[5]["status"], "%v", vals[5])
	require.Equal(t, "order-982", vals[6]["correlation_id"], "%v", vals[6])
	require.Equal(t, "canceled", vals[6]["status"], "%v", vals[6])

	// stats --since 1h: the six calls.
	require.Regexp(t, `^6 calls created from \S+Z to \S+Z\n`, stats)
	require.Regexp(t, `(?m)^succeeded +3$`, stats)
	require.Regexp(t, `(?m)^canceled +1$`, stats)
	require.Regexp(t, `(?m)^httpbin +5$`, stats)
	require.Regexp(t, `(?m)^httpbin-bearer +1$`, stats)
	require.Regexp(t, `(?m)^QUEUE +PENDING +ACTIVE +SCHEDULED +RETRY +ARCHIVED$`, stats)
	require.Regexp(t, `(?m)^default( +\d+){5}$`, stats)
}
