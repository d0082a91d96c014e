package tasks

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/httpurl"
)

// Catalog is the set of integrations callq may call, loaded from YAML. It is
// read once at start and kept in memory by every process.
type Catalog struct {
	byName map[string]*Integration
	names  []string
}

// Integration is one third-party API: where it lives, how it authenticates,
// and the execution policy its calls get unless they say otherwise.
type Integration struct {
	Name              string            `yaml:"-" json:"name"`
	BaseURL           string            `yaml:"base_url" json:"base_url"`
	Auth              auth.Spec         `yaml:"auth" json:"auth"`
	Headers           map[string]string `yaml:"headers" json:"headers,omitempty"`
	Timeout           Duration          `yaml:"timeout" json:"timeout"`
	MaxTimeout        Duration          `yaml:"max_timeout" json:"max_timeout"`
	Retry             RetryPolicy       `yaml:"retry" json:"retry"`
	DefaultCredential string            `yaml:"default_credential" json:"default_credential,omitempty"`
	TLS               TLSConfig         `yaml:"tls" json:"tls"`
	RateLimit         *RateLimit        `yaml:"rate_limit" json:"rate_limit,omitempty"`
	CircuitBreaker    *CircuitBreaker   `yaml:"circuit_breaker" json:"circuit_breaker,omitempty"`
	Concurrency       *Concurrency      `yaml:"concurrency" json:"concurrency,omitempty"`

	base *url.URL
}

// TLSConfig adjusts how callq verifies an integration's server.
type TLSConfig struct {
	// CAFile is a PEM bundle trusted in addition to the system roots.
	CAFile string `yaml:"ca_file" json:"ca_file,omitempty"`
	// InsecureSkipVerify turns verification off. For tests only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify" json:"insecure_skip_verify,omitempty"`
}

// RateLimit is a fleet-wide limit on an integration's requests, per
// credential (GCRA, through go-redis/redis_rate): every worker shares it.
type RateLimit struct {
	// Requests may be sent per Per. Required.
	Requests int `yaml:"requests" json:"requests"`
	// Per is the period of Requests. Required.
	Per Duration `yaml:"per" json:"per"`
	// Burst is how many may go at once. Default Requests.
	Burst int `yaml:"burst" json:"burst,omitempty"`
}

// CircuitBreaker stops sending an integration's calls while its upstream
// keeps failing: after Failures consecutive retryable failures (a connection
// error, a timeout, a 5xx or a 429) within Window, the circuit opens and the
// fleet's calls wait, spending no attempt, until Cooldown has passed; then
// one probe call goes through, and its outcome closes the circuit or opens
// it again. The state is in Redis (package flow), shared by every worker,
// and kept per tenant: one tenant's failures never open another's circuit.
type CircuitBreaker struct {
	// Failures is how many consecutive retryable failures open the
	// circuit. Required, 1 to MaxCircuitFailures.
	Failures int `yaml:"failures" json:"failures"`
	// Window is how close together they must be: the first and the last of
	// the Failures must fall within it. Required, at most MaxCircuitWindow.
	Window Duration `yaml:"window" json:"window"`
	// Cooldown is how long an open circuit holds calls before its probe.
	// Required, at most MaxCircuitCooldown.
	Cooldown Duration `yaml:"cooldown" json:"cooldown"`
	// Per is what one circuit covers: CircuitPerIntegration (the default:
	// the tenant's calls to the integration) or CircuitPerCredential (the
	// tenant's calls with one credential).
	Per string `yaml:"per" json:"per"`
}

// What a circuit covers (CircuitBreaker.Per).
const (
	CircuitPerIntegration = "integration"
	CircuitPerCredential  = "credential"
)

// Limits of a circuit breaker. A circuit's failures are kept in one Redis
// hash, each one's time in it, so Failures is bounded; a window or cooldown
// beyond a day is a typo more likely than a wish (a call held by an open
// circuit waits the cooldown, its record kept meanwhile).
const (
	MaxCircuitFailures = 100
	MaxCircuitWindow   = 24 * time.Hour
	MaxCircuitCooldown = 24 * time.Hour
)

// PerCredential says each credential has its own circuit.
func (cb *CircuitBreaker) PerCredential() bool { return cb.Per == CircuitPerCredential }

