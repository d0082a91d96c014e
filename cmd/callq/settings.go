package main

// The environment variables callq reads, in one table: it drives their
// parsing, the flags that override them and the top-level help.

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

// errConfig marks a malformed environment variable or flag value: the
// process stops before doing anything (exit 2).
var errConfig = errors.New("malformed configuration")

// configError is a malformed setting: its text names the variable and what
// it accepts.
type configError struct{ msg string }

func (e *configError) Error() string        { return e.msg }
func (e *configError) Is(target error) bool { return target == errConfig }

func configErrorf(format string, args ...any) error {
	return &configError{msg: fmt.Sprintf(format, args...)}
}

// config is what callq's commands read from the environment and flags.
type config struct {
	redisURL         string
	clusterAddrs     string
	integrations     string
	secretKey        string
	apiAddr          string
	concurrency      int
	hookConcurrency  int // CALLQ_WEBHOOK_CONCURRENCY; 0: as concurrency
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
	reconcile        time.Duration
	scheduler        bool
	queueShards      int
	previousShards   []int
	devAPIKey        string
	publicURL        string
	connectOrigins   []string
	apiURL           string
	apiKey           string

	// catalogYAML is the catalog when integrations is empty: callq dev's
	// embedded example.
	catalogYAML []byte

	envErrs     []error  // malformed environment values, reported by envError
	secretFlags []string // the flags of secret settings, whose values errors never quote
}

// setting is one environment variable: its flag, default, the commands that
// read it and where its parsed value goes.
type setting struct {
	env   string // CALLQ_CONCURRENCY
	flag  string // concurrency; "" when only the environment sets it
	def   string // the default, as written in the variable; "" for none
	usage string // what it sets
	// flagIn are the commands (leaf paths, such as "worker" or "creds
	// reseal"; "client" for every command that talks to the API) that offer
	// the flag and read the variable; envIn read the variable only.
	flagIn, envIn []string
	// defIn is def for some commands ("dev": "console").
	defIn map[string]string
	// secret: the value is never quoted, in errors or in the flag's
	// default in usage texts.
	secret bool
	// value is where the setting goes in c, and how it is parsed.
	value func(c *config) value
}

// value parses a setting into a config field: a flag.Value, which can say
// what it accepts.
type value interface {
	flag.Value
	want() string // what it accepts: "a whole number of at least 1"
}

