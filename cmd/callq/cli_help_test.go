package main

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	deployfiles "github.com/callq/callq/deploy"
)

// runBinary runs the callq binary with env (on top of childEnv) in dir and
// returns its stdout, stderr and exit code.
func runBinary(t *testing.T, dir string, env []string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, callqBinary(t), args...)
	cmd.Env = childEnv(env...)
	cmd.Dir = dir
	stdout, stderr, code := runCmd(t, cmd)
	if ctx.Err() != nil {
		t.Fatalf("callq %s did not exit within a minute", strings.Join(args, " "))
	}
	return stdout, stderr, code
}

// tripwire is a listener that fails the test if anything connects: where
// CALLQ_URL and REDIS_URL point while a command must do nothing. It is
// plain TCP, not an HTTP server: a Redis client's connection is one an
// HTTP server answers 400 without calling its handler.
func tripwire(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed at the test's end
			}
			buf := make([]byte, 64)
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			n, _ := c.Read(buf)
			t.Errorf("a connection reached the tripwire: %q", buf[:n])
			_ = c.Close()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	return ln.Addr().String()
}

// Every command and group answers -h and --help with its own usage and
// exits 0, doing nothing else: no request reaches the API or Redis.
func TestEveryCommandAnswersHelp(t *testing.T) {
	t.Parallel()
	wire := tripwire(t)
	env := []string{"CALLQ_URL=http://" + wire, "REDIS_URL=redis://" + wire + "/0", "CALLQ_API_ADDR=" + wire, "CALLQ_METRICS_ADDR=" + wire}
	var paths []string
	var walk func(c *command)
	walk = func(c *command) {
		paths = append(paths, c.path)
		for _, sub := range c.subs {
			walk(sub)
		}
	}
	walk(root)
	require.Greater(t, len(paths), 25, "the tree was walked")
	for _, path := range paths {
		for _, h := range []string{"-h", "--help"} {
			t.Run(strings.ReplaceAll(path, " ", "_")+h, func(t *testing.T) {
				t.Parallel()
				args := append(strings.Fields(path), h)
				stdout, stderr, code := runBinary(t, t.TempDir(), env, args...)
				require.Equal(t, 0, code, "callq %s: %s", strings.Join(args, " "), stderr)
				require.Empty(t, stderr)
				if path == "" {
					require.Contains(t, stdout, "Exit codes:")
					for _, s := range settings {
						require.Contains(t, stdout, "  "+s.env+" ", "the top-level help lists every variable")
					}
					require.Contains(t, stdout, "OTEL_EXPORTER_OTLP_")
					return
				}
				require.Regexp(t, "^Usage: callq "+path+"[ \n]", stdout, "callq %s", strings.Join(args, " "))
			})
		}
	}
	// A command is offered only the flags that apply to it.
	stdout, _, code := runBinary(t, t.TempDir(), env, "worker", "--help")
	require.Equal(t, 0, code)
	require.NotContains(t, stdout, "--addr")
	require.Contains(t, stdout, "--concurrency")
}

// A wrong command line exits 2 with the usage on stderr, and does nothing.
func TestWrongCommandLineExits2(t *testing.T) {
	t.Parallel()
	wire := tripwire(t)
	env := []string{"CALLQ_URL=http://" + wire, "REDIS_URL=redis://" + wire + "/0"}
	for _, args := range [][]string{
		{"nope"}, {"calls", "nope"}, {"calls"}, {"creds", "rm"}, {"creds", "rm", "a", "b"},
		{"worker", "--addr", ":1"}, {"get", "x", "--nope"}, {"call", "GET"}, {"keys", "create", "--tenant", "t", "--role", "owner"},
		{"version", "extra"}, {"bench", "--calls", "x"},
		// A wait the API refuses (over its 60s) is refused here, before the
		// call is enqueued: not an exit 1 for a call that is still queued.
		{"call", "--integration", "bin", "GET", "/get", "--wait", "61s"}, {"get", "x", "--wait", "2m"},
		{"calls", "get", "x", "--wait", "-1s"},
	} {
		t.Run(strings.Join(args, "_"), func(t *testing.T) {
			t.Parallel()
			stdout, stderr, code := runBinary(t, t.TempDir(), env, args...)
			require.Equal(t, 2, code, "%s", stderr)
			require.Empty(t, stdout)
			require.Contains(t, stderr, "Usage: callq")
		})
	}
}

