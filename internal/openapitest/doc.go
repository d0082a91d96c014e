// Package openapitest checks the HTTP API against its OpenAPI document
// (producer/openapi.yaml) in tests: Handler wraps the API handler wherever a
// test builds the API server, and validates every request the test sends
// and every response the handler answers with kin-openapi's openapi3filter,
// reporting each disagreement as a test failure. Operations lists what the
// document describes, for the tests that check the router serves exactly
// that.
//
// It is for tests only: nothing outside _test.go files imports it, so
// kin-openapi is not in the callq binary.
package openapitest
