package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/redisproc"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

const (
	tenant      = "bench"
	integration = "bench"
	// credIntegration is integration with a bearer credential, credRef,
	// holding the harness's token.
	credIntegration = "bench-cred"
	credRef         = "bench"
	// tokenEnv is the environment variable the asynq + net/http baseline
	// reads the same token from, on each call: it pays no Redis read.
	tokenEnv  = "CALLQ_BENCH_TOKEN"
	enqueuers = 32 // goroutines (or HTTP clients) that enqueue
	queue     = tasks.DefaultQueue
)

// Defaults for Config; Concurrency defaults to worker.DefaultConcurrency,
// callq's own.
const (
	DefaultCalls         = 20000
	DefaultRounds        = 1
	DefaultHTTPRequests  = 10000
	DefaultWaitSamples   = 200
	DefaultPickupSamples = 100
	DefaultListRecords   = 100000
	DefaultListSamples   = 500
)

// Config says how much Run measures. A zero field takes its default.
type Config struct {
	// Calls is the number of calls in each throughput phase.
	Calls int
	// Concurrency is the worker concurrency, the same for asynq and callq.
	Concurrency int
	// Rounds runs the three throughput phases this many times, interleaved;
	// the report gives medians.
	Rounds int
	// HTTPRequests is the number of POST /v1/calls requests in the HTTP
	// enqueue phase; at most Calls.
	HTTPRequests int
	// WaitSamples is the number of calls in the Wait latency phase.
	WaitSamples int
	// PickupSamples is the number of calls in the idle pickup phase.
	PickupSamples int
	// ListRecords is the number of records the bench tenant holds in the
	// list phase.
	ListRecords int
	// ListSamples is the number of GET /v1/calls requests timed in the
	// list phase.
	ListSamples int
	// CPUProfile, when set, is the file that receives a CPU profile of the
	// first callq throughput phase, from the worker's start to the last
	// record.
	CPUProfile string
	// Cluster runs only the callq throughput phase, on a local Redis
	// Cluster of 3 masters with a replica each (redisproc.StartCluster),
	// once with one asynq queue per logical queue and once with
	// QueueShards, and reports each master's commands (Report.Cluster).
	Cluster bool
	// QueueShards is the shard count of the Cluster run's second phase.
	// Default DefaultClusterQueueShards (6); 1 runs only the first.
	QueueShards int
	// Scaling runs only the scaling phases (Report.Scaling): asynq +
	// net/http and callq at each of ScalingConcurrencies with the small
	// body, then at Concurrency with each of ScalingBodies.
	Scaling bool
	// Progress receives a line per phase. Default: none.
	Progress io.Writer
}

