package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/internal/redistest"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

// Two workers on one real Redis, each serving a queue of its own so that a
// call reaches the worker the test chooses, each keeping credentials in
// memory: every change to the credential (a PUT, an OAuth2 refresh's write,
// a reseal, a DELETE), and one whose announcement is lost with the
// subscription, is used by the next call on each once announced.
func TestCredentialCacheFollowsChangesOnEveryWorker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	up := newUpstream()
	t.Cleanup(up.Close)
	cat, err := tasks.ParseCatalog([]byte("integrations:\n  bin-bearer:\n    base_url: " + up.URL + "\n    auth: {type: bearer}\n    retry: {max_attempts: 1}\n"))
	require.NoError(t, err)
	k1, _ := auth.GenerateKey()
	k2, _ := auth.GenerateKey()
	ring, err := auth.ParseKeyring("k1:" + k1)
	require.NoError(t, err)
	// The workers open both keys, as after a key is added and before the
	// reseal moves every secret to it.
	workerRing, err := auth.ParseKeyring("k1:" + k1 + ",k2:" + k2)
	require.NoError(t, err)
	api, err := auth.NewStore(rdb, &auth.StoreConfig{Keyring: ring})
	require.NoError(t, err)
	records, err := tasks.NewStore(rdb, nil)
	require.NoError(t, err)
	t.Cleanup(func() { records.Close() })
	client, err := producer.NewClient(rdb, "acme", &producer.Config{Catalog: cat, Records: records})
	require.NoError(t, err)

	queues := []string{"critical", "low"}
	workers := make([]*worker.Worker, len(queues))
	for i, q := range queues {
		wrdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
		t.Cleanup(func() { wrdb.Close() })
		wrecords, err := tasks.NewStore(wrdb, nil)
		require.NoError(t, err)
		creds, err := auth.NewStore(wrdb, &auth.StoreConfig{Keyring: workerRing})
		require.NoError(t, err)
		w, err := worker.New(wrdb, &worker.Config{Catalog: cat, Records: wrecords, Credentials: creds, Keyring: workerRing,
			Concurrency: 2, Queues: map[string]int{q: 1}, CredentialCacheTTL: time.Hour, ReconcileInterval: worker.ReconcileOff})
		require.NoError(t, err)
		require.NoError(t, w.Start())
		t.Cleanup(w.Shutdown)
		workers[i] = w
	}

	n := 0
	// call makes one call on each worker and returns their records and the
	// Authorization headers the upstream received.
	call := func() ([]*tasks.Record, []string) {
		var recs []*tasks.Record
		var got []string
		for _, q := range queues {
			n++
			id := "cache-" + q + "-" + uid()
			enqueue(t, client, &tasks.Call{Integration: "bin-bearer", Method: "GET", Path: "/headers", Queue: q,
				Credential: "gh", CorrelationID: id, Headers: map[string]string{"X-Test-ID": id}})
			rec := waitDone(t, client, id)
			recs = append(recs, rec)
			if h := up.headers(id); len(h) == 1 {
				got = append(got, h[0].Get("Authorization"))
			} else {
				got = append(got, "")
			}
		}
		return recs, got
	}
	// uses checks that the next call on each worker sends token, and that
	// each worker then keeps the credential.
	uses := func(token string) {
		t.Helper()
		recs, got := call()
		for i, rec := range recs {
			require.Equal(t, tasks.StatusSucceeded, rec.Status, "worker %d: %+v", i, rec.Error)
		}
		require.Equal(t, []string{"Bearer " + token, "Bearer " + token}, got)
		for _, w := range workers {
			require.Equal(t, 1, worker.CredentialsCached(w))
		}
	}
	// dropped waits until each worker has heard of a change.
	dropped := func() {
		t.Helper()
		for _, w := range workers {
			require.Eventually(t, func() bool { return worker.CredentialsCached(w) == 0 }, 5*time.Second, time.Millisecond)
		}
	}

	_, err = api.Put(ctx, "acme", "gh", "bin-bearer", map[string]string{"token": "v1"})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, got := call()
		return got[0] == "Bearer v1" && got[1] == "Bearer v1" &&
			worker.CredentialsCached(workers[0]) == 1 && worker.CredentialsCached(workers[1]) == 1
	}, 5*time.Second, time.Millisecond, "each worker keeps the credential once subscribed")

	// Written behind the workers' backs, announced to nobody: the workers
	// keep using what they hold (the cache is in use)...
	silent := func(token string) {
		t.Helper()
		mr := miniredis.RunT(t)
		mrdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		defer mrdb.Close()
		other, err := auth.NewStore(mrdb, &auth.StoreConfig{Keyring: ring})
		require.NoError(t, err)
		_, err = other.Put(ctx, "acme", "gh", "bin-bearer", map[string]string{"token": token})
		require.NoError(t, err)
		b, err := mr.Get(rediskeys.Credential("acme", "gh"))
		require.NoError(t, err)
		require.NoError(t, rdb.Set(ctx, rediskeys.Credential("acme", "gh"), b, 0).Err())
	}
	silent("unannounced")
	uses("v1")

	// ...until a change is announced: PUT.
	_, err = api.Put(ctx, "acme", "gh", "bin-bearer", map[string]string{"token": "v2"})
	require.NoError(t, err)
	dropped()
	uses("v2")

	// An OAuth2 refresh writes through UpdateFields.
	_, err = api.UpdateFields(ctx, "acme", "gh", map[string]string{"token": "v3"})
	require.NoError(t, err)
	dropped()
	uses("v3")

	// A reseal under a new primary key (the workers' rings hold both).
	ring2, err := auth.ParseKeyring("k2:" + k2 + ",k1:" + k1)
	require.NoError(t, err)
	resealer, err := auth.NewStore(rdb, &auth.StoreConfig{Keyring: ring2})
	require.NoError(t, err)
	stats, err := resealer.Reseal(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, stats.Credentials)
	dropped()
	uses("v3")

	// An announcement lost with the subscription: the break drops all.
	silent("v4")
	require.NoError(t, rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err())
	dropped()
	recs, got := call()
	require.Equal(t, []string{"Bearer v4", "Bearer v4"}, got)
	require.Equal(t, tasks.StatusSucceeded, recs[0].Status)

	// DELETE: the next call on each fails for want of the credential.
	require.NoError(t, api.Delete(ctx, "acme", "gh"))
	require.Eventually(t, func() bool {
		return worker.CredentialsCached(workers[0]) == 0 && worker.CredentialsCached(workers[1]) == 0
	}, 5*time.Second, time.Millisecond)
	recs, got = call()
	for _, rec := range recs {
		require.Equal(t, tasks.StatusFailed, rec.Status)
		require.Equal(t, tasks.KindCredential, rec.Error.Kind)
		require.Contains(t, rec.Error.Message, `credential "gh" does not exist`)
	}
	require.Equal(t, []string{"", ""}, got)
}
