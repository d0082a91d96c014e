package producer_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/auth"
)

func (e *env) putCred(tb testing.TB, key, ref string, body any) *resp {
	tb.Helper()
	return e.do(tb, req{Method: http.MethodPut, Path: "/v1/credentials/" + ref, Key: key, Body: body})
}

func TestCredentialPutAnswersFieldNamesOnly(t *testing.T) {
	t.Parallel()
	e := setup(t, withSourceRefs())
	const secret = "ghp_literal-secret-value-0123456789"

	before := time.Now().Add(-time.Second)
	r := e.putCred(t, e.adminKey, "cust-42", map[string]any{"integration": "bearer", "fields": map[string]string{"token": secret}})
	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)
	require.Equal(t, "application/json", r.Header.Get("Content-Type"))
	m := r.JSON(t)
	require.ElementsMatch(t, []string{"ref", "integration", "fields", "updated_at"}, keysOf(m))
	require.Equal(t, "cust-42", m["ref"])
	require.Equal(t, "bearer", m["integration"])
	require.Equal(t, []any{"token"}, m["fields"])
	updated, err := time.Parse(time.RFC3339Nano, m["updated_at"].(string))
	require.NoError(t, err)
	require.True(t, updated.After(before))
	requireNoSecret(t, r.Body, secret)

	// The stored credential opens to the value given.
	cred, err := e.creds.Get(context.Background(), "acme", "cust-42")
	require.NoError(t, err)
	got, err := cred.Resolve(e.ring, nil)
	require.NoError(t, err)
	require.Equal(t, secret, got["token"])

	// Replacing it answers the new field names.
	r = e.putCred(t, e.adminKey, "cust-42", map[string]any{"integration": "basic",
		"fields": map[string]string{"username": "user", "password": secret, "extra": "env:EXTRA_VAR"}})
	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)
	m = r.JSON(t)
	require.Equal(t, "basic", m["integration"])
	require.Equal(t, []any{"extra", "password", "username"}, m["fields"])
	requireNoSecret(t, r.Body, secret)
	require.NotContains(t, string(r.Body), "EXTRA_VAR", "references are not shown either")
}

func keysOf(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func requireNoSecret(tb testing.TB, b []byte, secret string) {
	tb.Helper()
	require.False(tb, bytes.Contains(b, []byte(secret)), "the secret appears in %s", b)
	require.False(tb, bytes.Contains(b, []byte(base64.StdEncoding.EncodeToString([]byte(secret)))), "the secret's base64 appears in %s", b)
}

func TestCredentialPutRefusesBadInput(t *testing.T) {
	t.Parallel()
	e := setup(t, withSourceRefs())

	cases := []struct {
		name   string
		ref    string
		body   any
		code   string
		field  string
		status int
	}{
		{"bearer without token", "c1", map[string]any{"integration": "bearer", "fields": map[string]string{"other": "x"}}, "invalid_field", "fields.token", 400},
		{"bearer with an empty token", "c1", map[string]any{"integration": "bearer", "fields": map[string]string{"token": ""}}, "invalid_field", "fields.token", 400},
		{"bearer without fields", "c1", map[string]any{"integration": "bearer"}, "invalid_field", "fields.token", 400},
		{"basic without username", "c1", map[string]any{"integration": "basic", "fields": map[string]string{"password": "p"}}, "invalid_field", "fields.username", 400},
		{"unknown integration", "c1", map[string]any{"integration": "nope", "fields": map[string]string{"token": "x"}}, "invalid_field", "integration", 400},
		{"missing integration", "c1", map[string]any{"fields": map[string]string{"token": "x"}}, "invalid_field", "integration", 400},
		{"no fields for auth none", "c1", map[string]any{"integration": "httpbin", "fields": map[string]string{}}, "invalid_field", "fields", 400},
		{"bad field name", "c1", map[string]any{"integration": "bearer", "fields": map[string]string{"token": "x", "bad name": "y"}}, "invalid_field", "fields", 400},
		{"bad env reference", "c1", map[string]any{"integration": "bearer", "fields": map[string]string{"token": "env:1-bad"}}, "invalid_field", "fields.token", 400},
		{"relative file reference", "c1", map[string]any{"integration": "bearer", "fields": map[string]string{"token": "file:relative/path"}}, "invalid_field", "fields.token", 400},
		{"value too long", "c1", map[string]any{"integration": "bearer", "fields": map[string]string{"token": string(bytes.Repeat([]byte("x"), 16<<10+1))}}, "invalid_field", "fields.token", 400},
		{"invalid ref", "bad%20ref", map[string]any{"integration": "bearer", "fields": map[string]string{"token": "x"}}, "invalid_field", "ref", 400},
		{"ref with an encoded slash", "a%2Fb", map[string]any{"integration": "bearer", "fields": map[string]string{"token": "x"}}, "invalid_field", "ref", 400},
		{"invalid JSON", "c1", `{"integration": "bearer",`, "invalid_json", "", 400},
		{"empty body", "c1", ``, "invalid_json", "", 400},
		{"unknown key", "c1", map[string]any{"integration": "bearer", "fields": map[string]string{"token": "x"}, "bogus": 1}, "invalid_json", "", 400},
		{"non-string value", "c1", `{"integration": "bearer", "fields": {"token": 5}}`, "invalid_json", "", 400},
		{"non-object body", "c1", `["bearer"]`, "invalid_json", "", 400},
		{"nested 100 deep", "c1", `{"integration": "bearer", "fields": ` + nested(100) + `}`, "invalid_json", "", 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.putCred(t, e.adminKey, tc.ref, tc.body)
			requireError(t, r, tc.status, tc.code, tc.field)
		})
	}

	list := e.do(t, req{Method: http.MethodGet, Path: "/v1/credentials", Key: e.adminKey})
	require.JSONEq(t, `{"credentials": []}`, string(list.Body), "nothing was stored")
}

