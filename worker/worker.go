package worker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/flow"
	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/tasks"
)

// Config configures a Worker.
type Config struct {
	// Catalog is the integration catalog. Required.
	Catalog *tasks.Catalog
	// Records is the record store. Required.
	Records *tasks.Store
	// Credentials is the credential store. Required.
	Credentials *auth.Store
	// Keyring opens sealed credential fields. Required.
	Keyring *auth.Keyring
	// CredentialCacheTTL is how long the worker keeps a credential it read
	// (auth.Cache) instead of reading it from Redis on every attempt. A
	// change to a credential (a PUT or DELETE, an OAuth2 refresh, a reseal)
	// is announced to every worker, which drops its copy at once, so the
	// TTL only bounds how stale a copy can be if that announcement is lost
	// unnoticed. Default auth.DefaultCacheTTL (30s)
	// (CALLQ_CREDENTIAL_CACHE_TTL); CredentialCacheOff reads every time.
	CredentialCacheTTL time.Duration
	// OAuth refreshes OAuth2 tokens. Default: one over the worker's Redis,
	// Credentials and Keyring.
	OAuth *auth.OAuth
	// Concurrency is how many calls run at once. Default 50
	// (CALLQ_CONCURRENCY): calls wait on the network, not the CPU. Size the
	// Redis client's pool to match (RedisPoolSize).
	Concurrency int
	// WebhookConcurrency is how many webhook deliveries run at once, on a
	// pool of their own beside the calls' (CALLQ_WEBHOOK_CONCURRENCY): a
	// slow receiver cannot take the calls' slots, nor a backlog of calls
	// the deliveries', and the calls' dequeue never polls the webhooks
	// queue. Default: Concurrency, as deliveries wait on the network too and
	// an idle slot costs nothing. At least 1.
	WebhookConcurrency int
	// Queues maps the call queues to their priorities. Default critical=6,
	// default=3, low=1 (CALLQ_QUEUES). Webhook deliveries have their own
	// pool (WebhookConcurrency): an entry for the webhooks queue
	// (tasks.WebhookQueue), which used to set its priority among these, is
	// accepted, logged as a warning and otherwise ignored. (A Queues naming
	// only it leaves the worker running deliveries alone, as it did.)
	Queues map[string]int
	// QueueShards splits every logical queue into this many asynq queues,
	// a call's task in the one its correlation ID hashes to
	// (tasks.Sharding), so that a Redis Cluster spreads a queue's work over
	// its masters. The worker serves every shard of each of its Queues at
	// the queue's priority. Default 1 (CALLQ_QUEUE_SHARDS): each logical
	// queue is the asynq queue of its name. At most tasks.MaxQueueShards.
	// The producers must have the same.
	QueueShards int
	// PreviousQueueShards are the QueueShards the deployment ran with
	// before a change (CALLQ_PREVIOUS_QUEUE_SHARDS): the worker also serves
	// the asynq queues they named, so that calls queued before the change
	// run, and the reconciler looks for a call's task there too. Keep them
	// until those queues are empty. Default none.
	PreviousQueueShards []int
	// MaxResponseBytes bounds the response body kept, in decoded bytes.
	// Default 1 MiB (CALLQ_MAX_RESPONSE_BYTES); a longer body is cut and
	// marked truncated.
	MaxResponseBytes int64
	// TaskCheckInterval is how long an idle worker sleeps between polls for
	// new calls (and, on their own pool, deliveries): it sets idle pickup
	// latency. Default 20ms (asynq's is 1s).
	TaskCheckInterval time.Duration
	// DelayedTaskCheckInterval is how often retries and delayed calls that
	// are due are moved to their queue. Default 250ms (asynq's is 5s, which
	// would make a 1s backoff up to 6s).
	DelayedTaskCheckInterval time.Duration
	// ShutdownTimeout is the drain limit: how long Shutdown lets calls and
	// webhook deliveries in flight run, both pools at once. Calls still
	// running then are interrupted: the attempt is recorded as interrupted
	// and counts against max_attempts, and the call goes back to its queue
	// at once, or fails if that was its last attempt. A delivery still
	// running is cut off and counts as one that failed: it is redelivered
	// on WebhookSchedule. Default 30s (CALLQ_SHUTDOWN_TIMEOUT).
	ShutdownTimeout time.Duration
	// CheckRetry classifies outcomes. Default DefaultCheckRetry.
	CheckRetry CheckRetry
	// Backoff spaces retries. Default DefaultBackoff.
	Backoff Backoff
	// Logger receives one event per attempt and asynq's own logs. Default:
	// a disabled logger.
	Logger *zerolog.Logger
	// Name identifies this worker in records of lost attempts. Default
	// hostname:pid.
	Name string

	// WebhookSecrets sign completion webhooks (CALLQ_WEBHOOK_SECRET). Without
	// them a call's webhook fails to deliver, saying why.
	WebhookSecrets *auth.WebhookSecrets
	// WebhookAllowPrivate lets webhooks reach loopback, private and
	// link-local addresses (CALLQ_WEBHOOK_ALLOW_PRIVATE). Default false.
	WebhookAllowPrivate bool
	// WebhookSchedule is the wait before each redelivery; its length bounds
	// the attempts. Default DefaultWebhookSchedule() (about a day).
	WebhookSchedule []time.Duration
	// WebhookTimeout bounds one delivery. Default 15s.
	WebhookTimeout time.Duration

	// SlotLease is how long a concurrency slot (an integration's
	// concurrency key) stays taken unless renewed. A worker renews the slot
	// of each call in flight every third of it, so a long call keeps its
	// slot, while the slots of a worker that died free within SlotLease,
	// long before asynq hands its calls to another worker. Default 15s
	// (flow.DefaultLease); at least 1s.
	SlotLease time.Duration

	// Metrics receives the worker's Prometheus metrics. Default: none.
	Metrics *Metrics

	// TracerProvider makes a span of each attempt at a call and of each
	// webhook delivery, the child of the trace context the call was
	// enqueued under (tasks.TraceContext), and its traceparent goes with
	// the upstream request and the delivery. Default nil: no spans; a call
	// that came with a trace context still passes it on as it came.
	TracerProvider trace.TracerProvider

	// ReconcileInterval is how often the worker runs the reconciler
	// (Reconciler: it fails calls whose asynq task is gone, with error kind
	// lost), when it holds the fleet's lease, and how old a call must be
	// before the reconciler looks at it. Default 1m
	// (CALLQ_RECONCILE_INTERVAL); ReconcileOff keeps this worker out.
	ReconcileInterval time.Duration
}