// settings are every variable callq reads. Adding one is one entry here
// (and a field in config). The OpenTelemetry SDK reads the standard
// OTEL_* variables itself; the top-level help says so.
var settings = []setting{
	{env: "REDIS_URL", flag: "redis-url", def: "redis://127.0.0.1:6379/0", usage: "Redis: redis://, rediss:// or redis-sentinel://host:26379,host2:26379/master[/db]", flagIn: []string{"api", "worker", "keys create", "keys list", "keys revoke", "creds reseal"}, secret: true, value: func(c *config) value { return redisURLVal(&c.redisURL) }},
	{env: "CALLQ_REDIS_CLUSTER_ADDRS", usage: "Redis Cluster nodes host:port, comma-separated (user and password from REDIS_URL)", envIn: []string{"api", "worker", "keys create", "keys list", "keys revoke", "creds reseal"}, secret: true, value: func(c *config) value { return clusterAddrsVal(&c.clusterAddrs) }},
	{env: "CALLQ_INTEGRATIONS", flag: "integrations", usage: "the integration catalog file (required for api and worker)", flagIn: []string{"api", "worker", "dev", "integrations"}, value: func(c *config) value { return str(&c.integrations, "a file name", nil) }},
	{env: "CALLQ_SECRET_KEY", usage: "seals credentials: base64 of 32 random bytes, or kid:key,kid:key (required for api and worker; generated in dev)", envIn: []string{"api", "worker", "dev", "creds reseal"}, secret: true, value: func(c *config) value {
		return str(&c.secretKey, "base64 of 32 bytes, or kid:key,kid:key", parseKeyring)
	}},
	// callq dev listens on loopback unless asked: it prints its API key, and
	// dev mode lets that key make the worker read its environment and files.
	{env: "CALLQ_API_ADDR", flag: "addr", def: ":8080", usage: "where the API listens", flagIn: []string{"api", "dev"}, envIn: []string{"healthcheck"}, defIn: map[string]string{"dev": devAPIAddr}, value: func(c *config) value { return str(&c.apiAddr, "host:port, such as :8080", checkHostPort) }},
	{env: "CALLQ_CONCURRENCY", flag: "concurrency", def: strconv.Itoa(worker.DefaultConcurrency), usage: "calls a worker runs at once", flagIn: []string{"worker", "dev"}, value: func(c *config) value { return positiveInt(&c.concurrency) }},
	{env: "CALLQ_WEBHOOK_CONCURRENCY", flag: "webhook-concurrency", usage: "webhook deliveries a worker runs at once, on slots of their own beside the calls' (default the same as CALLQ_CONCURRENCY)", flagIn: []string{"worker", "dev"}, value: func(c *config) value { return positiveInt(&c.hookConcurrency) }},
	{env: "CALLQ_QUEUES", flag: "queues", def: worker.FormatQueues(worker.DefaultQueues()), usage: "queues and their priorities", flagIn: []string{"api", "worker", "dev"}, value: func(c *config) value { return str(&c.queues, "name=priority pairs, comma-separated", checkQueues) }},
	{env: "CALLQ_RESULT_TTL", flag: "result-ttl", def: formatDuration(tasks.DefaultResultTTL), usage: "how long records live after a call finishes", flagIn: []string{"api", "worker", "dev"}, value: func(c *config) value { return duration(&c.resultTTL) }},
	{env: "CALLQ_MAX_REQUEST_BYTES", flag: "max-request-bytes", def: strconv.Itoa(tasks.DefaultMaxRequestBytes), usage: "largest request body a call may carry", flagIn: []string{"api", "dev"}, value: func(c *config) value { return positiveInt64(&c.maxRequestBytes) }},
	{env: "CALLQ_MAX_RESPONSE_BYTES", flag: "max-response-bytes", def: strconv.Itoa(worker.DefaultMaxResponseBytes), usage: "response body bytes kept", flagIn: []string{"worker", "dev"}, value: func(c *config) value { return positiveInt64(&c.maxResponseBytes) }},
	{env: "CALLQ_SHUTDOWN_TIMEOUT", flag: "shutdown-timeout", def: formatDuration(worker.DefaultShutdownTimeout), usage: "on SIGTERM, how long calls and webhook deliveries in flight may run before they are interrupted", flagIn: []string{"worker", "dev"}, value: func(c *config) value { return duration(&c.shutdownTimeout) }},
	{env: "CALLQ_CREDENTIAL_CACHE_TTL", flag: "credential-cache-ttl", def: formatDuration(auth.DefaultCacheTTL), usage: "how long a credential read stays in a worker's memory at most; every change is announced to the fleet at once, this bounds a lost announcement; 0: read Redis on every attempt", flagIn: []string{"worker", "dev"}, value: func(c *config) value { return cacheTTLVal(&c.credCacheTTL) }},
	{env: "CALLQ_RECONCILE_INTERVAL", flag: "reconcile-interval", def: formatDuration(worker.DefaultReconcileInterval), usage: "how often the fleet's reconciler fails calls whose asynq task is gone; off: this process never runs it", flagIn: []string{"worker", "dev"}, value: func(c *config) value { return reconcileVal(&c.reconcile) }},
	{env: "CALLQ_QUEUE_SHARDS", flag: "queue-shards", def: "1", usage: "split each queue into this many asynq queues (Redis Cluster); the same for the API and every worker", flagIn: []string{"api", "worker", "dev"}, value: func(c *config) value { return queueShardsVal(&c.queueShards) }},
	{env: "CALLQ_PREVIOUS_QUEUE_SHARDS", flag: "previous-queue-shards", usage: "the queue shard counts used before a change, comma-separated: still served and searched until empty", flagIn: []string{"api", "worker", "dev"}, value: func(c *config) value { return shardCountsVal(&c.previousShards) }},
	{env: "CALLQ_SCHEDULER", flag: "scheduler", def: "on", usage: "on: this process may be the fleet's scheduler, which fires the schedules; off: never", flagIn: []string{"worker", "dev"}, value: func(c *config) value { return onOffVal(&c.scheduler) }},
	{env: "CALLQ_LOG_LEVEL", flag: "log-level", def: "info", usage: "debug, info, warn or error", flagIn: []string{"api", "worker", "dev"}, value: func(c *config) value { return oneOf(&c.logLevel, "debug", "info", "warn", "error") }},
	{env: "CALLQ_LOG_FORMAT", flag: "log-format", def: "json", usage: "json or console", flagIn: []string{"api", "worker", "dev"}, defIn: map[string]string{"dev": "console"}, value: func(c *config) value { return oneOf(&c.logFormat, "json", "console") }},
	{env: "CALLQ_WEBHOOK_SECRET", usage: "the master whsec_... secret tenants' webhook secrets derive from; several, space-separated, while rotating (generated in dev)", envIn: []string{"api", "worker", "dev"}, secret: true, value: func(c *config) value {
		return str(&c.webhookSecret, "whsec_ and base64, space-separated", parseWebhookSecrets)
	}},
	{env: "CALLQ_WEBHOOK_ALLOW_PRIVATE", flag: "webhook-allow-private", def: "false", usage: "let webhooks reach loopback, private and link-local addresses (always in dev)", flagIn: []string{"api", "worker"}, value: func(c *config) value { return boolVal(&c.webhookPrivate) }},
	{env: "CALLQ_WEBHOOK_SCHEDULE", flag: "webhook-schedule", usage: "waits before webhook redeliveries, such as 5s,30s,2m (default about a day)", flagIn: []string{"worker", "dev"}, value: func(c *config) value {
		return str(&c.webhookSchedule, "positive durations, comma-separated, such as 5s,30s,2m", checkSchedule)
	}},
	{env: "CALLQ_METRICS_ADDR", flag: "metrics-addr", usage: "serve the worker's /metrics, /healthz and /readyz here, such as :9090 (default off)", flagIn: []string{"worker"}, envIn: []string{"healthcheck"}, value: func(c *config) value { return str(&c.metricsAddr, "host:port, such as :9090", checkHostPort) }},
	{env: "CALLQ_ALLOW_SOURCE_REFS", flag: "allow-source-refs", def: "false", usage: "let admin keys store env: and file: credential values (only when every admin is the operator; always in dev)", flagIn: []string{"api"}, value: func(c *config) value { return boolVal(&c.sourceRefs) }},
	{env: "CALLQ_SOURCE_DIRS", flag: "source-dirs", usage: "the only directories file: credential values may read, comma- or colon-separated (default any outside /proc, /sys and /dev)", flagIn: []string{"api", "worker", "dev"}, value: func(c *config) value {
		return str(&c.sourceDirs, "absolute directories, comma- or colon-separated", checkSourceDirs)
	}},
	{env: "CALLQ_PUBLIC_URL", flag: "public-url", usage: "the address browsers reach callq at, for connect sessions (https, or http on a loopback host); unset: the connect endpoints answer 503", flagIn: []string{"api", "dev"}, defIn: map[string]string{"dev": "http://" + devAPIAddr}, value: func(c *config) value {
		return &parsed[string]{p: &c.publicURL, what: "an https:// URL (http:// on a loopback host)", format: func(s string) string { return s }, parse: producer.ParsePublicURL}
	}},
	{env: "CALLQ_CONNECT_ALLOWED_ORIGINS", flag: "connect-allowed-origins", usage: "the origins a connect session's redirect_uri may name, comma-separated (https, or http on a loopback host)", flagIn: []string{"api", "dev"}, value: func(c *config) value {
		return &parsed[[]string]{p: &c.connectOrigins, what: "origins such as https://app.example, comma-separated", format: func(v []string) string { return strings.Join(v, ",") }, parse: producer.ParseConnectOrigins}
	}},
	{env: "CALLQ_DEV_API_KEY", usage: "callq dev's admin API key (default: generated)", envIn: []string{"dev"}, secret: true, value: func(c *config) value { return str(&c.devAPIKey, "an API key", nil) }},
	{env: "CALLQ_URL", def: "http://127.0.0.1:8080", usage: "the API the CLI commands talk to", envIn: []string{"client"}, value: func(c *config) value { return str(&c.apiURL, "an http:// or https:// URL", checkAPIURL) }},
	{env: "CALLQ_API_KEY", usage: "the API key the CLI commands send", envIn: []string{"client"}, secret: true, value: func(c *config) value { return str(&c.apiKey, "an API key", nil) }},
}

