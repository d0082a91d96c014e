package redisproc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// CLIBinary is the program StartCluster runs to create the cluster when
// ClusterConfig.CLI is empty: `redis-cli --cluster create`.
const CLIBinary = "redis-cli"

// Defaults for ClusterConfig.
const (
	DefaultMasters     = 3
	DefaultReplicas    = 1
	DefaultNodeTimeout = 5 * time.Second
	// clusterReadyTimeout bounds StartCluster's wait for every node to
	// agree, and WaitHealthy's default.
	clusterReadyTimeout = 30 * time.Second
	// manualFailoverTimeout is Redis's CLUSTER_MF_TIMEOUT.
	manualFailoverTimeout = 5 * time.Second
)

// ClusterConfig says how StartCluster builds a Redis Cluster.
type ClusterConfig struct {
	// Bin is the redis-server binary. Default: Binary, looked up on PATH.
	Bin string
	// CLI is the redis-cli binary. Default: CLIBinary, looked up on PATH.
	CLI string
	// Dir holds one directory per node (node-1, node-2, ...). Default: a
	// fresh os.MkdirTemp directory that Stop removes.
	Dir string
	// Masters is how many masters share the 16384 slots. Default 3, the
	// fewest redis-cli accepts.
	Masters int
	// Replicas is how many replicas each master has. Default 1; -1 for
	// none.
	Replicas int
	// NodeTimeout is cluster-node-timeout: how long a node may not answer
	// before the others count it failing. Default 5s. A manual CLUSTER
	// FAILOVER does not wait for it.
	NodeTimeout time.Duration
	// Args are appended to every node's command line (see Config.Args).
	Args []string
}

func (c *ClusterConfig) withDefaults() error {
	switch {
	case c.Masters < 0:
		return errors.New("redisproc: ClusterConfig.Masters must not be negative")
	case c.Masters > 0 && c.Masters < 3:
		return errors.New("redisproc: ClusterConfig.Masters must be at least 3 (redis-cli --cluster create needs 3)")
	case c.Replicas < -1:
		return errors.New("redisproc: ClusterConfig.Replicas must be -1 (none), 0 (the default, 1) or more")
	case c.NodeTimeout < 0:
		return errors.New("redisproc: ClusterConfig.NodeTimeout must not be negative")
	}
	if c.Masters == 0 {
		c.Masters = DefaultMasters
	}
	switch c.Replicas {
	case 0:
		c.Replicas = DefaultReplicas
	case -1:
		c.Replicas = 0
	}
	if c.NodeTimeout == 0 {
		c.NodeTimeout = DefaultNodeTimeout
	}
	return nil
}

// Cluster is a Redis Cluster of redis-server processes on 127.0.0.1:
// masters and their replicas, each a Server of its own.
type Cluster struct {
	// Nodes are every node, in the order they were started: redis-cli
	// makes the first Masters of them masters, and the rest their
	// replicas (until a failover changes the roles).
	Nodes []*Server
	// Addrs are the nodes' addresses, for a cluster client's seed list.
	Addrs []string
	// Dir holds the nodes' directories.
	Dir string

	masters, replicas int
	rmDir             bool

	mu      sync.Mutex
	clients map[string]*redis.Client
}