// CredentialCacheOff, as Config.CredentialCacheTTL, makes the worker read a
// call's credential from Redis on every attempt.
const CredentialCacheOff time.Duration = -1

// ReconcileOff, as Config.ReconcileInterval, keeps a worker from running
// the reconciler. Other workers of the fleet may still run it.
const ReconcileOff time.Duration = -1

// Defaults for Config.
const (
	DefaultConcurrency              = 50
	DefaultMaxResponseBytes         = 1 << 20
	DefaultTaskCheckInterval        = 20 * time.Millisecond
	DefaultDelayedTaskCheckInterval = 250 * time.Millisecond
	DefaultShutdownTimeout          = 30 * time.Second
)

// MinSlotLease bounds Config.SlotLease: a slot is renewed every third of
// its lease, and a renewal is a Redis round trip.
const MinSlotLease = time.Second

// drainGrace is how long Shutdown waits, after the drain limit, for the
// handlers it interrupted to record their attempts (one Redis write each).
const drainGrace = 5 * time.Second

// asynqShutdownTimeout is asynq's own drain limit, set beyond reach: when it
// runs out asynq puts unfinished tasks back without raising their retry
// count, so the next run would take a first attempt's path (which reads
// nothing) and send the call again. callq enforces its own limit instead
// (Shutdown), and every way a call's task runs again after an attempt began
// raises asynq's retry count: a handler's error, or lease recovery.
const asynqShutdownTimeout = time.Duration(math.MaxInt64)

