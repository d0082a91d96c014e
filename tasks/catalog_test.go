package tasks_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/tasks"
)

func TestParseCatalogDefaults(t *testing.T) {
	t.Parallel()
	cat, err := tasks.ParseCatalog([]byte(`
integrations:
  zeta:
    base_url: https://zeta.example
  alpha:
    base_url: https://alpha.example/api
    auth: {type: bearer}
    headers: {Accept: application/json}
    timeout: 2s
    max_timeout: 10s
    retry: {max_attempts: 3, multiplier: 1.5}
    default_credential: alpha-default
    tls: {insecure_skip_verify: true}
  partner:
    base_url: https://partner.example
    auth: {type: api_key, in: header, name: x-api-key}
  dd:
    base_url: https://api.datadoghq.com
    auth:
      type: headers
      headers:
        DD-API-KEY: "{{api_key}}"
        Authorization: "Bearer {{pat}}"
`))
	require.NoError(t, err)
	require.Equal(t, []string{"alpha", "dd", "partner", "zeta"}, cat.Names(), "names are sorted")
	all := cat.All()
	require.Len(t, all, 4)
	require.Equal(t, "alpha", all[0].Name)

	_, ok := cat.Lookup("nope")
	require.False(t, ok)

	zeta := integration(t, cat, "zeta")
	require.Equal(t, "zeta", zeta.Name)
	require.Equal(t, auth.TypeNone, zeta.Auth.Type, "no auth block means none")
	require.Equal(t, tasks.Duration(5*time.Second), zeta.Timeout)
	require.Equal(t, tasks.Duration(30*time.Second), zeta.MaxTimeout)
	require.Equal(t, tasks.DefaultRetryPolicy, zeta.Retry)
	require.Equal(t, "https://zeta.example", zeta.Base().String())

	alpha := integration(t, cat, "alpha")
	require.Equal(t, auth.TypeBearer, alpha.Auth.Type)
	require.Equal(t, map[string]string{"Accept": "application/json"}, alpha.Headers)
	require.Equal(t, tasks.Duration(2*time.Second), alpha.Timeout)
	require.Equal(t, tasks.Duration(10*time.Second), alpha.MaxTimeout)
	require.Equal(t, tasks.RetryPolicy{
		MaxAttempts:     3,
		InitialInterval: tasks.Duration(time.Second),
		MaxInterval:     tasks.Duration(time.Minute),
		Multiplier:      1.5,
		MaxElapsed:      tasks.Duration(time.Hour),
	}, alpha.Retry, "a partial retry block is merged over the defaults")
	require.Equal(t, "alpha-default", alpha.DefaultCredential)
	require.True(t, alpha.TLS.InsecureSkipVerify)
	require.Equal(t, "/api", alpha.Base().Path)

	partner := integration(t, cat, "partner")
	require.Equal(t, auth.TypeAPIKey, partner.Auth.Type)
	require.Equal(t, "x-api-key", partner.Auth.Name)

	dd := integration(t, cat, "dd")
	require.Equal(t, auth.TypeHeaders, dd.Auth.Type)
	require.Len(t, dd.Auth.Headers, 2)
}

func TestEffectiveTimeout(t *testing.T) {
	t.Parallel()
	cat, err := tasks.ParseCatalog([]byte("integrations:\n  a:\n    base_url: https://a.example\n    timeout: 3s\n    max_timeout: 10s\n"))
	require.NoError(t, err)
	in := integration(t, cat, "a")
	require.Equal(t, 3*time.Second, in.EffectiveTimeout(0))
	require.Equal(t, 7*time.Second, in.EffectiveTimeout(7*time.Second))
	require.Equal(t, 500*time.Millisecond, in.EffectiveTimeout(500*time.Millisecond))
	require.Equal(t, 10*time.Second, in.EffectiveTimeout(time.Minute), "never above max_timeout")
}

func TestRetryPolicyMerge(t *testing.T) {
	t.Parallel()
	base := tasks.DefaultRetryPolicy
	require.Equal(t, base, base.Merge(nil))
	require.Equal(t, base, base.Merge(&tasks.RetryPolicy{}))
	got := base.Merge(&tasks.RetryPolicy{MaxAttempts: 2, MaxElapsed: tasks.Duration(time.Minute)})
	require.Equal(t, 2, got.MaxAttempts)
	require.Equal(t, tasks.Duration(time.Minute), got.MaxElapsed)
	require.Equal(t, base.InitialInterval, got.InitialInterval)
	require.Equal(t, base.MaxInterval, got.MaxInterval)
	require.Equal(t, base.Multiplier, got.Multiplier)
	require.Equal(t, 5, tasks.DefaultRetryPolicy.MaxAttempts, "Merge does not change its receiver")
}

func TestParseCatalogErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		yaml        string
		integration string
		key         string
		contains    string
	}{
		{name: "unknown top-level key", yaml: "integrations:\n  a:\n    base_url: https://a.example\nintegration: {}\n",
			key: "integration"},
		{name: "unknown integration key", yaml: "integrations:\n  a:\n    base_url: https://a.example\n    retyr: {max_attempts: 3}\n",
			integration: "a", key: "retyr"},
		{name: "unknown auth key", yaml: "integrations:\n  a:\n    base_url: https://a.example\n    auth: {type: bearer, token: x}\n",
			integration: "a", key: "auth.token"},
		{name: "unknown retry key", yaml: "integrations:\n  a:\n    base_url: https://a.example\n    retry: {attempts: 3}\n",
			integration: "a", key: "retry.attempts"},
		{name: "unknown tls key", yaml: "integrations:\n  a:\n    base_url: https://a.example\n    tls: {verify: false}\n",
			integration: "a", key: "tls.verify"},
		{name: "auth not a mapping", yaml: "integrations:\n  a:\n    base_url: https://a.example\n    auth: bearer\n",
			integration: "a", key: "auth"},
		{name: "unknown auth type", yaml: "integrations:\n  a:\n    base_url: https://a.example\n    auth: {type: kerberos}\n",
			integration: "a", key: "auth", contains: "kerberos"},
		{name: "oauth2 refused", yaml: "integrations:\n  crm:\n    base_url: https://crm.example\n    auth: {type: oauth2}\n",
			integration: "crm", key: "auth", contains: "oauth2"},
		{name: "api_key in body", yaml: "integrations:\n  p:\n    base_url: https://p.example\n    auth: {type: api_key, in: body}\n",
			integration: "p", key: "auth", contains: "auth.in"},
		{name: "api_key in query without name", yaml: "integrations:\n  p:\n    base_url: https://p.example\n    auth: {type: api_key, in: query}\n",
			integration: "p", key: "auth", contains: "auth.name"},
		{name: "name on bearer", yaml: "integrations:\n  p:\n    base_url: https://p.example\n    auth: {type: bearer, name: X-Token}\n",
			integration: "p", key: "auth", contains: "auth.name"},
		{name: "headers type without headers", yaml: "integrations:\n  dd:\n    base_url: https://dd.example\n    auth: {type: headers}\n",
			integration: "dd", key: "auth", contains: "auth.headers"},
		{name: "missing base_url", yaml: "integrations:\n  a:\n    timeout: 1s\n",
			integration: "a", key: "base_url"},
		{name: "base_url ftp", yaml: "integrations:\n  a:\n    base_url: ftp://a.example\n",
			integration: "a", key: "base_url"},
		{name: "base_url relative", yaml: "integrations:\n  a:\n    base_url: /api\n",
			integration: "a", key: "base_url"},
		{name: "base_url without host", yaml: "integrations:\n  a:\n    base_url: \"https://\"\n",
			integration: "a", key: "base_url"},
		{name: "base_url with userinfo", yaml: "integrations:\n  a:\n    base_url: https://user:pw@a.example\n",
			integration: "a", key: "base_url"},
		{name: "base_url with query", yaml: "integrations:\n  a:\n    base_url: https://a.example/?key=1\n",
			integration: "a", key: "base_url"},
		{name: "base_url with fragment", yaml: "integrations:\n  a:\n    base_url: https://a.example/#x\n",
			integration: "a", key: "base_url"},
		{name: "timeout above max_timeout", yaml: "integrations:\n  a:\n    base_url: https://a.example\n    timeout: 40s\n",
			integration: "a", key: "timeout"},
		{name: "timeout above explicit max_timeout", yaml: "integrations:\n  a:\n    base_url: https://a.example\n    timeout: 5s\n    max_timeout: 2s\n",
			integration: "a", key: "timeout"},
		{name: "negative timeout", yaml: "integrations:\n  a:\n    base_url: https://a.example\n    timeout: -1s\n",
			integration: "a", key: "timeout"},
		{name: "max_attempts 30", yaml: "integrations:\n  a:\n    base_url: https://a.example\n    retry: {max_attempts: 30}\n",
			integration: "a", key: "retry.max_attempts"},
		{name: "max_interval above 24h", yaml: "integrations:\n  a:\n    base_url: https://a.example\n    retry: {max_interval: 25h}\n",
			integration: "a", key: "retry.max_interval", contains: "24h"},
		{name: "max_elapsed above 7 days", yaml: "integrations:\n  a:\n    base_url: https://a.example\n    retry: {max_elapsed: 169h}\n",
			integration: "a", key: "retry.max_elapsed", contains: "168h"},
		{name: "multiplier below 1", yaml: "integrations:\n  a:\n    base_url: https://a.example\n    retry: {multiplier: 0.5}\n",
			integration: "a", key: "retry.multiplier"},
		{name: "rate_limit without requests", yaml: "integrations:\n  gh:\n    base_url: https://a.example\n    rate_limit: {per: 1h}\n",
			integration: "gh", key: "rate_limit.requests"},
		{name: "rate_limit without per", yaml: "integrations:\n  gh:\n    base_url: https://a.example\n    rate_limit: {requests: 5}\n",
			integration: "gh", key: "rate_limit.per"},
		{name: "rate_limit unknown key", yaml: "integrations:\n  gh:\n    base_url: https://a.example\n    rate_limit: {requests: 5, per: 1s, window: 3}\n",
			integration: "gh", key: "rate_limit.window"},
		{name: "circuit_breaker without failures", yaml: "integrations:\n  crm:\n    base_url: https://a.example\n    circuit_breaker: {window: 30s, cooldown: 30s}\n",
			integration: "crm", key: "circuit_breaker.failures"},
		{name: "circuit_breaker failures 0", yaml: "integrations:\n  crm:\n    base_url: https://a.example\n    circuit_breaker: {failures: 0, window: 30s, cooldown: 30s}\n",
			integration: "crm", key: "circuit_breaker.failures"},
		{name: "circuit_breaker failures above the limit", yaml: "integrations:\n  crm:\n    base_url: https://a.example\n    circuit_breaker: {failures: 101, window: 30s, cooldown: 30s}\n",
			integration: "crm", key: "circuit_breaker.failures", contains: "100"},
		{name: "circuit_breaker without window", yaml: "integrations:\n  crm:\n    base_url: https://a.example\n    circuit_breaker: {failures: 5, cooldown: 30s}\n",
			integration: "crm", key: "circuit_breaker.window"},
		{name: "circuit_breaker negative window", yaml: "integrations:\n  crm:\n    base_url: https://a.example\n    circuit_breaker: {failures: 5, window: -1s, cooldown: 30s}\n",
			integration: "crm", key: "circuit_breaker.window"},
		{name: "circuit_breaker window above a day", yaml: "integrations:\n  crm:\n    base_url: https://a.example\n    circuit_breaker: {failures: 5, window: 25h, cooldown: 30s}\n",
			integration: "crm", key: "circuit_breaker.window", contains: "24h"},
		{name: "circuit_breaker without cooldown", yaml: "integrations:\n  crm:\n    base_url: https://a.example\n    circuit_breaker: {failures: 5, window: 30s}\n",
			integration: "crm", key: "circuit_breaker.cooldown"},
		{name: "circuit_breaker cooldown 0", yaml: "integrations:\n  crm:\n    base_url: https://a.example\n    circuit_breaker: {failures: 5, window: 30s, cooldown: 0s}\n",
			integration: "crm", key: "circuit_breaker.cooldown"},
		{name: "circuit_breaker cooldown above a day", yaml: "integrations:\n  crm:\n    base_url: https://a.example\n    circuit_breaker: {failures: 5, window: 30s, cooldown: 48h}\n",
			integration: "crm", key: "circuit_breaker.cooldown", contains: "24h"},
		{name: "circuit_breaker bad per", yaml: "integrations:\n  crm:\n    base_url: https://a.example\n    circuit_breaker: {failures: 5, window: 30s, cooldown: 30s, per: tenant}\n",
			integration: "crm", key: "circuit_breaker.per", contains: `"tenant"`},
		{name: "circuit_breaker unknown key", yaml: "integrations:\n  crm:\n    base_url: https://a.example\n    circuit_breaker: {failures: 5, window: 30s, cooldown: 30s, threshold: 3}\n",
			integration: "crm", key: "circuit_breaker.threshold"},
		{name: "circuit_breaker not a mapping", yaml: "integrations:\n  crm:\n    base_url: https://a.example\n    circuit_breaker: 5\n",
			integration: "crm", key: "circuit_breaker"},
		{name: "circuit_breaker bad duration", yaml: "integrations:\n  crm:\n    base_url: https://a.example\n    circuit_breaker: {failures: 5, window: soon, cooldown: 30s}\n",
			integration: "crm", contains: "soon"},
		{name: "concurrency 0", yaml: "integrations:\n  gh:\n    base_url: https://a.example\n    concurrency: 0\n",
			integration: "gh", key: "concurrency", contains: "line 4: integration \"gh\": key \"concurrency\": must be at least 1"},
		{name: "concurrency limit 0", yaml: "integrations:\n  gh:\n    base_url: https://a.example\n    concurrency:\n      per: integration\n      limit: 0\n",
			integration: "gh", key: "concurrency.limit", contains: "line 6: integration \"gh\": key \"concurrency.limit\": must be at least 1"},
		{name: "concurrency without limit", yaml: "integrations:\n  gh:\n    base_url: https://a.example\n    concurrency: {per: integration}\n",
			integration: "gh", key: "concurrency.limit", contains: "line 4: integration \"gh\": key \"concurrency.limit\": is required"},
		{name: "concurrency negative", yaml: "integrations:\n  gh:\n    base_url: https://a.example\n    concurrency: -2\n",
			integration: "gh", key: "concurrency", contains: "must be at least 1"},
		{name: "concurrency not a number", yaml: "integrations:\n  gh:\n    base_url: https://a.example\n    concurrency: ten\n",
			integration: "gh", key: "concurrency", contains: `must be a whole number, got "ten"`},
		{name: "concurrency fraction", yaml: "integrations:\n  gh:\n    base_url: https://a.example\n    concurrency: {limit: 2.5}\n",
			integration: "gh", key: "concurrency.limit", contains: `must be a whole number, got "2.5"`},
		{name: "concurrency null", yaml: "integrations:\n  gh:\n    base_url: https://a.example\n    concurrency:\n",
			integration: "gh", key: "concurrency", contains: "is required"},
		{name: "concurrency limit null", yaml: "integrations:\n  gh:\n    base_url: https://a.example\n    concurrency: {limit: ~}\n",
			integration: "gh", key: "concurrency.limit", contains: "is required"},
		{name: "concurrency a list", yaml: "integrations:\n  gh:\n    base_url: https://a.example\n    concurrency: [10]\n",
			integration: "gh", key: "concurrency", contains: "must be a number (concurrency: 10) or a mapping"},
		{name: "concurrency unknown per", yaml: "integrations:\n  gh:\n    base_url: https://a.example\n    concurrency:\n      limit: 10\n      per: tenant\n",
			integration: "gh", key: "concurrency.per", contains: `line 6: integration "gh": key "concurrency.per": must be "credential" (the default) or "integration", got "tenant"`},
		{name: "concurrency unknown key", yaml: "integrations:\n  gh:\n    base_url: https://a.example\n    concurrency:\n      limit: 10\n      max: 3\n",
			integration: "gh", key: "concurrency.max", contains: "line 6: integration \"gh\": key \"concurrency.max\": is not a known key; expected one of limit, per"},
		{name: "bearer with Authorization header", yaml: "integrations:\n  gh:\n    base_url: https://a.example\n    auth: {type: bearer}\n    headers: {Authorization: x}\n",
			integration: "gh", key: "headers.Authorization"},
		{name: "bearer with lower-case authorization header", yaml: "integrations:\n  gh:\n    base_url: https://a.example\n    auth: {type: bearer}\n    headers: {authorization: x}\n",
			integration: "gh", key: "headers.authorization"},
		{name: "api_key header in headers", yaml: "integrations:\n  p:\n    base_url: https://a.example\n    auth: {type: api_key, name: x-api-key}\n    headers: {X-Api-Key: x}\n",
			integration: "p", key: "headers.X-Api-Key"},
		{name: "headers auth header in headers", yaml: "integrations:\n  dd:\n    base_url: https://a.example\n    auth: {type: headers, headers: {DD-API-KEY: \"{{k}}\"}}\n    headers: {dd-api-key: x}\n",
			integration: "dd", key: "headers.dd-api-key"},
		{name: "Accept-Encoding in headers", yaml: "integrations:\n  a:\n    base_url: https://a.example\n    headers: {accept-encoding: br}\n",
			integration: "a", key: "headers.accept-encoding"},
		{name: "Range in headers", yaml: "integrations:\n  a:\n    base_url: https://a.example\n    headers: {Range: bytes=0-9}\n",
			integration: "a", key: "headers.Range"},
		{name: "Accept-Charset in headers", yaml: "integrations:\n  a:\n    base_url: https://a.example\n    headers: {Accept-Charset: utf-32}\n",
			integration: "a", key: "headers.Accept-Charset"},
		{name: "invalid header name", yaml: "integrations:\n  a:\n    base_url: https://a.example\n    headers: {\"X A\": x}\n",
			integration: "a", key: "headers.X A"},
		{name: "bad default_credential", yaml: "integrations:\n  a:\n    base_url: https://a.example\n    default_credential: \"a/b\"\n",
			integration: "a", key: "default_credential"},
		{name: "missing ca_file", yaml: "integrations:\n  a:\n    base_url: https://a.example\n    tls: {ca_file: /nonexistent/ca.pem}\n",
			integration: "a", key: "tls.ca_file"},
		{name: "bad integration name", yaml: "integrations:\n  \"a b\":\n    base_url: https://a.example\n",
			integration: "a b", key: ""},
		{name: "integration not a mapping", yaml: "integrations:\n  a: https://a.example\n",
			integration: "a", key: ""},
		{name: "bad duration value", yaml: "integrations:\n  a:\n    base_url: https://a.example\n    timeout: abc\n",
			integration: "a", key: "", contains: "abc"},
		{name: "invalid YAML", yaml: "integrations:\n  a: [\n", contains: "invalid YAML"},
		{name: "empty document", yaml: "", contains: "invalid YAML"},
		{name: "not a mapping", yaml: "- a\n- b\n"},
		{name: "empty integrations", yaml: "integrations: {}\n", key: "integrations"},
		{name: "null integrations", yaml: "integrations:\n", key: "integrations"},
		{name: "integrations a list", yaml: "integrations: [a, b]\n", key: "integrations"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cat, err := tasks.ParseCatalog([]byte(tc.yaml))
			require.Nil(t, cat)
			ce := requireCatalogError(t, err, tc.integration, tc.key)
			require.NotEmpty(t, ce.Message)
			require.True(t, strings.HasPrefix(err.Error(), "catalog"), err.Error())
			if tc.contains != "" {
				require.Contains(t, err.Error(), tc.contains)
			}
		})
	}
}