func (c *Config) withDefaults() error {
	for _, f := range []struct {
		name string
		v    *int
		def  int
	}{
		{"Calls", &c.Calls, DefaultCalls},
		{"Concurrency", &c.Concurrency, worker.DefaultConcurrency},
		{"Rounds", &c.Rounds, DefaultRounds},
		{"HTTPRequests", &c.HTTPRequests, DefaultHTTPRequests},
		{"WaitSamples", &c.WaitSamples, DefaultWaitSamples},
		{"PickupSamples", &c.PickupSamples, DefaultPickupSamples},
		{"ListRecords", &c.ListRecords, DefaultListRecords},
		{"ListSamples", &c.ListSamples, DefaultListSamples},
		{"QueueShards", &c.QueueShards, DefaultClusterQueueShards},
	} {
		if *f.v < 0 {
			return fmt.Errorf("bench: Config.%s must not be negative", f.name)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	c.HTTPRequests = min(c.HTTPRequests, c.Calls)
	if c.QueueShards > tasks.MaxQueueShards {
		return fmt.Errorf("bench: Config.QueueShards must be at most %d", tasks.MaxQueueShards)
	}
	if c.Cluster && c.Scaling {
		return errors.New("bench: Config.Cluster and Config.Scaling are separate runs: set one")
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	return nil
}

// Run measures callq beside raw asynq on this machine, in one run, on a
// redis-server it starts on a free port (FLUSHALL between phases) and a
// local upstream in this process. It needs redis-server on the PATH. With
// Config.Cluster it runs the callq throughput phase on a local Redis
// Cluster instead, which also needs redis-cli.
func Run(ctx context.Context, cfg *Config) (*Report, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if err := c.withDefaults(); err != nil {
		return nil, err
	}
	h := &harness{cfg: c, progress: c.Progress, clusterRounds: map[int][]ClusterRun{}, scalingRounds: map[scalingSetting]*scalingRounds{}}
	if err := h.setup(ctx); err != nil {
		h.close()
		return nil, err
	}
	err := h.run(ctx)
	h.close()
	if err != nil {
		return nil, err
	}
	return &Report{Result: h.res, Cluster: h.cres, Scaling: h.sres, notes: h.notes, rounds: h.rounds, nRounds: c.Rounds}, nil
}

// harness runs the phases and collects their figures.
type harness struct {
	cfg      Config
	progress io.Writer
	// With Config.Scaling: each setting's rounds, then the result.
	scalingRounds map[scalingSetting]*scalingRounds
	sres          *ScalingResult
	res           Result
	notes         notes
	rounds        rounds

	redis *redisproc.Server
	adm   *redis.Client // FLUSHALL, INFO, completion counting, checks: never counted as the system's

	// With Config.Cluster: the cluster, its masters by address, a client
	// of the harness's own over it (completions), and each shard count's
	// runs.
	cluster       *redisproc.Cluster
	masters       []string
	admCluster    *redis.ClusterClient
	clusterRounds map[int][]ClusterRun
	cres          *ClusterResult

	up      *upstream
	token   string // the bearer of credIntegration's calls
	catalog *tasks.Catalog
	keyring *auth.Keyring
	nop     zerolog.Logger
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(h.progress, format+"\n", args...)
}

func (h *harness) setup(ctx context.Context) error {
	h.nop = zerolog.Nop()
	where := ""
	if h.cfg.Cluster {
		if err := h.setupCluster(ctx); err != nil {
			return err
		}
		where = fmt.Sprintf("a cluster of %d masters with %d replica(s) each (%s)", h.cres.Masters, h.cres.ReplicasPerMaster, strings.Join(h.masters, " "))
	} else {
		srv, err := redisproc.Start(nil)
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		h.redis = srv
		h.adm = redis.NewClient(&redis.Options{Addr: srv.Addr})
		where = srv.Addr
	}
	info, err := h.adm.Info(ctx, "server").Result()
	if err != nil {
		return fmt.Errorf("bench: redis INFO: %w", err)
	}
	if h.token, err = auth.GenerateKey(); err != nil { // 32 random bytes, as a token
		return err
	}
	if err := os.Setenv(tokenEnv, h.token); err != nil {
		return err
	}
	if h.up, err = startUpstream(h.token); err != nil {
		return err
	}
	h.catalog, err = tasks.ParseCatalog(fmt.Appendf(nil, `
integrations:
  %[1]s:
    base_url: %[3]s
    timeout: %[4]s
  %[2]s:
    base_url: %[3]s
    timeout: %[4]s
    auth: {type: bearer}
`, integration, credIntegration, h.up.url, tasks.DefaultTimeout))
	if err != nil {
		return fmt.Errorf("bench: catalog: %w", err)
	}
	key, err := auth.GenerateKey()
	if err != nil {
		return err
	}
	if h.keyring, err = auth.ParseKeyring(key); err != nil {
		return err
	}
	h.res.Machine = Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), Redis: redisInfoField(info, "redis_version")}
	h.res.Calls, h.res.Concurrency = h.cfg.Calls, h.cfg.Concurrency
	h.res.Date = time.Now().UTC().Format(time.RFC3339)
	h.logf("callq bench: %d calls, concurrency %d, %d cores, %s, redis %s on %s, upstream %s",
		h.cfg.Calls, h.cfg.Concurrency, h.res.Machine.Cores, h.res.Machine.Go, h.res.Machine.Redis, where, h.up.url)
	return nil
}

func (h *harness) close() {
	if h.up != nil {
		h.up.close()
	}
	if h.adm != nil && h.cluster == nil { // the cluster's node clients are its own
		_ = h.adm.Close()
	}
	if h.admCluster != nil {
		_ = h.admCluster.Close()
	}
	if h.cluster != nil {
		if err := h.cluster.Stop(); err != nil {
			h.logf("bench: stopping the cluster: %v", err)
		}
	}
	if h.redis != nil {
		if err := h.redis.Stop(); err != nil {
			h.logf("bench: stopping redis-server: %v", err)
		}
	}
}

func (h *harness) run(ctx context.Context) error {
	start := time.Now()
	type phase struct {
		name string
		fn   func(context.Context) error
	}
	var phases []phase
	for r := range h.cfg.Rounds {
		suffix := ""
		if h.cfg.Rounds > 1 {
			suffix = fmt.Sprintf(", round %d of %d", r+1, h.cfg.Rounds)
		}
		if h.cfg.Cluster {
			for _, shards := range h.clusterShards() {
				phases = append(phases, phase{fmt.Sprintf("callq on the cluster, %d queue shard(s)%s", shards, suffix), h.clusterPhase(shards)})
			}
			continue
		}
		if h.cfg.Scaling {
			for _, s := range h.scalingSettings() {
				phases = append(phases,
					phase{fmt.Sprintf("asynq + net/http, %s%s", s, suffix), h.scalingPhase(s, false)},
					phase{fmt.Sprintf("callq, %s%s", s, suffix), h.scalingPhase(s, true)})
			}
			continue
		}
		phases = append(phases,
			phase{"asynq no-op" + suffix, h.phaseAsynqNoop},
			phase{"asynq + net/http" + suffix, h.phaseAsynqHTTP},
			phase{"callq" + suffix, h.phaseCallq},
			phase{"asynq + net/http, bearer token from the environment" + suffix, h.phaseAsynqHTTPCred},
			phase{"callq, bearer credential" + suffix, h.phaseCallqCred})
	}
	if !h.cfg.Cluster && !h.cfg.Scaling {
		phases = append(phases,
			phase{"HTTP enqueue", h.phaseHTTPEnqueue},
			phase{"Wait latency and idle pickup", h.phaseLatency},
			phase{fmt.Sprintf("List: %d records, GET /v1/calls?status=failed&limit=50", h.cfg.ListRecords), h.phaseList})
	}
	for i, p := range phases {
		if err := ctx.Err(); err != nil {
			return err
		}
		flush := func(ctx context.Context) error { return h.adm.FlushAll(ctx).Err() }
		if h.cluster != nil {
			flush = h.flushCluster
		}
		if err := flush(ctx); err != nil {
			return fmt.Errorf("bench: FLUSHALL: %w", err)
		}
		h.logf("[%d/%d] %s", i+1, len(phases), p.name)
		if err := p.fn(ctx); err != nil {
			return fmt.Errorf("bench: %s: %w", p.name, err)
		}
	}
	switch {
	case h.cfg.Cluster:
		h.summarizeCluster()
	case h.cfg.Scaling:
		h.summarizeScaling()
	default:
		h.summarize()
	}
	h.notes.elapsed = time.Since(start)
	h.logf("callq bench: done in %s", h.notes.elapsed.Round(100*time.Millisecond))
	return nil
}

// newClient is a go-redis client sized as callq sizes a worker's
// (worker.RedisPoolSize, deliveries at their default), for every phase
// alike, counting the commands it sends into n.
func (h *harness) newClient(n *atomic.Int64) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: h.redis.Addr, PoolSize: worker.RedisPoolSize(h.cfg.Concurrency, 0)})
	if n != nil {
		c.AddHook(cmdCounter{n: n})
	}
	return c
}