// circuitMemory is how long a worker trusts a circuit it found closed with
// no failure counted, checking it again only then (flow.CircuitsConfig):
// an opening elsewhere is heard at once, through Redis pub/sub, so this
// bounds only what a subscription that broke unnoticed could miss. It
// saves a healthy integration's calls their circuit's round trip.
const circuitMemory = time.Second

// errDrainLimit is the cause of the attempts Shutdown interrupts.
var errDrainLimit = errors.New("the worker's drain limit ran out")

func (c *Config) validate() error {
	switch {
	case c.Catalog == nil:
		return errors.New("Config.Catalog is required")
	case c.Records == nil:
		return errors.New("Config.Records is required")
	case c.Credentials == nil:
		return errors.New("Config.Credentials is required")
	case c.Keyring == nil:
		return errors.New("Config.Keyring is required")
	case c.Concurrency < 0:
		return errors.New("Config.Concurrency must not be negative")
	case c.WebhookConcurrency < 0:
		return errors.New("Config.WebhookConcurrency must be 0 (the default, as Concurrency) or at least 1")
	case c.WebhookTimeout < 0:
		return errors.New("Config.WebhookTimeout must not be negative")
	case c.MaxResponseBytes < 0:
		return errors.New("Config.MaxResponseBytes must not be negative")
	case c.ShutdownTimeout < 0:
		return errors.New("Config.ShutdownTimeout must not be negative")
	case c.SlotLease != 0 && c.SlotLease < MinSlotLease:
		return fmt.Errorf("Config.SlotLease must be 0 (the default, %s) or at least %s", flow.DefaultLease, MinSlotLease)
	case c.ReconcileInterval != ReconcileOff && (c.ReconcileInterval < 0 || c.ReconcileInterval > 0 && c.ReconcileInterval < MinReconcileInterval):
		return fmt.Errorf("Config.ReconcileInterval must be 0 (the default), at least %s, or ReconcileOff", MinReconcileInterval)
	case c.CredentialCacheTTL < 0 && c.CredentialCacheTTL != CredentialCacheOff:
		return errors.New("Config.CredentialCacheTTL must be 0 (the default), positive, or CredentialCacheOff")
	}
	for q, p := range c.Queues {
		if err := tasks.ValidQueueName(q); err != nil {
			return fmt.Errorf("Config.Queues: %w", err)
		}
		if p < 1 {
			return fmt.Errorf("Config.Queues: queue %q must have a priority of at least 1", q)
		}
	}
	return nil
}