// badValues is a malformed value of each variable callq parses; the free
// ones take any text.
var (
	badValues = map[string]string{
		"REDIS_URL": "http://x", "CALLQ_REDIS_CLUSTER_ADDRS": "a:b:c", "CALLQ_SECRET_KEY": "short",
		"CALLQ_API_ADDR": "nonsense", "CALLQ_CONCURRENCY": "abc", "CALLQ_WEBHOOK_CONCURRENCY": "0", "CALLQ_QUEUES": "default", "CALLQ_RESULT_TTL": "1 day",
		"CALLQ_MAX_REQUEST_BYTES": "1MiB", "CALLQ_MAX_RESPONSE_BYTES": "-1", "CALLQ_SHUTDOWN_TIMEOUT": "45", "CALLQ_CREDENTIAL_CACHE_TTL": "-1s",
		"CALLQ_RECONCILE_INTERVAL": "0", "CALLQ_QUEUE_SHARDS": "65", "CALLQ_PREVIOUS_QUEUE_SHARDS": "1;4",
		"CALLQ_SCHEDULER": "yes", "CALLQ_LOG_LEVEL": "loud", "CALLQ_LOG_FORMAT": "xml", "CALLQ_WEBHOOK_SECRET": "nope",
		"CALLQ_WEBHOOK_ALLOW_PRIVATE": "yes", "CALLQ_WEBHOOK_SCHEDULE": "5s,soon", "CALLQ_METRICS_ADDR": "9090",
		"CALLQ_ALLOW_SOURCE_REFS": "on", "CALLQ_SOURCE_DIRS": "relative/dir", "CALLQ_URL": "127.0.0.1:8080",
		"CALLQ_PUBLIC_URL": "http://callq.example", "CALLQ_CONNECT_ALLOWED_ORIGINS": "http://app.example",
	}
	freeText = []string{"CALLQ_INTEGRATIONS", "CALLQ_DEV_API_KEY", "CALLQ_API_KEY"}
)

// Every variable is parsed strictly: a malformed value stops every command
// that reads it, exit 2, with a message naming the variable.
func TestEveryVariableIsParsedStrictly(t *testing.T) {
	t.Parallel()
	wire := tripwire(t)
	for _, s := range settings {
		if slices.Contains(freeText, s.env) {
			continue
		}
		bad, ok := badValues[s.env]
		require.True(t, ok, "no malformed value of %s in badValues: add one", s.env)
		for _, cmd := range append(slices.Clone(s.flagIn), s.envIn...) {
			t.Run(s.env+"/"+strings.ReplaceAll(cmd, " ", "_"), func(t *testing.T) {
				t.Parallel()
				args := strings.Fields(cmd)
				switch cmd {
				case "client":
					args = []string{"get", "x"}
				case "keys revoke":
					args = append(args, "id")
				case "keys create":
					args = append(args, "--tenant", "t")
				}
				env := []string{"CALLQ_URL=http://" + wire, "REDIS_URL=redis://" + wire + "/0", s.env + "=" + bad}
				_, stderr, code := runBinary(t, t.TempDir(), env, args...)
				require.Equal(t, 2, code, "%s=%s callq %s: %s", s.env, bad, cmd, stderr)
				require.Contains(t, stderr, s.env)
				if s.secret {
					require.NotContains(t, stderr, bad, "a secret's value is never shown")
				}
			})
		}
	}
}