// concurrency is a number (per credential) or a mapping; the API and
// `callq integrations --json` show it as a mapping either way.
func TestParseCatalogConcurrency(t *testing.T) {
	t.Parallel()
	cat, err := tasks.ParseCatalog([]byte(`integrations:
  github:
    base_url: https://api.github.com
    concurrency: 10
  stripe:
    base_url: https://api.stripe.com
    concurrency: {limit: 4, per: integration}
  crm:
    base_url: https://crm.example
    concurrency: {limit: 2, per: credential}
  plain:
    base_url: https://plain.example
`))
	require.NoError(t, err)
	for name, want := range map[string]*tasks.Concurrency{
		"github": {Limit: 10, Per: tasks.ConcurrencyPerCredential},
		"stripe": {Limit: 4, Per: tasks.ConcurrencyPerIntegration},
		"crm":    {Limit: 2, Per: tasks.ConcurrencyPerCredential},
		"plain":  nil,
	} {
		require.Equal(t, want, integration(t, cat, name).Concurrency, name)
	}
	b, err := json.Marshal(integration(t, cat, "github"))
	require.NoError(t, err)
	require.Contains(t, string(b), `"concurrency":{"limit":10,"per":"credential"}`)
	b, err = json.Marshal(integration(t, cat, "plain"))
	require.NoError(t, err)
	require.NotContains(t, string(b), "concurrency", "no cap, no key")
}