func (c *Config) withDefaults() {
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.WebhookConcurrency == 0 {
		c.WebhookConcurrency = c.Concurrency
	}
	if len(c.Queues) == 0 {
		c.Queues = DefaultQueues()
	}
	if c.MaxResponseBytes == 0 {
		c.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if c.TaskCheckInterval == 0 {
		c.TaskCheckInterval = DefaultTaskCheckInterval
	}
	if c.DelayedTaskCheckInterval == 0 {
		c.DelayedTaskCheckInterval = DefaultDelayedTaskCheckInterval
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.CheckRetry == nil {
		c.CheckRetry = DefaultCheckRetry
	}
	if c.Backoff == nil {
		c.Backoff = DefaultBackoff
	}
	if c.Logger == nil {
		nop := zerolog.Nop()
		c.Logger = &nop
	}
	if len(c.WebhookSchedule) == 0 {
		c.WebhookSchedule = DefaultWebhookSchedule()
	}
	if c.WebhookTimeout == 0 {
		c.WebhookTimeout = DefaultWebhookTimeout
	}
	if c.Name == "" {
		c.Name = defaultName()
	}
	if c.SlotLease == 0 {
		c.SlotLease = flow.DefaultLease
	}
}

// RedisPoolSize is the connection pool a worker's Redis client needs, for
// its Config's Concurrency and WebhookConcurrency (0: the defaults, as
// Config has them): one connection for each call and each delivery in
// flight (their record writes) plus room for asynq's own loops (dequeue,
// heartbeat, forwarder, recoverer). go-redis's default, ten per CPU, makes
// calls queue for connections at a concurrency of 50 on two cores, and the
// dequeue loop with them: measured with callq bench, calls/s rose by half
// once the pool fit the concurrency. go-redis opens connections as they
// are needed, so the room kept for idle delivery slots costs nothing.
func RedisPoolSize(concurrency, webhookConcurrency int) int {
	if concurrency == 0 {
		concurrency = DefaultConcurrency
	}
	if webhookConcurrency == 0 {
		webhookConcurrency = concurrency
	}
	return max(10*runtime.GOMAXPROCS(0), concurrency+webhookConcurrency+20)
}

// Worker executes calls from Redis and delivers their webhooks.
type Worker struct {
	cfg Config
	// srv runs the calls, from the call queues only (nil when Queues named
	// only the webhooks queue); hooksSrv runs the deliveries, from the
	// webhooks queue only, on slots of their own (WebhookConcurrency). Both
	// share the Redis client, the handlers and the drain.
	srv      *asynq.Server
	hooksSrv *asynq.Server
	// ends is the calls server's Redis client, which answers asynq's Done
	// of a task whose terminal write ended it (finish).
	ends   *taskEnds
	queue  *asynq.Client
	shards *tasks.Sharding // nil: one asynq queue per logical queue
	// served are the asynq queues the worker serves, both servers', by
	// name.
	served    map[string]int
	inspector *asynq.Inspector
	log       zerolog.Logger
	clients   map[string]*http.Client
	hooks     *http.Client
	limiter   *redis_rate.Limiter
	slots     *flow.Slots
	// circuits keeps the circuit breakers' state; watchCircuits listens for
	// their openings (Circuits.Watch) from Start to Shutdown, when an
	// integration has a breaker.
	circuits      *flow.Circuits
	watchCircuits bool
	stopWatch     context.CancelFunc
	watchDone     chan struct{}
	// tracer makes the spans of attempts and deliveries: a no-op one
	// when TracerProvider is nil (tracing), which passes on the trace
	// context a call came with and records nothing.
	tracer  trace.Tracer
	tracing bool
	// gates are each integration's gates (gatesFor), built once: most
	// integrations have none.
	gates map[string][]gate
	// drain ends when Shutdown's drain limit runs out; every handler's
	// context ends with it (attemptContext).
	drain        context.Context
	stopHandlers context.CancelCauseFunc
	// creds reads calls' credentials: credCache, or without it the store.
	// credCache follows the fleet's credential changes (Cache.Watch) from
	// Start to Shutdown, and keeps nothing outside that.
	creds         credentialReader
	credCache     *auth.Cache
	stopCredWatch context.CancelFunc
	credWatchDone chan struct{}
	// reconciler runs from Start to Shutdown, unless ReconcileOff.
	reconciler     *Reconciler
	stopReconciler context.CancelFunc
	reconcilerDone chan struct{}
	// runners run the call handlers of a started worker (ProcessCall).
	runners *runners
}

// credentialReader reads a call's credential: *auth.Cache or *auth.Store.
type credentialReader interface {
	Get(ctx context.Context, tenant, ref string) (*auth.Credential, error)
}

// New returns a Worker over rdb. It does not start it.
func New(rdb redis.UniversalClient, cfg *Config) (*Worker, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	c := *cfg
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	c.withDefaults()
	shards, err := tasks.NewSharding(c.QueueShards, c.PreviousQueueShards, "Config.QueueShards")
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	if c.OAuth == nil {
		o, err := auth.NewOAuth(rdb, &auth.OAuthConfig{Store: c.Credentials, Keyring: c.Keyring})
		if err != nil {
			return nil, fmt.Errorf("worker: %w", err)
		}
		c.OAuth = o
	}
	log := c.Logger.With().Str("component", "worker").Logger()
	if p, ok := c.Queues[tasks.WebhookQueue]; ok {
		// It set the webhooks queue's priority among the call queues once:
		// refusing it now would stop deployments that still carry it.
		log.Warn().Str("queue", tasks.WebhookQueue).Int("priority", p).
			Msg("Config.Queues (CALLQ_QUEUES) names the webhooks queue, which no longer sets anything: webhook deliveries run on their own pool, sized by CALLQ_WEBHOOK_CONCURRENCY; drop the entry")
		c.Queues = maps.Clone(c.Queues)
		delete(c.Queues, tasks.WebhookQueue)
	}
	w := &Worker{cfg: c, log: log, clients: map[string]*http.Client{}, gates: map[string][]gate{}, shards: shards}
	w.tracer, w.tracing = noop.NewTracerProvider().Tracer(""), c.TracerProvider != nil
	if w.tracing {
		w.tracer = c.TracerProvider.Tracer("github.com/callq/callq/worker")
	}
	w.drain, w.stopHandlers = context.WithCancelCause(context.Background())
	slots, err := flow.NewSlots(rdb, &flow.SlotsConfig{Lease: c.SlotLease, Holder: c.Name})
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	w.slots = slots
	want := RedisPoolSize(c.Concurrency, c.WebhookConcurrency)
	if o, ok := rdb.(interface{ Options() *redis.Options }); ok && o.Options().PoolSize < want {
		w.log.Warn().Int("pool_size", o.Options().PoolSize).Int("want", want).
			Msg("the Redis pool is smaller than the worker's concurrency needs; calls will wait for connections (see worker.RedisPoolSize)")
	}
	for _, in := range c.Catalog.All() {
		client, err := newHTTPClient(in, c.Concurrency)
		if err != nil {
			return nil, fmt.Errorf("worker: integration %q: %w", in.Name, err)
		}
		w.clients[in.Name] = client
		if g := w.gatesFor(in); len(g) > 0 {
			w.gates[in.Name] = g
		}
		if in.CircuitBreaker != nil {
			c.Metrics.circuitBreaker(in.Name)
			w.watchCircuits = true
		}
	}
	if c.ReconcileInterval != ReconcileOff {
		r, err := NewReconciler(rdb, &ReconcilerConfig{Records: c.Records, Interval: c.ReconcileInterval,
			Name: c.Name, Logger: c.Logger, Metrics: c.Metrics,
			QueueShards: c.QueueShards, PreviousQueueShards: c.PreviousQueueShards})
		if err != nil {
			return nil, err
		}
		w.reconciler = r
	}
	w.creds = c.Credentials
	if c.CredentialCacheTTL != CredentialCacheOff {
		cache, err := auth.NewCache(c.Credentials, &auth.CacheConfig{TTL: c.CredentialCacheTTL})
		if err != nil {
			return nil, fmt.Errorf("worker: %w", err)
		}
		w.creds, w.credCache = cache, cache
	}
	w.hooks = newWebhookClient(c.WebhookAllowPrivate)
	w.limiter = redis_rate.NewLimiter(rdb)
	w.circuits = flow.NewCircuits(rdb, &flow.CircuitsConfig{Remember: circuitMemory})
	w.queue = asynq.NewClientFromRedisClient(rdb)
	w.inspector = asynq.NewInspectorFromRedisClient(rdb)
	calls := shards.Expand(c.Queues)
	// The webhooks queue's shards (every count's, as for a call queue), at
	// one weight: the delivery server serves nothing else.
	hooks := shards.Expand(map[string]int{tasks.WebhookQueue: 1})
	w.served = maps.Clone(hooks)
	maps.Copy(w.served, calls)
	if len(calls) > 0 {
		w.ends = newTaskEnds(rdb)
		var client redis.UniversalClient = w.ends
		if _, cluster := rdb.(*redis.ClusterClient); !cluster {
			client = newQueueProbes(w.ends, calls)
		}
		w.srv = w.newServer(client, c.Concurrency, calls, "calls")
	}
	w.hooksSrv = w.newServer(rdb, c.WebhookConcurrency, hooks, "webhooks")
	return w, nil
}

// newServer is an asynq server of the worker's over rdb, serving queues
// with n slots, its logs marked with name. Calls and deliveries alike: they
// poll at TaskCheckInterval, their retries come due at
// DelayedTaskCheckInterval, the handler chooses each retry's wait
// (retryDelay: a delivery's from WebhookSchedule), and Shutdown, not asynq,
// bounds the drain.
func (w *Worker) newServer(rdb redis.UniversalClient, n int, queues map[string]int, name string) *asynq.Server {
	log := w.cfg.Logger.With().Str("asynq_server", name).Logger()
	return asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:              n,
		Queues:                   queues,
		TaskCheckInterval:        w.cfg.TaskCheckInterval,
		DelayedTaskCheckInterval: w.cfg.DelayedTaskCheckInterval,
		ShutdownTimeout:          asynqShutdownTimeout,
		RetryDelayFunc:           retryDelay,
		IsFailure:                isFailure,
		Logger:                   NewAsynqLogger(&log),
		LogLevel:                 asynqLevel(log.GetLevel()),
	})
}