// A malformed value of a secret's flag is refused without quoting it, as
// its variable's is: a REDIS_URL's password stays off the terminal and CI
// logs.
func TestSecretFlagValueNeverQuoted(t *testing.T) {
	t.Parallel()
	for _, s := range settings {
		if !s.secret || s.flag == "" {
			continue
		}
		bad := badValues[s.env]
		require.NotEmpty(t, bad, s.env)
		bad = strings.Replace(bad, "://", "://user:s3cret-canary@", 1) + "s3cret-canary"
		for _, cmd := range s.flagIn {
			t.Run(s.flag+"/"+strings.ReplaceAll(cmd, " ", "_"), func(t *testing.T) {
				t.Parallel()
				args := append(strings.Fields(cmd), "--"+s.flag, bad)
				if cmd == "keys revoke" {
					args = append(args, "id")
				}
				stdout, stderr, code := runBinary(t, t.TempDir(), nil, args...)
				require.Equal(t, 2, code, "%s", stderr)
				require.Empty(t, stdout)
				require.Contains(t, stderr, "--"+s.flag)
				require.NotContains(t, stderr, "s3cret-canary", "a secret's value is never shown")
			})
		}
	}
}

// CALLQ_URL with a user and password is refused, unquoted: the CLI sends
// the API key as its Authorization, so they would never be used, and its
// errors would show them.
func TestAPIURLWithPasswordRefusedUnquoted(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"http://u:s3cret-canary@" + freeAddr(t), "http://u:s3cret-canary@127.0.0.1:port", "ftp://u:s3cret-canary@host"} {
		_, stderr, code := runBinary(t, t.TempDir(), []string{"CALLQ_URL=" + u}, "get", "x")
		require.Equal(t, 2, code, "%s", stderr)
		require.Contains(t, stderr, "CALLQ_URL")
		require.NotContains(t, stderr, "s3cret-canary")
	}
}

// callq dev runs from a directory with no deploy/ (the catalog built in),
// prints export lines that work, and no colour codes into a pipe.
func TestProcessDevFromAnyDirectory(t *testing.T) {
	t.Parallel()
	example, err := os.ReadFile(filepath.Join("..", "..", "deploy", "integrations.example.yaml"))
	require.NoError(t, err)
	require.Equal(t, string(example), string(deployfiles.ExampleCatalog))

	p := newProcs(t)
	dir := t.TempDir()
	c := p.startListening(func() (*child, []string) {
		addr := freeAddr(t)
		c := p.start("dev", dir, childEnv(), "dev", "--addr", addr, "--httpbin-addr", freeAddr(t), "--log-level", "debug")
		return c, []string{"http://" + addr + "/readyz"}
	})
	var exports string
	require.Eventually(t, func() bool {
		sc := bufio.NewScanner(strings.NewReader(c.logs()))
		for sc.Scan() {
			if line := strings.TrimSpace(sc.Text()); strings.HasPrefix(line, "export CALLQ_URL=") {
				exports = line
				return true
			}
		}
		return false
	}, 30*time.Second, 20*time.Millisecond)
	out := c.logs()
	require.Contains(t, out, "the example catalog built into callq")
	require.Contains(t, out, "httpbin:          http://127.0.0.1:")
	require.NotContains(t, out, "\x1b[", "no colour codes when the output is not a terminal")
	require.Regexp(t, `(?m)^\d\d:\d\d:\d\d\.\d{3} `, out, "log times are in milliseconds")

	// The example catalog's httpbin is the one --httpbin-addr serves, not
	// whatever listens on its default port.
	script := exports + "\n" + shellQuote(p.bin) + " integrations --integrations /dev/null >/dev/null 2>&1 || true\n" +
		shellQuote(p.bin) + " creds list\n" +
		shellQuote(p.bin) + " call --integration httpbin GET /get --wait 30s\n"
	stdout, _ := runScript(t, "exports", dir, script, childEnv())
	require.Contains(t, stdout, `"credentials"`)
	require.Contains(t, stdout, `"status": "succeeded"`)
}

