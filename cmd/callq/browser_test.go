package main

// The dashboard's browser tests: internal/dashboard/e2e holds Node test
// files that drive headless Debian chromium through playwright-core. This
// test starts what they walk through (redis-server, `callq api`, a worker,
// go-httpbin, a hostile upstream and a webhook receiver), makes the calls
// and keys, runs `node --test` there with them in CALLQ_E2E_* variables,
// and streams its output into the test log.

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mccutchen/go-httpbin/v2/httpbin"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/oauthtest"
	"github.com/callq/callq/tasks"
)

const (
	// e2eDir is the browser tests' npm package, from this package.
	e2eDir = "../../internal/dashboard/e2e"
	// readmeScreenshot is the calls page the README shows, from this
	// package; rewritten only when CALLQ_UPDATE_SCREENSHOT=1.
	readmeScreenshot = "../../internal/dashboard/screenshot.png"
	defaultChromium  = "/usr/bin/chromium"
)

// What the hostile upstream answers in its body and its headers. The
// browser tests assert that the pages show them as text and that
// window.__xss stays undefined.
var hostilePayloads = []string{
	`<script>window.__xss=1</script>`,
	`<img src=x onerror="window.__xss=1">`,
}

// e2eFixtures is CALLQ_E2E_FIXTURES: the calls the browser tests look for.
type e2eFixtures struct {
	Tenant       string   `json:"tenant"`
	Succeeded    []string `json:"succeeded"`
	Failed       []string `json:"failed"` // two attempts each, both 500
	Queued       string   `json:"queued"` // due in an hour
	Webhook      string   `json:"webhook"`
	Hostile      []string `json:"hostile"`
	Other        []string `json:"other"` // tenant B's
	Integrations []string `json:"integrations"`
	Payloads     []string `json:"payloads"`
	Refresh      struct {
		Integration string `json:"integration"`
		Path        string `json:"path"`
	} `json:"refresh"`
	Credential struct {
		Ref   string `json:"ref"`
		Field string `json:"field"`
		Value string `json:"value"`
	} `json:"credential"`
	// Connect: two sessions' links (tenant gamma's) and the app the
	// browser ends at.
	Connect struct {
		OAuth     string `json:"oauth"`
		OAuthRef  string `json:"oauthRef"`
		Form      string `json:"form"`
		FormRef   string `json:"formRef"`
		FormValue string `json:"formValue"`
		App       string `json:"app"`
	} `json:"connect"`
}

// browserPrereqs returns node, chromium and the e2e directory, or skips the
// test naming what is missing (fails it under CI=true, where a skip would
// let a broken setup pass).
func browserPrereqs(t *testing.T) (node, chromium, dir string) {
	t.Helper()
	dir, err := filepath.Abs(e2eDir)
	require.NoError(t, err)
	chromium = cmp.Or(os.Getenv("CALLQ_E2E_CHROMIUM"), defaultChromium)
	var missing []string
	if _, err := os.Stat(chromium); err != nil {
		missing = append(missing, chromium+" (apt-get install chromium)")
	}
	node, err = exec.LookPath("node")
	if err != nil {
		missing = append(missing, "node on the PATH")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core", "package.json")); err != nil {
		missing = append(missing, "playwright-core (npm ci in internal/dashboard/e2e)")
	}
	if len(missing) > 0 {
		msg := "the browser tests need " + strings.Join(missing, ", ")
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s (CI=true, so this is a failure, not a skip)", msg)
		}
		t.Skip(msg)
	}
	return node, chromium, dir
}

// newHostileUpstream answers every request with the payloads in two
// headers and in its body: HTML on /html, JSON on /json.
func newHostileUpstream(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Evil-Script", hostilePayloads[0])
		w.Header().Set("X-Evil-Img", hostilePayloads[1])
		switch r.URL.Path {
		case "/json":
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]string{"script": hostilePayloads[0], "img": hostilePayloads[1]})
		default:
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = io.WriteString(w, "<!doctype html><title>hi</title><p>hello "+strings.Join(hostilePayloads, " ")+"</p>\n")
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// webhookReceiver counts the deliveries of each call (?call=ID).
type webhookReceiver struct {
	*httptest.Server
	mu  sync.Mutex
	got map[string]int
}

