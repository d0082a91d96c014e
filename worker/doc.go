// Package worker executes calls: it wires an asynq server to the call
// handler, which resolves the integration and credential, builds and signs
// the request, runs it under the call's timeout, classifies the outcome with
// the retry policy (CheckRetry, Backoff) and writes the record honestly:
// every attempt in its history, the last response kept on failure. It also
// delivers completion webhooks (ProcessWebhook) from an asynq server of
// their own (Config.WebhookConcurrency), signed, through a client that
// refuses private addresses at dial time, runs the fleet's reconciler
// (Reconciler), which fails calls whose asynq task is gone with error kind
// lost, and exports Prometheus metrics (Metrics).
package worker