func TestParseCatalogDuplicateIntegration(t *testing.T) {
	t.Parallel()
	cat, err := tasks.ParseCatalog([]byte("integrations:\n  a:\n    base_url: https://a.example\n  a:\n    base_url: https://b.example\n"))
	require.Nil(t, cat)
	require.Error(t, err)
	require.Contains(t, err.Error(), `"a"`)
}

func TestLoadCatalogExample(t *testing.T) {
	t.Parallel()
	cat, err := tasks.LoadCatalog(filepath.Join("..", "deploy", "integrations.example.yaml"))
	require.NoError(t, err)
	require.Contains(t, cat.Names(), "httpbin")
	require.Contains(t, cat.Names(), "datadog")

	httpbin := integration(t, cat, "httpbin")
	require.Equal(t, "http://127.0.0.1:8090", httpbin.Base().String())
	require.Equal(t, 3, httpbin.Retry.MaxAttempts)

	dd := integration(t, cat, "datadog")
	require.Equal(t, auth.TypeHeaders, dd.Auth.Type)
	require.ElementsMatch(t, []string{"Dd-Api-Key", "Dd-Application-Key", "Authorization"}, dd.Auth.SensitiveHeaders())
}

func TestLoadCatalogErrors(t *testing.T) {
	t.Parallel()
	_, err := tasks.LoadCatalog(filepath.Join(t.TempDir(), "missing.yaml"))
	require.ErrorIs(t, err, os.ErrNotExist)

	path := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(path, []byte("integrations:\n  a:\n    base_url: https://a.example\n    retyr: {}\n"), 0o600))
	_, err = tasks.LoadCatalog(path)
	requireCatalogError(t, err, "a", "retyr")
	require.Contains(t, err.Error(), path, "the file is named")
	require.Contains(t, err.Error(), "line 4")
}

