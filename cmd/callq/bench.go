package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/callq/callq/internal/bench"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

// benchAbout is callq bench's description.
const benchAbout = `Measures callq beside raw asynq on this machine, in one run, on a redis-server it
starts on a free port (FLUSHALL between phases) and a local upstream in this
process (200, a small JSON body). Needs redis-server on the PATH.

With --cluster it runs only the callq throughput phase, on a local Redis Cluster it
starts (3 masters with a replica each; needs redis-cli too), with one asynq queue
per queue and then with --queue-shards, and reports each master's commands per
call and their spread.`

// runBench is `callq bench`: its flags, then internal/bench does the work.
func runBench(ctx context.Context, x *invocation, args []string) error {
	cfg := bench.Config{Progress: x.stderr}
	var asJSON bool
	fs := x.flags()
	fs.IntVar(&cfg.Calls, "calls", bench.DefaultCalls, "calls per throughput phase")
	fs.IntVar(&cfg.Concurrency, "concurrency", worker.DefaultConcurrency, "worker concurrency, the same for asynq and callq")
	fs.IntVar(&cfg.Rounds, "rounds", bench.DefaultRounds, "run the three throughput phases this many times, interleaved, and report medians")
	fs.IntVar(&cfg.HTTPRequests, "http-requests", bench.DefaultHTTPRequests, "POST /v1/calls requests in the HTTP enqueue phase (at most --calls)")
	fs.IntVar(&cfg.WaitSamples, "wait-samples", bench.DefaultWaitSamples, "calls in the Wait latency phase")
	fs.IntVar(&cfg.PickupSamples, "pickup-samples", bench.DefaultPickupSamples, "calls in the idle pickup phase")
	fs.IntVar(&cfg.ListRecords, "list-records", bench.DefaultListRecords, "records the tenant holds in the list phase")
	fs.IntVar(&cfg.ListSamples, "list-samples", bench.DefaultListSamples, "GET /v1/calls requests timed in the list phase")
	fs.BoolVar(&asJSON, "json", false, "print one JSON object instead of the table")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a CPU profile of the (first) callq throughput phase, worker start to last record, to this file")
	fs.BoolVar(&cfg.Cluster, "cluster", false, "run the callq throughput phase on a local Redis Cluster (3 masters, a replica each) and report each master's commands")
	fs.IntVar(&cfg.QueueShards, "queue-shards", bench.DefaultClusterQueueShards, "with --cluster: the shard count of the second phase (CALLQ_QUEUE_SHARDS); 1 runs only the first")
	if err := fs.parseNoArgs(args); err != nil {
		return err
	}
	if cfg.Calls < 1 || cfg.Concurrency < 1 || cfg.Rounds < 1 || cfg.HTTPRequests < 1 || cfg.WaitSamples < 1 || cfg.PickupSamples < 1 || cfg.ListRecords < 1 || cfg.ListSamples < 1 {
		return fmt.Errorf("%w: --calls, --concurrency, --rounds, --http-requests, --wait-samples, --pickup-samples, --list-records and --list-samples must be at least 1", errUsage)
	}
	if cfg.QueueShards < 1 || cfg.QueueShards > tasks.MaxQueueShards {
		return fmt.Errorf("%w: --queue-shards must be from 1 to %d", errUsage, tasks.MaxQueueShards)
	}
	queueShardsSet := false
	fs.Visit(func(f *flag.Flag) { queueShardsSet = queueShardsSet || f.Name == "queue-shards" })
	if queueShardsSet && !cfg.Cluster {
		return fmt.Errorf("%w: --queue-shards goes with --cluster", errUsage)
	}
	rep, err := bench.Run(ctx, &cfg)
	if err != nil {
		return err
	}
	if asJSON {
		return rep.WriteJSON(x.stdout)
	}
	rep.WriteTable(x.stdout)
	return nil
}