// Concurrency caps an integration's requests in flight at once, across the
// whole fleet: each request holds a slot (a lease in Redis, internal/flow)
// while it runs, and a call that finds none free waits without spending an
// attempt. In the catalog, `concurrency: 10` or `concurrency: {limit: 10,
// per: integration}`.
type Concurrency struct {
	// Limit is how many requests may be in flight at once. Required.
	Limit int `yaml:"limit" json:"limit"`
	// Per is what one cap counts: each credential's requests apart
	// (ConcurrencyPerCredential, the default) or the integration's together
	// (ConcurrencyPerIntegration). Tenants never share a cap.
	Per ConcurrencyScope `yaml:"per" json:"per"`
}

// ConcurrencyScope is what one concurrency cap counts.
type ConcurrencyScope string

// Concurrency scopes.
const (
	ConcurrencyPerCredential  ConcurrencyScope = "credential"
	ConcurrencyPerIntegration ConcurrencyScope = "integration"
)

// UnmarshalYAML reads both forms: a number (the limit, per credential) or a
// mapping. ParseCatalog checks the node's shape first, to name the key.
func (c *Concurrency) UnmarshalYAML(node *yaml.Node) error {
	if node.Kind == yaml.ScalarNode {
		return node.Decode(&c.Limit)
	}
	type plain Concurrency // without this method
	return node.Decode((*plain)(c))
}

// RetryPolicy says how often and how patiently a call is retried. In a call,
// a zero field inherits the integration's value.
type RetryPolicy struct {
	// MaxAttempts counts every attempt, the first included. Default 5.
	MaxAttempts int `yaml:"max_attempts" json:"max_attempts,omitempty"`
	// InitialInterval is the backoff cap before the second attempt. Default 1s.
	InitialInterval Duration `yaml:"initial_interval" json:"initial_interval,omitempty"`
	// MaxInterval caps any one backoff. Default 1m.
	MaxInterval Duration `yaml:"max_interval" json:"max_interval,omitempty"`
	// Multiplier grows the cap after each attempt. Default 2.
	Multiplier float64 `yaml:"multiplier" json:"multiplier,omitempty"`
	// MaxElapsed bounds the time from the first attempt to the last. Default 1h.
	MaxElapsed Duration `yaml:"max_elapsed" json:"max_elapsed,omitempty"`
}

// Defaults for an integration's policy.
const (
	DefaultTimeout    = 5 * time.Second
	DefaultMaxTimeout = 30 * time.Second
)

// Limits of a retry policy, in the catalog and in a call. A call is kept
// while it waits (its record's TTL grows with the wait) and asynq schedules
// the wait: a policy of months would keep both for months.
const (
	// MaxRetryInterval bounds retry.max_interval.
	MaxRetryInterval = 24 * time.Hour
	// MaxRetryElapsed bounds retry.max_elapsed.
	MaxRetryElapsed = 7 * 24 * time.Hour
)

// DefaultRetryPolicy is the policy of an integration whose catalog entry
// sets none.
var DefaultRetryPolicy = RetryPolicy{
	MaxAttempts:     5,
	InitialInterval: Duration(time.Second),
	MaxInterval:     Duration(time.Minute),
	Multiplier:      2,
	MaxElapsed:      Duration(time.Hour),
}

// Merge returns p with the non-zero fields of o.
func (p RetryPolicy) Merge(o *RetryPolicy) RetryPolicy {
	if o == nil {
		return p
	}
	if o.MaxAttempts > 0 {
		p.MaxAttempts = o.MaxAttempts
	}
	if o.InitialInterval > 0 {
		p.InitialInterval = o.InitialInterval
	}
	if o.MaxInterval > 0 {
		p.MaxInterval = o.MaxInterval
	}
	if o.Multiplier > 0 {
		p.Multiplier = o.Multiplier
	}
	if o.MaxElapsed > 0 {
		p.MaxElapsed = o.MaxElapsed
	}
	return p
}

func (p *RetryPolicy) validate(prefix string, partial bool) error {
	switch {
	case p.MaxAttempts < 0 || p.MaxAttempts > maxMaxAttempts || (!partial && p.MaxAttempts == 0):
		return fieldErr(prefix+".max_attempts", "must be between 1 and %d", maxMaxAttempts)
	case p.InitialInterval < 0:
		return fieldErr(prefix+".initial_interval", "must not be negative")
	case p.MaxInterval < 0:
		return fieldErr(prefix+".max_interval", "must not be negative")
	case p.MaxInterval.D() > MaxRetryInterval:
		return fieldErr(prefix+".max_interval", "%s is above the limit of %s", p.MaxInterval, MaxRetryInterval)
	case p.Multiplier != 0 && p.Multiplier < 1:
		return fieldErr(prefix+".multiplier", "must be at least 1")
	case p.MaxElapsed < 0:
		return fieldErr(prefix+".max_elapsed", "must not be negative")
	case p.MaxElapsed.D() > MaxRetryElapsed:
		return fieldErr(prefix+".max_elapsed", "%s is above the limit of %s", p.MaxElapsed, MaxRetryElapsed)
	}
	return nil
}

