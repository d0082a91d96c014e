package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

// env returns the environment variable name, or def.
func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// serverConfig is what callq api, worker and dev read from flags and env.
type serverConfig struct {
	redisURL         string
	integrations     string
	secretKey        string
	apiAddr          string
	concurrency      int
	queues           string
	resultTTL        time.Duration
	maxRequestBytes  int64
	maxResponseBytes int64
	logLevel         string
	logFormat        string
	webhookSecret    string
	webhookPrivate   bool
	webhookSchedule  string
	metricsAddr      string
	sourceRefs       bool
	sourceDirs       string
	shutdownTimeout  time.Duration
	credCacheTTL     time.Duration
	reconcile        reconcileInterval
	scheduler        onOff
	queueShards      queueShards
	previousShards   shardCounts
	envErrs          []error // malformed environment values, reported by envError
}

func (c *serverConfig) flags(fs *flag.FlagSet, defIntegrations string) {
	fs.StringVar(&c.redisURL, "redis-url", env("REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis URL: redis://, rediss:// or redis-sentinel:// (REDIS_URL)")
	// The usage text shows a flag's default, here REDIS_URL's value: never
	// its password (a typo in a unit file's flags prints the usage).
	fs.Lookup("redis-url").DefValue = redactURL(c.redisURL)
	fs.StringVar(&c.integrations, "integrations", env("CALLQ_INTEGRATIONS", defIntegrations), "integration catalog file (CALLQ_INTEGRATIONS)")
	fs.StringVar(&c.apiAddr, "addr", env("CALLQ_API_ADDR", ":8080"), "API listen address (CALLQ_API_ADDR)")
	fs.IntVar(&c.concurrency, "concurrency", c.envInt("CALLQ_CONCURRENCY", worker.DefaultConcurrency), "calls a worker runs at once (CALLQ_CONCURRENCY)")
	fs.StringVar(&c.queues, "queues", env("CALLQ_QUEUES", worker.FormatQueues(worker.DefaultQueues())), "queues and priorities (CALLQ_QUEUES)")
	fs.DurationVar(&c.resultTTL, "result-ttl", c.envDuration("CALLQ_RESULT_TTL", tasks.DefaultResultTTL), "how long records live after a call finishes (CALLQ_RESULT_TTL)")
	fs.Int64Var(&c.maxRequestBytes, "max-request-bytes", int64(c.envInt("CALLQ_MAX_REQUEST_BYTES", tasks.DefaultMaxRequestBytes)), "largest request body a call may carry (CALLQ_MAX_REQUEST_BYTES)")
	fs.Int64Var(&c.maxResponseBytes, "max-response-bytes", int64(c.envInt("CALLQ_MAX_RESPONSE_BYTES", worker.DefaultMaxResponseBytes)), "response body bytes kept (CALLQ_MAX_RESPONSE_BYTES)")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", c.envDuration("CALLQ_SHUTDOWN_TIMEOUT", worker.DefaultShutdownTimeout), "worker: on SIGTERM, how long calls in flight may run before they are interrupted (CALLQ_SHUTDOWN_TIMEOUT)")
	fs.DurationVar(&c.credCacheTTL, "credential-cache-ttl", envValue(c, "CALLQ_CREDENTIAL_CACHE_TTL", auth.DefaultCacheTTL, parseCacheTTL, cacheTTLWant), "worker: how long a credential read stays in memory at most; a change is announced to every worker at once, this bounds a lost announcement; 0: read every attempt's from Redis (CALLQ_CREDENTIAL_CACHE_TTL)")
	c.reconcile = reconcileInterval(envValue(c, "CALLQ_RECONCILE_INTERVAL", worker.DefaultReconcileInterval, parseReconcileInterval, reconcileWant))
	fs.Var(&c.reconcile, "reconcile-interval", "worker: how often the fleet's reconciler fails calls whose asynq task is gone, and how old they must be; off: this worker never runs it (CALLQ_RECONCILE_INTERVAL)")
	c.queueShards = queueShards(envValue(c, "CALLQ_QUEUE_SHARDS", 1, parseQueueShards, queueShardsWant))
	fs.Var(&c.queueShards, "queue-shards", "split each queue into this many asynq queues, so that a Redis Cluster spreads it over its masters; the same for the API and every worker (CALLQ_QUEUE_SHARDS)")
	c.previousShards = shardCounts(envValue(c, "CALLQ_PREVIOUS_QUEUE_SHARDS", nil, parseShardCounts, shardCountsWant))
	fs.Var(&c.previousShards, "previous-queue-shards", "the queue shard counts used before a change, comma-separated: their queues are still served and searched until empty (CALLQ_PREVIOUS_QUEUE_SHARDS)")
	c.scheduler = onOff(envValue(c, "CALLQ_SCHEDULER", true, parseOnOff, "on or off"))
	fs.Var(&c.scheduler, "scheduler", "worker and dev: on: this process may be the fleet's scheduler, which fires the schedules (one process at a time); off: never (CALLQ_SCHEDULER)")
	fs.StringVar(&c.logLevel, "log-level", env("CALLQ_LOG_LEVEL", "info"), "debug, info, warn or error (CALLQ_LOG_LEVEL)")
	fs.StringVar(&c.logFormat, "log-format", env("CALLQ_LOG_FORMAT", "json"), "json or console (CALLQ_LOG_FORMAT)")
	fs.BoolVar(&c.webhookPrivate, "webhook-allow-private", c.envBool("CALLQ_WEBHOOK_ALLOW_PRIVATE"), "let webhooks reach loopback, private and link-local addresses (CALLQ_WEBHOOK_ALLOW_PRIVATE)")
	fs.StringVar(&c.webhookSchedule, "webhook-schedule", os.Getenv("CALLQ_WEBHOOK_SCHEDULE"), "waits before webhook redeliveries, e.g. 5s,30s,2m (CALLQ_WEBHOOK_SCHEDULE; default about a day)")
	fs.StringVar(&c.metricsAddr, "metrics-addr", os.Getenv("CALLQ_METRICS_ADDR"), "worker: serve Prometheus /metrics here, e.g. :9090 (CALLQ_METRICS_ADDR; default off; the API serves /metrics on its own address)")
	fs.BoolVar(&c.sourceRefs, "allow-source-refs", c.envBool("CALLQ_ALLOW_SOURCE_REFS"), "let admin keys store env: and file: credential values (CALLQ_ALLOW_SOURCE_REFS; only when every admin is the operator)")
	fs.StringVar(&c.sourceDirs, "source-dirs", os.Getenv("CALLQ_SOURCE_DIRS"), "the only directories file: credential values may read, comma- or colon-separated (CALLQ_SOURCE_DIRS; default any outside /proc, /sys and /dev)")
	c.secretKey = os.Getenv("CALLQ_SECRET_KEY")
	c.webhookSecret = os.Getenv("CALLQ_WEBHOOK_SECRET")
}

// parseSchedule reads "5s,30s,2m".
func parseSchedule(s string) ([]time.Duration, error) {
	if s == "" {
		return nil, nil
	}
	var out []time.Duration
	for part := range strings.SplitSeq(s, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(part))
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("CALLQ_WEBHOOK_SCHEDULE: %q is not a positive duration", part)
		}
		out = append(out, d)
	}
	return out, nil
}

