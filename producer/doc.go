// Package producer enqueues calls and looks them up: the Go client (Enqueue,
// Get, Wait, Cancel), bound to one tenant, and the HTTP API handler over it.
package producer
