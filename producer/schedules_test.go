package producer_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
)

// schedule is a valid schedule body; fields in extra are added or
// replaced, and a nil value removes the field.
func schedule(extra map[string]any) map[string]any {
	s := map[string]any{"id": "nightly-sync", "cron": "*/5 * * * *", "timezone": "Europe/Paris",
		"call": map[string]any{"integration": "httpbin", "method": "GET", "path": "/get"}}
	for k, v := range extra {
		if v == nil {
			delete(s, k)
			continue
		}
		s[k] = v
	}
	return s
}

// scheduleCall is a schedule body whose call has extra (as call does).
func scheduleCall(extra map[string]any) map[string]any {
	c := call(extra)
	delete(c, "query")
	return schedule(map[string]any{"call": c})
}

func (e *env) schedules(tb testing.TB, method, path, key string, body any) *resp {
	tb.Helper()
	return e.do(tb, req{Method: method, Path: "/v1/schedules" + path, Key: key, Body: body})
}

func decodeSchedule(tb testing.TB, r *resp) *producer.Schedule {
	tb.Helper()
	var s producer.Schedule
	require.NoError(tb, json.Unmarshal(r.Body, &s), "body: %s", r.Body)
	return &s
}

// Every bad field of a schedule is a 400 naming it, the call's fields
// named inside "call", as POST /v1/calls names them.
func TestScheduleValidation(t *testing.T) {
	t.Parallel()
	e := setup(t, withLimits(&tasks.Limits{MaxRequestBytes: 100}))
	for _, c := range []struct {
		name   string
		body   any
		status int
		code   string
		field  string
	}{
		{"not JSON", "{", 400, "invalid_json", ""},
		{"not an object", "[]", 400, "invalid_json", ""},
		{"unknown field", schedule(map[string]any{"every": "1s"}), 400, "invalid_field", "every"},
		{"no id", schedule(map[string]any{"id": nil}), 400, "invalid_field", "id"},
		{"empty id", schedule(map[string]any{"id": ""}), 400, "invalid_field", "id"},
		{"id with a space", schedule(map[string]any{"id": "nightly sync"}), 400, "invalid_field", "id"},
		{"id with a colon", schedule(map[string]any{"id": "a:b"}), 400, "invalid_field", "id"},
		{"id too long", schedule(map[string]any{"id": strings.Repeat("a", 65)}), 400, "invalid_field", "id"},
		{"id not a string", schedule(map[string]any{"id": 5}), 400, "invalid_field", "id"},
		{"no cron", schedule(map[string]any{"cron": nil}), 400, "invalid_field", "cron"},
		{"bad cron", schedule(map[string]any{"cron": "every five minutes"}), 400, "invalid_field", "cron"},
		{"cron with seconds", schedule(map[string]any{"cron": "*/5 * * * * *"}), 400, "invalid_field", "cron"},
		{"@every too short", schedule(map[string]any{"cron": "@every 500ms"}), 400, "invalid_field", "cron"},
		{"@every not whole seconds", schedule(map[string]any{"cron": "@every 2.5s"}), 400, "invalid_field", "cron"},
		{"cron never fires", schedule(map[string]any{"cron": "0 0 31 2 *"}), 400, "invalid_field", "cron"},
		{"zone in cron", schedule(map[string]any{"cron": "TZ=UTC 0 3 * * *"}), 400, "invalid_field", "cron"},
		{"bad timezone", schedule(map[string]any{"timezone": "Europe/Atlantis"}), 400, "invalid_field", "timezone"},
		{"Local timezone", schedule(map[string]any{"timezone": "Local"}), 400, "invalid_field", "timezone"},
		{"timezone not a string", schedule(map[string]any{"timezone": 1}), 400, "invalid_field", "timezone"},
		{"no call", schedule(map[string]any{"call": nil}), 400, "invalid_field", "call"},
		{"call not an object", schedule(map[string]any{"call": "GET /get"}), 400, "invalid_field", "call"},
		{"correlation_id", scheduleCall(map[string]any{"correlation_id": "x"}), 400, "invalid_field", "call.correlation_id"},
		{"unknown call field", scheduleCall(map[string]any{"methd": "GET"}), 400, "invalid_field", "call.methd"},
		{"unknown retry field", scheduleCall(map[string]any{"retry": map[string]any{"max_attempt": 3}}), 400, "invalid_field", "call.retry.max_attempt"},
		{"no integration", scheduleCall(map[string]any{"integration": nil}), 400, "invalid_field", "call.integration"},
		{"unknown integration", scheduleCall(map[string]any{"integration": "nope"}), 400, "invalid_field", "call.integration"},
		{"bad method", scheduleCall(map[string]any{"method": "FETCH"}), 400, "invalid_field", "call.method"},
		{"path leaving the origin", scheduleCall(map[string]any{"path": "//evil.example/x"}), 400, "invalid_field", "call.path"},
		{"path climbing", scheduleCall(map[string]any{"path": "/a/..%2f..%2fb"}), 400, "invalid_field", "call.path"},
		{"reserved header", scheduleCall(map[string]any{"headers": map[string]string{"Host": "evil.example"}}), 400, "invalid_field", "call.headers.Host"},
		{"two bodies", scheduleCall(map[string]any{"body": map[string]any{"a": 1}, "body_text": "a"}), 400, "invalid_field", "call.body"},
		{"body too large", scheduleCall(map[string]any{"body_text": strings.Repeat("x", 101)}), 413, "too_large", "call.body_text"},
		{"bad timeout", scheduleCall(map[string]any{"timeout": "soon"}), 400, "invalid_field", "call.timeout"},
		{"timeout above max", scheduleCall(map[string]any{"timeout": "1m"}), 400, "invalid_field", "call.timeout"},
		{"bad queue", scheduleCall(map[string]any{"queue": "nope"}), 400, "invalid_field", "call.queue"},
		{"webhook not configured", scheduleCall(map[string]any{"webhook": map[string]any{"url": "https://hooks.example/x"}}), 400, "invalid_field", "call.webhook"},
		{"credential required", schedule(map[string]any{"call": map[string]any{"integration": "basic", "method": "GET", "path": "/"}}), 400, "invalid_field", "call.credential"},
	} {
		r := e.schedules(t, http.MethodPost, "", e.adminKey, c.body)
		requireError(t, r, c.status, c.code, c.field)
		t.Logf("%s: %s", c.name, r.Body)
	}

	// PUT reads the same body; the URL's ID is the schedule's.
	requireError(t, e.schedules(t, http.MethodPut, "/other", e.adminKey, schedule(nil)), 400, "invalid_field", "id")
	requireError(t, e.schedules(t, http.MethodPut, "/bad%20id", e.adminKey, schedule(map[string]any{"id": nil})), 400, "invalid_field", "id")
	requireError(t, e.schedules(t, http.MethodPut, "/nightly-sync", e.adminKey, scheduleCall(map[string]any{"path": "x"})), 400, "invalid_field", "call.path")

	// Nothing was stored.
	r := e.schedules(t, http.MethodGet, "", e.adminKey, nil)
	require.Equal(t, http.StatusOK, r.Status)
	require.JSONEq(t, `{"schedules": []}`, string(r.Body))
}