func TestCredentialListGetDelete(t *testing.T) {
	t.Parallel()
	e := setup(t)
	secrets := []string{"first-secret-token-value", "second-secret-password", "third-secret-username"}

	r := e.putCred(t, e.adminKey, "b-cred", map[string]any{"integration": "bearer", "fields": map[string]string{"token": secrets[0]}})
	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)
	r = e.putCred(t, e.adminKey, "a-cred", map[string]any{"integration": "basic", "fields": map[string]string{"username": secrets[2], "password": secrets[1]}})
	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)

	list := e.do(t, req{Method: http.MethodGet, Path: "/v1/credentials", Key: e.adminKey})
	require.Equal(t, http.StatusOK, list.Status, "body: %s", list.Body)
	var body struct {
		Credentials []map[string]any `json:"credentials"`
	}
	require.NoError(t, json.Unmarshal(list.Body, &body))
	require.Len(t, body.Credentials, 2)
	require.Equal(t, "a-cred", body.Credentials[0]["ref"], "sorted by ref")
	require.Equal(t, []any{"password", "username"}, body.Credentials[0]["fields"])
	require.Equal(t, "b-cred", body.Credentials[1]["ref"])
	require.Equal(t, []any{"token"}, body.Credentials[1]["fields"])
	for _, c := range body.Credentials {
		require.ElementsMatch(t, []string{"ref", "integration", "fields", "updated_at"}, keysOf(c))
	}

	one := e.do(t, req{Method: http.MethodGet, Path: "/v1/credentials/a-cred", Key: e.adminKey})
	require.Equal(t, http.StatusOK, one.Status)
	m := one.JSON(t)
	require.Equal(t, "a-cred", m["ref"])
	require.Equal(t, "basic", m["integration"])
	require.Equal(t, []any{"password", "username"}, m["fields"])

	for _, s := range secrets {
		requireNoSecret(t, list.Body, s)
		requireNoSecret(t, one.Body, s)
	}

	requireError(t, e.do(t, req{Method: http.MethodGet, Path: "/v1/credentials/nope", Key: e.adminKey}), http.StatusNotFound, "not_found", "")
	requireError(t, e.do(t, req{Method: http.MethodGet, Path: "/v1/credentials/bad%20ref", Key: e.adminKey}), http.StatusNotFound, "not_found", "")

	del := e.do(t, req{Method: http.MethodDelete, Path: "/v1/credentials/a-cred", Key: e.adminKey})
	require.Equal(t, http.StatusNoContent, del.Status, "body: %s", del.Body)
	require.Empty(t, del.Body)
	requireError(t, e.do(t, req{Method: http.MethodGet, Path: "/v1/credentials/a-cred", Key: e.adminKey}), http.StatusNotFound, "not_found", "")
	requireError(t, e.do(t, req{Method: http.MethodDelete, Path: "/v1/credentials/a-cred", Key: e.adminKey}), http.StatusNotFound, "not_found", "")
	requireError(t, e.do(t, req{Method: http.MethodDelete, Path: "/v1/credentials/bad%20ref", Key: e.adminKey}), http.StatusNotFound, "not_found", "")

	list = e.do(t, req{Method: http.MethodGet, Path: "/v1/credentials", Key: e.adminKey})
	require.NoError(t, json.Unmarshal(list.Body, &body))
	require.Len(t, body.Credentials, 1)
	require.Equal(t, "b-cred", body.Credentials[0]["ref"])
}

