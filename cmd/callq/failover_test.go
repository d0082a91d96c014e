package main

// What happens to accepted calls when Redis dies: a Redis restarted from its
// append-only file (deploy/redis/redis.conf, appendfsync always) keeps every
// call that got a 202; a Sentinel failover keeps callq running without a
// restart and loses at most what asynchronous replication had not copied,
// which the test measures.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/redistest"
	"github.com/callq/callq/tasks"
)

// deployOn starts an upstream and `callq api` on the Redis at redisURL, as
// deploy does on a Redis of its own; the test starts workers.
func deployOn(t *testing.T, redisURL string, extraEnv ...string) *deployment {
	t.Helper()
	return deployOnWith(t, redisURL, nil, extraEnv...)
}

// deployOnWith is deployOn with more of the catalog: extra returns YAML
// appended to its integrations map (entries indented by two spaces),
// given the upstream's URL. extraEnv is also the environment of the
// `callq keys create` that makes the admin key.
func deployOnWith(t *testing.T, redisURL string, extra func(upstream string) string, extraEnv ...string) *deployment {
	t.Helper()
	d := &deployment{t: t, procs: newProcs(t), http: validatingClient(t)}
	d.up = newUpstream(t, 0)
	more := ""
	if extra != nil {
		more = extra(d.up.URL)
	}
	catalog := filepath.Join(t.TempDir(), "integrations.yaml")
	require.NoError(t, os.WriteFile(catalog, fmt.Appendf(nil, `integrations:
  slow:
    base_url: %s
    auth: {type: none}
    retry: {max_attempts: 5}
%s`, d.up.URL, more), 0o644))
	secret, err := auth.GenerateKey()
	require.NoError(t, err)
	d.apiKey = createAdminKeyEnv(t, d.procs.bin, append([]string{"REDIS_URL=" + redisURL}, extraEnv...))
	d.env = append(childEnv(
		"REDIS_URL="+redisURL,
		"CALLQ_INTEGRATIONS="+catalog,
		"CALLQ_SECRET_KEY="+secret,
	), extraEnv...)
	d.api = d.procs.startListening(func() (*child, []string) {
		addr := freeAddr(t)
		d.apiURL = "http://" + addr
		c := d.procs.start("api", "", append(slices.Clone(d.env), "CALLQ_API_ADDR="+addr), "api")
		return c, []string{d.apiURL + "/readyz"}
	})
	return d
}

// tryEnqueue POSTs GET /slow under id, for a load: it returns the status
// (0 when the request failed) instead of failing the test.
func (d *deployment) tryEnqueue(client *http.Client, id string) int {
	body, _ := json.Marshal(map[string]any{
		"integration": "slow", "method": "GET", "path": "/slow",
		"headers": map[string]string{"X-Test-Call": id}, "correlation_id": id,
	})
	req, _ := http.NewRequest(http.MethodPost, d.apiURL+"/v1/calls", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+d.apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// settle waits, by ?wait= long polls, until every call is terminal or
// missing (404: its record is gone), and returns the records (nil for a
// missing call).
func (d *deployment) settle(ids []string, deadline time.Time) map[string]*tasks.Record {
	t := d.t
	t.Helper()
	out := map[string]*tasks.Record{}
	for _, id := range ids {
		for {
			var rec tasks.Record
			code := d.do(http.MethodGet, "/v1/calls/"+id+"?wait=10s", nil, &rec)
			if code == http.StatusNotFound {
				out[id] = nil
				break
			}
			require.Equal(t, http.StatusOK, code, "GET /v1/calls/%s", id)
			if rec.Status.Terminal() {
				out[id] = &rec
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("call %s is still %s at the deadline: %s", id, rec.Status, historyString(&rec))
			}
		}
	}
	return out
}

// load enqueues calls back to back from senders goroutines until stop is
// closed, and keeps the IDs that got a 202 with the time of their answer.
type load struct {
	mu       sync.Mutex
	accepted []acceptedCall
	refused  atomic.Int64 // answers other than 202, and failed requests
	wg       sync.WaitGroup
	stop     chan struct{}
}

type acceptedCall struct {
	id string
	at time.Time
}

func startLoad(d *deployment, prefix string, senders int) *load {
	l := &load{stop: make(chan struct{})}
	client := d.http
	for g := range senders {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for n := 0; ; n++ {
				select {
				case <-l.stop:
					return
				default:
				}
				id := fmt.Sprintf("%s-%d-%05d", prefix, g, n)
				if code := d.tryEnqueue(client, id); code == http.StatusAccepted {
					l.mu.Lock()
					l.accepted = append(l.accepted, acceptedCall{id, time.Now()})
					l.mu.Unlock()
				} else {
					l.refused.Add(1)
				}
			}
		}()
	}
	return l
}

func (l *load) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.accepted)
}

