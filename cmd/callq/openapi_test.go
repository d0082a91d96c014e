package main

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/openapitest"
)

// TestOpenAPICoversTheAPIServer checks every route the API server
// registers next to the API handler is in the OpenAPI document, taking the
// patterns from the mux as registered (producer's
// TestOpenAPICoversTheRouter checks the API handler's own routes).
func TestOpenAPICoversTheAPIServer(t *testing.T) {
	t.Parallel()
	stub := http.NotFoundHandler()
	mux := newAPIMux(stub, stub, stub)
	require.NotEmpty(t, mux.patterns)

	ops := openapitest.Operations(t)
	for _, pattern := range mux.patterns {
		switch pattern {
		case "/":
			// The API handler: its routes are producer.Routes, checked
			// against the document in producer/openapi_test.go.
			continue
		case "/ui/":
			// Excluded on purpose: the dashboard is HTML pages for people,
			// behind its own session login (internal/dashboard), not an
			// API to generate clients for.
			continue
		}
		method, path, ok := strings.Cut(pattern, " ")
		if !ok {
			// A pattern for every method: the document must describe the
			// path.
			path = pattern
			require.True(t, slices.ContainsFunc(ops, func(op string) bool { return strings.HasSuffix(op, " "+path) }),
				"the API server serves %q, which producer/openapi.yaml does not describe", pattern)
			continue
		}
		require.Contains(t, ops, method+" "+path, "the API server serves %q, which producer/openapi.yaml does not describe", pattern)
	}
}
