package main

// The figures of the README's "Running in production": what a stored call
// costs Redis in memory, and what a call costs Redis, the API and a worker
// in CPU, measured through the processes the image runs (built as
// deploy/Dockerfile builds them) on a redis-server with
// deploy/redis/redis.conf. The test asserts that the measurement sees what it
// measures; the figures go to the log (go test -run TestProductionFigures -v
// ./cmd/callq/).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/redistest"
)

// procCPU is a process's user and system CPU time so far.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	require.NoError(t, err)
	// The fields after the command's closing parenthesis: utime and stime
	// are the 12th and 13th, in clock ticks (USER_HZ, 100 on Linux).
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	utime, err := strconv.ParseInt(f[11], 10, 64)
	require.NoError(t, err)
	stime, err := strconv.ParseInt(f[12], 10, 64)
	require.NoError(t, err)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// redisStats is Redis's used_memory and CPU time.
func redisStats(t *testing.T, rdb *redis.Client) (mem int64, cpu time.Duration) {
	t.Helper()
	info, err := rdb.Info(context.Background(), "memory", "cpu").Result()
	require.NoError(t, err)
	var secs float64
	for l := range strings.SplitSeq(info, "\r\n") {
		k, v, _ := strings.Cut(l, ":")
		switch k {
		case "used_memory":
			mem, err = strconv.ParseInt(v, 10, 64)
			require.NoError(t, err)
		case "used_cpu_sys", "used_cpu_user":
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err)
			secs += f
		}
	}
	return mem, time.Duration(secs * float64(time.Second))
}

func TestProductionFigures(t *testing.T) {
	t.Parallel()
	bin := imageBinary(t)
	rs := redistest.StartConf(t, filepath.Join(repoRoot(t), "deploy", "redis", "redis.conf"))
	rdb := rs.Client(t)

	// A body of exactly 1 KiB, and a small one.
	kib := []byte(`{"data":"` + strings.Repeat("x", 1024-len(`{"data":""}`)) + `"}`)
	require.Len(t, kib, 1024)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/kib" {
			_, _ = w.Write(kib)
			return
		}
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(up.Close)
	catalog := filepath.Join(t.TempDir(), "integrations.yaml")
	require.NoError(t, os.WriteFile(catalog, fmt.Appendf(nil, "integrations:\n  fig:\n    base_url: %s\n    auth: {type: none}\n    retry: {max_attempts: 1}\n", up.URL), 0o644))
	secret, err := auth.GenerateKey()
	require.NoError(t, err)
	env := childEnv("REDIS_URL="+rs.URL, "CALLQ_INTEGRATIONS="+catalog, "CALLQ_SECRET_KEY="+secret)

	p := newProcs(t)
	d := &deployment{t: t, procs: p, http: validatingClient(t)}
	d.apiKey = createAdminKey(t, p.bin, rs.URL)
	d.api = p.startListening(func() (*child, []string) {
		addr := freeAddr(t)
		d.apiURL = "http://" + addr
		cmd := exec.Command(bin, "api")
		cmd.Env = append(slices.Clone(env), "CALLQ_API_ADDR="+addr)
		return p.startCmd("api", cmd), []string{d.apiURL + "/readyz"}
	})
	wcmd := exec.Command(bin, "worker")
	wcmd.Env = env // concurrency 50, the default
	w := p.startCmd("worker", wcmd)

	// Warm up: a call of each kind, so that the phases measure the steady
	// state (pools, the tenant's keys, the index's shards).
	client := &http.Client{Timeout: 30 * time.Second}
	enqueue := func(id, path string) {
		body, _ := json.Marshal(map[string]any{"integration": "fig", "method": "GET", "path": path, "correlation_id": id})
		req, _ := http.NewRequest(http.MethodPost, d.apiURL+"/v1/calls", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+d.apiKey)
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				err = fmt.Errorf("answered %d", resp.StatusCode)
			}
		}
		if err != nil {
			t.Errorf("enqueue %s: %v", id, err)
		}
	}
	ctx := context.Background()
	drained := func() bool {
		n := int64(0)
		for _, k := range []string{"asynq:{default}:pending", "asynq:{default}:active"} {
			l, err := rdb.LLen(ctx, k).Result()
			require.NoError(t, err)
			n += l
		}
		return n == 0
	}
	for i := range 50 {
		enqueue(fmt.Sprintf("warm-%d", i), "/small")
		enqueue(fmt.Sprintf("warm-kib-%d", i), "/kib")
	}
	d.waitAllTerminal([]string{"warm-49", "warm-kib-49"}, time.Now().Add(30*time.Second))
	waitFor(t, 30*time.Second, "the warm-up drained", drained)

	const n = 2000
	type figures struct{ memPerRecord, redisCPU, apiCPU, workerCPU float64 }
	phase := func(name, path string) figures {
		mem0, rcpu0 := redisStats(t, rdb)
		a0, w0 := procCPU(t, d.api.cmd.Process.Pid), procCPU(t, w.cmd.Process.Pid)
		start := time.Now()
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := g; i < n; i += 8 {
					enqueue(fmt.Sprintf("%s-%05d", name, i), path)
				}
			}()
		}
		wg.Wait()
		waitFor(t, 60*time.Second, name+": every call run", drained)
		took := time.Since(start)
		mem1, rcpu1 := redisStats(t, rdb)
		a1, w1 := procCPU(t, d.api.cmd.Process.Pid), procCPU(t, w.cmd.Process.Pid)
		f := figures{
			memPerRecord: float64(mem1-mem0) / n,
			redisCPU:     float64((rcpu1 - rcpu0).Microseconds()) / n,
			apiCPU:       float64((a1 - a0).Microseconds()) / n,
			workerCPU:    float64((w1 - w0).Microseconds()) / n,
		}
		t.Logf("%s: %d calls in %s (%.0f/s); per stored call %.0f bytes of Redis memory; CPU per call: Redis %.0f µs, API %.0f µs, worker %.0f µs",
			name, n, took.Round(time.Millisecond), n/took.Seconds(), f.memPerRecord, f.redisCPU, f.apiCPU, f.workerCPU)
		return f
	}
	small := phase("small", "/small")
	big := phase("kib", "/kib")
	// What appendfsync always costs on this machine's disk: the same small
	// calls with an fsync before every answer.
	require.NoError(t, rdb.ConfigSet(ctx, "appendfsync", "always").Err())
	phase("always", "/small")
	require.NoError(t, rdb.ConfigSet(ctx, "appendfsync", "everysec").Err())

	// Every call succeeded and is stored: a sample of each phase.
	for _, id := range []string{"small-00000", "small-01999", "kib-00000", "kib-01999"} {
		var rec struct {
			Status   string `json:"status"`
			Response struct {
				Size int `json:"size"`
			} `json:"response"`
		}
		require.Equal(t, http.StatusOK, d.do(http.MethodGet, "/v1/calls/"+id, nil, &rec))
		require.Equal(t, "succeeded", rec.Status, id)
	}
	// The measurement sees the records: a stored call takes memory, and
	// the 1 KiB body adds about a KiB to each.
	require.Greater(t, small.memPerRecord, 100.0, "a stored call costs more than 100 bytes")
	require.InDelta(t, 1024+small.memPerRecord, big.memPerRecord, 1024, "a 1 KiB body adds about a KiB")
	require.Positive(t, small.redisCPU)
	require.Positive(t, small.workerCPU)
	require.Positive(t, small.apiCPU)
	require.False(t, w.exited())
}
