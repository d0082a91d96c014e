package openapitest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/callq/callq/producer"
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

// TSClientProject makes the TypeScript client's project in a temporary
// directory: the document as GET /openapi.json serves it (openapi.json), the
// types openapi-typescript generates from it (callq.ts) and tsclient's
// client.ts. It returns the directory and tsc, which runs the TypeScript
// compiler there with args after the options client.ts is written for.
// node and modules are TSClient's.
func TSClientProject(tb testing.TB, node, modules string) (dir string, tsc func(args ...string)) {
	tb.Helper()
	dir = tb.TempDir()
	run := func(args ...string) {
		tb.Helper()
		cmd := exec.Command(node, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			tb.Fatalf("node %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	doc, err := producer.OpenAPI()
	if err != nil {
		tb.Fatal(err)
	}
	client, err := os.ReadFile(filepath.Join(filepath.Dir(modules), "client.ts"))
	if err != nil {
		tb.Fatal(err)
	}
	for name, b := range map[string][]byte{"openapi.json": doc, "client.ts": client} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	run(filepath.Join(modules, "openapi-typescript", "bin", "cli.js"), "openapi.json", "--output", "callq.ts")
	return dir, func(args ...string) {
		tb.Helper()
		run(append([]string{filepath.Join(modules, "typescript", "bin", "tsc"), "--strict",
			"--target", "es2022", "--module", "esnext", "--moduleResolution", "bundler", "--lib", "es2022,dom"}, args...)...)
	}
}