func newWebhookReceiver(t *testing.T) *webhookReceiver {
	rc := &webhookReceiver{got: map[string]int{}}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		rc.mu.Lock()
		rc.got[r.URL.Query().Get("call")]++
		rc.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *webhookReceiver) deliveries(id string) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.got[id]
}

// createKey makes a key with `callq keys create` and returns its secret.
func (d *deployment) createKey(tenant, role string) string {
	d.t.Helper()
	stdout, stderr, code := d.cli(nil, "keys", "create", "--tenant", tenant, "--role", role)
	require.Zero(d.t, code, "keys create --tenant %s --role %s: %s", tenant, role, stderr)
	var created struct{ Key, Tenant string }
	require.NoError(d.t, json.Unmarshal([]byte(stdout), &created), stdout)
	require.Equal(d.t, tenant, created.Tenant)
	require.NotEmpty(d.t, created.Key)
	return created.Key
}

// waitFinished waits until the calls (of key's tenant) are finished, their
// webhook, if any, delivered.
func (d *deployment) waitFinished(key string, ids ...string) {
	d.t.Helper()
	for _, id := range ids {
		require.Eventually(d.t, func() bool {
			var rec tasks.Record
			require.Equal(d.t, http.StatusOK, d.doAs(key, http.MethodGet, "/v1/calls/"+id+"?wait=5s", nil, &rec))
			return rec.Status.Terminal() && (rec.Webhook == nil || rec.Webhook.Status == tasks.WebhookDelivered)
		}, 30*time.Second, 10*time.Millisecond, "call %s did not finish", id)
	}
}