// Lookup returns the integration called name.
func (c *Catalog) Lookup(name string) (*Integration, bool) {
	in, ok := c.byName[name]
	return in, ok
}

// Names lists the integrations in order.
func (c *Catalog) Names() []string { return slices.Clone(c.names) }

// All lists the integrations in name order.
func (c *Catalog) All() []*Integration {
	out := make([]*Integration, 0, len(c.names))
	for _, n := range c.names {
		out = append(out, c.byName[n])
	}
	return out
}

// CatalogError is a catalog that cannot be loaded. It names the integration
// and key at fault.
type CatalogError struct {
	Integration string
	Key         string
	Line        int
	Message     string
}

func (e *CatalogError) Error() string {
	var b strings.Builder
	b.WriteString("catalog")
	if e.Line > 0 {
		fmt.Fprintf(&b, " line %d", e.Line)
	}
	if e.Integration != "" {
		fmt.Fprintf(&b, ": integration %q", e.Integration)
	}
	if e.Key != "" {
		fmt.Fprintf(&b, ": key %q", e.Key)
	}
	return b.String() + ": " + e.Message
}

// LoadCatalog reads a catalog file.
func LoadCatalog(path string) (*Catalog, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	cat, err := ParseCatalog(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cat, nil
}

// The keys each level of the catalog may hold. Anything else is a load error:
// a typo such as "retyr" must not silently fall back to a default.
var catalogKeys = map[string][]string{
	"":                {"integrations"},
	"integration":     {"base_url", "auth", "headers", "timeout", "max_timeout", "retry", "rate_limit", "concurrency", "circuit_breaker", "default_credential", "tls"},
	"auth":            {"type", "in", "name", "headers", "token_url", "authorize_url", "authorize_params", "client_id", "client_secret", "scopes", "grant", "auth_style"},
	"retry":           {"max_attempts", "initial_interval", "max_interval", "multiplier", "max_elapsed"},
	"tls":             {"ca_file", "insecure_skip_verify"},
	"rate_limit":      {"requests", "per", "burst"},
	"concurrency":     {"limit", "per"},
	"circuit_breaker": {"failures", "window", "cooldown", "per"},
}

// ParseCatalog reads a catalog from YAML.
func ParseCatalog(b []byte) (*Catalog, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil {
		return nil, &CatalogError{Message: "invalid YAML: " + err.Error()}
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, &CatalogError{Message: "must be a mapping with an integrations key"}
	}
	root := doc.Content[0]
	if err := checkKeys(root, "", "", ""); err != nil {
		return nil, err
	}
	ints := mapValue(root, "integrations")
	if ints == nil || ints.Kind != yaml.MappingNode || len(ints.Content) == 0 {
		return nil, &CatalogError{Key: "integrations", Message: "must map at least one integration name to its settings"}
	}
	cat := &Catalog{byName: map[string]*Integration{}}
	for i := 0; i < len(ints.Content); i += 2 {
		name, node := ints.Content[i].Value, ints.Content[i+1]
		in, err := parseIntegration(name, node)
		if err != nil {
			return nil, err
		}
		if _, dup := cat.byName[name]; dup {
			return nil, &CatalogError{Integration: name, Line: ints.Content[i].Line, Message: "is defined twice"}
		}
		cat.byName[name] = in
		cat.names = append(cat.names, name)
	}
	slices.Sort(cat.names)
	return cat, nil
}

// catalogFail makes the *CatalogError of a key of one integration.
type catalogFail func(key string, line int, format string, args ...any) error

func parseIntegration(name string, node *yaml.Node) (*Integration, error) {
	fail := func(key string, line int, format string, args ...any) error {
		return &CatalogError{Integration: name, Key: key, Line: line, Message: fmt.Sprintf(format, args...)}
	}
	if !ValidID(name) {
		return nil, fail("", node.Line, "name "+idMessage)
	}
	if node.Kind != yaml.MappingNode {
		return nil, fail("", node.Line, "must be a mapping of settings")
	}
	if err := checkKeys(node, "integration", name, ""); err != nil {
		return nil, err
	}
	for _, sub := range []string{"auth", "retry", "tls", "rate_limit", "circuit_breaker"} {
		if v := mapValue(node, sub); v != nil {
			if v.Kind != yaml.MappingNode {
				return nil, fail(sub, v.Line, "must be a mapping")
			}
			if err := checkKeys(v, sub, name, sub+"."); err != nil {
				return nil, err
			}
		}
	}
	if v := mapValue(node, "concurrency"); v != nil {
		if err := checkConcurrency(v, name, fail); err != nil {
			return nil, err
		}
	}
	in := &Integration{Name: name}
	if err := node.Decode(in); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return nil, fail("", node.Line, "%s", strings.Join(te.Errors, "; "))
		}
		return nil, fail("", node.Line, "%v", err)
	}
	if in.BaseURL == "" {
		return nil, fail("base_url", node.Line, "is required")
	}
	u, ok := httpurl.Parse(in.BaseURL)
	if !ok {
		return nil, fail("base_url", node.Line, "must be an absolute http or https URL, got %q", in.BaseURL)
	}
	if u.User != nil || u.Fragment != "" || u.RawQuery != "" {
		return nil, fail("base_url", node.Line, "must not hold userinfo, a query or a fragment")
	}
	in.base = u
	if in.Auth.Type == "" {
		in.Auth.Type = auth.TypeNone
	}
	if err := in.Auth.Validate(); err != nil {
		return nil, fail("auth", node.Line, "%v", err)
	}
	for h := range in.Headers {
		if !headerNamePattern.MatchString(h) {
			return nil, fail("headers."+h, node.Line, "is not a valid header name")
		}
		if in.Auth.IsSensitiveHeader(h) {
			return nil, fail("headers."+h, node.Line, "is set by the auth block; do not set it in headers")
		}
		if ReservedHeader(h) {
			return nil, fail("headers."+h, node.Line, "is set by callq; do not set it in headers")
		}
	}
	if err := in.checkPolicy(node, fail); err != nil {
		return nil, err
	}
	if in.DefaultCredential != "" && !ValidID(in.DefaultCredential) {
		return nil, fail("default_credential", node.Line, idMessage)
	}
	if in.TLS.CAFile != "" {
		if _, err := os.Stat(in.TLS.CAFile); err != nil {
			return nil, fail("tls.ca_file", node.Line, "cannot be read: %v", err)
		}
	}
	return in, nil
}