// newConfig reads the settings command cmd reads from the environment and
// registers the flags it offers on fs (nil: none). A malformed variable is
// kept in envErrs, so that the command refuses to start instead of running
// on the default the operator meant to change.
func newConfig(fs *flag.FlagSet, cmd string) *config {
	c := &config{}
	for i := range settings {
		s := &settings[i]
		withFlag := slices.Contains(s.flagIn, cmd)
		if !withFlag && !slices.Contains(s.envIn, cmd) {
			continue
		}
		v := s.value(c)
		def := s.def
		if d, ok := s.defIn[cmd]; ok {
			def = d
		}
		if def != "" {
			if err := v.Set(def); err != nil {
				panic(fmt.Sprintf("%s: the default %q is not %s", s.env, def, v.want()))
			}
		}
		if raw, ok := os.LookupEnv(s.env); ok && raw != "" {
			if err := v.Set(strings.TrimSpace(raw)); err != nil {
				c.envErrs = append(c.envErrs, s.error(raw, v, err))
			}
		}
		if withFlag && fs != nil && s.flag != "" {
			fs.Var(v, s.flag, fmt.Sprintf("%s (%s)", s.usage, s.env))
			if s.secret {
				fs.Lookup(s.flag).DefValue = def // never the variable's value
				c.secretFlags = append(c.secretFlags, s.flag)
			}
		}
	}
	return c
}

