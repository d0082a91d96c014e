package tasks_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/tasks"
)

// testCatalogYAML is a small catalog covering the auth types Normalize
// treats differently.
const testCatalogYAML = `
integrations:
  open:
    base_url: https://open.example.com
    auth: {type: none}
  gh:
    base_url: https://api.example.com/v2
    auth: {type: bearer}
    headers: {Accept: application/vnd.github+json}
    default_credential: gh-default
    timeout: 3s
    max_timeout: 20s
    retry: {max_attempts: 4}
  nodefault:
    base_url: https://nodefault.example.com
    auth: {type: bearer}
  partner:
    base_url: https://partner.example
    auth: {type: api_key, in: header, name: x-api-key}
    default_credential: partner-default
  dd:
    base_url: https://api.datadoghq.com
    auth:
      type: headers
      headers:
        DD-API-KEY: "{{api_key}}"
        DD-APPLICATION-KEY: "{{app_key}}"
    default_credential: dd-default
`

// testCatalog parses testCatalogYAML.
func testCatalog(t *testing.T) *tasks.Catalog {
	t.Helper()
	cat, err := tasks.ParseCatalog([]byte(testCatalogYAML))
	require.NoError(t, err)
	return cat
}

// integration looks name up in cat and fails the test if it is missing.
func integration(t *testing.T, cat *tasks.Catalog, name string) *tasks.Integration {
	t.Helper()
	in, ok := cat.Lookup(name)
	require.True(t, ok, "integration %q not in catalog", name)
	return in
}

// requireFieldError asserts err is a *tasks.FieldError on field and returns it.
func requireFieldError(t *testing.T, err error, field string) *tasks.FieldError {
	t.Helper()
	require.Error(t, err)
	var fe *tasks.FieldError
	require.True(t, errors.As(err, &fe), "error %v (%T) is not a *tasks.FieldError", err, err)
	require.Equal(t, field, fe.Field, "error: %v", err)
	require.Contains(t, err.Error(), field+": ")
	return fe
}

// requireCatalogError asserts err is a *tasks.CatalogError naming integration
// and key, and that its text names both.
func requireCatalogError(t *testing.T, err error, integration, key string) *tasks.CatalogError {
	t.Helper()
	require.Error(t, err)
	var ce *tasks.CatalogError
	require.True(t, errors.As(err, &ce), "error %v (%T) is not a *tasks.CatalogError", err, err)
	require.Equal(t, integration, ce.Integration, "error: %v", err)
	require.Equal(t, key, ce.Key, "error: %v", err)
	if integration != "" {
		require.Contains(t, err.Error(), `integration "`+integration+`"`)
	}
	if key != "" {
		require.Contains(t, err.Error(), `key "`+key+`"`)
	}
	return ce
}

func ptr[T any](v T) *T { return &v }