func TestCredentialRedisDumpHoldsNoSecret(t *testing.T) {
	t.Parallel()
	e := setup(t)
	// Keep strings uncompressed in the dump, so a literal would be found.
	require.NoError(t, e.rdb.ConfigSet(context.Background(), "rdbcompression", "no").Err())

	literals := []string{"dump-check-bearer-token-4f1c2a", "dump-check-password-9b7e33", "dump-check-username-51d0aa"}
	r := e.putCred(t, e.adminKey, "dump-check-ref", map[string]any{"integration": "bearer", "fields": map[string]string{"token": literals[0]}})
	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)
	r = e.do(t, req{Method: http.MethodPut, Path: "/v1/credentials/dump-check-basic", Key: e.otherAdminKey,
		Body: map[string]any{"integration": "basic", "fields": map[string]string{"username": literals[2], "password": literals[1]}}})
	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)
	// A call using the credential holds its reference only.
	r = e.post(t, map[string]any{"integration": "bearer", "method": "GET", "path": "/me", "credential": "dump-check-ref", "correlation_id": "dump-check-call"})
	require.Equal(t, http.StatusAccepted, r.Status, "body: %s", r.Body)

	dump := e.srv.SaveRDB(t)
	// The dump is searchable: names are in it.
	require.True(t, bytes.Contains(dump, []byte("dump-check-ref")))
	require.True(t, bytes.Contains(dump, []byte("dump-check-call")))
	for _, s := range literals {
		requireNoSecret(t, dump, s)
	}
	// Nor are the API keys, stored as hashes.
	for _, k := range []string{e.adminKey, e.producerKey, e.otherAdminKey} {
		require.False(t, bytes.Contains(dump, []byte(k)))
	}
}

// env: and file: values read the workers' environment and files: a tenant's
// admin must not be able to point a credential at another tenant's secret
// (or at callq's own). The API refuses them unless the operator allows it.
func TestCredentialSourceRefsRefusedByDefault(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, v := range []string{"env:ACME_GH_TOKEN", "env:CALLQ_SECRET_KEY", "file:/proc/self/environ", "file:/run/secrets/other"} {
		r := e.putCred(t, e.adminKey, "sneaky", map[string]any{"integration": "bearer", "fields": map[string]string{"token": v}})
		requireError(t, r, http.StatusBadRequest, "invalid_field", "fields.token")
	}
	_, err := e.creds.Get(context.Background(), "acme", "sneaky")
	require.ErrorIs(t, err, auth.ErrCredentialNotFound, "nothing was stored")

	allowed := setup(t, withSourceRefs())
	r := allowed.putCred(t, allowed.adminKey, "ops", map[string]any{"integration": "bearer", "fields": map[string]string{"token": "env:GH_TOKEN"}})
	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)
}

// Even where source refs are allowed, a file: value under /proc, /sys or
// /dev (callq's own environment is /proc/self/environ) is refused when put,
// however the path is spelled; and with CALLQ_SOURCE_DIRS, a path outside
// those directories.
func TestCredentialFileSourcesRefused(t *testing.T) {
	t.Parallel()
	e := setup(t, withSourceRefs(), withSourceDirs("/run/secrets"))
	for _, v := range []string{
		"file:/proc/self/environ", "file:/proc/./self/environ", "file://proc/self/environ",
		"file:/proc/thread-self/environ", "file:/proc/1/environ", "file:/run/secrets/../../proc/self/environ",
		"file:/sys/class/net/lo/address", "file:/dev/stdin",
	} {
		r := e.putCred(t, e.adminKey, "sneaky", map[string]any{"integration": "bearer", "fields": map[string]string{"token": v}})
		requireError(t, r, http.StatusBadRequest, "invalid_field", "fields.token")
		require.Contains(t, string(r.Body), "callq never reads credentials from /proc, /sys or /dev", v)
	}
	for _, v := range []string{"file:/etc/passwd", "file:/run/secrets2/token", "file:/run/secrets/../other/token"} {
		r := e.putCred(t, e.adminKey, "sneaky", map[string]any{"integration": "bearer", "fields": map[string]string{"token": v}})
		requireError(t, r, http.StatusBadRequest, "invalid_field", "fields.token")
		require.Contains(t, string(r.Body), "CALLQ_SOURCE_DIRS", v)
	}
	_, err := e.creds.Get(context.Background(), "acme", "sneaky")
	require.ErrorIs(t, err, auth.ErrCredentialNotFound, "nothing was stored")

	r := e.putCred(t, e.adminKey, "ops", map[string]any{"integration": "bearer", "fields": map[string]string{"token": "file:/run/secrets/gh"}})
	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)
}
