package main

// deploy/compose.yaml without Docker: the file decoded strictly, then the
// README's compose steps run as written, with a `docker` on the PATH that
// does what the steps ask of Docker through processes instead: `up` starts
// each service's command with its environment (env file and environment,
// interpolated as compose does) against a redis-server started with
// deploy/redis/redis.conf, and waits for the services' own health checks;
// `exec SERVICE /callq ...` runs the binary with that service's
// environment. Only addresses are translated: a listen address gets a free
// port, the service names redis and httpbin their processes' addresses, and
// a mounted file its path on this machine.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mccutchen/go-httpbin/v2/httpbin"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/redistest"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

const (
	composeBegin = "<!-- compose:begin -->"
	composeEnd   = "<!-- compose:end -->"
)

// composeFile is what deploy/compose.yaml may hold: decoded with unknown
// fields refused, so a misspelt key fails the test instead of being ignored
// by it (and by compose, which would refuse it).
type composeFile struct {
	Name     string                     `yaml:"name"`
	Services map[string]*composeService `yaml:"services"`
	Volumes  map[string]any             `yaml:"volumes"`
}

type composeService struct {
	Image           string                       `yaml:"image"`
	Command         []string                     `yaml:"command"`
	EnvFile         []string                     `yaml:"env_file"`
	Environment     map[string]string            `yaml:"environment"`
	Volumes         []string                     `yaml:"volumes"`
	Ports           []string                     `yaml:"ports"`
	DependsOn       map[string]composeDependency `yaml:"depends_on"`
	Healthcheck     *composeHealthcheck          `yaml:"healthcheck"`
	StopGracePeriod string                       `yaml:"stop_grace_period"`
	ReadOnly        bool                         `yaml:"read_only"`
	CapDrop         []string                     `yaml:"cap_drop"`
	SecurityOpt     []string                     `yaml:"security_opt"`
	Restart         string                       `yaml:"restart"`
	Deploy          *struct {
		Replicas int `yaml:"replicas"`
	} `yaml:"deploy"`
	Profiles []string `yaml:"profiles"`
}

type composeDependency struct {
	Condition string `yaml:"condition"`
}

type composeHealthcheck struct {
	Test        []string `yaml:"test"`
	Interval    string   `yaml:"interval"`
	Timeout     string   `yaml:"timeout"`
	Retries     int      `yaml:"retries"`
	StartPeriod string   `yaml:"start_period"`
}

func decodeCompose(b []byte) (*composeFile, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var cf composeFile
	if err := dec.Decode(&cf); err != nil {
		return nil, err
	}
	return &cf, nil
}

// readEnvFile reads an env file as compose does for these files: KEY=VALUE
// lines, comments and blank lines skipped.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	out := map[string]string{}
	for l := range strings.SplitSeq(string(data), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		require.True(t, ok, "%s: %q is not KEY=VALUE", path, l)
		require.NotContains(t, v, `"`, "%s: the test reads no quoted values", path)
		out[k] = v
	}
	return out
}

var interpolation = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

// interpolate expands ${VAR}, ${VAR:-default}, ${VAR:?error}, $VAR and $$
// as compose does, from vars (deploy/.env).
func interpolate(s string, vars map[string]string) (string, error) {
	var errs []error
	out := interpolation.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		g := interpolation.FindStringSubmatch(m)
		name, op, arg := g[1], g[2], g[3]
		if name == "" {
			name = g[4]
		}
		v := vars[name]
		switch {
		case op == ":-" && v == "":
			return arg
		case op == ":?" && v == "":
			errs = append(errs, fmt.Errorf("required variable %s is missing a value: %s", name, arg))
		}
		return v
	})
	return out, errors.Join(errs...)
}

// composeRun is one run of the README's compose steps.
type composeRun struct {
	t       *testing.T
	p       *procs
	repo    string // the copy of the repository's deploy files the steps run in
	shim    string // the docker shim's directory
	cf      *composeFile
	vars    map[string]string // deploy/.env, as the steps made it
	redis   *redistest.Server
	httpbin *httptest.Server
	apiURL  string
	envs    map[string][]string // each service's environment, translated
	procs   map[string][]*child
}

