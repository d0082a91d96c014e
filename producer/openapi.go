package producer

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"gopkg.in/yaml.v3"
)

// openapiYAML is the OpenAPI 3.1 document of the HTTP API, as written.
//
//go:embed openapi.yaml
var openapiYAML []byte

// openapiDoc is the document parsed once, the first time it is needed: the
// JSON GET /openapi.json answers and the page GET /docs answers. Neither
// parses YAML per request.
var openapiDoc = sync.OnceValues(func() (*apiDocument, error) {
	var tree any
	if err := yaml.Unmarshal(openapiYAML, &tree); err != nil {
		return nil, fmt.Errorf("producer: openapi.yaml: %w", err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(tree); err != nil {
		return nil, fmt.Errorf("producer: openapi.yaml as JSON: %w", err)
	}
	page, err := renderDocs(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("producer: rendering /docs: %w", err)
	}
	return &apiDocument{json: buf.Bytes(), page: page}, nil
})

type apiDocument struct {
	json []byte // the document as JSON
	page []byte // the reference page, rendered
}

// OpenAPI returns the OpenAPI 3.1 document of the HTTP API as JSON: what
// GET /openapi.json answers. The caller must not modify it.
func OpenAPI() ([]byte, error) {
	d, err := openapiDoc()
	if err != nil {
		return nil, err
	}
	return d.json, nil
}

// Route is a route the HTTP API serves: a method and a path pattern of
// net/http's ServeMux ("/v1/calls/{id}"). HEAD is served wherever GET is,
// and is not listed.
type Route struct {
	Method  string
	Pattern string
}

// Routes returns the routes h serves, as NewHandler registered them, if h
// is a handler NewHandler returned: what the tests check the OpenAPI
// document against, so that a route cannot be added without it.
func Routes(h http.Handler) ([]Route, bool) {
	hh, ok := h.(*handler)
	if !ok {
		return nil, false
	}
	return append([]Route(nil), hh.routes...), true
}

func (h *handler) openapiJSON(w http.ResponseWriter, r *http.Request) {
	d, err := openapiDoc()
	if err != nil {
		panic(err) // the embedded document is broken: a defect, which the tests catch
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(d.json)
}

func (h *handler) docs(w http.ResponseWriter, r *http.Request) {
	d, err := openapiDoc()
	if err != nil {
		panic(err)
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Content-Security-Policy", docsCSP)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Cache-Control", "no-cache")
	_, _ = w.Write(d.page)
}