// servers are the worker's asynq servers: the calls' (unless it has no
// call queue) and the deliveries'.
func (w *Worker) servers() []*asynq.Server {
	if w.srv == nil {
		return []*asynq.Server{w.hooksSrv}
	}
	return []*asynq.Server{w.srv, w.hooksSrv}
}

// Start begins processing calls and deliveries in the background, and the
// reconciler. If a server does not start, those started are shut down.
func (w *Worker) Start() error {
	// One mux for both servers: a task runs as its type says, whichever
	// queue it was found in, as when one server served every queue.
	mux := asynq.NewServeMux()
	mux.HandleFunc(tasks.TypeCall, w.ProcessCall)
	mux.HandleFunc(tasks.TypeWebhook, w.ProcessWebhook)
	// As many runners as both servers run handlers: a call task found in
	// the webhooks queue (an old CALLQ_QUEUES entry let producers send
	// calls there) runs on the delivery server.
	w.runners = startRunners(w.cfg.Concurrency+w.cfg.WebhookConcurrency, w.processCall)
	for i, srv := range w.servers() {
		if err := srv.Start(mux); err != nil {
			if w.drainServers(w.servers()[:i]) {
				w.runners.stop()
			}
			return err
		}
	}
	if w.watchCircuits {
		ctx, cancel := context.WithCancel(context.Background())
		w.stopWatch, w.watchDone = cancel, make(chan struct{})
		go func() {
			defer close(w.watchDone)
			w.circuits.Watch(ctx)
		}()
	}
	if w.credCache != nil {
		ctx, cancel := context.WithCancel(context.Background())
		w.stopCredWatch, w.credWatchDone = cancel, make(chan struct{})
		go func() {
			defer close(w.credWatchDone)
			w.credCache.Watch(ctx)
		}()
	}
	w.checkQueues()
	if w.reconciler != nil {
		ctx, cancel := context.WithCancel(context.Background())
		w.stopReconciler, w.reconcilerDone = cancel, make(chan struct{})
		go func() {
			defer close(w.reconcilerDone)
			w.reconciler.Run(ctx)
		}()
	}
	return nil
}

