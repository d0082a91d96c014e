package producer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/openapitest"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
)

// readmeScript returns the README's code block between <!-- name:begin -->
// and <!-- name:end -->, without its fence: an sh block, or a transcript
// (a bare fence).
func readmeScript(t *testing.T, name string) string {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	_, after, ok := strings.Cut(string(readme), "<!-- "+name+":begin -->\n```")
	require.True(t, ok, "README.md has no %s block", name)
	lang, after, _ := strings.Cut(after, "\n")
	require.Contains(t, []string{"sh", ""}, lang, "the %s block is neither sh nor a transcript", name)
	script, _, ok := strings.Cut(after, "\n```\n<!-- "+name+":end -->")
	require.True(t, ok, "the %s block is not closed", name)
	return script
}

// needCommands skips t naming the commands it needs that are not on the
// PATH, or fails it under CI=true, where they are installed and a skip
// would hide that the README's commands were not run.
func needCommands(t *testing.T, names ...string) {
	t.Helper()
	var missing []string
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			missing = append(missing, name)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "this test needs " + strings.Join(missing, ", ") + " on the PATH"
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true, so this is a failure, not a skip)", msg)
	}
	t.Skip(msg)
}

// The README's "Finding and replaying calls" commands, run as written
// against the API, over calls like those its answers show.
func TestReadmeCallsExamples(t *testing.T) {
	t.Parallel()
	needCommands(t, "curl")
	script := readmeScript(t, "calls-api")

	e := setup(t)
	e.enqueueFinished(t, "httpbin", tasks.StatusFailed, "order-980")
	e.enqueueFinished(t, "httpbin", tasks.StatusFailed, "order-981")
	e.enqueueFinished(t, "httpbin", tasks.StatusFailed, "order-982")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Env = append(os.Environ(), "CALLQ_URL="+e.url, "CALLQ_API_KEY="+e.producerKey)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "stderr: %s", stderr.String())

	var answers []map[string]json.RawMessage
	dec := json.NewDecoder(&stdout)
	for {
		var v map[string]json.RawMessage
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err, "the output is not a sequence of JSON objects")
		require.NotContains(t, v, "error", "%v", v)
		answers = append(answers, v)
	}
	require.Len(t, answers, 5, "one answer per command")
	for i, keys := range [][]string{
		{"calls", "next_cursor"},
		{"correlation_id", "status", "url", "replay_of"},
		{"replayed", "skipped", "dry_run", "calls"},
		{"replayed", "skipped", "dry_run", "calls"},
		{"since", "until", "total", "by_status", "by_integration", "queues"},
	} {
		for _, k := range keys {
			require.Contains(t, answers[i], k, "answer %d", i+1)
		}
	}
	require.Contains(t, string(answers[0]["calls"]), `"order-981"`)
	require.JSONEq(t, `"order-981-again"`, string(answers[1]["correlation_id"]))
	require.JSONEq(t, `"order-981"`, string(answers[1]["replay_of"]))
	for _, i := range []int{2, 3} {
		require.JSONEq(t, `2`, string(answers[i]["replayed"]), "answer %d", i+1)
		require.JSONEq(t, `1`, string(answers[i]["skipped"]), "answer %d: order-981 was replayed", i+1)
	}
	require.JSONEq(t, `true`, string(answers[2]["dry_run"]))
	require.JSONEq(t, `6`, string(answers[4]["total"]))
}

// The README's schedules commands, run as written against the API, with a
// scheduler running.
func TestReadmeSchedulesExamples(t *testing.T) {
	t.Parallel()
	needCommands(t, "curl")
	script := readmeScript(t, "schedules-api")

	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := newScheduler(t, e.prod, nil, nil)
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Env = append(os.Environ(), "CALLQ_URL="+e.url, "CALLQ_API_KEY="+e.adminKey)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "stderr: %s", stderr.String())

	out := stdout.String()
	answersJSON, rest, ok := strings.Cut(strings.TrimSpace(out), "\n204")
	require.True(t, ok, "the DELETE's 204 last:\n%s", out)
	require.Empty(t, rest)
	var answers []*producer.Schedule
	var lists []map[string][]*producer.Schedule
	dec := json.NewDecoder(strings.NewReader(answersJSON))
	for i := 0; dec.More(); i++ {
		if i == 2 {
			var l map[string][]*producer.Schedule
			require.NoError(t, dec.Decode(&l))
			lists = append(lists, l)
			continue
		}
		var a producer.Schedule
		require.NoError(t, dec.Decode(&a), "answer %d of:\n%s", i+1, out)
		answers = append(answers, &a)
	}
	require.Len(t, answers, 3, out)
	require.Len(t, lists, 1, out)
	require.Equal(t, "nightly-sync", answers[0].ID)
	require.Equal(t, "Europe/Paris", answers[0].Timezone)
	require.Equal(t, "POST", answers[0].Call.Method)
	require.NotNil(t, answers[0].NextRunAt)
	require.Equal(t, 2, answers[0].NextRunAt.In(mustLoad(t, "Europe/Paris")).Hour(), "02:30 in Paris")
	require.Equal(t, "heartbeat", answers[1].ID)
	require.Equal(t, "UTC", answers[1].Timezone)
	require.Len(t, lists[0]["schedules"], 2)
	require.Equal(t, "heartbeat", lists[0]["schedules"][0].ID)
	require.Equal(t, "heartbeat", answers[2].ID)
	for _, k := range []string{`"next_run_at"`, `"last_run_at"`, `"last_correlation_id"`, `"last_error"`} {
		require.Contains(t, out, k)
	}
	requireError(t, e.schedules(t, http.MethodGet, "/heartbeat", e.adminKey, nil), http.StatusNotFound, "not_found", "")
}