// A schedule's call as JSON is bounded (Config.MaxScheduleBytes): the
// fleet's scheduler holds every schedule in memory.
func TestScheduleSizeLimit(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.schedules(t, http.MethodPost, "", e.adminKey, scheduleCall(map[string]any{"body_text": strings.Repeat("x", producer.DefaultMaxScheduleBytes)}))
	requireError(t, r, http.StatusRequestEntityTooLarge, "too_large", "call")
	r = e.schedules(t, http.MethodPost, "", e.adminKey, scheduleCall(map[string]any{"body_text": strings.Repeat("x", producer.DefaultMaxScheduleBytes-200)}))
	require.Equal(t, http.StatusCreated, r.Status, "body: %s", r.Body)
}

func TestScheduleLifecycle(t *testing.T) {
	t.Parallel()
	e := setup(t)
	before := time.Now().UTC()
	body := schedule(map[string]any{"call": map[string]any{"integration": "httpbin", "method": "post", "path": "/post",
		"body": map[string]any{"a": 1, "b": []int{1, 2}}, "query": map[string]any{"since": "364"}, "queue": "low"}})
	r := e.schedules(t, http.MethodPost, "", e.adminKey, body)
	require.Equal(t, http.StatusCreated, r.Status, "body: %s", r.Body)
	require.Equal(t, "/v1/schedules/nightly-sync", r.Header.Get("Location"))
	created := decodeSchedule(t, r)
	require.Equal(t, "nightly-sync", created.ID)
	require.Equal(t, "*/5 * * * *", created.Cron)
	require.Equal(t, "Europe/Paris", created.Timezone)
	require.Equal(t, "POST", created.Call.Method, "the method upper-cased")
	require.JSONEq(t, `{"a":1,"b":[1,2]}`, string(created.Call.Body))
	require.Equal(t, "low", created.Call.Queue)
	require.Empty(t, created.Call.CorrelationID)
	require.Empty(t, created.Call.Credential, "defaults are the catalog's at each firing, not frozen")
	require.False(t, created.CreatedAt.Before(before.Truncate(time.Second)))
	require.Equal(t, created.CreatedAt, created.UpdatedAt)
	require.NotNil(t, created.NextRunAt)
	require.True(t, created.NextRunAt.After(before))
	require.LessOrEqual(t, created.NextRunAt.Sub(before), 5*time.Minute)
	require.Zero(t, created.NextRunAt.Unix()%300, "on a five-minute boundary")
	require.Nil(t, created.LastRunAt)
	require.Nil(t, created.LastCorrelationID)
	require.Nil(t, created.LastError)
	for _, k := range []string{"next_run_at", "last_run_at", "last_correlation_id", "last_error"} {
		require.Contains(t, r.JSON(t), k, "the state's fields are always there, null when unset")
	}

	// The same ID again: 409 naming id, nothing changed.
	r = e.schedules(t, http.MethodPost, "", e.adminKey, schedule(map[string]any{"cron": "@hourly"}))
	requireError(t, r, http.StatusConflict, "conflict", "id")

	r = e.schedules(t, http.MethodGet, "/nightly-sync", e.adminKey, nil)
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, created, decodeSchedule(t, r))

	// PUT replaces it: 200, created_at kept.
	r = e.schedules(t, http.MethodPut, "/nightly-sync", e.adminKey, schedule(map[string]any{"id": nil, "cron": "@every 30s", "timezone": nil}))
	require.Equal(t, http.StatusOK, r.Status, "body: %s", r.Body)
	replaced := decodeSchedule(t, r)
	require.Equal(t, "@every 30s", replaced.Cron)
	require.Equal(t, "UTC", replaced.Timezone, "the default zone")
	require.Equal(t, "GET", replaced.Call.Method)
	require.Equal(t, created.CreatedAt, replaced.CreatedAt)
	require.False(t, replaced.UpdatedAt.Before(created.UpdatedAt))
	require.Equal(t, replaced.UpdatedAt.Truncate(time.Second).Add(30*time.Second), *replaced.NextRunAt, "@every counts from the change")

	// PUT of a new ID creates it: 201.
	r = e.schedules(t, http.MethodPut, "/hourly.report_2", e.adminKey, schedule(map[string]any{"id": "hourly.report_2", "cron": "@hourly"}))
	require.Equal(t, http.StatusCreated, r.Status, "body: %s", r.Body)
	require.Equal(t, "/v1/schedules/hourly.report_2", r.Header.Get("Location"))

	r = e.schedules(t, http.MethodGet, "", e.adminKey, nil)
	require.Equal(t, http.StatusOK, r.Status)
	var list struct{ Schedules []*producer.Schedule }
	require.NoError(t, json.Unmarshal(r.Body, &list))
	require.Len(t, list.Schedules, 2)
	require.Equal(t, "hourly.report_2", list.Schedules[0].ID, "by ID")
	require.Equal(t, replaced, list.Schedules[1])

	// DELETE: 204, then 404.
	r = e.schedules(t, http.MethodDelete, "/nightly-sync", e.adminKey, nil)
	require.Equal(t, http.StatusNoContent, r.Status, "body: %s", r.Body)
	require.Empty(t, r.Body)
	requireError(t, e.schedules(t, http.MethodGet, "/nightly-sync", e.adminKey, nil), http.StatusNotFound, "not_found", "")
	requireError(t, e.schedules(t, http.MethodDelete, "/nightly-sync", e.adminKey, nil), http.StatusNotFound, "not_found", "")
	for _, id := range []string{"bad%20id", "a%3Ab", strings.Repeat("a", 65)} {
		requireError(t, e.schedules(t, http.MethodGet, "/"+id, e.adminKey, nil), http.StatusNotFound, "not_found", "")
		requireError(t, e.schedules(t, http.MethodDelete, "/"+id, e.adminKey, nil), http.StatusNotFound, "not_found", "")
	}
	requireError(t, e.schedules(t, http.MethodPatch, "/hourly.report_2", e.adminKey, nil), http.StatusMethodNotAllowed, "method_not_allowed", "")
}

