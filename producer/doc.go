// Package producer enqueues calls and looks them up. A Producer holds what
// all tenants share (catalog, record store, asynq connections); its Tenant
// views are the Go client (Enqueue, Get, Wait, Cancel, List, Replay,
// ReplayMany, Stats, and the schedules: CreateSchedule, PutSchedule,
// GetSchedule, ListSchedules, DeleteSchedule) of one tenant, and
// NewHandler serves the HTTP API over it, in the tenant of each request's
// API key. A Scheduler fires every tenant's schedules through the same
// enqueue path, one Scheduler of the fleet at a time. The handler also
// serves connect sessions (connect.go): an admin opens one, and an end
// user's browser connects their own account through it, by the OAuth2
// authorization code flow with PKCE or a hosted form.
//
// openapi.yaml describes the HTTP API (OpenAPI 3.1). It is embedded, parsed
// once, and served by the API at GET /openapi.json and, as a page rendered
// on the server, at GET /docs. The tests validate every exchange with the
// API against it (internal/openapitest) and check it describes exactly the
// routes NewHandler registers (Routes): an API change changes it too.
package producer