func mustLoad(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	require.NoError(t, err)
	return loc
}

// The README's GET /v1/integrations, run as written against an API whose
// catalog and state are those its answer shows: the answer has the
// README's shape, key for key, and the same states.
func TestReadmeIntegrationsExample(t *testing.T) {
	t.Parallel()
	needCommands(t, "curl")
	block := readmeScript(t, "integrations-api")
	var script, shown strings.Builder
	for line := range strings.Lines(block) {
		if answer, ok := strings.CutPrefix(line, "# "); ok {
			shown.WriteString(answer)
		} else {
			script.WriteString(line)
		}
	}

	e := setup(t, withCatalog(flowCatalog))
	openFlowState(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script.String())
	cmd.Env = append(os.Environ(), "CALLQ_URL="+e.url, "CALLQ_API_KEY="+e.producerKey)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "stderr: %s", stderr.String())

	var want, got any
	require.NoError(t, json.Unmarshal([]byte(shown.String()), &want), "the README's answer is JSON: %s", shown.String())
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &got), "the answer: %s", stdout.String())
	requireSameShape(t, "", want, got)
}

// requireSameShape checks that got has want's keys at every level, and
// want's values but for times (strings ending in Z) and elided strings
// (ending in "...", whose beginning got's must have).
func requireSameShape(t *testing.T, path string, want, got any) {
	t.Helper()
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		require.True(t, ok, "%s: %v is not an object", path, got)
		require.ElementsMatch(t, keysOf(w), keysOf(g), "%s: the keys", path)
		for k := range w {
			requireSameShape(t, path+"."+k, w[k], g[k])
		}
	case []any:
		g, ok := got.([]any)
		require.True(t, ok, "%s: %v is not an array", path, got)
		require.Len(t, g, len(w), path)
		for i := range w {
			requireSameShape(t, fmt.Sprintf("%s[%d]", path, i), w[i], g[i])
		}
	case string:
		if prefix, ok := strings.CutSuffix(w, "..."); ok {
			// An elided value ("cs_...", "..."): a string that begins so.
			g, _ := got.(string)
			require.True(t, strings.HasPrefix(g, prefix), "%s: %q does not begin with %q", path, got, prefix)
			return
		}
		if strings.HasSuffix(w, "Z") && strings.HasPrefix(w, "20") {
			g, _ := got.(string)
			_, err := time.Parse(time.RFC3339Nano, g)
			require.NoError(t, err, "%s: a time", path)
			return
		}
		require.Equal(t, want, got, path)
	default:
		require.Equal(t, want, got, path)
	}
}

// The README's "The OpenAPI document" commands, run as written against the
// API: fetch the document, generate TypeScript types with openapi-typescript
// and type-check them, in a project that has the generator (the npm
// packages pinned in internal/openapitest/tsclient). Without node, npx, jq
// or those packages it skips locally and fails under CI=true.
func TestReadmeOpenAPIExamples(t *testing.T) {
	t.Parallel()
	_, modules := openapitest.TSClient(t, "curl", "jq", "npx")
	script := readmeScript(t, "openapi")

	e := setup(t)
	// A project with the generator installed: its node_modules.
	dir := t.TempDir()
	require.NoError(t, os.Symlink(modules, filepath.Join(dir, "node_modules")))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = dir
	// npm must not reach for the registry: everything is in node_modules.
	cmd.Env = append(os.Environ(), "CALLQ_URL="+e.url, "npm_config_offline=true", "npm_config_update_notifier=false")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "stdout: %s\nstderr: %s", stdout.String(), stderr.String())

	require.Contains(t, stdout.String(), "callq 3.1.0\n", "the jq line's answer, as the README shows it")
	generated, err := os.ReadFile(filepath.Join(dir, "callq.ts"))
	require.NoError(t, err)
	require.Contains(t, string(generated), `"/v1/calls/{id}": {`)
	require.Contains(t, string(generated), "Call: {")
}
