package rediskeys_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/flow"
	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
	"github.com/callq/callq/worker"
)

// A cluster refuses what the hash-tag rule is there to avoid: a script or
// a MULTI/EXEC whose keys are in two slots. This is the positive control of
// TestStoresOnCluster, which would fail like this if a store broke the rule.
func TestClusterRefusesCrossSlot(t *testing.T) {
	t.Parallel()
	node, cc := startCluster(t)
	ctx := t.Context()
	a, b := rediskeys.Record("acme", "1"), rediskeys.Record("acme", "2")
	require.NotEqual(t, slotOf(t, node, a), slotOf(t, node, b))

	err := redis.NewScript(`return redis.call('EXISTS', KEYS[1], KEYS[2])`).Run(ctx, node, []string{a, b}).Err()
	require.ErrorContains(t, err, "CROSSSLOT")

	pipe := cc.TxPipeline()
	pipe.Set(ctx, rediskeys.Credential("acme", "gh"), "{}", 0)
	pipe.SAdd(ctx, "callq:creds:acme", "gh") // the set without its tag
	_, err = pipe.Exec(ctx)
	require.ErrorContains(t, err, "CROSSSLOT")
}

// Every store runs on Redis Cluster: each script, MULTI/EXEC and MGET of
// tasks.Store, auth.Store, auth.KeyStore, the schedules and their
// scheduler, and the rate limiter stays within one slot, the done channel
// reaches a waiter, and Reseal scans the masters. So do the concurrency
// slots' scripts (internal/flow).
func TestStoresOnCluster(t *testing.T) {
	t.Parallel()
	_, cc := startCluster(t)
	ctx := t.Context()

	t.Run("Records", func(t *testing.T) {
		store, err := tasks.NewStore(cc, nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = store.Close() })
		rec := &tasks.Record{CorrelationID: "order-1", Tenant: "acme", Status: tasks.StatusQueued, Integration: "gh",
			Method: "GET", Path: "/", Queue: "default", MaxAttempts: 3, CreatedAt: time.Now()}
		err = store.Create(ctx, rec, "fp", 0, nil)
		require.NoError(t, err)
		err = store.Create(ctx, rec, "fp", 0, nil)
		require.ErrorIs(t, err, tasks.ErrExists)
		begun, err := store.Begin(ctx, "acme", "order-1", tasks.RunMarker{Attempt: 1, StartedAt: time.Now()})
		require.NoError(t, err)
		state := &tasks.WebhookState{URL: "https://hooks.example/x", Status: "pending"}
		require.NoError(t, store.SetWebhook(ctx, "acme", "order-1", state))
		require.NoError(t, store.ReplaceWebhook(ctx, "acme", "order-1", state, func() error { return nil }))

		waited := make(chan error, 1)
		go func() {
			got, err := store.Wait(ctx, "acme", "order-1")
			if err == nil && got.Status != tasks.StatusSucceeded {
				err = fmt.Errorf("woken with status %s", got.Status)
			}
			waited <- err
		}()
		done := *begun.Record
		done.Status, done.Attempts = tasks.StatusSucceeded, 1
		require.NoError(t, store.Write(ctx, &done, begun.Version))
		require.NoError(t, <-waited)

		// The calls index: list, count, replay claims, the reconciler's
		// walk, pruning and the move of records from before the index.
		for i := range 40 {
			r := *rec
			r.CorrelationID = "bulk-" + strconv.Itoa(i)
			require.NoError(t, store.Create(ctx, &r, "fp", 0, []byte("{}")))
			if i%2 == 0 {
				r.Status = tasks.StatusFailed
				require.NoError(t, store.Write(ctx, &r, 0))
			}
		}
		page, err := store.List(ctx, "acme", tasks.Filter{Statuses: []tasks.Status{tasks.StatusFailed}}, "", 500)
		require.NoError(t, err)
		require.Len(t, page.Calls, 20)
		counts, err := store.Count(ctx, "acme", time.Now().Add(-time.Hour), time.Now().Add(time.Minute))
		require.NoError(t, err)
		require.Equal(t, int64(41), counts.Total)
		claim, err := store.ClaimReplay(ctx, "acme", "bulk-0", "bulk-0-again", false, false)
		require.NoError(t, err)
		require.NoError(t, store.ConfirmReplay(ctx, "acme", "bulk-0", claim.ID))
		open, _, err := store.Unfinished(ctx, "acme", time.Now().Add(time.Minute), "", 100)
		require.NoError(t, err)
		require.Len(t, open, 20)
		require.NoError(t, cc.HSet(ctx, rediskeys.LegacyRecord("acme", "old"), "rec", `{"correlation_id":"old","status":"failed"}`, "status", "failed").Err())
		moved, err := store.MigrateLegacy(ctx)
		require.NoError(t, err)
		require.Equal(t, 1, moved)
		require.NoError(t, store.Delete(ctx, "acme", "order-1"))
		_, err = store.Prune(ctx, "acme")
		require.NoError(t, err)
	})

	t.Run("Credentials", func(t *testing.T) {
		old, err := auth.GenerateKey()
		require.NoError(t, err)
		ring, err := auth.ParseKeyring("k1:" + old)
		require.NoError(t, err)
		store, err := auth.NewStore(cc, &auth.StoreConfig{Keyring: ring})
		require.NoError(t, err)
		for _, ref := range []string{"gh", "dd", "crm:main"} {
			_, err = store.Put(ctx, "acme", ref, "github", map[string]string{"token": "t-" + ref})
			require.NoError(t, err)
		}
		list, err := store.List(ctx, "acme")
		require.NoError(t, err)
		require.Len(t, list, 3)
		_, err = store.UpdateFields(ctx, "acme", "gh", map[string]string{"token": "t-gh-2"})
		require.NoError(t, err)
		require.NoError(t, store.Delete(ctx, "acme", "dd"))

		primary, err := auth.GenerateKey()
		require.NoError(t, err)
		ring2, err := auth.ParseKeyring("k2:" + primary + ",k1:" + old)
		require.NoError(t, err)
		store2, err := auth.NewStore(cc, &auth.StoreConfig{Keyring: ring2})
		require.NoError(t, err)
		stats, err := store2.Reseal(ctx)
		require.NoError(t, err)
		require.Equal(t, 2, stats.Credentials)
	})

	t.Run("APIKeys", func(t *testing.T) {
		keys := auth.NewKeyStore(cc)
		key, secret, err := keys.Create(ctx, "acme", auth.RoleProducer)
		require.NoError(t, err)
		got, err := keys.Authenticate(ctx, secret)
		require.NoError(t, err)
		require.Equal(t, key.ID, got.ID)
		list, err := keys.List(ctx)
		require.NoError(t, err)
		require.Len(t, list, 1)
		require.NoError(t, keys.Revoke(ctx, key.ID))
	})

	t.Run("Slots", func(t *testing.T) {
		slots, err := flow.NewSlots(cc, nil)
		require.NoError(t, err)
		scope := flow.Scope{Tenant: "acme", Integration: "github", PerCredential: true, Credential: "gh"}
		slot, n, err := slots.Acquire(ctx, scope, 2)
		require.NoError(t, err)
		require.NotNil(t, slot)
		require.Equal(t, 1, n)
		require.NoError(t, slots.Renew(ctx, slot))
		n, err = slots.InUse(ctx, "acme", "github")
		require.NoError(t, err)
		require.Equal(t, 1, n)
		require.NoError(t, slots.Release(ctx, slot))
	})

	t.Run("Schedules", func(t *testing.T) {
		cat, err := tasks.ParseCatalog([]byte("integrations:\n  gh:\n    base_url: https://gh.example\n    auth: {type: none}\n"))
		require.NoError(t, err)
		prod, err := producer.New(cc, &producer.Config{Catalog: cat})
		require.NoError(t, err)
		t.Cleanup(func() { _ = prod.Close() })
		client, err := prod.Tenant("acme")
		require.NoError(t, err)
		s := &producer.Schedule{ID: "nightly", Cron: "@every 1s", Call: tasks.Call{Integration: "gh", Method: "GET", Path: "/"}}
		_, err = client.CreateSchedule(ctx, s)
		require.NoError(t, err)
		_, created, err := client.PutSchedule(ctx, s)
		require.NoError(t, err)
		require.False(t, created)
		sched, err := producer.NewScheduler(prod, nil)
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			rep, err := sched.RunOnce(ctx)
			require.NoError(t, err)
			return rep.Fired > 0
		}, 10*time.Second, 50*time.Millisecond, "the schedule never fired")
		list, err := client.ListSchedules(ctx)
		require.NoError(t, err)
		require.Len(t, list, 1)
		require.NotNil(t, list[0].LastRunAt)
		require.NoError(t, sched.Release(ctx))
		require.NoError(t, client.DeleteSchedule(ctx, "nightly"))
	})

	t.Run("Circuits", func(t *testing.T) {
		cs := flow.NewCircuits(cc, nil)
		// The report opens the circuit, writing its hash and the tenant's set
		// of per-credential circuits in one script; the check reads it.
		b := &tasks.CircuitBreaker{Failures: 1, Window: tasks.Duration(time.Minute), Cooldown: tasks.Duration(time.Minute),
			Per: tasks.CircuitPerCredential}
		c := &flow.Circuit{Tenant: "acme", Integration: "crm", Credential: "cust-42", Breaker: b}
		ch, err := cs.Report(ctx, c, "", flow.Failed)
		require.NoError(t, err)
		require.Equal(t, flow.Open, ch.To)
		tk, err := cs.Check(ctx, c, time.Second)
		require.NoError(t, err)
		require.False(t, tk.Go)
		st, err := cs.Read(ctx, "acme", map[string]*tasks.CircuitBreaker{"crm": b})
		require.NoError(t, err)
		require.Len(t, st["crm"].Credentials, 1)
	})

	t.Run("RateLimit", func(t *testing.T) {
		res, err := redis_rate.NewLimiter(cc).Allow(ctx, rediskeys.RateLimit("acme", "github", ""), redis_rate.PerSecond(10))
		require.NoError(t, err)
		require.Equal(t, 1, res.Allowed)
	})
}

