package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

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
	shutdownTimeout  time.Duration
}

func (c *serverConfig) flags(fs *flag.FlagSet, defIntegrations string) {
	fs.StringVar(&c.redisURL, "redis-url", env("REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis URL: redis://, rediss:// or redis-sentinel:// (REDIS_URL)")
	fs.StringVar(&c.integrations, "integrations", env("CALLQ_INTEGRATIONS", defIntegrations), "integration catalog file (CALLQ_INTEGRATIONS)")
	fs.StringVar(&c.apiAddr, "addr", env("CALLQ_API_ADDR", ":8080"), "API listen address (CALLQ_API_ADDR)")
	fs.IntVar(&c.concurrency, "concurrency", envInt("CALLQ_CONCURRENCY", worker.DefaultConcurrency), "calls a worker runs at once (CALLQ_CONCURRENCY)")
	fs.StringVar(&c.queues, "queues", env("CALLQ_QUEUES", worker.FormatQueues(worker.DefaultQueues())), "queues and priorities (CALLQ_QUEUES)")
	fs.DurationVar(&c.resultTTL, "result-ttl", envDuration("CALLQ_RESULT_TTL", tasks.DefaultResultTTL), "how long records live after a call finishes (CALLQ_RESULT_TTL)")
	fs.Int64Var(&c.maxRequestBytes, "max-request-bytes", int64(envInt("CALLQ_MAX_REQUEST_BYTES", tasks.DefaultMaxRequestBytes)), "largest request body a call may carry (CALLQ_MAX_REQUEST_BYTES)")
	fs.Int64Var(&c.maxResponseBytes, "max-response-bytes", int64(envInt("CALLQ_MAX_RESPONSE_BYTES", worker.DefaultMaxResponseBytes)), "response body bytes kept (CALLQ_MAX_RESPONSE_BYTES)")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", envDuration("CALLQ_SHUTDOWN_TIMEOUT", worker.DefaultShutdownTimeout), "worker: on SIGTERM, how long calls in flight may run before they are interrupted (CALLQ_SHUTDOWN_TIMEOUT)")
	fs.StringVar(&c.logLevel, "log-level", env("CALLQ_LOG_LEVEL", "info"), "debug, info, warn or error (CALLQ_LOG_LEVEL)")
	fs.StringVar(&c.logFormat, "log-format", env("CALLQ_LOG_FORMAT", "json"), "json or console (CALLQ_LOG_FORMAT)")
	fs.BoolVar(&c.webhookPrivate, "webhook-allow-private", os.Getenv("CALLQ_WEBHOOK_ALLOW_PRIVATE") == "true", "let webhooks reach loopback, private and link-local addresses (CALLQ_WEBHOOK_ALLOW_PRIVATE)")
	fs.StringVar(&c.webhookSchedule, "webhook-schedule", os.Getenv("CALLQ_WEBHOOK_SCHEDULE"), "waits before webhook redeliveries, e.g. 5s,30s,2m (CALLQ_WEBHOOK_SCHEDULE; default about a day)")
	fs.StringVar(&c.metricsAddr, "metrics-addr", os.Getenv("CALLQ_METRICS_ADDR"), "worker: serve Prometheus /metrics here, e.g. :9090 (CALLQ_METRICS_ADDR; default off; the API serves /metrics on its own address)")
	fs.BoolVar(&c.sourceRefs, "allow-source-refs", os.Getenv("CALLQ_ALLOW_SOURCE_REFS") == "true", "let admin keys store env: and file: credential values (CALLQ_ALLOW_SOURCE_REFS; only when every admin is the operator)")
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

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

// queueMap parses "critical=6,default=3,low=1".
func parseQueues(s string) (map[string]int, []string, error) {
	out := map[string]int{}
	var names []string
	for part := range strings.SplitSeq(s, ",") {
		name, prio, ok := strings.Cut(strings.TrimSpace(part), "=")
		p, err := strconv.Atoi(prio)
		if !ok || name == "" || err != nil || p < 1 {
			return nil, nil, fmt.Errorf("CALLQ_QUEUES: %q is not name=priority with a priority of at least 1", part)
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
	var rdb redis.UniversalClient
	if addrs := os.Getenv("CALLQ_REDIS_CLUSTER_ADDRS"); addrs != "" {
		opt, err := clusterOptions(rawURL, addrs, poolSize)
		if err != nil {
			return nil, err
		}
		rdb = redis.NewClusterClient(opt)
	} else {
		var err error
		rdb, err = parseRedisURL(rawURL, poolSize)
		if err != nil {
			return nil, err
		}
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("redis at %s: %w", redactURL(rawURL), err)
	}
	return rdb, nil
}

// parseRedisURL reads redis://, rediss:// and
// redis-sentinel://[user:pass@]host:port[,host:port...]/master[/db][?sentinel_password=...].
func parseRedisURL(raw string, poolSize int) (redis.UniversalClient, error) {
	if !strings.HasPrefix(raw, "redis-sentinel://") {
		opt, err := redis.ParseURL(raw)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		if poolSize > 0 && opt.PoolSize == 0 {
			opt.PoolSize = poolSize // a pool_size in the URL wins
		}
		return redis.NewClient(opt), nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("REDIS_URL: not a valid redis-sentinel:// URL")
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

// clusterOptions is a cluster client's options: the nodes of
// CALLQ_REDIS_CLUSTER_ADDRS, with REDIS_URL's user, password and
// connection settings.
func clusterOptions(rawURL, addrs string, poolSize int) (*redis.ClusterOptions, error) {
	opt := &redis.ClusterOptions{Addrs: strings.Split(addrs, ","), PoolSize: poolSize}
	u, err := url.Parse(rawURL)
	if err != nil {
		return opt, nil // REDIS_URL is not used for the nodes
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
	return opt, nil
}

// connSettings reads the connection settings of REDIS_URL's query
// (dial_timeout, read_timeout, write_timeout, pool_timeout, max_retries,
// min_retry_backoff, max_retry_backoff, pool_size) the way go-redis reads
// them for redis://, so that the sentinel and cluster forms take them too.
// They bound how long a request waits on a Redis that does not answer.
func connSettings(q url.Values) (*redis.Options, error) {
	o, err := redis.ParseURL("redis://localhost/?" + q.Encode())
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	return o, nil
}

// redactURL hides a password in a Redis URL.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	if u.RawQuery != "" {
		u.RawQuery = "xxxxx" // sentinel_password and friends
	}
	return u.Redacted()
}