// A tenant never sees nor touches another's schedules; each has its own
// under one ID.
func TestScheduleTenantIsolation(t *testing.T) {
	t.Parallel()
	e := setup(t)
	require.Equal(t, http.StatusCreated, e.schedules(t, http.MethodPost, "", e.adminKey, schedule(nil)).Status)

	requireError(t, e.schedules(t, http.MethodGet, "/nightly-sync", e.otherAdminKey, nil), http.StatusNotFound, "not_found", "")
	requireError(t, e.schedules(t, http.MethodDelete, "/nightly-sync", e.otherAdminKey, nil), http.StatusNotFound, "not_found", "")
	r := e.schedules(t, http.MethodGet, "", e.otherAdminKey, nil)
	require.JSONEq(t, `{"schedules": []}`, string(r.Body))

	// The other tenant's PUT under the same ID makes its own schedule.
	r = e.schedules(t, http.MethodPut, "/nightly-sync", e.otherAdminKey, schedule(map[string]any{"cron": "@daily"}))
	require.Equal(t, http.StatusCreated, r.Status, "body: %s", r.Body)
	r = e.schedules(t, http.MethodGet, "/nightly-sync", e.adminKey, nil)
	require.Equal(t, "*/5 * * * *", decodeSchedule(t, r).Cron, "acme's is untouched")
	require.Equal(t, http.StatusNoContent, e.schedules(t, http.MethodDelete, "/nightly-sync", e.otherAdminKey, nil).Status)
	require.Equal(t, http.StatusOK, e.schedules(t, http.MethodGet, "/nightly-sync", e.adminKey, nil).Status)
}