// error is why raw is not a value of s.
func (s *setting) error(raw string, v value, err error) error {
	switch {
	case strings.HasPrefix(err.Error(), s.env):
		return configErrorf("%v", err) // the parser named the variable and never quotes a secret
	case s.secret:
		return configErrorf("%s is not %s (the value is not shown, as it may hold a secret): %v", s.env, v.want(), err)
	case strings.HasPrefix(err.Error(), `"`): // notWant's
		return configErrorf("%s: %q is not %s", s.env, raw, v.want())
	}
	return configErrorf("%s: %q is not %s: %v", s.env, raw, v.want(), err)
}

// redactFlagError is the flag package's error msg without the value it
// quotes when the flag is a secret's ("invalid value %q for flag -redis-url:
// ..."): the parser's own error, after the colon, never quotes a secret.
func (c *config) redactFlagError(msg string) string {
	for _, name := range c.secretFlags {
		if _, why, ok := strings.Cut(msg, " for flag -"+name+": "); ok && strings.HasPrefix(msg, "invalid value ") {
			return "invalid value for flag --" + name + " (the value is not shown, as it may hold a secret): " + why
		}
	}
	return msg
}

// envError reports every malformed environment value newConfig found.
func (c *config) envError() error {
	return errors.Join(c.envErrs...)
}

// settingsHelp is the top-level help's list of variables.
func settingsHelp() string {
	var b strings.Builder
	for _, s := range settings {
		def := cmp.Or(s.def, "none")
		for _, cmd := range slices.Sorted(maps.Keys(s.defIn)) {
			def += fmt.Sprintf(" (%s: %s)", cmd, s.defIn[cmd])
		}
		fmt.Fprintf(&b, "  %-28s %s\n  %-28s   %s", s.env, s.usage, "", "default: "+def)
		if s.flag != "" {
			fmt.Fprintf(&b, "; flag --%s", s.flag)
		}
		b.WriteString("\n")
	}
	b.WriteString("  OTEL_EXPORTER_OTLP_*, OTEL_*    read by the OpenTelemetry SDK, not by callq (standard meaning)\n")
	return b.String()
}

