package openapitest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TSClient returns node and the node_modules of tsclient, the npm package
// pinning openapi-typescript and typescript (npm ci in
// internal/openapitest/tsclient; .ci/run does it), checking the commands
// named in tools are on the PATH too. When any is missing it skips tb,
// naming what, or fails it under CI=true, where a skip would hide that the
// document's client generation was not tested.
func TSClient(tb testing.TB, tools ...string) (node, modules string) {
	tb.Helper()
	_, file, _, _ := runtime.Caller(0)
	modules = filepath.Join(filepath.Dir(file), "tsclient", "node_modules")
	var missing []string
	var err error
	if node, err = exec.LookPath("node"); err != nil {
		missing = append(missing, "node (Node.js 20 or later)")
	}
	for _, p := range []string{"openapi-typescript", "typescript"} {
		if _, err := os.Stat(filepath.Join(modules, p, "package.json")); err != nil {
			missing = append(missing, p+" (npm ci in internal/openapitest/tsclient)")
		}
	}
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		msg := "this test needs " + strings.Join(missing, ", ")
		if os.Getenv("CI") == "true" {
			tb.Fatalf("%s (CI=true, so this is a failure, not a skip)", msg)
		}
		tb.Skip(msg)
	}
	return node, modules
}
