package openapitest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/callq/callq/producer"
)

// spec is the document, loaded and validated once per test binary.
var spec = sync.OnceValues(func() (*document, error) {
	raw, err := producer.OpenAPI()
	if err != nil {
		return nil, err
	}
	// /docs answers HTML: as text, its schema a string.
	openapi3filter.RegisterBodyDecoder("text/html", openapi3filter.PlainBodyDecoder)
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(raw)
	if err != nil {
		return nil, fmt.Errorf("openapitest: loading the document: %w", err)
	}
	ctx := loader.Context
	if ctx == nil {
		ctx = context.Background()
	}
	if err := doc.Validate(ctx); err != nil {
		return nil, fmt.Errorf("openapitest: the document is not valid OpenAPI: %w", err)
	}
	// Route by path alone: the tests' servers listen on ports of their own,
	// not on the document's server.
	doc.Servers = nil
	router, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("openapitest: routing the document: %w", err)
	}
	return &document{doc: doc, router: router}, nil
})

type document struct {
	doc    *openapi3.T
	router routers.Router
}

// Document returns the OpenAPI document, loaded and validated, failing tb
// if it cannot be.
func Document(tb testing.TB) *openapi3.T {
	tb.Helper()
	d, err := spec()
	if err != nil {
		tb.Fatal(err)
	}
	return d.doc
}

// Operations returns every operation the document describes, as
// "METHOD /path" with the path as the document writes it
// ("GET /v1/calls/{id}"), sorted.
func Operations(tb testing.TB) []string {
	tb.Helper()
	var out []string
	for path, item := range Document(tb).Paths.Map() {
		for method := range item.Operations() {
			out = append(out, method+" "+path)
		}
	}
	slices.Sort(out)
	return out
}