// checkQueues looks, once at start, at the asynq queues Redis knows of that
// belong to the worker's queues (the webhooks queue too) under another
// shard count (see Config.QueueShards). One that this worker does not serve and that holds
// calls is logged as a warning: a change of CALLQ_QUEUE_SHARDS without
// CALLQ_PREVIOUS_QUEUE_SHARDS strands them (and the reconciler would fail
// them as lost). A previous count whose queues are all empty is logged too:
// the setting can drop it. It costs a read of asynq's set of queues, and a
// read of each such queue; on a deployment that never changed its count,
// the set holds none.
func (w *Worker) checkQueues() {
	names, err := w.inspector.Queues()
	if err != nil {
		w.log.Debug().Err(err).Msg("could not list asynq's queues to look for calls left under another shard count")
		return
	}
	live := map[string]int{} // asynq queue of another count -> its tasks still to run
	mine := slices.AppendSeq([]string{tasks.WebhookQueue}, maps.Keys(w.cfg.Queues))
	for _, name := range names {
		q := rediskeys.LogicalQueue(name)
		if !slices.Contains(mine, q) || slices.Contains(w.shards.Names(q), name) {
			continue // another pool's queue, or one of the current count
		}
		info, err := w.inspector.GetQueueInfo(name)
		if err != nil {
			continue
		}
		live[name] = info.Pending + info.Active + info.Scheduled + info.Retry
		if _, served := w.served[name]; !served && live[name] > 0 {
			w.log.Warn().Str("asynq_queue", name).Int("tasks", live[name]).Stringer("queue_shards", w.shards).
				Msg("an asynq queue of another queue shard count holds calls this worker does not serve; add that count to CALLQ_PREVIOUS_QUEUE_SHARDS until the queue is empty")
		}
	}
	for _, n := range w.shards.Previous() {
		left := 0
		for _, q := range mine {
			for k := range n {
				left += live[rediskeys.QueueShard(q, k, n)]
			}
		}
		ev := w.log.Info().Int("previous_queue_shards", n).Int("tasks", left)
		if left == 0 {
			ev.Msg("the asynq queues of a previous queue shard count are empty: CALLQ_PREVIOUS_QUEUE_SHARDS can drop it")
		} else {
			ev.Msg("the asynq queues of a previous queue shard count still hold calls: keep it in CALLQ_PREVIOUS_QUEUE_SHARDS")
		}
	}
}