func TestParseCatalogCircuitBreaker(t *testing.T) {
	t.Parallel()
	cat, err := tasks.ParseCatalog([]byte(`
integrations:
  crm:
    base_url: https://crm.example
    circuit_breaker: {failures: 5, window: 30s, cooldown: 1m}
  billing:
    base_url: https://billing.example
    circuit_breaker:
      failures: 1
      window: 10     # seconds
      cooldown: 24h
      per: credential
  plain:
    base_url: https://plain.example
`))
	require.NoError(t, err)
	crm := integration(t, cat, "crm")
	require.Equal(t, &tasks.CircuitBreaker{Failures: 5, Window: tasks.Duration(30 * time.Second),
		Cooldown: tasks.Duration(time.Minute), Per: tasks.CircuitPerIntegration}, crm.CircuitBreaker, "per defaults to integration")
	require.False(t, crm.CircuitBreaker.PerCredential())
	billing := integration(t, cat, "billing")
	require.Equal(t, &tasks.CircuitBreaker{Failures: 1, Window: tasks.Duration(10 * time.Second),
		Cooldown: tasks.Duration(24 * time.Hour), Per: tasks.CircuitPerCredential}, billing.CircuitBreaker)
	require.True(t, billing.CircuitBreaker.PerCredential())
	require.Nil(t, integration(t, cat, "plain").CircuitBreaker, "no circuit_breaker, no breaker")
}

