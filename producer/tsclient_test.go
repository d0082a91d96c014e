package producer_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/openapitest"
	"github.com/callq/callq/producer"
)

// The TypeScript client of internal/openapitest/tsclient (which
// TestTypeScriptClient type-checks) run against the API: compiled with tsc
// against the types generated from the document, it takes both of POST
// /v1/calls's successes, 202 for a new call and 200 for the same call
// enqueued again, and throws the API's error on a 409. Without node or the
// npm packages it skips locally and fails under CI=true.
func TestTypeScriptClientRuns(t *testing.T) {
	t.Parallel()
	node, modules := openapitest.TSClient(t)
	pkg := filepath.Dir(modules)
	e := setup(t, withUpstream())

	dir := t.TempDir()
	doc, err := producer.OpenAPI()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "openapi.json"), doc, 0o644))
	client, err := os.ReadFile(filepath.Join(pkg, "client.ts"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "client.ts"), client, 0o644))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, node, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "node %s:\n%s", strings.Join(args, " "), out)
		return string(out)
	}
	run(filepath.Join(modules, "openapi-typescript", "bin", "cli.js"), "openapi.json", "--output", "callq.ts")
	run(filepath.Join(modules, "typescript", "bin", "tsc"), "--strict", "--outDir", "out",
		"--target", "es2022", "--module", "esnext", "--moduleResolution", "bundler", "--lib", "es2022,dom",
		"client.ts", "callq.ts")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "out", "package.json"), []byte(`{"type": "module"}`), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "run.mjs"), []byte(`
import { enqueue, example } from "./out/client.js";
const [base, key] = process.argv.slice(2);
const call = { integration: "httpbin", method: "GET", path: "/get", correlation_id: "ts-1" };
const first = await enqueue(base, key, call);
const again = await enqueue(base, key, call);
let conflict = "";
try {
  await enqueue(base, key, { ...call, path: "/anything" });
} catch (e) {
  conflict = e.message;
}
const example1 = await example(base, key);
const example2 = await example(base, key); // enqueued before: the 200
console.log(JSON.stringify({ first, again, conflict, example1, example2 }));
`), 0o644))

	var got struct {
		First, Again struct {
			Queued bool `json:"queued"`
			Call   struct {
				CorrelationID string `json:"correlation_id"`
				Status        string `json:"status"`
				URL           string `json:"url"`
				Method        string `json:"method"`
			} `json:"call"`
		}
		Conflict           string
		Example1, Example2 int
	}
	out := run("run.mjs", e.url, e.producerKey)
	require.NoError(t, json.Unmarshal([]byte(out), &got), out)
	require.True(t, got.First.Queued, out)
	require.Equal(t, "/v1/calls/ts-1", got.First.Call.URL, out)
	require.False(t, got.Again.Queued, "the same call again: 200, its record: %s", out)
	require.Equal(t, "ts-1", got.Again.Call.CorrelationID, out)
	require.Equal(t, "GET", got.Again.Call.Method, "a record, not an Enqueued: %s", out)
	require.Contains(t, got.Conflict, "conflict", out)
	require.Equal(t, 200, got.Example1, out)
	require.Equal(t, 200, got.Example2, out)
}
