package bench

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/callq/callq/internal/redisproc"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

// DefaultClusterQueueShards is the shard count of the sharded cluster run:
// two per master of the bench's cluster (redisproc.DefaultMasters), as the
// README advises.
const DefaultClusterQueueShards = 2 * redisproc.DefaultMasters

// ClusterResult is what `callq bench --cluster` measured: the callq
// throughput phase on a local Redis Cluster (redisproc.StartCluster: 3
// masters, each with a replica), once with one asynq queue per logical
// queue and once with the queues split (Config.QueueShards), with the
// commands and CPU each master spent.
type ClusterResult struct {
	Masters           int          `json:"masters"`
	ReplicasPerMaster int          `json:"replicas_per_master"`
	Runs              []ClusterRun `json:"runs"`
}

// ClusterRun is the throughput phase at one shard count.
type ClusterRun struct {
	// QueueShards is CALLQ_QUEUE_SHARDS for the run.
	QueueShards int `json:"queue_shards"`
	// CallqPerS is calls per second from the worker's start to the last
	// completion, as callq_per_s.
	CallqPerS float64 `json:"callq_per_s"`
	// GoEnqueuePerS is producer.Client.Enqueue's rate, as go_enqueue_per_s.
	GoEnqueuePerS float64 `json:"go_enqueue_per_s"`
	// MasterCmdsPerCall is, for each master (in the order of their
	// addresses), the commands it processed over the phase (enqueue and
	// execution; INFO total_commands_processed, commands inside Lua
	// scripts included) per call.
	MasterCmdsPerCall []float64 `json:"master_cmds_per_call"`
	// Spread is the busiest master's commands over the idlest's: 1 when
	// the masters share the work evenly.
	Spread float64 `json:"spread"`
	// MasterCPUUSPerCall is each master's CPU (user + system) per call over
	// the execution window, in microseconds.
	MasterCPUUSPerCall []float64 `json:"master_cpu_us_per_call"`
}

// clusterOutput is the JSON object of a --cluster run.
type clusterOutput struct {
	Cluster     *ClusterResult `json:"cluster"`
	Machine     Machine        `json:"machine"`
	Calls       int            `json:"calls"`
	Concurrency int            `json:"concurrency"`
	Date        string         `json:"date"`
}

// setupCluster starts the cluster the --cluster phases run on.
func (h *harness) setupCluster(ctx context.Context) error {
	cl, err := redisproc.StartCluster(ctx, nil)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	h.cluster = cl
	top, err := cl.Topology(ctx)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	h.masters = top.Masters()
	h.adm = cl.Node(h.masters[0])
	h.admCluster = redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs})
	h.cres = &ClusterResult{Masters: len(h.masters), ReplicasPerMaster: len(top.ReplicasOf(h.masters[0]))}
	return nil
}

// flushCluster empties every master (their replicas follow).
func (h *harness) flushCluster(ctx context.Context) error {
	for _, m := range h.masters {
		if err := h.cluster.Node(m).FlushAll(ctx).Err(); err != nil {
			return fmt.Errorf("FLUSHALL on %s: %w", m, err)
		}
	}
	return nil
}

// masterSnaps reads each master's INFO stats and cpu.
func (h *harness) masterSnaps(ctx context.Context) ([]redisSnap, error) {
	out := make([]redisSnap, len(h.masters))
	for i, m := range h.masters {
		s, err := snapshotOf(ctx, h.cluster.Node(m))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m, err)
		}
		out[i] = s
	}
	return out, nil
}