// Schedules are an admin's: a producer key is 403, no key 401.
func TestScheduleRoles(t *testing.T) {
	t.Parallel()
	e := setup(t)
	require.Equal(t, http.StatusCreated, e.schedules(t, http.MethodPost, "", e.adminKey, schedule(nil)).Status)
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{http.MethodGet, "", nil},
		{http.MethodPost, "", schedule(map[string]any{"id": "x"})},
		{http.MethodGet, "/nightly-sync", nil},
		{http.MethodPut, "/nightly-sync", schedule(nil)},
		{http.MethodDelete, "/nightly-sync", nil},
	} {
		r := e.schedules(t, c.method, c.path, e.producerKey, c.body)
		requireError(t, r, http.StatusForbidden, "forbidden", "")
		require.Contains(t, string(r.Body), "schedules needs an admin key")
		requireError(t, e.schedules(t, c.method, c.path, "", c.body), http.StatusUnauthorized, "unauthorized", "")
	}
	require.Equal(t, http.StatusOK, e.schedules(t, http.MethodGet, "/nightly-sync", e.adminKey, nil).Status, "still there")
}

// A tenant has at most Config.MaxSchedules schedules; replacing one at the
// limit is fine, and each tenant has its own count.
func TestScheduleLimit(t *testing.T) {
	t.Parallel()
	e := setup(t, withMaxSchedules(2))
	for _, id := range []string{"a", "b"} {
		require.Equal(t, http.StatusCreated, e.schedules(t, http.MethodPost, "", e.adminKey, schedule(map[string]any{"id": id})).Status)
	}
	r := e.schedules(t, http.MethodPost, "", e.adminKey, schedule(map[string]any{"id": "c"}))
	requireError(t, r, http.StatusConflict, "conflict", "")
	require.Contains(t, string(r.Body), `tenant \"acme\" has 2 schedules, the limit`)
	requireError(t, e.schedules(t, http.MethodPut, "/c", e.adminKey, schedule(map[string]any{"id": "c"})), http.StatusConflict, "conflict", "")
	require.Equal(t, http.StatusOK, e.schedules(t, http.MethodPut, "/b", e.adminKey, schedule(map[string]any{"id": "b", "cron": "@daily"})).Status)
	require.Equal(t, http.StatusCreated, e.schedules(t, http.MethodPost, "", e.otherAdminKey, schedule(map[string]any{"id": "c"})).Status)
	require.Equal(t, http.StatusNoContent, e.schedules(t, http.MethodDelete, "/a", e.adminKey, nil).Status)
	require.Equal(t, http.StatusCreated, e.schedules(t, http.MethodPost, "", e.adminKey, schedule(map[string]any{"id": "c"})).Status)
}