// svc returns a service of deploy/compose.yaml.
func (r *composeRun) svc(name string) *composeService {
	s, ok := r.cf.Services[name]
	require.True(r.t, ok, "compose.yaml has no service %s", name)
	return s
}

// hostPath is the file on this machine that a service's volume mounts at
// containerPath, its source interpolated.
func (r *composeRun) hostPath(s *composeService, containerPath string) string {
	t := r.t
	for _, v := range s.Volumes {
		v, err := interpolate(v, r.vars)
		require.NoError(t, err)
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == containerPath {
			require.True(t, strings.HasPrefix(parts[0], "./"), "volume %q: a file of deploy/", v)
			return filepath.Join(r.repo, "deploy", parts[0])
		}
	}
	t.Fatalf("no volume mounts %s: %v", containerPath, s.Volumes)
	return ""
}

// environment is what a service's container sees: its env files, then its
// environment, interpolated; addresses translated.
func (r *composeRun) environment(s *composeService, translate func(k, v string) string) []string {
	t := r.t
	vals := map[string]string{}
	for _, f := range s.EnvFile {
		for k, v := range readEnvFile(t, filepath.Join(r.repo, "deploy", f)) {
			vals[k] = v
		}
	}
	for k, v := range s.Environment {
		v, err := interpolate(v, r.vars)
		require.NoError(t, err, "%s", k)
		vals[k] = v
	}
	var env []string
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range vals {
			if !yield(k) {
				return
			}
		}
	}) {
		env = append(env, k+"="+translate(k, vals[k]))
	}
	return env
}