// TestBrowserDashboard runs the browser tests of internal/dashboard/e2e
// against `callq api` and a worker. Without chromium, node or the npm
// packages it skips locally and fails under CI=true.
// CALLQ_TEST_SCREENSHOTS=DIR keeps the screenshots of every page in DIR;
// CALLQ_UPDATE_SCREENSHOT=1 rewrites internal/dashboard/screenshot.png.
func TestBrowserDashboard(t *testing.T) {
	t.Parallel()
	node, chromium, dir := browserPrereqs(t)
	files, err := filepath.Glob(filepath.Join(dir, "*.test.mjs"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "no browser test files in %s", dir)
	setupStart := time.Now()

	hostile := newHostileUpstream(t)
	provider := oauthtest.Start(t, time.Hour)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, "<!doctype html><title>app</title><p>back in the app</p>\n")
	}))
	t.Cleanup(app.Close)
	bearerBin := httptest.NewServer(httpbin.New()) // for the integration with a credential
	t.Cleanup(bearerBin.Close)
	receiver := newWebhookReceiver(t)
	d := deployWith(t, 0, fmt.Sprintf(`  hostile:
    base_url: %s
    auth: {type: none}
    retry: {max_attempts: 1}
  secured:
    base_url: %s
    auth: {type: bearer}
    rate_limit: {requests: 100, per: 1m}
    retry: {max_attempts: 1}
  crm:
    base_url: %s
    auth: %s
`, hostile.URL, bearerBin.URL, provider.API, provider.Auth()),
		"CALLQ_WEBHOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "CALLQ_WEBHOOK_ALLOW_PRIVATE=true")
	d.startWorker()
	const tenant, other = "acme", "beta" // createAdminKey's tenant, and another
	producerKey := d.createKey(tenant, "producer")
	otherKey := d.createKey(other, "admin")

	fx := e2eFixtures{
		Tenant:       tenant,
		Succeeded:    []string{"order-1001", "order-1002", "order-1003"},
		Failed:       []string{"order-2001", "order-2002", "order-2003"},
		Queued:       "order-3001",
		Webhook:      "order-1004",
		Hostile:      []string{"hostile-html", "hostile-json"},
		Other:        []string{"beta-0001"},
		Integrations: []string{"bin", "hostile", "secured", "slow"},
		Payloads:     hostilePayloads,
	}
	fx.Refresh.Integration, fx.Refresh.Path = "bin", "/get"
	fx.Connect.OAuth, fx.Connect.OAuthRef, fx.Connect.Form, fx.Connect.FormRef, fx.Connect.FormValue, fx.Connect.App =
		connectSessions(t, d, provider, app.URL)
	fx.Credential.Ref, fx.Credential.Field, fx.Credential.Value = "billing-main", "token", "s3cr3t-e2e-bearer-7c1d"
	require.Equal(t, http.StatusOK, d.do(http.MethodPut, "/v1/credentials/"+fx.Credential.Ref, map[string]any{
		"integration": "secured", "fields": map[string]string{fx.Credential.Field: fx.Credential.Value},
	}, nil), "put the credential")

	enqueue := func(key string, call map[string]any) {
		t.Helper()
		require.Equal(t, http.StatusAccepted, d.doAs(key, http.MethodPost, "/v1/calls", call, nil), "enqueue %v", call)
	}
	call := func(id, integration, method, path string) map[string]any {
		return map[string]any{"correlation_id": id, "integration": integration, "method": method, "path": path}
	}
	enqueue(d.apiKey, call("order-1001", "bin", "GET", "/get"))
	c := call("order-1002", "bin", "POST", "/post")
	c["body"] = map[string]any{"order": 1002, "amount": "19.90"}
	enqueue(d.apiKey, c)
	c = call("order-1003", "secured", "GET", "/bearer")
	c["credential"] = fx.Credential.Ref
	enqueue(d.apiKey, c)
	c = call(fx.Webhook, "bin", "GET", "/get")
	c["webhook"] = map[string]string{"url": receiver.URL + "/hook?call=" + fx.Webhook}
	enqueue(d.apiKey, c)
	for _, id := range fx.Failed {
		c := call(id, "bin", "GET", "/status/500")
		c["retry"] = map[string]any{"max_attempts": 2, "initial_interval": "10ms"}
		enqueue(d.apiKey, c)
	}
	c = call(fx.Queued, "bin", "GET", "/get")
	c["delay"] = "1h"
	enqueue(d.apiKey, c)
	enqueue(d.apiKey, call("hostile-html", "hostile", "GET", "/html"))
	enqueue(d.apiKey, call("hostile-json", "hostile", "GET", "/json"))
	enqueue(otherKey, call("beta-0001", "bin", "GET", "/get"))

	d.waitFinished(d.apiKey, append(append(append(slices.Clone(fx.Succeeded), fx.Failed...), fx.Hostile...), fx.Webhook)...)
	d.waitFinished(otherKey, fx.Other...)
	require.Equal(t, 1, receiver.deliveries(fx.Webhook))
	t.Logf("set up in %s", time.Since(setupStart).Round(time.Millisecond))

	fixtures, err := json.Marshal(fx)
	require.NoError(t, err)
	tmp := t.TempDir()
	shots := cmp.Or(os.Getenv("CALLQ_TEST_SCREENSHOTS"), filepath.Join(tmp, "screenshots"))
	env := childEnv(
		"CALLQ_E2E_URL="+d.apiURL,
		"CALLQ_E2E_ADMIN_KEY="+d.apiKey,
		"CALLQ_E2E_PRODUCER_KEY="+producerKey,
		"CALLQ_E2E_OTHER_KEY="+otherKey,
		"CALLQ_E2E_FIXTURES="+string(fixtures),
		"CALLQ_E2E_CHROMIUM="+chromium,
		"CALLQ_E2E_TMP="+tmp,
		"CALLQ_E2E_SCREENSHOTS="+shots,
	)
	if os.Getenv("CALLQ_UPDATE_SCREENSHOT") == "1" {
		path, err := filepath.Abs(readmeScreenshot)
		require.NoError(t, err)
		env = append(env, "CALLQ_E2E_README_SCREENSHOT="+path)
	}
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = filepath.Base(f)
	}

	runStart := time.Now()
	out := runNodeTests(t, node, dir, env, names)
	t.Logf("the browser tests ran in %s; screenshots in %s", time.Since(runStart).Round(time.Millisecond), shots)
	m := regexp.MustCompile(`(?m)^ℹ pass (\d+)$`).FindStringSubmatch(out)
	require.NotNil(t, m, "node --test printed no summary")
	passed, _ := strconv.Atoi(m[1])
	require.Positive(t, passed, "node --test ran no test")
	require.Regexp(t, `(?m)^ℹ fail 0$`, out)
	require.Regexp(t, `(?m)^ℹ skipped 0$`, out)

	// The walk pressed "Redeliver webhook".
	require.Eventually(t, func() bool { return receiver.deliveries(fx.Webhook) >= 2 }, 15*time.Second, 10*time.Millisecond,
		"the webhook of %s was not delivered again", fx.Webhook)
	requireNoErrorLogs(t, d.api)

	// The connect walk stored both credentials, in tenant gamma, and no
	// log line holds the form's value.
	var creds struct {
		Credentials []struct {
			Ref       string `json:"ref"`
			Connected *struct {
				Method string `json:"method"`
			} `json:"connected"`
		} `json:"credentials"`
	}
	gamma := d.createKey("gamma", "admin")
	require.Equal(t, http.StatusOK, d.doAs(gamma, http.MethodGet, "/v1/credentials", nil, &creds))
	require.Len(t, creds.Credentials, 2)
	for i, want := range [][2]string{{fx.Connect.FormRef, "form"}, {fx.Connect.OAuthRef, "oauth2"}} {
		require.Equal(t, want[0], creds.Credentials[i].Ref)
		require.NotNil(t, creds.Credentials[i].Connected)
		require.Equal(t, want[1], creds.Credentials[i].Connected.Method)
	}
	require.NotContains(t, d.procs.tails(100000), fx.Connect.FormValue)
}

