package main

// callq on a real Redis Cluster (3 masters, 3 replicas; internal/redistest):
// the API and two workers as processes, CALLQ_REDIS_CLUSTER_ADDRS, queues
// split over the masters (CALLQ_QUEUE_SHARDS), and a manual CLUSTER
// FAILOVER under load.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/internal/redistest"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
)

// clusterEnv is the environment that points callq at cl.
func clusterEnv(cl *redistest.Cluster) []string {
	return []string{"CALLQ_REDIS_CLUSTER_ADDRS=" + strings.Join(cl.Addrs, ",")}
}

// workerCounts is how many attempts each worker process logged.
func workerCounts(ws ...*child) map[string]int {
	out := map[string]int{}
	for _, w := range ws {
		out[w.name] = strings.Count(w.logs(), `"message":"attempt"`)
	}
	return out
}

// Everything on a cluster: `callq api` and two `callq worker`s with
// CALLQ_REDIS_CLUSTER_ADDRS and CALLQ_QUEUE_SHARDS=6. API keys, calls
// enqueued and waited for (?wait=, woken by pub/sub), run by both workers;
// a credential used by reference; an OAuth2 client_credentials token
// fetched under the fleet's lock and cached; a rate limit and a
// concurrency cap; webhooks delivered, signed, and redelivered; a delayed
// call canceled; the calls index listed; stats by logical queue; a
// schedule fired by the workers' scheduler.
func TestClusterEndToEnd(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t)

	var tokens atomic.Int64
	tokenSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tokens.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"cc-token-1","token_type":"bearer","expires_in":3600}`)
	}))
	t.Cleanup(tokenSrv.Close)

	var mu sync.Mutex
	var tenantSecret string
	delivered := map[string][]string{} // correlation ID -> webhook-ids of verified deliveries
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if producer.VerifyWebhook(tenantSecret, r.Header, body) != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		id := r.URL.Query().Get("call")
		delivered[id] = append(delivered[id], r.Header.Get("webhook-id"))
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(receiver.Close)

	env := append(clusterEnv(cl), "CALLQ_QUEUE_SHARDS=6",
		"CALLQ_WEBHOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "CALLQ_WEBHOOK_ALLOW_PRIVATE=true")
	d := deployOnWith(t, "redis://127.0.0.1:1/0", func(up string) string {
		return fmt.Sprintf(`  bearer:
    base_url: %[1]s
    auth: {type: bearer}
  cc:
    base_url: %[1]s
    auth: {type: oauth2, grant: client_credentials, token_url: %[2]s/token, client_id: callq, client_secret: s3cret-cc}
  limited:
    base_url: %[1]s
    auth: {type: none}
    rate_limit: {requests: 1000, per: 1s}
    concurrency: 2