// Shutdown stops taking calls and deliveries and lets those in flight run
// up to ShutdownTimeout, both pools draining at once. Then it interrupts
// the rest: each call records its attempt as interrupted and returns an
// error, so asynq raises the task's retry count and another worker takes it
// up at once (or the call fails, if that was its last attempt); a delivery
// cut off is redelivered on the webhook schedule. Shutdown returns when
// every handler has returned, so the caller may close Redis, or drainGrace
// after the limit: a handler still running then (Redis too slow to take its
// write) keeps its task, which asynq's lease recovery hands to another
// worker once this process has exited, raising the retry count too. The
// reconciler stops with the rest, releasing its lease.
func (w *Worker) Shutdown() {
	if w.stopCredWatch != nil {
		defer func() { w.stopCredWatch(); <-w.credWatchDone }()
	}
	if w.stopWatch != nil {
		defer func() { w.stopWatch(); <-w.watchDone }()
	}
	if w.stopReconciler != nil {
		w.stopReconciler()
		// Its run stops at the next call it checks (or Redis's timeouts).
		defer func() { <-w.reconcilerDone }()
	}
	if w.drainServers(w.servers()) && w.runners != nil {
		w.runners.stop() // no handler runs any more
	}
	// The kept-alive connections to upstreams and receivers would
	// otherwise outlive the worker (a process that starts workers again,
	// as tests and callq bench do, would pile them up).
	for _, c := range w.clients {
		c.CloseIdleConnections()
	}
	w.hooks.CloseIdleConnections()
}

