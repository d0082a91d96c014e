package rediskeys_test

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/rediskeys"
	"github.com/callq/callq/internal/redistest"
	"github.com/callq/callq/tasks"
)

const hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

// The layout is what deployed Redis servers hold: a changed key would lose
// their records, credentials and API keys on upgrade.
func TestLayout(t *testing.T) {
	t.Parallel()
	for got, want := range map[string]string{
		rediskeys.Record("acme", "order-1"):                             "callq:{acme:13}:call:order-1",
		rediskeys.LegacyRecord("acme", "order-1"):                       "callq:call:acme:order-1",
		rediskeys.Index("acme", 2, rediskeys.IndexOpen):                 "callq:{acme:2}:ix:open",
		rediskeys.Index("acme", 2, rediskeys.IndexNames):                "callq:{acme:2}:ix:names",
		rediskeys.Index("acme", 2, rediskeys.IndexStatus("failed", "")): "callq:{acme:2}:ix:s:failed",
		rediskeys.Index("acme", 2, rediskeys.IndexIntegration("gh")):    "callq:{acme:2}:ix:i:gh",
		rediskeys.Tenants:                                           "callq:tenants",
		rediskeys.ReconcileLease:                                    "callq:reconcile:lease",
		rediskeys.LegacyMoved:                                       "callq:legacy:moved",
		rediskeys.DoneChannel:                                       "callq:done",
		rediskeys.Credential("acme", "gh"):                          "callq:{acme}:cred:gh",
		rediskeys.Credentials("acme"):                               "callq:{acme}:creds",
		rediskeys.OAuthToken("acme", "cc:cred:crm-app:0a1b2c:m1x"):  "callq:{acme}:oauthcc:cred:crm-app:0a1b2c:m1x",
		rediskeys.OAuthToken("acme", "cc:int:crm:0a1b2c"):           "callq:{acme}:oauthcc:int:crm:0a1b2c",
		rediskeys.OAuthLock("acme", "cred:crm-main"):                "callq:{acme}:oauthlock:cred:crm-main",
		rediskeys.OAuthLock("acme", "cc:int:crm:0a1b2c"):            "callq:{acme}:oauthlock:cc:int:crm:0a1b2c",
		rediskeys.OAuthFailure("acme", "cred:crm-main"):             "callq:{acme}:oauthfail:cred:crm-main",
		rediskeys.OAuthFailure("acme", "cc:cred:crm-app:0a1b2c:m1"): "callq:{acme}:oauthfail:cc:cred:crm-app:0a1b2c:m1",
		rediskeys.CredentialPattern:                                 "callq:{*}:cred:*",
		rediskeys.OAuthTokenPattern:                                 "callq:{*}:oauthcc:*",
		rediskeys.Schedules("acme"):                                 "callq:{acme}:sched",
		rediskeys.ScheduleState("acme"):                             "callq:{acme}:sched:state",
		rediskeys.ScheduleTenants:                                   "callq:sched:tenants",
		rediskeys.ScheduleVersion:                                   "callq:sched:version",
		rediskeys.SchedulerLease:                                    "callq:sched:lease",
		rediskeys.APIKey(hash):                                      "callq:apikey:" + hash,
		rediskeys.APIKeys:                                           "callq:apikeys",
		rediskeys.UISession(hash):                                   "callq:uisession:" + hash,
		rediskeys.RateLimit("acme", "github", "gh"):                 "callq:acme|github|gh",
		rediskeys.RateLimit("acme", "github", ""):                   "callq:acme|github|-",
		rediskeys.Circuit("acme", "crm", false, "cust-42"):          "callq:{acme}:circuit:crm",
		rediskeys.Circuit("acme", "crm", true, "cust-42"):           "callq:{acme}:circuit:crm|cust-42",
		rediskeys.Circuit("acme", "crm", true, ""):                  "callq:{acme}:circuit:crm|",
		rediskeys.Circuits("acme"):                                  "callq:{acme}:circuits",
		rediskeys.CircuitMember("crm", "cust-42"):                   "crm|cust-42",
		rediskeys.Slots("acme", "github"):                           "callq:{acme}:slots:github",
		rediskeys.SlotsOf("acme", "github", "gh"):                   "callq:{acme}:slots:github|gh",
		rediskeys.SlotsOf("acme", "github", ""):                     "callq:{acme}:slots:github|-",
	} {
		require.Equal(t, want, got)
	}
}