// callq version prints the version, the commit and the Go version from the
// build information; "callq help COMMAND" is "callq COMMAND --help".
func TestVersionCommandAndHelpCommand(t *testing.T) {
	t.Parallel()
	stdout, stderr, code := runBinary(t, t.TempDir(), nil, "version")
	require.Equal(t, 0, code, stderr)
	require.Regexp(t, `^callq \S+\ncommit: \S+.*\ncommit time: \S+\ngo: go1\.\d+`, stdout)

	viaHelp, _, code := runBinary(t, t.TempDir(), nil, "help", "calls", "ls")
	require.Equal(t, 0, code)
	viaFlag, _, _ := runBinary(t, t.TempDir(), nil, "calls", "ls", "--help")
	require.Equal(t, viaFlag, viaHelp)
	require.Contains(t, viaHelp, "--status")
}

// callq integrations chooses its catalog as callq dev does: --integrations,
// else deploy/integrations.example.yaml where it runs, else the example
// catalog built in; it reads a file, never the API or Redis.
func TestIntegrationsCatalogAsDevChoosesIt(t *testing.T) {
	t.Parallel()
	env := []string{"CALLQ_URL=http://" + tripwire(t), "REDIS_URL=redis://" + tripwire(t)}

	// Anywhere: the catalog built in, and stderr says so.
	stdout, stderr, code := runBinary(t, t.TempDir(), env, "integrations")
	require.Equal(t, 0, code, stderr)
	require.Regexp(t, `(?m)^httpbin\s+http://127\.0\.0\.1:8090\s+none`, stdout)
	require.Equal(t, "callq: no --integrations or CALLQ_INTEGRATIONS: "+builtinCatalogName+"\n", stderr)

	// In a checkout: its deploy/integrations.example.yaml.
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "deploy"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "deploy", "integrations.example.yaml"),
		[]byte("integrations:\n  local-one:\n    base_url: https://local.example\n"), 0o644))
	stdout, stderr, code = runBinary(t, dir, env, "integrations", "--json")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, `"name": "local-one"`)
	require.NotContains(t, stdout, `"name": "httpbin"`)
	require.Contains(t, stderr, exampleCatalogPath)

	// --integrations (or CALLQ_INTEGRATIONS) wins, silently.
	other := filepath.Join(t.TempDir(), "cat.yaml")
	require.NoError(t, os.WriteFile(other, []byte("integrations:\n  other-one:\n    base_url: https://other.example\n"), 0o644))
	for _, args := range [][]string{{"integrations", "--integrations", other}, {"integrations"}} {
		e := env
		if len(args) == 1 {
			e = append(slices.Clone(env), "CALLQ_INTEGRATIONS="+other)
		}
		stdout, stderr, code = runBinary(t, dir, e, args...)
		require.Equal(t, 0, code, stderr)
		require.Contains(t, stdout, "other-one")
		require.NotContains(t, stdout, "local-one")
		require.Empty(t, stderr)
	}
}

// The README's exit-code table and callq --help's list name the same codes.
func TestExitCodesReadmeAndHelpAgree(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	require.NoError(t, err)
	_, table, ok := strings.Cut(string(readme), "\nExit codes:\n\n| code | meaning |\n| --- | --- |\n")
	require.True(t, ok, "README.md has no exit-code table")
	table, _, _ = strings.Cut(table, "\n\n")
	var inReadme, inHelp []string
	for row := range strings.SplitSeq(table, "\n") {
		code, _, _ := strings.Cut(strings.TrimPrefix(row, "| "), " |")
		inReadme = append(inReadme, code)
	}
	for l := range strings.SplitSeq(strings.TrimPrefix(exitCodesHelp, "Exit codes:\n"), "\n") {
		if f := strings.Fields(l); len(f) > 0 && regexp.MustCompile(`^\d+$`).MatchString(f[0]) {
			inHelp = append(inHelp, f[0])
		}
	}
	require.Equal(t, inReadme, inHelp)
	require.Contains(t, inHelp, strconv.Itoa(exitInterrupted))
}
