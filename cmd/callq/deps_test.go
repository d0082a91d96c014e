package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The server binary links no test code: `callq bench` starts its
// redis-server through internal/redisproc, not internal/redistest (which
// imports testing), and nothing else pulls a test helper in. Nor does it
// link what only deploy/'s tests use: kustomize and the Kubernetes API types,
// nor what only the OpenAPI validation of the tests uses: kin-openapi.
func TestBinaryLinksNoTestCode(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-deps", "./").CombinedOutput()
	require.NoError(t, err, "go list -deps ./: %s", out)
	deps := strings.Fields(string(out))
	require.Contains(t, deps, "github.com/callq/callq/internal/bench", "the check reads the binary's dependencies, bench included")
	var testOnly []string
	for _, p := range deps {
		switch {
		case p == "testing", strings.HasPrefix(p, "testing/"),
			p == "net/http/httptest",
			p == "github.com/callq/callq/internal/redistest",
			p == "github.com/callq/callq/internal/openapitest",
			p == "github.com/callq/callq/internal/oauthtest",
			strings.HasPrefix(p, "github.com/go-oauth2/"),
			strings.HasPrefix(p, "github.com/getkin/kin-openapi"),
			strings.HasPrefix(p, "github.com/stretchr/testify"),
			strings.HasPrefix(p, "k8s.io/"), strings.HasPrefix(p, "sigs.k8s.io/"):
			testOnly = append(testOnly, p)
		}
	}
	require.Empty(t, testOnly, "go list -deps ./cmd/callq")
}