// parsed is a value of type T, parsed by parse and written by format.
type parsed[T any] struct {
	p      *T
	parse  func(string) (T, error)
	format func(T) string
	what   string
}

func (v *parsed[T]) Set(s string) error {
	x, err := v.parse(s)
	if err != nil {
		return err
	}
	*v.p = x
	return nil
}

func (v *parsed[T]) String() string {
	if v == nil || v.p == nil || v.format == nil {
		return "" // flag.PrintDefaults' zero value
	}
	return v.format(*v.p)
}

// Get makes the flag a flag.Getter, as the standard library's are.
func (v *parsed[T]) Get() any { return *v.p }

func (v *parsed[T]) want() string { return v.what }

// boolValue is a parsed bool that a flag may set without a value (--x).
type boolValue struct{ parsed[bool] }

func (*boolValue) IsBoolFlag() bool { return true }

// notWant is the error of a parse that refused s.
func notWant(s, want string) error { return fmt.Errorf("%q is not %s", s, want) }

func str(p *string, want string, check func(string) error) value {
	return &parsed[string]{p: p, what: want, format: func(s string) string { return s }, parse: func(s string) (string, error) {
		if check != nil {
			if err := check(s); err != nil {
				return "", err
			}
		}
		return s, nil
	}}
}

func positiveInt(p *int) value {
	const want = "a whole number of at least 1"
	return &parsed[int]{p: p, what: want, format: strconv.Itoa, parse: func(s string) (int, error) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return 0, notWant(s, want)
		}
		return n, nil
	}}
}

func positiveInt64(p *int64) value {
	const want = "a whole number of at least 1 (bytes)"
	return &parsed[int64]{p: p, what: want, format: func(n int64) string { return strconv.FormatInt(n, 10) }, parse: func(s string) (int64, error) {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			return 0, notWant(s, want)
		}
		return n, nil
	}}
}

func duration(p *time.Duration) value {
	const want = "a duration greater than zero, such as 30s or 24h"
	return &parsed[time.Duration]{p: p, what: want, format: formatDuration, parse: func(s string) (time.Duration, error) {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return 0, notWant(s, want)
		}
		return d, nil
	}}
}

// cacheTTLVal is CALLQ_CREDENTIAL_CACHE_TTL: a duration of 0 (no cache) or
// more.
func cacheTTLVal(p *time.Duration) value {
	const want = "a duration of 0 (no cache) or more, such as 30s"
	return &parsed[time.Duration]{p: p, what: want, format: formatDuration, parse: func(s string) (time.Duration, error) {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return 0, notWant(s, want)
		}
		return d, nil
	}}
}

// formatDuration is d as people write it: 24h, 1m30s, not 24h0m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// boolVal takes strconv.ParseBool's spellings; "yes" is an error rather
// than a silent false.
func boolVal(p *bool) value {
	const want = "true or false"
	return &boolValue{parsed[bool]{p: p, what: want, format: strconv.FormatBool, parse: func(s string) (bool, error) {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return false, notWant(s, want)
		}
		return b, nil
	}}}
}

func oneOf(p *string, choices ...string) value {
	want := strings.Join(choices[:len(choices)-1], ", ") + " or " + choices[len(choices)-1]
	return str(p, want, func(s string) error {
		if !slices.Contains(choices, s) {
			return notWant(s, want)
		}
		return nil
	})
}

