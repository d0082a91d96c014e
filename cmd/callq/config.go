package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/callq/callq/tasks"
)

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

// logTimeFormat is the logs' timestamp: RFC 3339 in milliseconds.
const logTimeFormat = "2006-01-02T15:04:05.000Z07:00"

// logger is the process's logger, as CALLQ_LOG_LEVEL and CALLQ_LOG_FORMAT
// say. The console format is coloured only on a terminal.
func (c *config) logger(w io.Writer) (zerolog.Logger, error) {
	level, err := zerolog.ParseLevel(c.logLevel)
	if err != nil || c.logLevel == "" {
		return zerolog.Logger{}, fmt.Errorf("CALLQ_LOG_LEVEL: %q is not one of debug, info, warn, error", c.logLevel)
	}
	switch c.logFormat {
	case "json":
	case "console":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000", NoColor: !isTerminal(w)}
	default:
		return zerolog.Logger{}, fmt.Errorf("CALLQ_LOG_FORMAT: %q is not json or console", c.logFormat)
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger(), nil
}

// isTerminal reports whether w is a terminal, where colour codes belong.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isatty.IsTerminal(f.Fd())
}

// openRedis connects to REDIS_URL, or to a cluster when clusterAddrs
// (CALLQ_REDIS_CLUSTER_ADDRS) is set.
// poolSize, when not zero, sizes the connection pool (per node).
func openRedis(ctx context.Context, rawURL, clusterAddrs string, poolSize int) (redis.UniversalClient, error) {
	rdb, err := newRedisClient(rawURL, clusterAddrs, poolSize)
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
	addrs, err := splitClusterAddrs(clusterAddrs)
	if err != nil {
		return nil, err
	}
	opt := &redis.ClusterOptions{PoolSize: poolSize, Addrs: addrs}
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

// splitClusterAddrs reads CALLQ_REDIS_CLUSTER_ADDRS: host:port entries,
// comma-separated.
func splitClusterAddrs(s string) ([]string, error) {
	var addrs []string
	for i, addr := range strings.Split(s, ",") {
		addr = strings.TrimSpace(addr)
		// The entry is not quoted: "user:password@host:port" is the likely
		// mistake.
		host, port, err := net.SplitHostPort(addr)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || host == "" || n < 1 || n > 65535 || strings.ContainsAny(addr, "@/?#") {
			return nil, fmt.Errorf("CALLQ_REDIS_CLUSTER_ADDRS: entry %d is not host:port (a user and password go in REDIS_URL; the entry is not shown, as it may hold one)", i+1)
		}
		addrs = append(addrs, addr)
	}
	return addrs, nil
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