// clusterPhase is the callq throughput phase on the cluster at shards
// queue shards: enqueue every call with no worker running, then time a
// callq worker from its start to the last completion, and read what each
// master did.
func (h *harness) clusterPhase(shards int) func(context.Context) error {
	return func(ctx context.Context) error {
		n := h.cfg.Calls
		newClient := func() *redis.ClusterClient {
			// PoolSize is per node: each master gets a worker's pool.
			return redis.NewClusterClient(&redis.ClusterOptions{Addrs: h.cluster.Addrs, PoolSize: worker.RedisPoolSize(h.cfg.Concurrency, 0)})
		}
		prod, work := newClient(), newClient()
		defer prod.Close()
		defer work.Close()
		completed, done, metrics, stopCounting, err := countFinished(n)
		if err != nil {
			return err
		}
		defer stopCounting()
		client, w, closeAll, err := h.callqPipelineSharded(prod, work, shards, metrics)
		if err != nil {
			return err
		}
		defer closeAll()

		h.up.hits.Store(0)
		before, err := h.masterSnaps(ctx)
		if err != nil {
			return err
		}
		ids, enq, err := enqueueCalls(ctx, client, n, &tasks.Call{Integration: integration, Method: http.MethodGet, Path: "/ok"})
		if err != nil {
			return err
		}
		started, err := h.masterSnaps(ctx)
		if err != nil {
			return err
		}
		t1 := time.Now()
		if err := w.Start(); err != nil {
			return err
		}
		werr := waitDone(ctx, done, func() string { return fmt.Sprintf("%d of %d calls finished", completed.Load(), n) })
		elapsed := time.Since(t1)
		after, ierr := h.masterSnaps(ctx)
		w.Shutdown()
		if werr != nil {
			return werr
		}
		if ierr != nil {
			return ierr
		}
		failed, err := h.countNotSucceeded(ctx, client, ids)
		if err != nil {
			return err
		}
		if hits := h.up.hits.Load(); hits != int64(n) || failed > 0 {
			return fmt.Errorf("%d of %d records did not succeed; the upstream received %d requests", failed, n, hits)
		}
		run := ClusterRun{QueueShards: shards, CallqPerS: float64(n) / elapsed.Seconds(), GoEnqueuePerS: float64(n) / enq.Seconds()}
		for i := range h.masters {
			// The two INFOs before the last one count in the window.
			run.MasterCmdsPerCall = append(run.MasterCmdsPerCall, float64(after[i].cmds-before[i].cmds-2)/float64(n))
			run.MasterCPUUSPerCall = append(run.MasterCPUUSPerCall, (after[i].cpu-started[i].cpu)*1e6/float64(n))
		}
		h.clusterRounds[shards] = append(h.clusterRounds[shards], run)
		h.logf("      %d queue shard(s): enqueued %d in %s, executed in %s: %.0f/s; commands per call by master %s (spread %.2f); CPU µs per call by master %s",
			shards, n, enq.Round(time.Millisecond), elapsed.Round(time.Millisecond), run.CallqPerS,
			formatList(run.MasterCmdsPerCall, 2), spread(run.MasterCmdsPerCall), formatList(run.MasterCPUUSPerCall, 0))
		return nil
	}
}

// summarizeCluster makes each shard count's run of the rounds' medians
// (each master's figures too).
func (h *harness) summarizeCluster() {
	for _, shards := range h.clusterShards() {
		runs := h.clusterRounds[shards]
		if len(runs) == 0 {
			continue
		}
		med := func(f func(ClusterRun) float64) float64 {
			v := make([]float64, len(runs))
			for i, r := range runs {
				v[i] = f(r)
			}
			return median(v)
		}
		out := ClusterRun{QueueShards: shards,
			CallqPerS:     round(med(func(r ClusterRun) float64 { return r.CallqPerS }), 0),
			GoEnqueuePerS: round(med(func(r ClusterRun) float64 { return r.GoEnqueuePerS }), 0)}
		for i := range h.masters {
			out.MasterCmdsPerCall = append(out.MasterCmdsPerCall, round(med(func(r ClusterRun) float64 { return r.MasterCmdsPerCall[i] }), 2))
			out.MasterCPUUSPerCall = append(out.MasterCPUUSPerCall, round(med(func(r ClusterRun) float64 { return r.MasterCPUUSPerCall[i] }), 0))
		}
		out.Spread = round(spread(out.MasterCmdsPerCall), 2)
		h.cres.Runs = append(h.cres.Runs, out)
	}
}

// clusterShards are the shard counts the cluster phases run: one, then the
// configured count.
func (h *harness) clusterShards() []int {
	if h.cfg.QueueShards == 1 {
		return []int{1}
	}
	return []int{1, h.cfg.QueueShards}
}

// spread is the largest of v over the smallest (0 when that is not
// positive).
func spread(v []float64) float64 {
	if len(v) == 0 || slices.Min(v) <= 0 {
		return 0
	}
	return slices.Max(v) / slices.Min(v)
}

func formatList(v []float64, places int) string {
	out := "["
	for i, x := range v {
		if i > 0 {
			out += " "
		}
		out += strconv.FormatFloat(x, 'f', places, 64)
	}
	return out + "]"
}
