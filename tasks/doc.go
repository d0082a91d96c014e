// Package tasks defines what a call is and what became of it.
//
// A Call is the payload a service enqueues: an integration from the Catalog, a
// method, a path pinned to the integration's origin, and a reference to a
// credential (never the secret). A Record is the outcome kept under the call's
// correlation ID; Store keeps records in Redis with a TTL and wakes waiters by
// pub/sub when a call finishes. The asynq task type names and payload shared by
// the producer and the worker live here too, so neither imports the other.
package tasks
