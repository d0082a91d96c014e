package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mccutchen/go-httpbin/v2/httpbin"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/redistest"
	"github.com/callq/callq/tasks"
)

// seen is what an upstream received: every request's URL and headers.
type seen struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (s *seen) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// deploySources starts Redis, go-httpbin as an echoing upstream, and `callq
// api` and `callq worker` with source refs allowed and env added; the
// catalog's integrations send a credential's token in the query (echo-query)
// and as a bearer header (echo-header). What reached the upstream is in the
// returned seen.
func deploySources(t *testing.T, env ...string) (*deployment, *seen) {
	t.Helper()
	d := &deployment{t: t, procs: newProcs(t), http: validatingClient(t)}
	d.redis = redistest.Start(t)
	upstream := &seen{}
	bin := httpbin.New()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstream.mu.Lock()
		fmt.Fprintf(&upstream.buf, "%s %s\n", r.Method, r.URL)
		_ = r.Header.Write(&upstream.buf)
		upstream.mu.Unlock()
		bin.ServeHTTP(w, r)
	}))
	t.Cleanup(up.Close)

	catalog := filepath.Join(t.TempDir(), "integrations.yaml")
	require.NoError(t, os.WriteFile(catalog, fmt.Appendf(nil, `integrations:
  echo-query:
    base_url: %[1]s
    auth: {type: api_key, in: query, name: key}
    retry: {max_attempts: 1}
  echo-header:
    base_url: %[1]s
    auth: {type: bearer}
    retry: {max_attempts: 1}
`, up.URL), 0o644))
	secret, err := auth.GenerateKey()
	require.NoError(t, err)
	d.apiKey = createAdminKey(t, d.procs.bin, d.redis.URL)

	d.env = append(childEnv(
		"REDIS_URL="+d.redis.URL,
		"CALLQ_INTEGRATIONS="+catalog,
		"CALLQ_SECRET_KEY="+secret,
		"CALLQ_ALLOW_SOURCE_REFS=true",
		"CALLQ_LOG_LEVEL=debug",
	), env...)
	d.api = d.procs.startListening(func() (*child, []string) {
		addr := freeAddr(t)
		d.apiURL = "http://" + addr
		c := d.procs.start("api", "", append(slices.Clone(d.env), "CALLQ_API_ADDR="+addr), "api")
		return c, []string{d.apiURL + "/healthz"}
	})
	d.startWorker()
	return d, upstream
}

// call enqueues GET /get on integration with credential ref and waits for
// its record.
func (d *deployment) call(integration, ref string) *tasks.Record {
	d.t.Helper()
	id := "src-" + strings.ToLower(rand.Text()[:10])
	code := d.do(http.MethodPost, "/v1/calls", map[string]any{
		"integration": integration, "method": "GET", "path": "/get", "credential": ref, "correlation_id": id,
	}, nil)
	require.Equal(d.t, http.StatusAccepted, code)
	return d.waitAllTerminal([]string{id}, time.Now().Add(60*time.Second))[id]
}

// tokenField is the credential field each integration of deploySources
// sends.
var tokenField = map[string]string{"echo-query": "key", "echo-header": "token"}