func TestParseCatalogCircuitBreakerErrorLine(t *testing.T) {
	t.Parallel()
	// The error names the line of the sub-key at fault, not only the
	// integration's.
	_, err := tasks.ParseCatalog([]byte("integrations:\n  crm:\n    base_url: https://a.example\n    circuit_breaker:\n      failures: 5\n      window: 30s\n      cooldown: -5s\n"))
	ce := requireCatalogError(t, err, "crm", "circuit_breaker.cooldown")
	require.Equal(t, 7, ce.Line)
	require.Equal(t, `catalog line 7: integration "crm": key "circuit_breaker.cooldown": must be a duration above 0, such as 30s`, err.Error())
	// A missing sub-key is named at its block's line.
	_, err = tasks.ParseCatalog([]byte("integrations:\n  crm:\n    base_url: https://a.example\n    circuit_breaker: {failures: 5, cooldown: 5s}\n"))
	ce = requireCatalogError(t, err, "crm", "circuit_breaker.window")
	require.Equal(t, 4, ce.Line)
}

func TestParseCatalogCAFile(t *testing.T) {
	t.Parallel()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(ca, []byte("not checked at load"), 0o600))
	cat, err := tasks.ParseCatalog([]byte("integrations:\n  a:\n    base_url: https://a.example\n    tls: {ca_file: " + ca + "}\n"))
	require.NoError(t, err)
	require.Equal(t, ca, integration(t, cat, "a").TLS.CAFile)
}