// halt stops the senders and waits for their requests in flight.
func (l *load) halt() []acceptedCall {
	close(l.stop)
	l.wg.Wait()
	return l.accepted
}

// waitFor polls cond every 10ms until it holds, or fails the test after
// bound.
func waitFor(t *testing.T, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, bound)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A Redis with deploy/redis/redis.conf, but appendfsync always, SIGKILLed
// while `callq api` answers 202 to a stream of calls, then restarted from
// its append-only file: every call that got a 202 is there, and runs once a
// worker starts.
func TestRedisAOFKeepsAcceptedCalls(t *testing.T) {
	t.Parallel()
	conf := filepath.Join(repoRoot(t), "deploy", "redis", "redis.conf")
	rs := redistest.StartConf(t, conf, "--appendfsync", "always")
	d := deployOn(t, rs.URL)

	l := startLoad(d, "aof", 4)
	waitFor(t, 30*time.Second, "300 calls accepted", func() bool { return l.count() >= 300 })
	rs.Kill(t) // mid-stream: requests are in flight
	killedAt := time.Now()
	accepted := l.halt()
	t.Logf("SIGKILLed Redis after %d calls got a 202 (%d requests refused or failed, the ones in flight at the kill among them)",
		len(accepted), l.refused.Load())

	rs.Restart(t)
	waitFor(t, 30*time.Second, "the API ready again, without a restart", func() bool {
		resp, err := d.http.Get(d.apiURL + "/readyz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	w := d.startWorker()
	ids := make([]string, len(accepted))
	for i, a := range accepted {
		ids[i] = a.id
	}
	// A call whose task the dead master handed to the worker, in a reply
	// that never arrived, is active on the new master with no worker on
	// it: asynq's lease recovery gives it back 60 to 120s later (the
	// README's recovery windows). It is late, not lost: wait for it.
	recs := d.settle(ids, time.Now().Add(150*time.Second))
	var late int
	for _, a := range accepted {
		rec := recs[a.id]
		require.NotNil(t, rec, "call %s got a 202 and is gone after the restart", a.id)
		require.Equal(t, tasks.StatusSucceeded, rec.Status, "call %s: %s", a.id, historyString(rec))
		require.NotEmpty(t, d.up.hitsOf(a.id), "call %s", a.id)
		if a.at.After(killedAt.Add(-50 * time.Millisecond)) {
			late++
		}
	}
	t.Logf("all %d accepted calls succeeded after the restart (%d of them answered within 50ms of the kill)", len(accepted), late)
	require.False(t, d.api.exited(), "the API carried on")
	require.False(t, w.exited())
}

// The control: the same Redis without persistence keeps nothing after a
// SIGKILL, so the test above would see a lost call.
func TestRedisWithoutPersistenceLosesAcceptedCalls(t *testing.T) {
	t.Parallel()
	conf := filepath.Join(repoRoot(t), "deploy", "redis", "redis.conf")
	rs := redistest.StartConf(t, conf, "--appendonly", "no", "--save", "")
	d := deployOn(t, rs.URL)
	d.enqueue("gone-1")
	rs.Kill(t)
	rs.Restart(t)
	waitFor(t, 30*time.Second, "the API answers again", func() bool {
		req, _ := http.NewRequest(http.MethodGet, d.apiURL+"/v1/calls/gone-1", nil)
		req.Header.Set("Authorization", "Bearer "+d.apiKey)
		resp, err := d.http.Do(req)
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		// The key is gone too: 401 is as good a proof as a 404.
		return resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusUnauthorized
	})
}

// sentinels runs three real Sentinels watching master as "mymaster" (quorum
// 2, down after 1s) and returns their addresses once each knows the other
// two and the replicas.
func sentinels(t *testing.T, master string, replicas int) []string {
	t.Helper()
	host, port, _ := strings.Cut(master, ":")
	var addrs []string
	for i := range 3 {
		addr := freeAddr(t)
		_, sport, _ := strings.Cut(addr, ":")
		dir := t.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		require.NoError(t, os.WriteFile(conf, fmt.Appendf(nil, `port %s
bind 127.0.0.1
dir %s
logfile %s
sentinel monitor mymaster %s %s 2
sentinel down-after-milliseconds mymaster 1000
sentinel failover-timeout mymaster 10000
sentinel parallel-syncs mymaster 1
`, sport, dir, filepath.Join(dir, "sentinel.log"), host, port), 0o644))
		cmd := exec.Command("redis-server", conf, "--sentinel")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		require.NoError(t, cmd.Start(), "sentinel %d", i+1)
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			if t.Failed() {
				log, _ := os.ReadFile(filepath.Join(dir, "sentinel.log"))
				t.Logf("sentinel %d (%s) log:\n%s", i+1, addr, tailLines(log, 40))
			}
		})
		addrs = append(addrs, addr)
	}
	ctx := context.Background()
	for _, addr := range addrs {
		s := redis.NewSentinelClient(&redis.Options{Addr: addr})
		t.Cleanup(func() { _ = s.Close() })
		waitFor(t, 30*time.Second, "sentinel "+addr+" knows the other sentinels and the replicas", func() bool {
			others, err1 := s.Sentinels(ctx, "mymaster").Result()
			reps, err2 := s.Replicas(ctx, "mymaster").Result()
			return err1 == nil && err2 == nil && len(others) == 2 && len(reps) == replicas
		})
	}
	return addrs
}

// masterOf asks a Sentinel which address it names as mymaster's master.
// masterSwitch is a new master a Sentinel named, and when it was seen.
type masterSwitch struct {
	addr string
	at   time.Time
}

func (m masterSwitch) String() string { return m.addr + "@" + m.at.Format("15:04:05.000") }

// watchMaster asks sentinel for the master every 20ms from now on, and
// returns a function that stops asking (at the latest when the test ends)
// and returns each master it named after was, in order.
func watchMaster(t *testing.T, sentinel, was string) func() []masterSwitch {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []masterSwitch)
	go func() {
		var seen []masterSwitch
		last := was
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if m := masterOf(ctx, sentinel); m != "" && m != last {
				seen, last = append(seen, masterSwitch{m, time.Now()}), m
			}
			select {
			case <-ctx.Done():
				done <- seen
				return
			case <-tick.C:
			}
		}
	}()
	stop := sync.OnceValue(func() []masterSwitch {
		cancel()
		return <-done
	})
	t.Cleanup(func() { stop() })
	return stop
}