// cacheTTLWant is what CALLQ_CREDENTIAL_CACHE_TTL takes.
const cacheTTLWant = "a duration of 0 (no cache) or more, such as 30s"

func parseCacheTTL(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not %s", s, cacheTTLWant)
	}
	return d, nil
}

// reconcileInterval is CALLQ_RECONCILE_INTERVAL: a duration of at least
// worker.MinReconcileInterval, or worker.ReconcileOff, written "off".
type reconcileInterval time.Duration

var reconcileWant = fmt.Sprintf("a duration of at least %s such as 1m, or off", worker.MinReconcileInterval)

func parseReconcileInterval(s string) (time.Duration, error) {
	if s == "off" {
		return worker.ReconcileOff, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < worker.MinReconcileInterval {
		return 0, fmt.Errorf("%q is not %s", s, reconcileWant)
	}
	return d, nil
}

func (v *reconcileInterval) Set(s string) error {
	d, err := parseReconcileInterval(s)
	if err != nil {
		return err
	}
	*v = reconcileInterval(d)
	return nil
}

func (v *reconcileInterval) String() string {
	if time.Duration(*v) == worker.ReconcileOff {
		return "off"
	}
	return time.Duration(*v).String()
}

// Get makes the flag a flag.Getter, as the standard library's are.
func (v *reconcileInterval) Get() any { return time.Duration(*v) }

// queueShards is CALLQ_QUEUE_SHARDS: a whole number from 1 to
// tasks.MaxQueueShards.
type queueShards int

var queueShardsWant = fmt.Sprintf("a whole number from 1 to %d", tasks.MaxQueueShards)

func parseQueueShards(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > tasks.MaxQueueShards {
		return 0, fmt.Errorf("%q is not %s", s, queueShardsWant)
	}
	return n, nil
}

func (v *queueShards) Set(s string) error {
	n, err := parseQueueShards(s)
	if err != nil {
		return err
	}
	*v = queueShards(n)
	return nil
}

func (v *queueShards) String() string { return strconv.Itoa(int(*v)) }

// Get makes the flag a flag.Getter, as the standard library's are.
func (v *queueShards) Get() any { return int(*v) }

// shardCounts is CALLQ_PREVIOUS_QUEUE_SHARDS: queue shard counts,
// comma-separated ("1" or "1,4").
type shardCounts []int

var shardCountsWant = fmt.Sprintf("whole numbers from 1 to %d, comma-separated, such as 1 or 1,4", tasks.MaxQueueShards)

func parseShardCounts(s string) ([]int, error) {
	var out []int
	for part := range strings.SplitSeq(s, ",") {
		n, err := parseQueueShards(strings.TrimSpace(part))
		if err != nil {
			return nil, fmt.Errorf("%q is not %s", s, shardCountsWant)
		}
		out = append(out, n)
	}
	return out, nil
}

func (v *shardCounts) Set(s string) error {
	n, err := parseShardCounts(s)
	if err != nil {
		return err
	}
	*v = n
	return nil
}

func (v *shardCounts) String() string {
	if v == nil {
		return ""
	}
	parts := make([]string, len(*v))
	for i, n := range *v {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ",")
}

// Get makes the flag a flag.Getter, as the standard library's are.
func (v *shardCounts) Get() any { return []int(*v) }

// onOff is CALLQ_SCHEDULER: "on" or "off", nothing else.
type onOff bool

func parseOnOff(s string) (bool, error) {
	switch s {
	case "on":
		return true, nil
	case "off":
		return false, nil
	}
	return false, fmt.Errorf("%q is not on or off", s)
}

func (v *onOff) Set(s string) error {
	b, err := parseOnOff(s)
	*v = onOff(b)
	return err
}

func (v onOff) String() string {
	if v {
		return "on"
	}
	return "off"
}

// Get makes the flag a flag.Getter, as the standard library's are.
func (v *onOff) Get() any { return bool(*v) }

// envValue reads the environment variable name with parse, def when unset.
// A value parse refuses is kept in c.envErrs (with want, what it should
// be), so the command refuses to start instead of running on the default
// the operator meant to change.
func envValue[T any](c *serverConfig, name string, def T, parse func(string) (T, error), want string) T {
	raw := os.Getenv(name)
	if raw == "" {
		return def
	}
	v, err := parse(strings.TrimSpace(raw))
	if err != nil {
		c.envErrs = append(c.envErrs, fmt.Errorf("%s: %q is not %s", name, raw, want))
		return def
	}
	return v
}

func (c *serverConfig) envInt(name string, def int) int {
	return envValue(c, name, def, strconv.Atoi, "a whole number")
}

func (c *serverConfig) envDuration(name string, def time.Duration) time.Duration {
	return envValue(c, name, def, time.ParseDuration, "a duration (want a Go duration such as 30s or 24h)")
}

// envBool takes strconv.ParseBool's spellings; "yes" is an error rather
// than a silent false.
func (c *serverConfig) envBool(name string) bool {
	return envValue(c, name, false, strconv.ParseBool, "true or false")
}

// envError reports every malformed environment value flags found.
func (c *serverConfig) envError() error {
	return errors.Join(c.envErrs...)
}

// parseQueues parses "critical=6,default=3,low=1" into priorities and the
// names in the order given.
func parseQueues(s string) (map[string]int, []string, error) {
	out := map[string]int{}
	var names []string
	for part := range strings.SplitSeq(s, ",") {
		name, prio, ok := strings.Cut(strings.TrimSpace(part), "=")
		p, err := strconv.Atoi(prio)
		if !ok || name == "" || err != nil || p < 1 {
			return nil, nil, fmt.Errorf("CALLQ_QUEUES: %q is not name=priority with a priority of at least 1", part)
		}
		if err := tasks.ValidQueueName(name); err != nil {
			return nil, nil, fmt.Errorf("CALLQ_QUEUES: %w", err)
		}
		out[name] = p
		names = append(names, name)
	}
	return out, names, nil
}

func (c *serverConfig) logger(w io.Writer) (zerolog.Logger, error) {
	level, err := zerolog.ParseLevel(c.logLevel)
	if err != nil || c.logLevel == "" {
		return zerolog.Logger{}, fmt.Errorf("CALLQ_LOG_LEVEL: %q is not one of debug, info, warn, error", c.logLevel)
	}
	switch c.logFormat {
	case "json":
	case "console":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	default:
		return zerolog.Logger{}, fmt.Errorf("CALLQ_LOG_FORMAT: %q is not json or console", c.logFormat)
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger(), nil
}

// openRedis connects to REDIS_URL, or to a cluster when
// CALLQ_REDIS_CLUSTER_ADDRS is set.
// poolSize, when not zero, sizes the connection pool (per node).
func openRedis(ctx context.Context, rawURL string, poolSize int) (redis.UniversalClient, error) {
	rdb, err := newRedisClient(rawURL, os.Getenv("CALLQ_REDIS_CLUSTER_ADDRS"), poolSize)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("redis at %s: %w", redactURL(rawURL), err)
	}
	return rdb, nil
}

// newRedisClient builds the client REDIS_URL and clusterAddrs describe,
// without connecting.
func newRedisClient(rawURL, clusterAddrs string, poolSize int) (redis.UniversalClient, error) {
	if clusterAddrs == "" {
		return parseRedisURL(rawURL, poolSize)
	}
	u, err := checkRedisURL(rawURL)
	if err != nil {
		return nil, err
	}
	opt := &redis.ClusterOptions{PoolSize: poolSize}
	for i, addr := range strings.Split(clusterAddrs, ",") {
		addr = strings.TrimSpace(addr)
		// The entry is not quoted: "user:password@host:port" is the likely
		// mistake.
		host, port, err := net.SplitHostPort(addr)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || host == "" || n < 1 || n > 65535 || strings.ContainsAny(addr, "@/?#") {
			return nil, fmt.Errorf("CALLQ_REDIS_CLUSTER_ADDRS: entry %d is not host:port (a user and password go in REDIS_URL; the entry is not shown, as it may hold one)", i+1)
		}
		opt.Addrs = append(opt.Addrs, addr)
	}
	if u.User != nil {
		opt.Username = u.User.Username()
		opt.Password, _ = u.User.Password()
	}
	c, err := connSettings(u.Query())
	if err != nil {
		return nil, err
	}
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout = c.DialTimeout, c.ReadTimeout, c.WriteTimeout, c.PoolTimeout
	opt.MaxRetries, opt.MinRetryBackoff, opt.MaxRetryBackoff = c.MaxRetries, c.MinRetryBackoff, c.MaxRetryBackoff
	if c.PoolSize > 0 {
		opt.PoolSize = c.PoolSize
	}
	return redis.NewClusterClient(opt), nil
}

// connSettings reads the connection settings of REDIS_URL's query
// (dial_timeout, read_timeout, write_timeout, pool_timeout, max_retries,
// min_retry_backoff, max_retry_backoff, pool_size) the way go-redis reads
// them for redis://, so that the sentinel and cluster forms take them too.
// They bound how long a request waits on a Redis that does not answer.
func connSettings(q url.Values) (*redis.Options, error) {
	o, err := redis.ParseURL("redis://localhost/?" + q.Encode())
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL is not valid (%s): %s", errorKind(err), redisURLForms)
	}
	return o, nil
}

