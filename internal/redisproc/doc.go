// Package redisproc runs a throw-away redis-server process: it finds a free
// 127.0.0.1 port, starts redis-server there with persistence disabled
// (--save "" --appendonly no) and its dump and log files (redis.log) in a
// directory of its own, waits until the server answers PING as the process
// it started, and stops it (SIGTERM, then SIGKILL after 5s). On Linux the
// child also gets SIGKILL if the process that started it dies first.
//
// It imports no test package, so a binary may use it: `callq bench` starts
// its redis-server with it, and internal/redistest builds its per-test
// servers on it.
//
// Typical use:
//
//	srv, err := redisproc.Start(nil) // redis-server on PATH, fresh temp dir
//	if err != nil {
//		return err
//	}
//	defer srv.Stop()
//	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
//
// [Server.Kill] (SIGKILL) and [Server.Restart] (start again on the same port
// and directory; a dump.rdb written by SAVE is loaded again, anything else
// is lost) serve fault tests. [Config.ConfFile] starts the server from a
// redis.conf instead (deploy/redis/redis.conf), whose persistence then holds:
// a Restart after a Kill loads its append-only file.
//
// [StartCluster] runs a Redis Cluster: 3 masters and 3 replicas by default,
// each node a Server started with [Config.Cluster] (a port below 55535
// whose bus port, +10000, is free), joined by `redis-cli --cluster create
// ... --cluster-replicas 1 --cluster-yes`. It returns once every node says
// cluster_state:ok, all agree on masters, slots and replicas, and every
// replica is in sync ([Cluster.WaitHealthy], polled, never slept on).
// [Cluster.Failover] runs a manual CLUSTER FAILOVER and waits until the
// cluster has settled. `callq bench --cluster` and internal/redistest's
// cluster tests share this code.
package redisproc
