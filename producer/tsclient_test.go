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
	e := setup(t, withUpstream())
	dir, tsc := openapitest.TSClientProject(t, node, modules)
	tsc("--outDir", "out", "client.ts", "callq.ts")
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
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "run.mjs", e.url, e.producerKey)
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "node run.mjs: %s%s", out, stderr.String())
	require.NoError(t, json.Unmarshal(out, &got), "%s", out)
	require.True(t, got.First.Queued, "%s", out)
	require.Equal(t, "/v1/calls/ts-1", got.First.Call.URL, "%s", out)
	require.False(t, got.Again.Queued, "the same call again: 200, its record: %s", out)
	require.Equal(t, "ts-1", got.Again.Call.CorrelationID, "%s", out)
	require.Equal(t, "GET", got.Again.Call.Method, "a record, not an Enqueued: %s", out)
	require.Contains(t, got.Conflict, "conflict", "%s", out)
	require.Equal(t, 200, got.Example1, "%s", out)
	require.Equal(t, 200, got.Example2, "%s", out)
}
