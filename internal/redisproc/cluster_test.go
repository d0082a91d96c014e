package redisproc

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// A cluster of 3 masters and 3 replicas comes up healthy on ports whose bus
// ports are free; a cluster client writes to every master; a manual
// failover swaps a master and its replica, keeps what was written, and the
// same client, told nothing, goes on.
func TestClusterStartsAndFailsOver(t *testing.T) {
	t.Parallel()
	for _, b := range []string{Binary, CLIBinary} {
		if _, err := exec.LookPath(b); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%v (CI=true, so this is a failure, not a skip)", err)
			}
			t.Skip(err)
		}
	}
	ctx := context.Background()
	start := time.Now()
	cl, err := StartCluster(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cl.Stop(); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(cl.Dir); !os.IsNotExist(err) {
			t.Errorf("Stop left %s: %v", cl.Dir, err)
		}
	})
	t.Logf("3 masters and 3 replicas healthy in %s", time.Since(start).Round(time.Millisecond))
	if len(cl.Nodes) != 6 {
		t.Fatalf("%d nodes", len(cl.Nodes))
	}
	for _, s := range cl.Nodes {
		port, _ := strconv.Atoi(strings.TrimPrefix(s.Addr, "127.0.0.1:"))
		if port >= maxClusterPort {
			t.Fatalf("node %s: its bus port would be above 65535", s.Addr)
		}
	}
	top, err := cl.Topology(ctx)
	if err != nil {
		t.Fatal(err)
	}
	masters := top.Masters()
	if len(masters) != 3 {
		t.Fatalf("masters %v", masters)
	}
	for _, m := range masters {
		if r := top.ReplicasOf(m); len(r) != 1 {
			t.Fatalf("master %s has replicas %v", m, r)
		}
	}

	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs})
	defer cc.Close()
	keys := map[string]string{} // key -> the master holding it
	for i := 0; len(keys) < 30; i++ {
		k := "k" + strconv.Itoa(i)
		if err := cc.Set(ctx, k, k, 0).Err(); err != nil {
			t.Fatal(err)
		}
		slot, err := cl.Node(masters[0]).ClusterKeySlot(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		keys[k] = top.MasterOfSlot(int(slot))
	}
	seen := map[string]bool{}
	for _, m := range keys {
		seen[m] = true
	}
	if len(seen) != 3 {
		t.Fatalf("30 keys landed on %d masters", len(seen))
	}

	old := masters[0]
	promoted, err := cl.Failover(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	top, err = cl.Topology(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !top[promoted].Master || top[old].Master {
		t.Fatalf("after the failover: %s master %v, %s master %v", promoted, top[promoted].Master, old, top[old].Master)
	}
	for k := range keys {
		if v, err := cc.Get(ctx, k).Result(); err != nil || v != k {
			t.Fatalf("GET %s after the failover: %q %v", k, v, err)
		}
		if err := cc.Set(ctx, k, "again", 0).Err(); err != nil {
			t.Fatalf("SET %s after the failover: %v", k, err)
		}
	}
}

func TestClusterConfigRefusesTooFewMasters(t *testing.T) {
	t.Parallel()
	_, err := StartCluster(context.Background(), &ClusterConfig{Masters: 2})
	if err == nil || !strings.Contains(err.Error(), "at least 3") {
		t.Fatalf("err = %v", err)
	}
}

func TestParseClusterNodes(t *testing.T) {
	t.Parallel()
	top, err := parseClusterNodes(`a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:30002@40002 master - 0 1 2 connected 5461-10922 [5462-<-c3]
c3 127.0.0.1:30003@40003 master,fail? - 0 1 3 connected 10923-16383
d4 127.0.0.1:30004@40004 slave a1 0 1 1 connected
`)
	if err != nil {
		t.Fatal(err)
	}
	if got := top.Masters(); strings.Join(got, " ") != "127.0.0.1:30001 127.0.0.1:30002 127.0.0.1:30003" {
		t.Fatalf("masters %v", got)
	}
	if got := top.ReplicasOf("127.0.0.1:30001"); len(got) != 1 || got[0] != "127.0.0.1:30004" {
		t.Fatalf("replicas %v", got)
	}
	if got := top["127.0.0.1:30003"].Flags; len(got) != 1 || got[0] != "fail?" {
		t.Fatalf("flags %v", got)
	}
	if top.MasterOfSlot(5461) != "127.0.0.1:30002" || top.MasterOfSlot(0) != "127.0.0.1:30001" || top.MasterOfSlot(16383) != "127.0.0.1:30003" {
		t.Fatal("MasterOfSlot")
	}
	if got := top["127.0.0.1:30002"].Slots; len(got) != 1 {
		t.Fatalf("a migrating slot is not a slot: %v", got)
	}
}