// StartCluster starts Masters × (1 + Replicas) cluster nodes (Config.Cluster)
// at once, with replication that starts at once (diskless, no delay),
// creates the cluster with `redis-cli --cluster create ...
// --cluster-replicas N --cluster-yes`, and returns when it is healthy
// (WaitHealthy): every node reports cluster_state:ok, every node sees the
// same masters, slots and replicas, and every replica is in sync. Stop the
// cluster with Stop.
func StartCluster(ctx context.Context, cfg *ClusterConfig) (*Cluster, error) {
	var c ClusterConfig
	if cfg != nil {
		c = *cfg
	}
	if err := c.withDefaults(); err != nil {
		return nil, err
	}
	bin, cli := c.Bin, c.CLI
	var err error
	if bin == "" {
		if bin, err = exec.LookPath(Binary); err != nil {
			return nil, fmt.Errorf("redisproc: %s not found on PATH; install it (apt-get install redis-server): %w", Binary, err)
		}
	}
	if cli == "" {
		if cli, err = exec.LookPath(CLIBinary); err != nil {
			return nil, fmt.Errorf("redisproc: %s not found on PATH; install it (apt-get install redis-tools): %w", CLIBinary, err)
		}
	}
	dir, rm := c.Dir, false
	if dir == "" {
		if dir, err = os.MkdirTemp("", "callq-cluster-"); err != nil {
			return nil, fmt.Errorf("redisproc: %w", err)
		}
		rm = true
	}
	cl := &Cluster{Dir: dir, masters: c.Masters, replicas: c.Replicas, rmDir: rm, clients: map[string]*redis.Client{}}
	args := append([]string{
		"--cluster-node-timeout", strconv.FormatInt(c.NodeTimeout.Milliseconds(), 10),
		// A replica syncs as soon as it is told whom to follow, not 5s
		// later (the diskless default's wait for more replicas).
		"--repl-diskless-sync-delay", "0",
	}, c.Args...)

	n := c.Masters * (1 + c.Replicas)
	cl.Nodes = make([]*Server, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			cl.Nodes[i], errs[i] = Start(&Config{Bin: bin, Dir: filepath.Join(dir, "node-"+strconv.Itoa(i+1)), Args: args, Cluster: true})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		cl.Nodes = slices.DeleteFunc(cl.Nodes, func(s *Server) bool { return s == nil })
		_ = cl.Stop()
		return nil, err
	}
	for _, s := range cl.Nodes {
		cl.Addrs = append(cl.Addrs, s.Addr)
	}
	create := append([]string{"--cluster", "create"}, cl.Addrs...)
	create = append(create, "--cluster-replicas", strconv.Itoa(c.Replicas), "--cluster-yes")
	cmd := exec.CommandContext(ctx, cli, create...)
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = cl.Stop()
		return nil, fmt.Errorf("redisproc: %s %s: %w\n%s", cli, strings.Join(create, " "), err, tail(out, 30))
	}
	if err := cl.WaitHealthy(ctx, clusterReadyTimeout); err != nil {
		_ = cl.Stop()
		return nil, err
	}
	return cl, nil
}

// Stop stops every node (see Server.Stop) and removes a Dir that
// StartCluster created.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	for _, cl := range c.clients {
		_ = cl.Close()
	}
	c.clients = map[string]*redis.Client{}
	c.mu.Unlock()
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, s := range c.Nodes {
		wg.Go(func() { errs[i] = s.Stop() })
	}
	wg.Wait()
	if c.rmDir {
		errs = append(errs, os.RemoveAll(c.Dir))
	}
	return errors.Join(errs...)
}

// Node returns a client of the node at addr, for commands to that node
// itself (CLUSTER, INFO); Stop closes it.
func (c *Cluster) Node(addr string) *redis.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.clients[addr]
	if !ok {
		cl = redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 2 * time.Second})
		c.clients[addr] = cl
	}
	return cl
}

// NodeInfo is one node as CLUSTER NODES describes it.
type NodeInfo struct {
	ID     string
	Addr   string // 127.0.0.1:port
	Master bool
	// MasterID is a replica's master's ID ("" for a master).
	MasterID string
	// Slots are a master's slot ranges, "0-5460" or "5461".
	Slots []string
	// Flags are the node's flags but myself, master and slave ("fail",
	// "pfail", "handshake", "noaddr", ...): none when healthy.
	Flags []string
}

// Topology is the cluster as one node sees it: its nodes by address.
type Topology map[string]NodeInfo

// Masters are the masters' addresses, sorted.
func (t Topology) Masters() []string {
	var out []string
	for addr, n := range t {
		if n.Master {
			out = append(out, addr)
		}
	}
	slices.Sort(out)
	return out
}