`, up, tokenSrv.URL)
	}, env...)
	var secrets struct{ Secrets []string }
	require.Equal(t, http.StatusOK, d.do(http.MethodGet, "/v1/webhook-secret", nil, &secrets))
	mu.Lock()
	tenantSecret = secrets.Secrets[0]
	mu.Unlock()
	w1, w2 := d.startWorker(), d.startWorker()

	// A credential, used by reference.
	require.Equal(t, http.StatusOK, d.do(http.MethodPut, "/v1/credentials/gh", map[string]any{
		"integration": "bearer", "fields": map[string]string{"token": "tok-on-cluster"}}, nil))

	const n = 60
	var ids []string
	for i := range n {
		id := fmt.Sprintf("clu-%02d", i)
		call := map[string]any{"integration": "slow", "method": "GET", "path": "/slow", "correlation_id": id,
			"headers": map[string]string{"X-Test-Call": id}}
		switch i % 4 {
		case 1:
			call["webhook"] = map[string]string{"url": receiver.URL + "/hook?call=" + id}
		case 2:
			call["integration"], call["path"], call["credential"] = "bearer", "/bearer", "gh"
		case 3:
			call["integration"], call["path"] = "cc", "/bearer"
		}
		if i%10 == 0 {
			delete(call, "credential")
			call["integration"], call["path"] = "limited", "/get"
		}
		var ans map[string]any
		require.Equal(t, http.StatusAccepted, d.do(http.MethodPost, "/v1/calls", call, &ans), id)
		ids = append(ids, id)
	}
	require.Equal(t, http.StatusAccepted, d.do(http.MethodPost, "/v1/calls", map[string]any{
		"integration": "slow", "method": "GET", "path": "/slow", "correlation_id": "clu-later", "delay": "1h"}, nil))

	recs := d.waitAllTerminal(ids, time.Now().Add(60*time.Second))
	for _, id := range ids {
		rec := recs[id]
		require.Equal(t, tasks.StatusSucceeded, rec.Status, "call %s: %+v %s", id, rec.Error, historyString(rec))
		require.Equal(t, http.StatusOK, rec.Response.Status, id)
	}
	require.Contains(t, string(recs["clu-02"].Response.Body), `"authenticated"`, "the credential was sent")
	require.Contains(t, string(recs["clu-03"].Response.Body), `"authenticated"`, "the OAuth2 token was sent")
	require.EqualValues(t, 1, tokens.Load(), "one token for the fleet, cached in the cluster")
	counts := workerCounts(w1, w2)
	t.Logf("attempts per worker: %v", counts)
	for name, c := range counts {
		require.Positive(t, c, "%s ran no call", name)
	}

	// Webhooks: every one delivered and verified; a redelivery goes too.
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(delivered) == n/4
	}, 30*time.Second, 20*time.Millisecond, "webhooks delivered")
	var rec tasks.Record
	require.Equal(t, http.StatusAccepted, d.do(http.MethodPost, "/v1/calls/clu-01/webhook/redeliver", nil, &rec))
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(delivered["clu-01"]) == 2
	}, 30*time.Second, 20*time.Millisecond, "the redelivery")
	mu.Lock()
	require.Equal(t, delivered["clu-01"][0], delivered["clu-01"][1], "a redelivery keeps its webhook-id")
	mu.Unlock()

	// A delayed call: shown queued, canceled, its task gone from its shard.
	require.Equal(t, http.StatusOK, d.do(http.MethodDelete, "/v1/calls/clu-later", nil, &rec))
	require.Equal(t, tasks.StatusCanceled, rec.Status)

	// The calls index, and the stats by logical queue.
	var page struct {
		Calls []tasks.Record `json:"calls"`
	}
	require.Equal(t, http.StatusOK, d.do(http.MethodGet, "/v1/calls?status=succeeded&limit=500", nil, &page))
	require.Len(t, page.Calls, n)
	var st producer.Stats
	require.Equal(t, http.StatusOK, d.do(http.MethodGet, "/v1/stats", nil, &st))
	require.Equal(t, int64(n+1), st.Total)
	for q := range st.Queues {
		require.Equal(t, rediskeys.LogicalQueue(q), q, "stats name logical queues")
	}
	require.Contains(t, st.Queues, "default")
	require.Contains(t, st.Queues, tasks.WebhookQueue)

	// A schedule, fired by a worker's scheduler.
	var sched producer.Schedule
	require.Equal(t, http.StatusCreated, d.do(http.MethodPost, "/v1/schedules", map[string]any{
		"id": "tick", "cron": "@every 1s", "call": map[string]any{"integration": "slow", "method": "GET", "path": "/slow"}}, &sched))
	require.Eventually(t, func() bool {
		var s producer.Schedule
		return d.do(http.MethodGet, "/v1/schedules/tick", nil, &s) == http.StatusOK && s.LastCorrelationID != nil
	}, 20*time.Second, 50*time.Millisecond, "the schedule fired")
	require.Equal(t, http.StatusNoContent, d.do(http.MethodDelete, "/v1/schedules/tick", nil, nil))

	requireNoErrorLogs(t, d.api, w1, w2)
}

// A manual CLUSTER FAILOVER of each master in turn, each holding shards of
// the queues (CALLQ_QUEUE_SHARDS=3: one of each queue's per master), while
// the API answers a stream of calls and a worker runs them: the API and
// the worker carry on without a restart, every call that got a 202
// succeeds, and calls keep flowing after each failover (how many ran twice
// or were refused is logged).
func TestClusterFailoverUnderLoad(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t)
	ctx := context.Background()
	top, err := cl.Topology(ctx)
	require.NoError(t, err)
	masters := top.Masters()
	for _, m := range masters {
		var held []string
		for k := range 3 {
			if q := rediskeys.QueueShard(tasks.DefaultQueue, k, 3); top.MasterOfSlot(rediskeys.AsynqQueueSlot(q)) == m {
				held = append(held, q)
			}
		}
		require.Len(t, held, 1, "master %s holds one shard of default", m)
	}

	d := deployOnWith(t, "redis://127.0.0.1:1/0", nil, append(clusterEnv(cl), "CALLQ_QUEUE_SHARDS=3", "CALLQ_LOG_LEVEL=info")...)
	w := d.startWorker()
	l := startLoad(d, "fo", 2)
	waitFor(t, 30*time.Second, "200 calls accepted and 100 run", func() bool { return l.count() >= 200 && d.up.count() >= 100 })
	type failover struct {
		from, to string
		took     time.Duration
	}
	var done []failover
	for _, m := range masters {
		atStart := l.count()
		start := time.Now()
		promoted, err := cl.Failover(ctx, m)
		require.NoError(t, err)
		done = append(done, failover{m, promoted, time.Since(start)})
		waitFor(t, 30*time.Second, "100 calls accepted after the failover of "+m, func() bool { return l.count() >= atStart+100 })
	}
	accepted := l.halt()
	ids := make([]string, len(accepted))
	ats := make([]time.Time, len(accepted))
	for i, a := range accepted {
		ids[i], ats[i] = a.id, a.at
	}
	slices.SortFunc(ats, func(a, b time.Time) int { return a.Compare(b) })
	var gap time.Duration
	for i := 1; i < len(ats); i++ {
		gap = max(gap, ats[i].Sub(ats[i-1]))
	}
	recs := d.settle(ids, time.Now().Add(90*time.Second))
	twice := 0
	for _, a := range accepted {
		rec := recs[a.id]
		require.NotNil(t, rec, "call %s got a 202 and is gone", a.id)
		require.Equal(t, tasks.StatusSucceeded, rec.Status, "call %s: %+v %s", a.id, rec.Error, historyString(rec))
		if len(d.up.hitsOf(a.id)) > 1 {
			twice++
		}
	}
	for _, f := range done {
		t.Logf("CLUSTER FAILOVER: %s took over from %s; settled in %s", f.to, f.from, f.took.Round(10*time.Millisecond))
	}
	t.Logf("of %d calls that got a 202, all succeeded; %d reached the upstream twice; %d requests refused or failed; the longest wait between two 202s was %s",
		len(accepted), twice, l.refused.Load(), gap.Round(time.Millisecond))
	// Twice and refused are measured, for the README, not required: a
	// request that meets a node not yet told of the new master fails after
	// go-redis's redirects (a 503, or an attempt run again, at least once
	// as designed), which the runs measured have not seen.
	require.False(t, d.api.exited(), "the API carried on: %v", d.api.waitErr)
	require.False(t, w.exited(), "the worker carried on: %v", w.waitErr)
	top, err = cl.Topology(ctx)
	require.NoError(t, err)
	for _, m := range masters {
		require.False(t, top[m].Master, "%s was failed over", m)
	}
	requireNoErrorLogs(t, d.api, w)
}

// From CALLQ_QUEUE_SHARDS=1 to 4 on a running deployment, as the README
// says: calls queued before the change (no worker running, some delayed)
// are run by workers restarted with CALLQ_QUEUE_SHARDS=4 and
// CALLQ_PREVIOUS_QUEUE_SHARDS=1, the API restarted alike finds them (a
// cancel), and new calls go to the shards.
func TestQueueShardsChange(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	d := deployOn(t, rs.URL)
	var before []string
	for i := range 20 {
		id := fmt.Sprintf("before-%02d", i)
		d.enqueue(id)
		before = append(before, id)
	}
	for _, id := range []string{"before-delayed", "before-cancel"} {
		d.enqueueWith(id, map[string]any{"delay": "3s"})
	}
	d.api.stop(10 * time.Second)

	d.env = append(d.env, "CALLQ_QUEUE_SHARDS=4", "CALLQ_PREVIOUS_QUEUE_SHARDS=1")
	d.api = d.procs.startListening(func() (*child, []string) {
		addr := freeAddr(t)
		d.apiURL = "http://" + addr
		c := d.procs.start("api", "", append(slices.Clone(d.env), "CALLQ_API_ADDR="+addr), "api")
		return c, []string{d.apiURL + "/readyz"}
	})
	var rec tasks.Record
	require.Equal(t, http.StatusOK, d.do(http.MethodDelete, "/v1/calls/before-cancel", nil, &rec))
	require.Equal(t, tasks.StatusCanceled, rec.Status)
	var after []string
	for i := range 20 {
		id := fmt.Sprintf("after-%02d", i)
		d.enqueue(id)
		after = append(after, id)
	}
	rdb := rs.Client(t)
	queues, err := rdb.SMembers(context.Background(), "asynq:queues").Result()
	require.NoError(t, err)
	slices.Sort(queues)
	var want []string
	for k := range 4 {
		want = append(want, rediskeys.QueueShard(tasks.DefaultQueue, k, 4))
	}
	want = append(want, tasks.DefaultQueue)
	slices.Sort(want)
	require.Equal(t, want, queues, "the old queue, and the 4 shards the new calls went to")

	w := d.startWorker()
	recs := d.waitAllTerminal(append(append(before, after...), "before-delayed"), time.Now().Add(60*time.Second))
	for id, rec := range recs {
		require.Equal(t, tasks.StatusSucceeded, rec.Status, "call %s: %+v", id, rec.Error)
		require.Len(t, d.up.hitsOf(id), 1, id)
	}
	require.Empty(t, d.up.hitsOf("before-cancel"))
	var st producer.Stats
	require.Equal(t, http.StatusOK, d.do(http.MethodGet, "/v1/stats", nil, &st))
	raw, _ := json.Marshal(st.Queues)
	require.Equal(t, producer.QueueDepth{}, st.Queues[tasks.DefaultQueue], "every shard, old and new, drained: %s", raw)
	require.Contains(t, w.logs(), `"queue_shards":4`)
	requireNoErrorLogs(t, d.api, w)
}