// checkPolicy checks the timeouts, retry policy, rate limit and circuit
// breaker of an integration decoded from node, and fills their defaults.
func (in *Integration) checkPolicy(node *yaml.Node, fail catalogFail) error {
	if in.Timeout == 0 {
		in.Timeout = Duration(DefaultTimeout)
	}
	if in.MaxTimeout == 0 {
		in.MaxTimeout = Duration(DefaultMaxTimeout)
	}
	if in.Timeout < 0 || in.MaxTimeout < 0 {
		return fail("timeout", node.Line, "must not be negative")
	}
	if in.Timeout > in.MaxTimeout {
		return fail("timeout", node.Line, "%s is above max_timeout %s", in.Timeout, in.MaxTimeout)
	}
	// Check what the file says before defaults fill the gaps: a zero or
	// negative value written out is a mistake, not a request for the default.
	if retry := mapValue(node, "retry"); retry != nil {
		for _, k := range []string{"max_attempts", "multiplier"} {
			if v := mapValue(retry, k); v != nil && strings.TrimSpace(v.Value) == "0" {
				return fail("retry."+k, v.Line, "must not be 0")
			}
		}
	}
	if err := in.Retry.validate("retry", true); err != nil {
		var fe *FieldError
		errors.As(err, &fe)
		return fail(fe.Field, node.Line, "%s", fe.Message)
	}
	in.Retry = DefaultRetryPolicy.Merge(&in.Retry)
	if rl := in.RateLimit; rl != nil {
		switch {
		case rl.Requests < 1:
			return fail("rate_limit.requests", node.Line, "must be at least 1")
		case rl.Per.D() < time.Millisecond:
			return fail("rate_limit.per", node.Line, "must be a duration of at least 1ms")
		case rl.Burst < 0:
			return fail("rate_limit.burst", node.Line, "must not be negative")
		case rl.Burst == 0:
			rl.Burst = rl.Requests
		}
	}
	if c := in.Concurrency; c != nil && c.Per == "" {
		c.Per = ConcurrencyPerCredential
	}
	return in.checkCircuitBreaker(node, fail)
}