func masterOf(ctx context.Context, sentinel string) string {
	s := redis.NewSentinelClient(&redis.Options{Addr: sentinel, MaxRetries: -1})
	defer s.Close()
	a, err := s.GetMasterAddrByName(ctx, "mymaster").Result()
	if err != nil || len(a) != 2 {
		return ""
	}
	return a[0] + ":" + a[1]
}

// A master with two replicas and three Sentinels; callq's API and a worker
// on REDIS_URL=redis-sentinel://...; under a steady stream of calls the
// master is SIGKILLed. The Sentinels promote a replica, the API and the
// worker carry on without a restart (calls accepted after the promotion
// run), and the calls lost among those that got a 202 are counted.
func TestSentinelFailoverUnderLoad(t *testing.T) {
	t.Parallel()
	conf := filepath.Join(repoRoot(t), "deploy", "redis", "redis.conf")
	// Diskless replication without its default 5s wait for more replicas.
	fast := []string{"--repl-diskless-sync-delay", "0"}
	master := redistest.StartConf(t, conf, fast...)
	_, mport, _ := strings.Cut(master.Addr, ":")
	var replicas []*redistest.Server
	for range 2 {
		replicas = append(replicas, redistest.StartConf(t, conf, append(fast, "--replicaof", "127.0.0.1", mport)...))
	}
	ctx := context.Background()
	mc := master.Client(t)
	waitFor(t, 30*time.Second, "two replicas in sync", func() bool {
		info, err := mc.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "connected_slaves:2") && strings.Count(info, "state=online") == 2
	})
	sents := sentinels(t, master.Addr, 2)

	// A retry budget longer than a failover (down-after 1s, then the
	// election): a command that meets the dead master retries until the new
	// one answers, instead of failing the request or leaving a call to lease
	// recovery. The README's Running in production says so.
	url := "redis-sentinel://" + strings.Join(sents, ",") + "/mymaster?max_retries=20&min_retry_backoff=50ms&max_retry_backoff=500ms"
	// The reconciler fails a call whose task is gone (lost with the
	// master) once it is an interval old, counting from the call's creation
	// in the API: an interval shorter than the retry budget would also fail
	// a call whose enqueue is still being retried. 1m by default; here just
	// above the budget (20 retries of at most 500ms).
	d := deployOn(t, url, "CALLQ_RECONCILE_INTERVAL=12s", "CALLQ_LOG_LEVEL=info")
	w := d.startWorker()

	l := startLoad(d, "sent", 2)
	waitFor(t, 30*time.Second, "200 calls accepted and 100 run", func() bool { return l.count() >= 200 && d.up.count() >= 100 })
	require.Equal(t, master.Addr, masterOf(ctx, sents[0]))
	master.Kill(t)
	killedAt := time.Now()
	atKill := l.count()
	masters := watchMaster(t, sents[0], master.Addr)

	var promoted string
	waitFor(t, 30*time.Second, "a replica promoted", func() bool {
		promoted = masterOf(ctx, sents[0])
		return promoted != "" && promoted != master.Addr
	})
	promotedAt := time.Now()
	require.True(t, slices.ContainsFunc(replicas, func(r *redistest.Server) bool { return r.Addr == promoted }), "the new master %s is a replica", promoted)
	waitFor(t, 30*time.Second, "200 calls accepted after the promotion", func() bool { return l.count() >= atKill+200 })
	accepted := l.halt()
	if switches := masters(); len(switches) > 1 {
		// On a loaded machine a Sentinel may find the promoted replica
		// silent for down-after-milliseconds (1s) and fail over again.
		// What the interim master acknowledged before the next promotion
		// may then be lost (replication is asynchronous; the README says
		// so): the calls checked are those accepted after the last one,
		// with a margin for the API to hear of it.
		last := switches[len(switches)-1]
		t.Logf("the Sentinels failed over %d times: %v; the calls checked are those accepted after %s",
			len(switches), switches, last.addr)
		promoted, promotedAt = last.addr, last.at.Add(500*time.Millisecond)
	}

	var firstAfter time.Time
	for _, a := range accepted {
		if a.at.After(killedAt) {
			firstAfter = a.at
			break
		}
	}
	ids := make([]string, len(accepted))
	for i, a := range accepted {
		ids[i] = a.id
	}
	// A call whose task the dead master handed to the worker, in a reply
	// that never arrived, is active on the new master with no worker on
	// it: asynq's lease recovery gives it back 60 to 120s later (the
	// README's recovery windows). It is late, not lost: wait for it.
	recs := d.settle(ids, time.Now().Add(150*time.Second))
	var succeeded, missing, lostFailed, twice int
	var lostIDs []string
	for _, a := range accepted {
		rec := recs[a.id]
		switch {
		case rec == nil:
			missing++
			lostIDs = append(lostIDs, a.id)
		case rec.Status == tasks.StatusSucceeded:
			succeeded++
		case rec.Error != nil && rec.Error.Kind == tasks.KindLost:
			lostFailed++
			lostIDs = append(lostIDs, a.id)
		default:
			t.Errorf("call %s: %s, %+v: %s", a.id, rec.Status, rec.Error, historyString(rec))
		}
		if len(d.up.hitsOf(a.id)) > 1 {
			twice++
		}
		if a.at.After(promotedAt) {
			require.NotNil(t, rec, "call %s, accepted after the promotion, is gone", a.id)
			require.Equal(t, tasks.StatusSucceeded, rec.Status, "call %s, accepted after the promotion: %+v %s", a.id, rec.Error, historyString(rec))
		}
	}
	t.Logf("failover: the Sentinels named %s %s after the SIGKILL; the first 202 after the kill came %s after it; "+
		"%d requests refused or failed in all",
		promoted, promotedAt.Sub(killedAt).Round(10*time.Millisecond), firstAfter.Sub(killedAt).Round(10*time.Millisecond), l.refused.Load())
	t.Logf("of %d calls that got a 202 (%d before the kill): %d succeeded, %d lost (%d records gone, %d failed as lost by the reconciler: %v), %d reached the upstream twice",
		len(accepted), atKill, succeeded, missing+lostFailed, missing, lostFailed, lostIDs, twice)
	require.False(t, d.api.exited(), "the API carried on: %v", d.api.waitErr)
	require.False(t, w.exited(), "the worker carried on: %v", w.waitErr)
}