// Handler returns next, validating each request it serves and the response
// it answers against the document; a disagreement fails tb (with Errorf,
// so the test goes on and shows its own failures too):
//
//   - a response whose status the operation does not list, or whose
//     headers or body do not match the document;
//   - a request the document rejects (a body that does not match, a
//     parameter of the wrong type, no API key) answered anything but a 4xx
//     or 503: the handler accepted what the document says it refuses;
//   - a request to a path or method the document lacks answered anything
//     but the API's 404 or 405 error.
//
// HEAD is validated as the GET it is served as, without a response body.
func Handler(tb testing.TB, next http.Handler) http.Handler {
	tb.Helper()
	d, err := spec()
	if err != nil {
		tb.Fatal(err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "openapitest: reading the request body: "+err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		// A request whose client went away is answered to no one.
		if r.Context().Err() == nil {
			report(tb, r, d.check(r, body, rec.Code, rec.Header(), rec.Body.Bytes()), rec.Code, rec.Body.Bytes())
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})
}

// Transport returns next (http.DefaultTransport if nil), validating each
// request a client sends through it and the response it receives, as
// Handler does: for tests whose API runs in another process.
func Transport(tb testing.TB, next http.RoundTripper) http.RoundTripper {
	tb.Helper()
	d, err := spec()
	if err != nil {
		tb.Fatal(err)
	}
	if next == nil {
		next = http.DefaultTransport
	}
	return roundTripper(func(r *http.Request) (*http.Response, error) {
		var body []byte
		if r.Body != nil {
			// err of its own: the closure's requests run at once.
			var err error
			if body, err = io.ReadAll(r.Body); err != nil {
				return nil, err
			}
			_ = r.Body.Close()
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		resp, err := next.RoundTrip(r)
		if err != nil {
			return resp, err
		}
		got, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(got))
		if err != nil || r.Context().Err() != nil {
			return resp, err
		}
		report(tb, r, d.check(r, body, resp.StatusCode, resp.Header, got), resp.StatusCode, got)
		return resp, nil
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func report(tb testing.TB, r *http.Request, problems []string, status int, body []byte) {
	for _, p := range problems {
		tb.Errorf("openapitest: %s %s answered %d: %s\n\tresponse body: %.2000s", r.Method, r.URL.RequestURI(), status, p, body)
	}
}

// check returns what in the exchange disagrees with the document.
func (d *document) check(r *http.Request, body []byte, status int, header http.Header, respBody []byte) []string {
	ctx := context.Background()
	vr := r.Clone(ctx)
	if vr.Method == http.MethodHead {
		vr.Method = http.MethodGet
	}
	vr.Body = io.NopCloser(bytes.NewReader(body))
	// The API reads a body as JSON whatever its Content-Type (the
	// document says so): validate it as the API reads it.
	// The hosted connect form (/connect/{token}) is the one body read as
	// a form.
	if len(body) > 0 && !strings.HasPrefix(vr.Header.Get("Content-Type"), "application/json") &&
		!strings.HasPrefix(r.URL.Path, "/connect/") {
		vr.Header.Set("Content-Type", "application/json")
	}
	// Route by the path as sent, so that an encoded slash stays inside its
	// segment as the API's router has it (/v1/credentials/a%2Fb).
	vr.URL.Path, vr.URL.RawPath = r.URL.EscapedPath(), ""

	route, params, err := d.router.FindRoute(vr)
	if status == http.StatusMethodNotAllowed {
		// The router's answer to a method the path does not serve: the
		// API's error body, with an Allow header.
		if err := d.errorBody(respBody); err != nil {
			return []string{"a 405 answer must be the API's error body: " + err.Error()}
		}
		if header.Get("Allow") == "" {
			return []string{"a 405 answer must have an Allow header"}
		}
		return nil
	}
	if err != nil {
		var re *routers.RouteError
		if !errors.As(err, &re) {
			return []string{"finding the route: " + err.Error()}
		}
		// Not an operation of the document: only the API's 404 and 405
		// may answer it.
		if status != http.StatusNotFound && status != http.StatusMethodNotAllowed {
			return []string{fmt.Sprintf("the document has no operation for it (%v), yet it was answered %d", re, status)}
		}
		if err := d.errorBody(respBody); err != nil {
			return []string{"a 404 or 405 answer must be the API's error body: " + err.Error()}
		}
		return nil
	}

	in := &openapi3filter.RequestValidationInput{
		Request: vr, PathParams: params, Route: route,
		Options: &openapi3filter.Options{MultiError: true, AuthenticationFunc: bearerPresent},
	}
	var problems []string
	if err := openapi3filter.ValidateRequest(ctx, in); err != nil && !errors.Is(err, strconv.ErrRange) {
		// (kin-openapi cannot decode a JSON number beyond float64's range,
		// 1e999, which JSON allows and a call's body may hold: not the
		// document's to judge.)
		// An operation that answers each item of its body alone
		// (x-callq-per-item-errors) answers a body with bad items 200.
		perItem := route.Operation.Extensions["x-callq-per-item-errors"] == true && status == http.StatusOK
		if status/100 != 4 && status != http.StatusServiceUnavailable && !perItem {
			problems = append(problems, "the document rejects the request, yet it was answered "+fmt.Sprint(status)+": "+oneLine(err))
		}
	}
	if r.Method == http.MethodHead {
		return problems
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 status,
		Header:                 header,
		Body:                   io.NopCloser(bytes.NewReader(respBody)),
		Options:                &openapi3filter.Options{MultiError: true, IncludeResponseStatus: true},
	}
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		problems = append(problems, "the response does not match the document: "+oneLine(err))
	}
	return problems
}

// errorBody checks b is the API's error body, the document's Error schema.
func (d *document) errorBody(b []byte) error {
	s := d.doc.Components.Schemas["Error"]
	if s == nil || s.Value == nil {
		return errors.New("the document has no Error schema")
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	return s.Value.VisitJSON(v, openapi3.EnableJSONSchema2020())
}

// bearerPresent is the document's security scheme as a request can show it:
// an Authorization: Bearer header with something in it. Whether the key is
// valid is the handler's to say (401), not the document's.
func bearerPresent(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	scheme, secret, ok := strings.Cut(in.RequestValidationInput.Request.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(secret) == "" {
		return errors.New("no Authorization: Bearer header")
	}
	return nil
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