func TestParseCircuitMember(t *testing.T) {
	t.Parallel()
	in, cred, ok := rediskeys.ParseCircuitMember(rediskeys.CircuitMember("crm:v2", "a:b.c"))
	require.True(t, ok)
	require.Equal(t, "crm:v2", in)
	require.Equal(t, "a:b.c", cred)
	in, cred, ok = rediskeys.ParseCircuitMember(rediskeys.CircuitMember("crm", ""))
	require.True(t, ok)
	require.Equal(t, "crm", in)
	require.Empty(t, cred)
	_, _, ok = rediskeys.ParseCircuitMember("crm")
	require.False(t, ok)
}

func TestParseCredential(t *testing.T) {
	t.Parallel()
	tenant, ref, ok := rediskeys.ParseCredential(rediskeys.Credential("acme", "a:b.c"))
	require.True(t, ok)
	require.Equal(t, "acme", tenant)
	require.Equal(t, "a:b.c", ref)
	// CredentialPattern also matches these; they are not credentials.
	for _, key := range []string{
		rediskeys.OAuthToken("acme", "cc:cred:gh:0a1b2c:m1"),
		rediskeys.OAuthFailure("acme", "cred:gh"),
		rediskeys.OAuthLock("acme", "cc:cred:gh:0a1b2c:m1"),
		rediskeys.Credentials("acme"),
		rediskeys.Record("acme", "cred:x"),
		rediskeys.Slots("acme", "x:cred:y"),
		rediskeys.SlotsOf("acme", "x", "cred:y"),
		rediskeys.Schedules("acme"),
		rediskeys.ScheduleState("acme"),
	} {
		_, _, ok := rediskeys.ParseCredential(key)
		require.False(t, ok, key)
	}
}

// cluster is the package's Redis Cluster (3 masters, 3 replicas), which
// its tests share: each works in tenants and queues of its own.
var cluster redistest.SharedCluster

func TestMain(m *testing.M) {
	code := m.Run()
	cluster.Stop()
	os.Exit(code)
}

// startCluster returns a client of one node of the package's cluster, for
// CLUSTER KEYSLOT and scripts sent to that node, and a cluster client. A
// script, MULTI or MGET across slots is refused on it as on any cluster.
func startCluster(t *testing.T) (*redis.Client, *redis.ClusterClient) {
	t.Helper()
	c := cluster.Get(t)
	return c.Node(c.Addrs[0]), c.Client(t)
}

func slotOf(t *testing.T, node *redis.Client, key string) int64 {
	t.Helper()
	slot, err := node.ClusterKeySlot(t.Context(), key).Result()
	require.NoError(t, err)
	return slot
}

// The hash-tag rule, as the package doc states it, with Redis's own slot
// function: a tenant's credential keys and OAuth2 keys share a slot
// (MULTI/EXEC, MGET, one-node pipelines), tenants spread, and records spread
// even within one tenant.
func TestSlots(t *testing.T) {
	t.Parallel()
	node, _ := startCluster(t)

	tenantSlots := map[int64]bool{}
	recordSlots := map[int64]bool{}
	for i := range 32 {
		tenant := "tenant-" + strconv.Itoa(i)
		slot := slotOf(t, node, rediskeys.Credentials(tenant))
		tenantSlots[slot] = true
		for _, key := range []string{
			rediskeys.Credential(tenant, "gh"),
			rediskeys.Credential(tenant, "crm:main-"+strconv.Itoa(i)),
			rediskeys.OAuthToken(tenant, "cc:cred:gh:0a1b2c3d4e5f:m1x"),
			rediskeys.OAuthToken(tenant, "cc:int:crm:0a1b2c3d4e5f"),
			rediskeys.OAuthLock(tenant, "cc:int:crm:0a1b2c3d4e5f"),
			rediskeys.OAuthLock(tenant, "cred:gh"),
			rediskeys.OAuthFailure(tenant, "cc:cred:gh:0a1b2c3d4e5f:m1x"),
			rediskeys.OAuthFailure(tenant, "cred:gh"),
			rediskeys.Slots(tenant, "github"),
			rediskeys.SlotsOf(tenant, "github", "gh"),
			rediskeys.SlotsOf(tenant, "github", ""),
			rediskeys.Schedules(tenant),
			rediskeys.ScheduleState(tenant),
		} {
			require.Equal(t, slot, slotOf(t, node, key), "%s is not in the slot of %s", key, rediskeys.Credentials(tenant))
		}
		id := "order-" + strconv.Itoa(i)
		rslot := slotOf(t, node, rediskeys.Record("acme", id))
		recordSlots[rslot] = true
		shard := rediskeys.Shard(id)
		for _, name := range []string{rediskeys.IndexOpen, rediskeys.IndexNames,
			rediskeys.IndexStatus("failed", ""), rediskeys.IndexIntegration("gh")} {
			key := rediskeys.Index("acme", shard, name)
			require.Equal(t, rslot, slotOf(t, node, key), "%s is not in the slot of its record", key)
		}
	}
	require.Greater(t, len(tenantSlots), 24, "tenants' credentials must spread: one slot each, not one for all")
	require.Len(t, recordSlots, rediskeys.RecordShards, "one tenant's records must spread over its shards, not share the tenant's slot")
}