func onOffString(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// onOffVal is CALLQ_SCHEDULER: "on" or "off", nothing else.
func onOffVal(p *bool) value {
	const want = "on or off"
	return &parsed[bool]{p: p, what: want, format: onOffString, parse: func(s string) (bool, error) {
		switch s {
		case "on":
			return true, nil
		case "off":
			return false, nil
		}
		return false, notWant(s, want)
	}}
}

var reconcileWant = fmt.Sprintf("a duration of at least %s such as 1m, or off", worker.MinReconcileInterval)

// reconcileVal is CALLQ_RECONCILE_INTERVAL: a duration of at least
// worker.MinReconcileInterval, or worker.ReconcileOff, written "off".
func reconcileVal(p *time.Duration) value {
	return &parsed[time.Duration]{p: p, what: reconcileWant, format: func(d time.Duration) string {
		if d == worker.ReconcileOff {
			return "off"
		}
		return formatDuration(d)
	}, parse: func(s string) (time.Duration, error) {
		if s == "off" {
			return worker.ReconcileOff, nil
		}
		d, err := time.ParseDuration(s)
		if err != nil || d < worker.MinReconcileInterval {
			return 0, notWant(s, reconcileWant)
		}
		return d, nil
	}}
}

var queueShardsWant = fmt.Sprintf("a whole number from 1 to %d", tasks.MaxQueueShards)

func parseQueueShards(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > tasks.MaxQueueShards {
		return 0, notWant(s, queueShardsWant)
	}
	return n, nil
}

// queueShardsVal is CALLQ_QUEUE_SHARDS: a whole number from 1 to
// tasks.MaxQueueShards.
func queueShardsVal(p *int) value {
	return &parsed[int]{p: p, what: queueShardsWant, format: strconv.Itoa, parse: parseQueueShards}
}

var shardCountsWant = fmt.Sprintf("whole numbers from 1 to %d, comma-separated, such as 1 or 1,4", tasks.MaxQueueShards)

// shardCountsVal is CALLQ_PREVIOUS_QUEUE_SHARDS: queue shard counts,
// comma-separated ("1" or "1,4").
func shardCountsVal(p *[]int) value {
	return &parsed[[]int]{p: p, what: shardCountsWant, format: func(v []int) string {
		parts := make([]string, len(v))
		for i, n := range v {
			parts[i] = strconv.Itoa(n)
		}
		return strings.Join(parts, ",")
	}, parse: func(s string) ([]int, error) {
		var out []int
		for part := range strings.SplitSeq(s, ",") {
			n, err := parseQueueShards(strings.TrimSpace(part))
			if err != nil {
				return nil, notWant(s, shardCountsWant)
			}
			out = append(out, n)
		}
		return out, nil
	}}
}

// redisURLVal is REDIS_URL, checked without ever quoting it.
func redisURLVal(p *string) value {
	v := str(p, "a Redis URL", func(s string) error { _, err := checkRedisURL(s); return err }).(*parsed[string])
	v.format = redactURL
	return v
}

// clusterAddrsVal is CALLQ_REDIS_CLUSTER_ADDRS.
func clusterAddrsVal(p *string) value {
	return str(p, "host:port entries, comma-separated", func(s string) error { _, err := splitClusterAddrs(s); return err })
}

func checkHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
		return notWant(s, "host:port")
	}
	return nil
}

func checkQueues(s string) error { _, _, err := parseQueues(s); return err }

func checkSchedule(s string) error { _, err := parseSchedule(s); return err }

func checkSourceDirs(s string) error { _, err := auth.ParseSourceDirs(s); return err }

func parseKeyring(s string) error { _, err := auth.ParseKeyring(s); return err }

func parseWebhookSecrets(s string) error { _, err := auth.ParseWebhookSecrets(s); return err }

func checkAPIURL(s string) error {
	u, err := url.Parse(s)
	// A user and password would never be sent (the API key is the
	// Authorization) and would show in errors: refused, unquoted.
	if strings.Contains(s, "@") && (err != nil || u.User != nil) {
		return errors.New("CALLQ_URL must be an http:// or https:// URL without a user or password (the API key goes in CALLQ_API_KEY); the value is not shown, as it may hold a password")
	}
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return notWant(s, "an http:// or https:// URL")
	}
	return nil
}