// putFile puts credential ref for integration, its token read from path,
// and returns the answer's status and error field.
func (d *deployment) putFile(ref, integration, path string) (int, string) {
	d.t.Helper()
	body, err := json.Marshal(map[string]any{"integration": integration, "fields": map[string]string{tokenField[integration]: "file:" + path}})
	require.NoError(d.t, err)
	req, err := http.NewRequest(http.MethodPut, d.apiURL+"/v1/credentials/"+ref, bytes.NewReader(body))
	require.NoError(d.t, err)
	req.Header.Set("Authorization", "Bearer "+d.apiKey)
	resp, err := d.http.Do(req)
	require.NoError(d.t, err)
	defer resp.Body.Close()
	var ans struct {
		Error struct{ Field, Message string } `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&ans)
	return resp.StatusCode, ans.Error.Field
}

// storeRaw writes a credential into Redis as a callq from before the file:
// rules would have stored it, so that only the worker's read can refuse it.
func (d *deployment) storeRaw(ref, integration, path string) {
	d.t.Helper()
	cred := auth.Credential{Ref: ref, Tenant: "acme", Integration: integration, UpdatedAt: time.Now().UTC(),
		Fields: map[string]auth.Value{tokenField[integration]: {Kind: auth.KindFile, Ref: path}}}
	b, err := json.Marshal(cred)
	require.NoError(d.t, err)
	rdb := d.redis.Client(d.t)
	ctx := context.Background()
	require.NoError(d.t, rdb.Set(ctx, "callq:{acme}:cred:"+ref, b, 0).Err())
	require.NoError(d.t, rdb.SAdd(ctx, "callq:{acme}:creds", ref).Err())
}

// A file: credential never makes the worker send its own environment (with
// CALLQ_SECRET_KEY in it), nor any file under /proc, /sys or /dev, however
// the path is spelled and whatever symlink leads there: put, or stored
// before these rules and refused when the worker reads it. The worker's
// environment holds a canary the test looks for in every record and log.
func TestProcessFileSourcesNeverReachCallqItself(t *testing.T) {
	t.Parallel()
	canary := "canary-" + rand.Text()
	d, upstream := deploySources(t, "SOURCES_TEST_CANARY="+canary)
	secretKey := ""
	for _, kv := range d.env {
		if v, ok := strings.CutPrefix(kv, "CALLQ_SECRET_KEY="); ok {
			secretKey = v
		}
	}
	dir := t.TempDir()
	link := func(name, target string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.Symlink(target, p))
		return p
	}
	lexical := []string{
		"/proc/self/environ", "/proc/./self/environ", "//proc/self/environ", "/proc/self/../self/environ",
		"/proc/thread-self/environ", "/proc/1/environ", "/proc/self/root/proc/self/environ",
		"/sys/class/net/lo/address", "/dev/stdin", "/dev/zero",
	}
	linked := []string{
		link("environ", "/proc/self/environ"),
		link("self", "/proc/self") + "/environ",
		link("thread", "/proc/thread-self/environ"),
		link("chain", link("chain-b", "/proc/self/environ")),
		link("relative", strings.Repeat("../", strings.Count(dir, "/")+2)+"proc/self/environ"),
		link("zero", "/dev/zero"),
	}

	var records []string
	check := func(ref, integration string) {
		t.Helper()
		rec := d.call(integration, ref)
		b, _ := json.Marshal(rec)
		records = append(records, string(b))
		require.Equal(t, tasks.StatusFailed, rec.Status, "%s", b)
		require.NotNil(t, rec.Error, "%s", b)
		require.Equal(t, tasks.KindCredential, rec.Error.Kind, "%s", b)
		require.Nil(t, rec.Response, "nothing went upstream: %s", b)
	}
	for i, path := range linked {
		for _, integration := range []string{"echo-query", "echo-header"} {
			ref := fmt.Sprintf("linked-%d-%s", i, integration)
			code, _ := d.putFile(ref, integration, path)
			require.Equal(t, http.StatusOK, code, "a symlink's target is only known at read time: %s", path)
			check(ref, integration)
		}
	}
	for i, path := range lexical {
		for _, integration := range []string{"echo-query", "echo-header"} {
			ref := fmt.Sprintf("lexical-%d-%s", i, integration)
			code, field := d.putFile(ref, integration, path)
			require.Equal(t, http.StatusBadRequest, code, "file:%s was accepted", path)
			require.Equal(t, "fields."+tokenField[integration], field)
			d.storeRaw(ref, integration, path)
			check(ref, integration)
		}
	}

	for _, r := range records {
		require.NotContains(t, r, canary, "the worker's environment reached a record")
		require.NotContains(t, r, secretKey, "CALLQ_SECRET_KEY reached a record")
	}
	for _, c := range d.procs.list {
		require.NotContains(t, c.logs(), canary, "the worker's environment reached %s's logs", c.name)
		require.NotContains(t, c.logs(), secretKey, "CALLQ_SECRET_KEY reached %s's logs", c.name)
	}
	require.NotContains(t, upstream.String(), canary, "the worker's environment was sent upstream")
	require.NotContains(t, upstream.String(), url.QueryEscape(canary), "the worker's environment was sent upstream")

	// The positive control: a file: value the rules allow does go upstream,
	// where the same check sees it, and is redacted from the record.
	legit := "legit-" + rand.Text()
	path := filepath.Join(dir, "legit")
	require.NoError(t, os.WriteFile(path, []byte(legit+"\n"), 0o600))
	for _, integration := range []string{"echo-query", "echo-header"} {
		code, _ := d.putFile("legit-"+integration, integration, path)
		require.Equal(t, http.StatusOK, code)
		rec := d.call(integration, "legit-"+integration)
		b, _ := json.Marshal(rec)
		require.Equal(t, tasks.StatusSucceeded, rec.Status, "%s", b)
		require.NotContains(t, string(b), legit)
	}
	require.Contains(t, upstream.String(), "key="+legit)
	require.Contains(t, upstream.String(), "Bearer "+legit)
}

// CALLQ_SOURCE_DIRS reaches both the API, which refuses a file: path outside
// the directories, and the worker, which reads nothing outside them once
// symlinks are resolved.
func TestProcessSourceDirs(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	allowed, outside := filepath.Join(root, "secrets"), filepath.Join(root, "secrets2")
	for _, dir := range []string{allowed, outside} {
		require.NoError(t, os.Mkdir(dir, 0o700))
	}
	inside := "inside-" + rand.Text()
	require.NoError(t, os.WriteFile(filepath.Join(allowed, "token"), []byte(inside), 0o600))
	other := "outside-" + rand.Text()
	require.NoError(t, os.WriteFile(filepath.Join(outside, "token"), []byte(other), 0o600))
	require.NoError(t, os.Symlink(filepath.Join(outside, "token"), filepath.Join(allowed, "escape")))

	d, upstream := deploySources(t, "CALLQ_SOURCE_DIRS=/nonexistent/callq:"+allowed)

	code, field := d.putFile("outside", "echo-header", filepath.Join(outside, "token"))
	require.Equal(t, http.StatusBadRequest, code)
	require.Equal(t, "fields.token", field)

	code, _ = d.putFile("escape", "echo-header", filepath.Join(allowed, "escape"))
	require.Equal(t, http.StatusOK, code)
	rec := d.call("echo-header", "escape")
	require.Equal(t, tasks.StatusFailed, rec.Status)
	require.Equal(t, tasks.KindCredential, rec.Error.Kind)
	require.Contains(t, rec.Error.Message, "cannot be read")

	code, _ = d.putFile("inside", "echo-header", filepath.Join(allowed, "token"))
	require.Equal(t, http.StatusOK, code)
	rec = d.call("echo-header", "inside")
	require.Equal(t, tasks.StatusSucceeded, rec.Status)

	require.Contains(t, upstream.String(), "Bearer "+inside)
	require.NotContains(t, upstream.String(), other)

	// A malformed CALLQ_SOURCE_DIRS stops the process, naming it.
	cmd := exec.Command(d.procs.bin, "worker")
	cmd.Env = append(slices.Clone(d.env), "CALLQ_SOURCE_DIRS=relative/dir")
	out, err := cmd.CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), "CALLQ_SOURCE_DIRS")
}
