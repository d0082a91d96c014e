package openapitest_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/openapitest"
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
	dir, tsc := openapitest.TSClientProject(t, node, modules)
	generated, err := os.ReadFile(filepath.Join(dir, "callq.ts"))
	require.NoError(t, err)
	require.Contains(t, string(generated), `"/v1/calls/{id}": {`)
	tsc("--noEmit", "client.ts", "callq.ts")
}
