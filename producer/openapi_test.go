package producer_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/openapitest"
	"github.com/callq/callq/producer"
)

// TestOpenAPICoversTheRouter checks the document describes exactly the
// routes NewHandler registers: a route added without its operation fails
// here, and so does an operation left behind by a route removed. /metrics
// is served next to the API by cmd/callq (its own test checks it).
func TestOpenAPICoversTheRouter(t *testing.T) {
	t.Parallel()
	e := setup(t)
	h, err := producer.NewHandler(&producer.HandlerConfig{Producer: e.prod, Credentials: e.creds, Keys: e.keys})
	require.NoError(t, err)
	routes, ok := producer.Routes(h)
	require.True(t, ok)
	require.NotEmpty(t, routes)

	var served []string
	for _, r := range routes {
		served = append(served, r.Method+" "+r.Pattern)
	}
	slices.Sort(served)
	documented := slices.DeleteFunc(openapitest.Operations(t), func(op string) bool { return op == "GET /metrics" })
	require.Equal(t, served, documented, "the routes NewHandler registers and the operations producer/openapi.yaml describes")
}

func TestOpenAPIServedAsJSON(t *testing.T) {
	t.Parallel()
	e := setup(t)

	// No key needed.
	r := e.do(t, req{Method: http.MethodGet, Path: "/openapi.json"})
	require.Equal(t, http.StatusOK, r.Status, "body: %.300s", r.Body)
	require.Equal(t, "application/json", r.Header.Get("Content-Type"))
	doc := r.JSON(t)
	require.Equal(t, "3.1.0", doc["openapi"])
	want, err := producer.OpenAPI()
	require.NoError(t, err)
	require.JSONEq(t, string(want), string(r.Body))
	// The YAML anchors are expanded: the operations /v1/calls/batch shares
	// with /v1/calls/{id} are whole.
	var d struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	require.NoError(t, json.Unmarshal(r.Body, &d))
	var get struct {
		OperationID string         `json:"operationId"`
		Responses   map[string]any `json:"responses"`
	}
	require.NoError(t, json.Unmarshal(d.Paths["/v1/calls/batch"]["get"], &get))
	require.Equal(t, "getCallBatch", get.OperationID)
	require.Contains(t, get.Responses, "200")
	require.NotContains(t, string(r.Body), "<<")

	// A key does no harm either.
	r = e.do(t, req{Method: http.MethodGet, Path: "/openapi.json", Key: e.producerKey})
	require.Equal(t, http.StatusOK, r.Status)
}

func TestOpenAPIDocsPage(t *testing.T) {
	t.Parallel()
	e := setup(t)

	r := e.do(t, req{Method: http.MethodGet, Path: "/docs"})
	require.Equal(t, http.StatusOK, r.Status, "body: %.300s", r.Body)
	require.Equal(t, "text/html; charset=utf-8", r.Header.Get("Content-Type"))
	page := string(r.Body)

	// Every operation is on the page, with its anchor.
	for _, op := range openapitest.Operations(t) {
		method, path, _ := strings.Cut(op, " ")
		require.Contains(t, page, `<span class="method">`+method+`</span> <code>`+path+`</code>`, op)
	}
	for _, id := range []string{"enqueueCall", "getCall", "putCredential", "schema-Record", "schema-Error"} {
		require.Contains(t, page, `id="`+id+`"`)
	}
	require.Contains(t, page, "Request body (application/json, required): <a href=\"#schema-Call\">")

	// Nothing from elsewhere: no script, no external URL in an attribute.
	require.NotContains(t, page, "<script")
	for _, m := range regexp.MustCompile(`(?:src|href)="([^"]*)"`).FindAllStringSubmatch(page, -1) {
		require.True(t, strings.HasPrefix(m[1], "#") || strings.HasPrefix(m[1], "/"), "a link off the page: %s", m[1])
	}
	// A strict policy that allows the page's own inline style, by hash, and
	// nothing else.
	csp := r.Header.Get("Content-Security-Policy")
	style := regexp.MustCompile(`(?s)<style>(.*?)</style>`).FindStringSubmatch(page)
	require.NotNil(t, style)
	sum := sha256.Sum256([]byte(style[1]))
	require.Equal(t, "default-src 'none'; style-src 'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'", csp)
	require.Equal(t, "nosniff", r.Header.Get("X-Content-Type-Options"))
}