// connectSessions starts a second `callq api` of the deployment, with
// CALLQ_PUBLIC_URL its own address and the app's origin allowed, makes
// provider its OAuth2 provider, and opens two sessions of tenant gamma on
// it: one of the oauth2 integration crm, one of the bearer integration
// secured (whose form is filled with formValue).
func connectSessions(t *testing.T, d *deployment, provider *oauthtest.Provider, appURL string) (oauth, oauthRef, form, formRef, formValue, app string) {
	t.Helper()
	var apiURL string
	d.procs.startListening(func() (*child, []string) {
		addr := freeAddr(t)
		apiURL = "http://" + addr
		c := d.procs.start("api-connect", "", append(slices.Clone(d.env), "CALLQ_API_ADDR="+addr,
			"CALLQ_PUBLIC_URL="+apiURL, "CALLQ_CONNECT_ALLOWED_ORIGINS="+appURL), "api")
		return c, []string{apiURL + "/readyz"}
	})
	provider.Register(t, apiURL)
	key := d.createKey("gamma", "admin")
	open := func(integration, ref string) string {
		var ans struct{ URL string }
		require.Equal(t, http.StatusCreated, d.doAt(apiURL, key, http.MethodPost, "/v1/connect/sessions", map[string]any{
			"integration": integration, "credential": ref, "redirect_uri": appURL + "/connected"}, &ans))
		return ans.URL
	}
	return open("crm", "gamma-crm"), "gamma-crm", open("secured", "gamma-billing"), "gamma-billing", "tok-e2e-4f1c9a", appURL
}

// runNodeTests runs `node --test` on files in dir, logging its output line
// by line as it comes, and fails the test if node fails. It returns the
// output.
func runNodeTests(t *testing.T, node, dir string, env, files []string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := append([]string{"--test", "--test-reporter=spec", "--test-concurrency=2"}, files...)
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Dir = dir
	cmd.Env = env
	// node, its test processes and their chromiums in one process group,
	// killed together when the time is up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var out strings.Builder
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			out.WriteString(line + "\n")
			t.Log("node: " + line)
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	t.Logf("running node %s in %s", strings.Join(args, " "), dir)
	err := cmd.Run()
	_ = pw.Close()
	<-done
	if ctx.Err() != nil {
		t.Fatalf("node --test did not finish within 3m: %v", err)
	}
	require.NoError(t, err, "node --test failed; its output is above")
	return out.String()
}