// healthy runs a service's health check until it passes, as `up --wait`.
func (r *composeRun) healthy(name string, env []string, check func() *exec.Cmd) {
	t := r.t
	t.Helper()
	var last string
	deadline := time.Now().Add(30 * time.Second)
	for {
		cmd := check()
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Logf("%s healthy: %s", name, strings.TrimSpace(string(out)))
			return
		}
		last = fmt.Sprintf("%v: %s", err, out)
		if time.Now().After(deadline) {
			t.Fatalf("%s's health check still fails after 30s: %s", name, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// callqCheck is a service's health check as a command: ["CMD", "/callq",
// args...] runs the binary.
func (r *composeRun) callqCheck(s *composeService) func() *exec.Cmd {
	test := s.Healthcheck.Test
	require.GreaterOrEqual(r.t, len(test), 3, "%v", test)
	require.Equal(r.t, []string{"CMD", "/callq", "healthcheck"}, test[:3], "callq's health check is callq healthcheck: the image has no curl")
	return func() *exec.Cmd { return exec.Command(r.p.bin, test[2:]...) }
}

// up does what `docker compose [--profile demo] up` does, with processes.
func (r *composeRun) up(profiles []string) {
	t := r.t
	t.Helper()
	r.envs, r.procs = map[string][]string{}, map[string][]*child{}

	// Redis: its command, the config file from its volume.
	rs := r.svc("redis")
	var cmd []string
	for _, c := range rs.Command {
		c, err := interpolate(c, r.vars)
		require.NoError(t, err)
		cmd = append(cmd, c)
	}
	require.GreaterOrEqual(t, len(cmd), 2)
	require.Equal(t, "redis-server", cmd[0])
	r.redis = redistest.StartConf(t, r.hostPath(rs, cmd[1]), cmd[2:]...)
	redisEnv := r.environment(rs, func(_, v string) string { return v })
	require.Len(t, rs.Healthcheck.Test, 2)
	require.Equal(t, "CMD-SHELL", rs.Healthcheck.Test[0])
	_, port, _ := strings.Cut(r.redis.Addr, ":")
	redisCheck := strings.ReplaceAll(rs.Healthcheck.Test[1], "redis-cli", "redis-cli -p "+port)
	r.healthy("redis", append(childEnv(), redisEnv...), func() *exec.Cmd { return exec.Command("sh", "-c", redisCheck) })
	// The check needs the password: without, it fails (redis-cli ping
	// exits 0 on NOAUTH, hence the grep).
	bad := exec.Command("sh", "-c", redisCheck)
	bad.Env = append(childEnv(), "REDISCLI_AUTH=wrong")
	require.Error(t, bad.Run(), "redis's health check passes with a wrong password")

	// The demo's httpbin: go-httpbin, as the image.
	if slices.Contains(profiles, "demo") {
		require.Equal(t, []string{"demo"}, r.svc("httpbin").Profiles)
		r.httpbin = httptest.NewServer(httpbin.New())
		t.Cleanup(r.httpbin.Close)
	}

	// A service's environment on this machine: Redis's and mounted files'
	// addresses.
	translate := func(s *composeService) func(k, v string) string {
		return func(k, v string) string {
			v = strings.ReplaceAll(v, "@redis:6379/", "@"+r.redis.Addr+"/")
			if strings.HasPrefix(v, "/etc/callq/") {
				return r.hostPath(s, v)
			}
			return v
		}
	}
	// The catalog as mounted, the demo's httpbin at its address.
	catalog := r.hostPath(r.svc("api"), "/etc/callq/integrations.yaml")
	if r.httpbin != nil {
		b, err := os.ReadFile(catalog)
		require.NoError(t, err)
		require.Contains(t, string(b), "http://httpbin:8080")
		require.NoError(t, os.WriteFile(catalog, bytes.ReplaceAll(b, []byte("http://httpbin:8080"), []byte(r.httpbin.URL)), 0o644))
	}

	// The API, on a free port for its ":8080".
	api := r.svc("api")
	require.Equal(t, []string{"api"}, api.Command)
	require.Equal(t, []string{"127.0.0.1:8080:8080"}, api.Ports)
	var apiEnv []string
	r.procs["api"] = []*child{r.p.startListening(func() (*child, []string) {
		addr := freeAddr(t)
		r.apiURL = "http://" + addr
		apiEnv = append(childEnv(), r.environment(api, func(k, v string) string {
			if k == "CALLQ_API_ADDR" {
				require.Equal(t, ":8080", v)
				return addr
			}
			return translate(api)(k, v)
		})...)
		return r.p.start("api", "", apiEnv, api.Command...), []string{r.apiURL + "/healthz"}
	})}
	r.envs["api"] = apiEnv
	r.healthy("api", apiEnv, r.callqCheck(api))

	// The workers, each its own CALLQ_METRICS_ADDR for ":9090".
	wk := r.svc("worker")
	require.Equal(t, []string{"worker"}, wk.Command)
	require.NotNil(t, wk.Deploy)
	for i := range wk.Deploy.Replicas {
		var env []string
		c := r.p.startListening(func() (*child, []string) {
			addr := freeAddr(t)
			env = append(childEnv(), r.environment(wk, func(k, v string) string {
				if k == "CALLQ_METRICS_ADDR" {
					require.Equal(t, ":9090", v)
					return addr
				}
				return translate(wk)(k, v)
			})...)
			return r.p.start(fmt.Sprintf("worker%d", i+1), "", env, wk.Command...), []string{"http://" + addr + "/healthz"}
		})
		r.procs["worker"] = append(r.procs["worker"], c)
		r.healthy(c.name, env, r.callqCheck(wk))
		if i == 0 {
			r.envs["worker"] = env // exec runs in the first replica
		}
	}

	// For the shim's exec: each service's environment.
	for name, env := range r.envs {
		var b strings.Builder
		for _, kv := range env {
			k, v, _ := strings.Cut(kv, "=")
			fmt.Fprintf(&b, "export %s=%s\n", k, shellQuote(v))
		}
		require.NoError(t, os.WriteFile(filepath.Join(r.shim, name+".env"), []byte(b.String()), 0o600))
	}
	require.NoError(t, os.WriteFile(filepath.Join(r.shim, "api-url"), []byte(r.apiURL), 0o644))
}

// dockerShim is `docker` for the README's compose steps: build is checked
// and skipped (no engine here), compose up hands over to the test, exec runs
// the binary with the service's environment only.
const dockerShim = `#!/usr/bin/env bash
set -euo pipefail
shim="$DOCKER_SHIM_DIR"
printf '%s\n' "$*" >> "$shim/calls.log"
die() { echo "docker (test shim): $*" >&2; exit 97; }
case "${1:-}" in
build)
  [ -f deploy/Dockerfile ] || die "docker build run away from the repository's root"
  exit 0 ;;
compose) shift ;;
*) die "unsupported: docker $*" ;;
esac
[ -f compose.yaml ] || die "docker compose run away from deploy/"
while [ "$#" -gt 0 ]; do
  case "$1" in
  --profile) shift 2 ;;
  -*) die "unsupported compose option $1" ;;
  *) break ;;
  esac
done
sub="$1"; shift
case "$sub" in
up)
  touch "$shim/up.requested"
  for _ in $(seq 1 1200); do
    [ -e "$shim/up.failed" ] && die "up failed"
    [ -e "$shim/up.done" ] && exit 0
    sleep 0.1
  done
  die "up: the test did not start the services in 120s" ;;
exec)
  [ "${1:-}" = -T ] && shift
  svc="$1"; shift
  [ "${1:-}" = /callq ] || die "exec runs /callq only"
  shift
  [ -f "$shim/$svc.env" ] || die "no service $svc"
  exec env -i bash -c 'set -a; . "$1"; set +a; shift; exec "$@"' _ "$shim/$svc.env" "$CALLQ_BIN" "$@" ;;
*) die "unsupported: docker compose $sub" ;;
esac
`

func TestComposeFile(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	data, err := os.ReadFile(filepath.Join(root, "deploy", "compose.yaml"))
	require.NoError(t, err)
	cf, err := decodeCompose(data)
	require.NoError(t, err)

	// Strict: a misspelt key fails.
	_, err = decodeCompose(bytes.Replace(data, []byte("stop_grace_period: 40s"), []byte("stop_grace_periods: 40s"), 1))
	require.ErrorContains(t, err, "field stop_grace_periods not found")

	require.ElementsMatch(t, []string{"redis", "api", "worker", "httpbin"}, keysOfMap(cf.Services))
	rs := cf.Services["redis"]
	require.Regexp(t, `^redis:7(\.\d+)*$`, rs.Image, "Redis 7")
	require.Contains(t, rs.Volumes, "./redis/redis.conf:/usr/local/etc/redis/redis.conf:ro")
	require.Contains(t, rs.Volumes, "redis-data:/data", "Redis's data on a volume")
	require.Contains(t, cf.Volumes, "redis-data")

	for _, name := range []string{"api", "worker"} {
		s := cf.Services[name]
		require.Equal(t, "${CALLQ_IMAGE:-callq:dev}", s.Image, name)
		require.Equal(t, []string{".env"}, s.EnvFile, "%s: secrets from deploy/.env", name)
		require.Equal(t, "service_healthy", s.DependsOn["redis"].Condition, name)
		require.True(t, s.ReadOnly, "%s: read-only root", name)
		require.Equal(t, []string{"ALL"}, s.CapDrop, name)
		require.Contains(t, s.SecurityOpt, "no-new-privileges:true", name)
		require.NotNil(t, s.Healthcheck, name)
		for k := range s.Environment {
			require.NotContains(t, []string{"CALLQ_SECRET_KEY", "CALLQ_WEBHOOK_SECRET"}, k, "%s: secrets come from the env file", name)
		}
	}
	require.Equal(t, 2, cf.Services["worker"].Deploy.Replicas, "two workers")

	// Stop grace periods above the drains, or Docker's SIGKILL cuts them.
	wk := cf.Services["worker"]
	drain, err := time.ParseDuration(wk.Environment["CALLQ_SHUTDOWN_TIMEOUT"])
	require.NoError(t, err, "the worker's CALLQ_SHUTDOWN_TIMEOUT")
	require.Equal(t, worker.DefaultShutdownTimeout, drain, "the default drain, written out")
	grace, err := time.ParseDuration(wk.StopGracePeriod)
	require.NoError(t, err)
	require.Greater(t, grace, drain+5*time.Second, "the worker's stop_grace_period must exceed CALLQ_SHUTDOWN_TIMEOUT and the 5s after it")
	grace, err = time.ParseDuration(cf.Services["api"].StopGracePeriod)
	require.NoError(t, err)
	require.Greater(t, grace, producer.DefaultMaxWait+5*time.Second, "the API's stop_grace_period must cover its shutdown (long polls of up to %s, then 5s)", producer.DefaultMaxWait)

	// The demo's httpbin is the go-httpbin the tests use.
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	require.NoError(t, err)
	v := regexp.MustCompile(`github.com/mccutchen/go-httpbin/v2 (v\S+)`).FindSubmatch(gomod)
	require.NotNil(t, v)
	require.Equal(t, "mccutchen/go-httpbin:"+string(v[1]), cf.Services["httpbin"].Image)

	// The compose catalog is one callq accepts.
	cat, err := os.ReadFile(filepath.Join(root, "deploy", "compose.integrations.yaml"))
	require.NoError(t, err)
	_, err = tasks.ParseCatalog(cat)
	require.NoError(t, err)

	// .env.example, unedited, starts nothing: compose refuses the empty
	// Redis password, callq the empty secret key.
	vars := readEnvFile(t, filepath.Join(root, "deploy", ".env.example"))
	_, err = interpolate(strings.Join(rs.Command, " "), vars)
	require.ErrorContains(t, err, "REDIS_PASSWORD")
	require.Empty(t, vars["CALLQ_SECRET_KEY"])
}

func keysOfMap[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// The README's compose steps, run as written: the env file made from
// .env.example, the services up and healthy, an admin key made in the API's
// container, a call enqueued that succeeds, callq healthcheck in the API's
// and a worker's containers.
func TestComposeQuickstart(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	require.NoError(t, err)
	script := markedScript(t, string(readme), composeBegin, composeEnd)
	example, err := os.ReadFile(filepath.Join(root, "deploy", ".env.example"))
	require.NoError(t, err)
	require.Contains(t, strings.Join(strings.Fields(script), " "), strings.Join(strings.Fields(commentedShell(t, string(example), "Make it")), " "),
		"the README makes deploy/.env with the command .env.example shows")

	r := &composeRun{t: t, p: newProcs(t), repo: t.TempDir(), shim: t.TempDir()}
	for _, f := range []string{"Dockerfile", "compose.yaml", ".env.example", "compose.integrations.yaml", "redis/redis.conf"} {
		b, err := os.ReadFile(filepath.Join(root, "deploy", f))
		require.NoError(t, err)
		dst := filepath.Join(r.repo, "deploy", f)
		require.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o755))
		require.NoError(t, os.WriteFile(dst, b, 0o644))
	}
	data, err := os.ReadFile(filepath.Join(r.repo, "deploy", "compose.yaml"))
	require.NoError(t, err)
	r.cf, err = decodeCompose(data)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(r.shim, "docker"), []byte(dockerShim), 0o755))
	// A checkout: the build line stamps its commit (VCS_REF, VCS_TIME).
	head, headTime := gitCommitAll(t, r.repo)

	require.Contains(t, script, readmeAPIURL)
	script = strings.ReplaceAll(script, readmeAPIURL, `$(cat "$DOCKER_SHIM_DIR/api-url")`)
	t.Logf("compose steps:\n%s", script)
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = r.repo
	cmd.Env = childEnv("PATH="+r.shim+":"+os.Getenv("PATH"), "DOCKER_SHIM_DIR="+r.shim, "CALLQ_BIN="+r.p.bin)
	// Its own process group: a failing test kills the steps and the shim.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	})
	fail := func(format string, args ...any) {
		t.Helper()
		_ = os.WriteFile(filepath.Join(r.shim, "up.failed"), nil, 0o644)
		t.Fatalf(format+"\nstdout:\n%s\nstderr:\n%s", append(args, stdout.String(), stderr.String())...)
	}

	// Until the steps ask for `up`.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(r.shim, "up.requested")); err == nil {
			break
		}
		select {
		case err := <-done:
			done <- err
			fail("the compose steps ended (%v) before docker compose up", err)
		default:
		}
		if time.Now().After(deadline) {
			fail("no docker compose up within 60s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	calls := shimCalls(t, r.shim)
	require.Len(t, calls, 2, "docker build, then docker compose up: %v", calls)
	require.Equal(t, "build -f deploy/Dockerfile --build-arg VCS_REF="+head+" --build-arg VCS_TIME="+headTime+" -t callq:dev .", calls[0],
		"the image compose.yaml runs, from the repository's root, stamped with its commit")
	upArgs := strings.Fields(calls[1])
	require.Equal(t, "compose", upArgs[0])
	require.Contains(t, upArgs, "--wait", "up waits for the health checks")
	var profiles []string
	for i, a := range upArgs {
		if a == "--profile" {
			profiles = append(profiles, upArgs[i+1])
		}
	}

	// The env file the steps made: fresh secrets that callq takes.
	envPath := filepath.Join(r.repo, "deploy", ".env")
	fi, err := os.Stat(envPath)
	require.NoError(t, err, "the steps made no deploy/.env")
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "deploy/.env is for its owner only")
	r.vars = readEnvFile(t, envPath)
	_, err = auth.ParseKeyring(r.vars["CALLQ_SECRET_KEY"])
	require.NoError(t, err, "CALLQ_SECRET_KEY")
	_, err = auth.ParseWebhookSecrets(r.vars["CALLQ_WEBHOOK_SECRET"])
	require.NoError(t, err, "CALLQ_WEBHOOK_SECRET")
	require.Regexp(t, `^[0-9a-f]{64}$`, r.vars["REDIS_PASSWORD"])

	r.up(profiles)
	require.NoError(t, os.WriteFile(filepath.Join(r.shim, "up.done"), nil, 0o644))

	select {
	case err := <-done:
		done <- err
		if err != nil {
			fail("the compose steps failed: %v", err)
		}
	case <-time.After(2 * time.Minute):
		fail("the compose steps did not end within 2 minutes")
	}
	out := stdout.String()
	t.Logf("compose steps' stdout:\n%s\nstderr:\n%s", out, stderr.String())

	// The outputs: the enqueue's answer and the waited record (curl ends
	// neither with a newline), then the two checks' lines.
	var jsons []json.RawMessage
	dec := json.NewDecoder(strings.NewReader(out))
	for {
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			break // the checks' lines follow the JSON
		}
		jsons = append(jsons, v)
	}
	oks := regexp.MustCompile(`ok: \S+ answered 200`).FindAllString(out, -1)
	require.Len(t, jsons, 2, "the enqueue's answer and the record")
	var enq, rec struct {
		CorrelationID string `json:"correlation_id"`
		Status        string `json:"status"`
		Response      *struct {
			Status int `json:"status"`
		} `json:"response"`
	}
	require.NoError(t, json.Unmarshal(jsons[0], &enq))
	require.Equal(t, "queued", enq.Status, "%s", jsons[0])
	require.NoError(t, json.Unmarshal(jsons[1], &rec))
	require.Equal(t, enq.CorrelationID, rec.CorrelationID)
	require.Equal(t, "succeeded", rec.Status, "%s", jsons[1])
	require.Equal(t, http.StatusOK, rec.Response.Status)
	require.Equal(t, []string{
		"ok: " + r.apiURL + "/readyz answered 200",
		"ok: http://" + envValueOf(r.envs["worker"], "CALLQ_METRICS_ADDR") + "/readyz answered 200",
	}, oks, "callq healthcheck in the API's and a worker's container")
	requireNoErrorLogs(t, append(r.procs["api"], r.procs["worker"]...)...)
}

// commentedShell is the command a file's comment shows after the line
// holding marker: the first run of comment lines indented by three spaces.
func commentedShell(t *testing.T, file, marker string) string {
	t.Helper()
	var lines []string
	found := false
	for l := range strings.SplitSeq(file, "\n") {
		found = found || strings.HasPrefix(l, "#") && strings.Contains(l, marker)
		if !found {
			continue
		}
		if cmd, ok := strings.CutPrefix(l, "#   "); ok {
			lines = append(lines, cmd)
		} else if len(lines) > 0 {
			break
		}
	}
	require.NotEmpty(t, lines, "no command after %q", marker)
	return strings.Join(lines, "\n")
}

func shimCalls(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "calls.log"))
	require.NoError(t, err)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func envValueOf(env []string, name string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
}