// checkConcurrency checks an integration's concurrency node before it is
// decoded, so that each error names its key and line: a whole number, or a
// mapping of limit and per.
func checkConcurrency(v *yaml.Node, integration string, fail catalogFail) error {
	limit, per := v, (*yaml.Node)(nil)
	switch v.Kind {
	case yaml.ScalarNode:
	case yaml.MappingNode:
		if err := checkKeys(v, "concurrency", integration, "concurrency."); err != nil {
			return err
		}
		limit, per = mapValue(v, "limit"), mapValue(v, "per")
	default:
		return fail("concurrency", v.Line, "must be a number (concurrency: 10) or a mapping (concurrency: {limit: 10, per: integration})")
	}
	key := "concurrency"
	if v.Kind == yaml.MappingNode {
		key = "concurrency.limit"
	}
	if limit == nil || limit.ShortTag() == "!!null" {
		return fail(key, v.Line, "is required")
	}
	// The tag, not Decode alone: yaml.v3 decodes 2.5 into an int as 2.
	var n int
	if limit.Kind != yaml.ScalarNode || limit.ShortTag() != "!!int" || limit.Decode(&n) != nil {
		return fail(key, limit.Line, "must be a whole number, got %q", limit.Value)
	}
	if n < 1 {
		return fail(key, limit.Line, "must be at least 1")
	}
	if per != nil {
		switch ConcurrencyScope(per.Value) {
		case ConcurrencyPerCredential, ConcurrencyPerIntegration:
		default:
			return fail("concurrency.per", per.Line, "must be %q (the default) or %q, got %q",
				ConcurrencyPerCredential, ConcurrencyPerIntegration, per.Value)
		}
	}
	return nil
}

// checkCircuitBreaker checks an integration's circuit_breaker and fills its
// default. An error names the line of the sub-key at fault.
func (in *Integration) checkCircuitBreaker(node *yaml.Node, fail catalogFail) error {
	cb := in.CircuitBreaker
	if cb == nil {
		return nil
	}
	block := mapValue(node, "circuit_breaker")
	line := func(key string) int {
		if v := mapValue(block, key); v != nil {
			return v.Line
		}
		return block.Line
	}
	switch {
	case cb.Failures < 1 || cb.Failures > MaxCircuitFailures:
		return fail("circuit_breaker.failures", line("failures"), "must be between 1 and %d", MaxCircuitFailures)
	case cb.Window <= 0:
		return fail("circuit_breaker.window", line("window"), "must be a duration above 0, such as 30s")
	case cb.Window.D() > MaxCircuitWindow:
		return fail("circuit_breaker.window", line("window"), "%s is above the limit of %s", cb.Window, MaxCircuitWindow)
	case cb.Cooldown <= 0:
		return fail("circuit_breaker.cooldown", line("cooldown"), "must be a duration above 0, such as 30s")
	case cb.Cooldown.D() > MaxCircuitCooldown:
		return fail("circuit_breaker.cooldown", line("cooldown"), "%s is above the limit of %s", cb.Cooldown, MaxCircuitCooldown)
	}
	switch cb.Per {
	case "":
		cb.Per = CircuitPerIntegration
	case CircuitPerIntegration, CircuitPerCredential:
	default:
		return fail("circuit_breaker.per", line("per"), "must be %q or %q, got %q", CircuitPerIntegration, CircuitPerCredential, cb.Per)
	}
	return nil
}

func checkKeys(m *yaml.Node, level, integration, prefix string) error {
	allowed := catalogKeys[level]
	for i := 0; i < len(m.Content); i += 2 {
		k := m.Content[i]
		if !slices.Contains(allowed, k.Value) {
			return &CatalogError{Integration: integration, Key: prefix + k.Value, Line: k.Line,
				Message: fmt.Sprintf("is not a known key; expected one of %s", strings.Join(allowed, ", "))}
		}
	}
	return nil
}

func mapValue(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// Base returns the integration's parsed base URL.
func (in *Integration) Base() *url.URL { u := *in.base; return &u }

// EffectiveTimeout is the timeout of a call to this integration: the call's,
// else the integration's, never above max_timeout.
func (in *Integration) EffectiveTimeout(call time.Duration) time.Duration {
	t := in.Timeout.D()
	if call > 0 {
		t = call
	}
	return min(t, in.MaxTimeout.D())
}