// ReplicasOf are the addresses of the replicas of the master at addr, sorted.
func (t Topology) ReplicasOf(addr string) []string {
	var out []string
	id := t[addr].ID
	for a, n := range t {
		if !n.Master && n.MasterID == id {
			out = append(out, a)
		}
	}
	slices.Sort(out)
	return out
}

// MasterOfSlot is the address of the master serving slot, "" if none.
func (t Topology) MasterOfSlot(slot int) string {
	for addr, n := range t {
		if !n.Master {
			continue
		}
		for _, r := range n.Slots {
			lo, hi, _ := strings.Cut(r, "-")
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if hi == "" {
				b, err2 = a, err1
			}
			if err1 == nil && err2 == nil && a <= slot && slot <= b {
				return addr
			}
		}
	}
	return ""
}

// TopologyOf reads CLUSTER NODES from the node at addr.
func (c *Cluster) TopologyOf(ctx context.Context, addr string) (Topology, error) {
	raw, err := c.Node(addr).ClusterNodes(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("CLUSTER NODES on %s: %w", addr, err)
	}
	return parseClusterNodes(raw)
}

// parseClusterNodes reads CLUSTER NODES: "<id> <ip:port@bus[,host]>
// <flags> <master> <ping> <pong> <epoch> <link> <slot>...", one node a line.
func parseClusterNodes(raw string) (Topology, error) {
	t := Topology{}
	for line := range strings.SplitSeq(strings.TrimSpace(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("CLUSTER NODES: unexpected line %q", line)
		}
		addr, _, _ := strings.Cut(f[1], "@")
		n := NodeInfo{ID: f[0], Addr: addr}
		for flag := range strings.SplitSeq(f[2], ",") {
			switch flag {
			case "myself", "noflags":
			case "master":
				n.Master = true
			case "slave":
			default:
				n.Flags = append(n.Flags, flag)
			}
		}
		if f[3] != "-" {
			n.MasterID = f[3]
		}
		for _, s := range f[8:] {
			if !strings.HasPrefix(s, "[") { // "[slot-<-id]": a slot being migrated
				n.Slots = append(n.Slots, s)
			}
		}
		slices.Sort(n.Slots)
		t[addr] = n
	}
	return t, nil
}

// Topology is the cluster as every node agrees it is; an error when a node
// cannot be read or two disagree.
func (c *Cluster) Topology(ctx context.Context) (Topology, error) {
	var first Topology
	for i, addr := range c.Addrs {
		t, err := c.TopologyOf(ctx, addr)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			first = t
			continue
		}
		if err := sameTopology(first, t); err != nil {
			return nil, fmt.Errorf("%s and %s disagree: %w", c.Addrs[0], addr, err)
		}
	}
	return first, nil
}

func sameTopology(a, b Topology) error {
	if len(a) != len(b) {
		return fmt.Errorf("%d nodes against %d", len(a), len(b))
	}
	for addr, na := range a {
		nb, ok := b[addr]
		switch {
		case !ok:
			return fmt.Errorf("%s is unknown to one", addr)
		case na.ID != nb.ID || na.Master != nb.Master || na.MasterID != nb.MasterID:
			return fmt.Errorf("on %s's role", addr)
		case !slices.Equal(na.Slots, nb.Slots):
			return fmt.Errorf("on %s's slots", addr)
		}
	}
	return nil
}

