// Package bench is `callq bench`: it measures callq beside raw asynq on this
// machine, in one run, on a redis-server it starts itself (through
// internal/redisproc) and a local upstream served in this process.
//
// Three throughput phases run at the same concurrency and call count, each
// enqueue-first (the calls are queued with no worker running, then the clock
// runs from the worker's start to the last completion): raw asynq with a
// no-op handler (the engine's ceiling), a hand-written asynq handler making
// the same call with net/http and storing nothing (what a user would write
// instead of callq), and the full callq pipeline (Go producer, callq worker,
// record stored). Then the HTTP API's enqueue rate, the latency from a
// terminal write to Wait returning, and an idle worker's pickup latency.
// Redis's own counters (INFO) and a go-redis hook count the commands each
// pipeline costs per call.
//
// The command line (flags, --json) is in cmd/callq; [Run] takes a [Config]
// and returns a [Report] whose Result is the JSON object. The README's
// Performance section shows a run and what it led to.
package bench