// On a cluster of 3 masters, CALLQ_QUEUE_SHARDS=6 puts two shards of each
// queue on each master, and the work spreads: a producer and a worker of
// that count run 600 calls, and each master's shards run about a third of
// them. Unsplit, a queue is one slot, so one master's work.
func TestShardedQueuesSpreadOverMasters(t *testing.T) {
	t.Parallel()
	c := cluster.Get(t)
	cc := c.Client(t)
	ctx := t.Context()
	top, err := c.Topology(ctx)
	require.NoError(t, err)
	masters := top.Masters()
	require.Len(t, masters, 3)

	one := map[string]bool{}
	for _, q := range []string{"default", "critical", "low", tasks.WebhookQueue} {
		one[top.MasterOfSlot(rediskeys.AsynqQueueSlot(q))] = true
		per := map[string]int{}
		for k := range 6 {
			per[top.MasterOfSlot(rediskeys.AsynqQueueSlot(rediskeys.QueueShard(q, k, 6)))]++
		}
		require.Equal(t, map[string]int{masters[0]: 2, masters[1]: 2, masters[2]: 2}, per, "queue %s's 6 shards", q)
	}
	t.Logf("unsharded, the 4 queues sit on %d master(s)", len(one))

	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(up.Close)
	cat, err := tasks.ParseCatalog([]byte("integrations:\n  up:\n    base_url: " + up.URL + "\n"))
	require.NoError(t, err)
	key, err := auth.GenerateKey()
	require.NoError(t, err)
	ring, err := auth.ParseKeyring(key)
	require.NoError(t, err)
	creds, err := auth.NewStore(cc, &auth.StoreConfig{Keyring: ring})
	require.NoError(t, err)
	store, err := tasks.NewStore(cc, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	client, err := producer.NewClient(cc, "spread", &producer.Config{Catalog: cat, Records: store, QueueShards: 6})
	require.NoError(t, err)

	const n = 600
	ids := make([]string, n)
	for i := range ids {
		ids[i] = "spread-" + strconv.Itoa(i)
		_, err := client.Enqueue(ctx, &tasks.Call{Integration: "up", Method: "GET", Path: "/", CorrelationID: ids[i]})
		require.NoError(t, err)
	}
	log := zerolog.Nop()
	w, err := worker.New(cc, &worker.Config{Catalog: cat, Records: store, Credentials: creds, Keyring: ring,
		Concurrency: 20, Logger: &log, QueueShards: 6, ReconcileInterval: worker.ReconcileOff})
	require.NoError(t, err)
	require.NoError(t, w.Start())
	t.Cleanup(w.Shutdown)
	for _, id := range ids {
		rec, err := client.Wait(ctx, id)
		require.NoError(t, err)
		require.Equal(t, tasks.StatusSucceeded, rec.Status, id)
	}

	inspector := asynq.NewInspectorFromRedisClient(cc)
	ran := map[string]int{}
	for k := range 6 {
		q := rediskeys.QueueShard(tasks.DefaultQueue, k, 6)
		info, err := inspector.GetQueueInfo(q)
		require.NoError(t, err)
		ran[top.MasterOfSlot(rediskeys.AsynqQueueSlot(q))] += info.Processed
	}
	t.Logf("calls run from each master's shards: %v", ran)
	require.Len(t, ran, 3)
	for m, got := range ran {
		require.Greater(t, got, n/6, "master %s ran %d of %d calls: the load did not spread", m, got, n)
	}
}
