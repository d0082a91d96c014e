package producer_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/tasks"
)

func TestAuthRequiresAKey(t *testing.T) {
	t.Parallel()
	e := setup(t)

	endpoints := []req{
		{Method: http.MethodPost, Path: "/v1/calls", Body: call(nil)},
		{Method: http.MethodPost, Path: "/v1/calls/batch", Body: map[string]any{"calls": []any{call(nil)}}},
		{Method: http.MethodGet, Path: "/v1/calls/x"},
		{Method: http.MethodGet, Path: "/v1/calls/x?wait=5s"},
		{Method: http.MethodDelete, Path: "/v1/calls/x"},
		{Method: http.MethodGet, Path: "/v1/credentials"},
		{Method: http.MethodGet, Path: "/v1/credentials/x"},
		{Method: http.MethodPut, Path: "/v1/credentials/x", Body: map[string]any{"integration": "bearer", "fields": map[string]string{"token": "t"}}},
		{Method: http.MethodDelete, Path: "/v1/credentials/x"},
	}
	for _, ep := range endpoints {
		name := ep.Method + " " + ep.Path
		for _, authz := range []string{"", "Bearer", "Bearer ", "Basic " + e.producerKey, "Token " + e.producerKey, e.producerKey} {
			r := ep
			r.Header = map[string]string{}
			if authz != "" {
				r.Header["Authorization"] = authz
			}
			got := e.do(t, r)
			requireError(t, got, http.StatusUnauthorized, "unauthorized", "")
			require.True(t, strings.HasPrefix(got.Header.Get("WWW-Authenticate"), "Bearer"), "%s with %q", name, authz)
			require.NotContains(t, string(got.Body), e.producerKey)
		}
		for _, key := range []string{"cq_not-a-key", e.producerKey + "x", strings.ToUpper(e.producerKey)} {
			r := ep
			r.Key = key
			got := e.do(t, r)
			requireError(t, got, http.StatusUnauthorized, "unauthorized", "")
			require.Contains(t, got.Header.Get("WWW-Authenticate"), "invalid_token", name)
		}
	}

	// Nothing was queued.
	require.Zero(t, e.queueSize(t, "default"))
}

func TestAuthSchemeIsCaseInsensitive(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.do(t, req{Method: http.MethodPost, Path: "/v1/calls", Body: call(nil),
		Header: map[string]string{"Authorization": "bearer " + e.producerKey}})
	require.Equal(t, http.StatusAccepted, r.Status, "body: %s", r.Body)
}

func TestAuthProducerKeyCannotManageCredentials(t *testing.T) {
	t.Parallel()
	e := setup(t)
	_, err := e.creds.Put(context.Background(), "acme", "cust-42", "bearer", map[string]string{"token": "tok-123456"})
	require.NoError(t, err)

	for _, r := range []req{
		{Method: http.MethodGet, Path: "/v1/credentials"},
		{Method: http.MethodGet, Path: "/v1/credentials/cust-42"},
		{Method: http.MethodPut, Path: "/v1/credentials/cust-42", Body: map[string]any{"integration": "bearer", "fields": map[string]string{"token": "replaced"}}},
		{Method: http.MethodDelete, Path: "/v1/credentials/cust-42"},
	} {
		r.Key = e.producerKey
		got := e.do(t, r)
		requireError(t, got, http.StatusForbidden, "forbidden", "")
		require.NotContains(t, string(got.Body), "cust-42", "a 403 says nothing about the credential")
	}

	// The credential is untouched.
	cred, err := e.creds.Get(context.Background(), "acme", "cust-42")
	require.NoError(t, err)
	require.Equal(t, "bearer", cred.Integration)
	secrets, err := cred.Resolve(e.ring, nil)
	require.NoError(t, err)
	require.Equal(t, "tok-123456", secrets["token"])
}