// drainServers shuts srvs down at once, under one drain limit: a handler
// still running when it runs out, call or delivery, is interrupted
// (attemptContext). It returns when every handler has returned, or
// drainGrace after the limit; it says whether every handler returned.
func (w *Worker) drainServers(srvs []*asynq.Server) bool {
	limit := time.AfterFunc(w.cfg.ShutdownTimeout, func() { w.stopHandlers(errDrainLimit) })
	defer limit.Stop()
	var wg sync.WaitGroup
	for _, srv := range srvs {
		wg.Go(srv.Shutdown)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(w.cfg.ShutdownTimeout + drainGrace):
		w.log.Warn().Int64("drain_limit_ms", w.cfg.ShutdownTimeout.Milliseconds()).
			Msg("handlers still running after the drain limit and grace; their calls and deliveries are left to asynq's lease recovery")
		return false
	}
}

// attemptContext is the context a handler runs under: asynq's, ended also
// by Shutdown's drain limit, with errDrainLimit as its cause. asynq's own
// context is not canceled, so asynq waits for the handler's error rather
// than retrying the task while the handler still records its attempt.
func (w *Worker) attemptContext(ctx context.Context) (context.Context, context.CancelFunc) {
	actx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(w.drain, func() { cancel(context.Cause(w.drain)) })
	return actx, func() { stop(); cancel(nil) }
}

// Run starts the worker and shuts it down when ctx ends.
func (w *Worker) Run(ctx context.Context) error {
	if err := w.Start(); err != nil {
		return err
	}
	<-ctx.Done()
	w.Shutdown()
	return nil
}

// newHTTPClient builds the client of one integration: its own keep-alive
// pool sized to the worker's concurrency, its TLS settings, and no redirect
// following, so credentials never reach another origin and a 3xx is the
// call's result.
func newHTTPClient(in *tasks.Integration, concurrency int) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 0
	tr.MaxIdleConnsPerHost = concurrency
	tr.IdleConnTimeout = 90 * time.Second
	// readResponse decodes Content-Encoding itself, before it redacts: the
	// transport's gzip would stop at any encoding it did not ask for.
	tr.DisableCompression = true
	tr.DialContext = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	if in.TLS.CAFile != "" || in.TLS.InsecureSkipVerify {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: in.TLS.InsecureSkipVerify} //nolint:gosec // opted into per integration
		if in.TLS.CAFile != "" {
			pool, err := x509.SystemCertPool()
			if err != nil {
				pool = x509.NewCertPool()
			}
			pem, err := os.ReadFile(in.TLS.CAFile)
			if err != nil {
				return nil, fmt.Errorf("read tls.ca_file: %w", err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("tls.ca_file %s holds no PEM certificate", in.TLS.CAFile)
			}
			tc.RootCAs = pool
		}
		tr.TLSClientConfig = tc
	}
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}

// retryError carries the wait the handler chose (backoff or Retry-After) to
// asynq's RetryDelayFunc.
type retryError struct {
	delay time.Duration
	err   error
}

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }

// heldBack puts a call back until a gate lets it go (a fleet-wide rate
// limit, say), without spending a retry: asynq raises a task's retry count
// only for errors isFailure calls failures.
type heldBack struct {
	delay time.Duration
	note  string // why, for the record and the log
}

func (e *heldBack) Error() string {
	return fmt.Sprintf("%s; next try in %s", e.note, e.delay)
}

// isFailure tells asynq which errors spend a retry: all but a hold.
func isFailure(err error) bool {
	var h *heldBack
	return !errors.As(err, &h)
}

func retryDelay(n int, err error, t *asynq.Task) time.Duration {
	var re *retryError
	if errors.As(err, &re) {
		return re.delay // zero for an interrupted attempt: at once
	}
	var h *heldBack
	if errors.As(err, &h) {
		return h.delay
	}
	// Errors before an attempt (Redis unreachable, say): a short, growing wait.
	return min(time.Duration(n+1)*time.Second, 30*time.Second)
}
