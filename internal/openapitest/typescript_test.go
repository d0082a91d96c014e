package openapitest_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/openapitest"
	"github.com/callq/callq/producer"
)

// TestTypeScriptClient generates TypeScript types from the document as
// GET /openapi.json serves it, with openapi-typescript (pinned in
// tsclient/package-lock.json), and type-checks tsclient/client.ts, which
// enqueues a call and reads its record through them, with tsc --noEmit
// --strict: the document stays usable by a client generator, as the README
// shows. Without node or the npm packages it skips locally and fails under
// CI=true (.ci/run installs them).
func TestTypeScriptClient(t *testing.T) {
	t.Parallel()
	node, modules := openapitest.TSClient(t)
	pkg := filepath.Dir(modules)

	doc, err := producer.OpenAPI()
	require.NoError(t, err)
	dir := t.TempDir()
	spec := filepath.Join(dir, "openapi.json")
	require.NoError(t, os.WriteFile(spec, doc, 0o644))
	client, err := os.ReadFile(filepath.Join(pkg, "client.ts"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "client.ts"), client, 0o644))

	run := func(args ...string) string {
		cmd := exec.Command(node, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "node %s:\n%s", strings.Join(args, " "), out)
		return string(out)
	}
	run(filepath.Join(pkg, "node_modules", "openapi-typescript", "bin", "cli.js"), spec, "--output", filepath.Join(dir, "callq.ts"))
	generated, err := os.ReadFile(filepath.Join(dir, "callq.ts"))
	require.NoError(t, err)
	require.Contains(t, string(generated), `"/v1/calls/{id}": {`)
	run(filepath.Join(pkg, "node_modules", "typescript", "bin", "tsc"), "--noEmit", "--strict",
		"--target", "es2022", "--module", "esnext", "--moduleResolution", "bundler", "--lib", "es2022,dom",
		"client.ts", "callq.ts")
}
