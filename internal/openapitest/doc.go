// Package openapitest checks the HTTP API against its OpenAPI document
// (producer/openapi.yaml) in tests: Handler wraps the API handler wherever a
// test builds the API server, and validates every request the test sends
// and every response the handler answers with kin-openapi's openapi3filter,
// reporting each disagreement as a test failure. Operations lists what the
// document describes, for the tests that check the router serves exactly
// that.
//
// kin-openapi (v0.153) validates an OpenAPI 3.1 document's schemas with a
// JSON Schema 2020-12 validator, but falls back to its OpenAPI 3.0 one for a
// schema that uses no 2020-12 keyword and refers to components; there a
// schema without a type does not admit null, so the document spells nullable
// and any-JSON fields with type arrays ("null" included). It cannot decode a
// JSON number beyond float64's range (1e999), which a call's body may hold:
// such a request is not judged. Request bodies are validated as JSON
// whatever their Content-Type, as the API reads them.
//
// It is for tests only: nothing outside _test.go files imports it, so
// kin-openapi is not in the callq binary.
package openapitest