// Without a prefix setting, deployments that must not see each other use
// separate Redis databases. Pub/sub is not per database: a completion in
// one wakes the other's waiter of the same tenant and id, which reads its
// own record again and waits on.
func TestDatabasesSeparateDeployments(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := t.Context()
	stores := make([]*tasks.Store, 2)
	for db := range stores {
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, DB: db})
		t.Cleanup(func() { _ = rdb.Close() })
		store, err := tasks.NewStore(rdb, nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = store.Close() })
		stores[db] = store
	}
	rec := &tasks.Record{CorrelationID: "order-1", Tenant: "acme", Status: tasks.StatusQueued, Integration: "gh",
		Method: "GET", Path: "/", Queue: "default", MaxAttempts: 3, CreatedAt: time.Now()}
	for _, store := range stores {
		err := store.Create(ctx, rec, "fp", 0, nil)
		require.NoError(t, err, "the same tenant and id in each database")
	}
	finish := func(store *tasks.Store, status tasks.Status) {
		done := *rec
		done.Status, done.Attempts = status, 1
		require.NoError(t, store.Write(ctx, &done, 0))
	}

	waited := make(chan *tasks.Record, 1)
	go func() {
		got, _ := stores[0].Wait(ctx, "acme", "order-1")
		waited <- got
	}()
	node := srv.Client(t)
	require.Eventually(t, func() bool {
		n, err := node.PubSubNumSub(ctx, rediskeys.DoneChannel).Result()
		return err == nil && n[rediskeys.DoneChannel] >= 1
	}, 10*time.Second, time.Millisecond, "the first database's waiter never subscribed")
	finish(stores[1], tasks.StatusSucceeded) // heard by that waiter too
	finish(stores[0], tasks.StatusFailed)
	got := <-waited
	require.NotNil(t, got)
	require.Equal(t, tasks.StatusFailed, got.Status, "the waiter answers its own database's record")
}

// Slot is Redis's CLUSTER KEYSLOT, hash tags included.
func TestSlotIsRedis(t *testing.T) {
	t.Parallel()
	node, _ := startCluster(t)
	keys := []string{"", "a", "foo", "{", "}", "{}", "{}x", "a{b}c", "a{}{b}", "{a}{b}", "x{y", "asynq:{default#3}:pending",
		rediskeys.Record("acme", "order-1"), rediskeys.Credential("acme", "gh"), "ünïcode", strings.Repeat("k", 300)}
	for i := range 200 {
		keys = append(keys, "key-"+strconv.Itoa(i), rediskeys.QueueShard("default", i%7, 7))
	}
	for _, k := range keys {
		require.Equal(t, int(slotOf(t, node, k)), rediskeys.Slot(k), "slot of %q", k)
	}
}

// The shards of a queue are named as their doc says: the queue itself for
// one shard; else each in its own part of the slot space, away from the
// part's edges, so on different slots; the names belong to their logical
// queue and never change.
func TestQueueShardNames(t *testing.T) {
	t.Parallel()
	require.Equal(t, "default", rediskeys.QueueShard("default", 0, 1))
	require.Equal(t, "default", rediskeys.QueueShard("default", 0, 0))
	for _, q := range []string{"default", "critical", "low", "webhooks", "partner", "a"} {
		for n := 2; n <= 64; n++ {
			seen := map[string]bool{}
			for k := range n {
				name := rediskeys.QueueShard(q, k, n)
				require.False(t, seen[name], "%s: shard %d of %d is named like another", q, k, n)
				seen[name] = true
				require.True(t, strings.HasPrefix(name, q+"#"+strconv.Itoa(k)), name)
				require.Equal(t, q, rediskeys.LogicalQueue(name))
				lo, hi := k*rediskeys.HashSlots/n, (k+1)*rediskeys.HashSlots/n
				slot := rediskeys.AsynqQueueSlot(name)
				require.True(t, slot >= lo+(hi-lo)/4 && slot < hi-(hi-lo)/4, "%s: slot %d outside [%d, %d)", name, slot, lo, hi)
			}
		}
	}
	require.Equal(t, "default", rediskeys.LogicalQueue("default"))
	// Names deployed Redis servers hold: a change would strand the calls
	// queued under them.
	var got []string
	for k := range 6 {
		got = append(got, rediskeys.QueueShard("default", k, 6))
	}
	require.Equal(t, []string{"default#0.53", "default#1.2", "default#2.47", "default#3.10", "default#4.21", "default#5.40"}, got)
}
