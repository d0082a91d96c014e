// Package redistest starts throw-away redis-server processes for tests and
// benchmarks, so that nothing in callq's test suite ever talks to the shared
// Redis on 6379.
//
// Typical use:
//
//	func TestSomething(t *testing.T) {
//		t.Parallel()
//		srv := redistest.Start(t) // own process, own port, own t.TempDir()
//		rdb := srv.Client(t)      // closed automatically at cleanup
//		...
//	}
//
// Every call to [Start] launches its own redis-server on a free 127.0.0.1 port
// with persistence disabled (--save "" --appendonly no) and its working
// directory, dump file and log file (redis.log) in a fresh temporary
// directory, so parallel tests never share state. The process is stopped
// (SIGTERM, then SIGKILL after 5s) by tb.Cleanup. On Linux the child also
// gets SIGKILL if the test binary dies without running its cleanups.
//
// Fault tests can use [Server.Kill] (SIGKILL), [Server.Restart] (stop and
// start again on the same port and directory; a dump.rdb written by
// [Server.SaveRDB] or SAVE is loaded again, anything else is lost) and
// [Server.SaveRDB] (SAVE and return the raw RDB bytes, e.g. to check that no
// secret reaches a snapshot).
//
// Environment:
//
//   - CALLQ_TEST_REDIS_URL: if set, [Start] does not launch anything; it
//     returns a Server pointing at that URL after running FLUSHALL on it.
//     Tests sharing one external server must not run in parallel with each
//     other. Restart, Kill and SaveRDB skip the test in this mode.
//   - CI: if "true" and redis-server is not on PATH, [Start] fails the test
//     instead of skipping it (a skip would let a broken CI image pass); so
//     do this package's own tests.
//
// [StartConf] starts a server from a redis.conf instead (deploy/redis/redis.conf),
// keeping its persistence settings, for tests of what survives a SIGKILL.
//
// [StartCluster] starts a Redis Cluster of 3 masters and 3 replicas for one
// test; a [SharedCluster] is one cluster for a test package, started by the
// first test that asks for it and stopped by the package's TestMain. They
// need redis-cli beside redis-server.
//
// [StartProcess] is the testing.TB-free variant for a TestMain and
// process-level helpers; it always launches a process. Both are built on
// internal/redisproc, which does not import testing: a binary that needs a
// redis-server (callq bench) uses that package instead.
package redistest