func TestAuthRevokedKey(t *testing.T) {
	t.Parallel()
	e := setup(t)

	r := e.post(t, call(map[string]any{"correlation_id": "before-revoke"}))
	require.Equal(t, http.StatusAccepted, r.Status)
	require.NoError(t, e.keys.Revoke(context.Background(), e.producerKeyID))

	requireError(t, e.post(t, call(nil)), http.StatusUnauthorized, "unauthorized", "")
	requireError(t, e.get(t, "before-revoke"), http.StatusUnauthorized, "unauthorized", "")
	requireError(t, e.do(t, req{Method: http.MethodDelete, Path: "/v1/calls/before-revoke", Key: e.producerKey}), http.StatusUnauthorized, "unauthorized", "")

	// The tenant's other key still works and sees the call.
	rec := e.do(t, req{Method: http.MethodGet, Path: "/v1/calls/before-revoke", Key: e.adminKey}).Record(t)
	require.Equal(t, tasks.StatusQueued, rec.Status)
}

func TestAuthAnotherTenantsCallIsNotFound(t *testing.T) {
	t.Parallel()
	e := setup(t)

	r := e.post(t, call(map[string]any{"correlation_id": "acme-only"}))
	require.Equal(t, http.StatusAccepted, r.Status)

	as := func(method, path string) *resp {
		return e.do(t, req{Method: method, Path: path, Key: e.otherAdminKey})
	}
	requireError(t, as(http.MethodGet, "/v1/calls/acme-only"), http.StatusNotFound, "not_found", "")
	requireError(t, as(http.MethodGet, "/v1/calls/acme-only?wait=10s"), http.StatusNotFound, "not_found", "")
	requireError(t, as(http.MethodDelete, "/v1/calls/acme-only"), http.StatusNotFound, "not_found", "")

	// acme's call is still queued, with its task.
	rec := e.get(t, "acme-only").Record(t)
	require.Equal(t, tasks.StatusQueued, rec.Status)
	info, err := e.taskInfo("acme", "default", "acme-only")
	require.NoError(t, err)
	require.Equal(t, asynq.TaskStatePending, info.State)

	// The 404 is the same as for a call that does not exist anywhere.
	unknown := as(http.MethodGet, "/v1/calls/nowhere")
	requireError(t, unknown, http.StatusNotFound, "not_found", "")
}

func TestAuthAnotherTenantsCredentialIsNotFound(t *testing.T) {
	t.Parallel()
	e := setup(t)

	r := e.do(t, req{Method: http.MethodPut, Path: "/v1/credentials/cust-42", Key: e.adminKey,
		Body: map[string]any{"integration": "bearer", "fields": map[string]string{"token": "acme-token-value"}}})
	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)

	as := func(method, path string) *resp {
		return e.do(t, req{Method: method, Path: path, Key: e.otherAdminKey})
	}
	requireError(t, as(http.MethodGet, "/v1/credentials/cust-42"), http.StatusNotFound, "not_found", "")
	requireError(t, as(http.MethodDelete, "/v1/credentials/cust-42"), http.StatusNotFound, "not_found", "")
	list := as(http.MethodGet, "/v1/credentials")
	require.Equal(t, http.StatusOK, list.Status)
	require.JSONEq(t, `{"credentials": []}`, string(list.Body))

	// other may hold a credential of the same ref: it is its own.
	r = e.do(t, req{Method: http.MethodPut, Path: "/v1/credentials/cust-42", Key: e.otherAdminKey,
		Body: map[string]any{"integration": "basic", "fields": map[string]string{"username": "u", "password": "other-password"}}})
	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)

	acme := e.do(t, req{Method: http.MethodGet, Path: "/v1/credentials/cust-42", Key: e.adminKey}).JSON(t)
	require.Equal(t, "bearer", acme["integration"])
	other := as(http.MethodGet, "/v1/credentials/cust-42").JSON(t)
	require.Equal(t, "basic", other["integration"])
}
