// Package worker executes calls: it wires an asynq server to the call
// handler, which resolves the integration and credential, builds and signs
// the request, runs it under the call's timeout, classifies the outcome with
// the retry policy (CheckRetry, Backoff) and writes the record honestly:
// every attempt in its history, the last response kept on failure. A call's
// terminal write also ends its asynq task, in the same script
// (tasks.Store.WriteDone), and the calls' asynq server runs on a Redis
// client that answers asynq's Done of such a task without Redis (taskEnds,
// in complete.go): off Redis Cluster, for calls with no webhook left to
// queue. Off Cluster too, that client takes a task from the first of the
// server's queues to hold one, in asynq's weighted random order, with one
// script (queueProbes, in dequeue.go) where asynq spends one per queue. It
// also delivers completion webhooks (ProcessWebhook) from an
// asynq server of their own (Config.WebhookConcurrency), signed, through a
// client that refuses private addresses at dial time, runs the fleet's
// reconciler (Reconciler), which fails calls whose asynq task is gone with
// error kind lost, and exports Prometheus metrics (Metrics).
package worker