// WaitHealthy polls, every 20ms up to timeout, until the cluster is
// healthy: every node answers CLUSTER INFO with cluster_state:ok and every
// slot assigned and ok, every node's CLUSTER NODES names the same masters,
// slots and replicas with no node flagged failing or in handshake, there
// are as many masters and replicas as configured, and every replica's
// link to its master is up with the sync done. After a failover this is
// what says the cluster has settled.
func (c *Cluster) WaitHealthy(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := c.healthy(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("redisproc: the cluster was not healthy within %s: %w", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *Cluster) healthy(ctx context.Context) error {
	for _, addr := range c.Addrs {
		info, err := c.Node(addr).ClusterInfo(ctx).Result()
		if err != nil {
			return fmt.Errorf("CLUSTER INFO on %s: %w", addr, err)
		}
		for _, want := range []string{"cluster_state:ok", "cluster_slots_assigned:16384", "cluster_slots_ok:16384",
			"cluster_known_nodes:" + strconv.Itoa(len(c.Addrs))} {
			if !strings.Contains(info, want+"\r\n") {
				return fmt.Errorf("%s: CLUSTER INFO lacks %s", addr, want)
			}
		}
	}
	t, err := c.Topology(ctx)
	if err != nil {
		return err
	}
	masters := t.Masters()
	if len(masters) != c.masters {
		return fmt.Errorf("%d masters, want %d", len(masters), c.masters)
	}
	for addr, n := range t {
		if len(n.Flags) > 0 {
			return fmt.Errorf("%s is flagged %s", addr, strings.Join(n.Flags, ","))
		}
	}
	for _, m := range masters {
		reps := t.ReplicasOf(m)
		if len(reps) != c.replicas {
			return fmt.Errorf("master %s has %d replicas, want %d", m, len(reps), c.replicas)
		}
		for _, r := range reps {
			info, err := c.Node(r).Info(ctx, "replication").Result()
			if err != nil {
				return fmt.Errorf("INFO replication on %s: %w", r, err)
			}
			if !strings.Contains(info, "master_link_status:up") || !strings.Contains(info, "master_sync_in_progress:0") {
				return fmt.Errorf("replica %s is not in sync with %s", r, m)
			}
		}
	}
	return nil
}

// Failover has a replica of the master at addr take its place with a
// manual CLUSTER FAILOVER (the replica waits until it has every write the
// master acknowledged, then the master steps down: nothing is lost), and
// waits until the replica serves the master's slots, the old master follows
// it and the cluster is healthy. It returns the new master's address.
func (c *Cluster) Failover(ctx context.Context, addr string) (string, error) {
	t, err := c.Topology(ctx)
	if err != nil {
		return "", fmt.Errorf("redisproc: failover: %w", err)
	}
	reps := t.ReplicasOf(addr)
	if !t[addr].Master || len(reps) == 0 {
		return "", fmt.Errorf("redisproc: failover: %s is not a master with a replica", addr)
	}
	promoted := reps[0]
	deadline := time.Now().Add(clusterReadyTimeout)
	// Redis gives a manual failover manualFailoverTimeout to catch up and
	// win its election, then drops it without a word: a loaded machine can
	// miss that. Until the replica says it is master, ask again once each
	// try has surely been dropped (asking during one restarts it).
	for {
		if err := c.Node(promoted).ClusterFailover(ctx).Err(); err != nil {
			return "", fmt.Errorf("redisproc: CLUSTER FAILOVER on %s: %w", promoted, err)
		}
		retry := time.Now().Add(manualFailoverTimeout + time.Second)
		role := ""
		for time.Now().Before(retry) {
			if r, err := c.Node(promoted).Do(ctx, "ROLE").Slice(); err == nil && len(r) > 0 {
				role, _ = r[0].(string)
			}
			if role == "master" || ctx.Err() != nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if role == "master" {
			break
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return "", fmt.Errorf("redisproc: %s did not take over from %s within %s", promoted, addr, clusterReadyTimeout)
		}
	}
	for {
		t, err := c.Topology(ctx)
		if err == nil && t[promoted].Master && !t[addr].Master && t[addr].MasterID == t[promoted].ID {
			break
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return "", fmt.Errorf("redisproc: failover of %s to %s not seen by every node within %s (last: %v)", addr, promoted, clusterReadyTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return promoted, c.WaitHealthy(ctx, clusterReadyTimeout)
}