// redisURLForms is what REDIS_URL may be, for error messages.
const redisURLForms = "want redis://[user:password@]host:port[/db], rediss://... or redis-sentinel://[user:password@]host:port[,host:port]/master[/db]; the value is not shown, as it may hold a password"

var schemePattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*$`)

// checkRedisURL parses REDIS_URL without ever quoting it in an error. A
// malformed URL may hold its password anywhere: a "/", "?" or "#" in the
// password ends the host part early, so the rest of the password lands in
// the path, the query or the fragment, which a parser's error would echo
// and a successful parse would not redact. So an "@" after the host part
// is refused, and errors give only the kind of fault.
func checkRedisURL(raw string) (*url.URL, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok || !schemePattern.MatchString(scheme) {
		return nil, errors.New("REDIS_URL is not a URL: " + redisURLForms)
	}
	switch scheme {
	case "redis", "rediss", "redis-sentinel", "unix":
	default:
		return nil, fmt.Errorf("REDIS_URL: scheme %q is not redis, rediss or redis-sentinel", scheme)
	}
	hostEnd := strings.IndexAny(rest, "/?#")
	if hostEnd < 0 {
		hostEnd = len(rest)
	}
	path, query, _ := strings.Cut(rest[hostEnd:], "?")
	if strings.Contains(rest, "#") || strings.Contains(path, "@") || queryKeyHasAt(query) {
		return nil, errors.New("REDIS_URL: a \"/\", \"?\" or \"#\" in the user or password must be percent-encoded (%2F, %3F, %23); " + redisURLForms)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL is not valid (%s): %s", errorKind(err), redisURLForms)
	}
	return u, nil
}

// queryKeyHasAt reports whether a parameter name of query holds an "@",
// which only a password cut short by a "?" puts there (a value, such as a
// sentinel_password, may hold one).
func queryKeyHasAt(query string) bool {
	for part := range strings.SplitSeq(query, "&") {
		key, _, _ := strings.Cut(part, "=")
		if strings.Contains(key, "@") {
			return true
		}
	}
	return false
}

// errorKind is the fixed part of a URL parser's error, before the parser
// quotes any of its input: "invalid port" of `invalid port ":x" after host`.
func errorKind(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	s := strings.TrimPrefix(strings.TrimPrefix(err.Error(), "redis: "), "net/url: ")
	if i := strings.IndexAny(s, "\":"); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

// parseRedisURL reads redis://, rediss:// and
// redis-sentinel://[user:pass@]host:port[,host:port...]/master[/db][?sentinel_password=...].
func parseRedisURL(raw string, poolSize int) (redis.UniversalClient, error) {
	u, err := checkRedisURL(raw)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "redis-sentinel" {
		opt, err := redis.ParseURL(raw)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL is not valid (%s): %s", errorKind(err), redisURLForms)
		}
		if poolSize > 0 && opt.PoolSize == 0 {
			opt.PoolSize = poolSize // a pool_size in the URL wins
		}
		return redis.NewClient(opt), nil
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if u.Host == "" || parts[0] == "" {
		return nil, errors.New("REDIS_URL: redis-sentinel:// needs sentinel addresses and a master name: redis-sentinel://host:26379,host2:26379/mymaster[/db]")
	}
	opt := &redis.FailoverOptions{MasterName: parts[0], SentinelAddrs: strings.Split(u.Host, ","), PoolSize: poolSize}
	if len(parts) > 1 {
		if opt.DB, err = strconv.Atoi(parts[1]); err != nil {
			return nil, errors.New("REDIS_URL: the database after the master name must be a number")
		}
	}
	if u.User != nil {
		opt.Username = u.User.Username()
		opt.Password, _ = u.User.Password()
	}
	q := u.Query()
	opt.SentinelPassword = q.Get("sentinel_password")
	q.Del("sentinel_password")
	c, err := connSettings(q)
	if err != nil {
		return nil, err
	}
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout = c.DialTimeout, c.ReadTimeout, c.WriteTimeout, c.PoolTimeout
	opt.MaxRetries, opt.MinRetryBackoff, opt.MaxRetryBackoff = c.MaxRetries, c.MinRetryBackoff, c.MaxRetryBackoff
	if c.PoolSize > 0 {
		opt.PoolSize = c.PoolSize
	}
	return redis.NewFailoverClient(opt), nil
}

// redactURL hides a password in a Redis URL.
func redactURL(raw string) string {
	u, err := checkRedisURL(raw)
	if err != nil {
		return "(REDIS_URL, not shown)"
	}
	if u.RawQuery != "" {
		u.RawQuery = "xxxxx" // sentinel_password and friends
	}
	return u.Redacted()
}
