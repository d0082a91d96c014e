package main

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// The password of every malformed REDIS_URL below, and the pieces it falls
// into when a "/", "?" or "#" in it ends the URL's host part early.
const (
	redisPW      = "zq7pwA/ret9xkB"
	redisPWHead  = "zq7pwA"
	redisPWTail  = "ret9xkB"
	redisPWQuery = "zq7pwA?ret9xkB"
	redisPWHash  = "zq7pwA#ret9xkB"
)

// badRedisURLs are malformed REDIS_URL (and CALLQ_REDIS_CLUSTER_ADDRS)
// values that hold the password; none may reach an error message.
var badRedisURLs = []struct {
	name, url, cluster string
}{
	{"BadPort", "redis://user:zq7pwAret9xkB@host:port/0", ""},
	{"BadScheme", "http://user:zq7pwAret9xkB@host:6379/0", ""},
	{"BadDB", "redis://user:zq7pwAret9xkB@host:6379/x", ""},
	{"BadPath", "redis://user:zq7pwAret9xkB@host:6379/0/1", ""},
	{"BadOption", "redis://user:zq7pwAret9xkB@host:6379/0?dial_timeout=zq7pwAret9xkB", ""},
	{"BadEscape", "redis://user:zq7pwA%zzret9xkB@host:6379/0", ""},
	{"SlashInPassword", "redis://user:" + redisPW + "@host:6379/0", ""},
	{"SlashInPasswordNumeric", "redis://user:12/" + redisPWTail + "@host/0", ""},
	{"QueryInPassword", "redis://user:12?" + redisPWTail + "@host:6379", ""},
	{"HashInPassword", "redis://user:" + redisPWHash + "@host:6379/0", ""},
	{"SentinelBadDB", "redis-sentinel://user:zq7pwAret9xkB@s1:26379/mymaster/x", ""},
	{"SentinelNoMaster", "redis-sentinel://user:zq7pwAret9xkB@s1:26379", ""},
	{"SentinelSlashInPassword", "redis-sentinel://user:12/" + redisPWTail + "@s1:26379/mymaster", ""},
	{"SentinelQueryInPassword", "redis-sentinel://user:" + redisPWQuery + "@s1:26379/mymaster", ""},
	{"SentinelSlashInPasswordNoDB", "redis-sentinel://user:12/" + redisPWTail + "@s1:26379", ""},
	{"SentinelBadPort", "redis-sentinel://user:zq7pwAret9xkB@s1:port/mymaster", ""},
	{"ClusterUserInAddr", "redis://127.0.0.1:1/0", "user:zq7pwAret9xkB@127.0.0.1:7000,127.0.0.1:7001"},
	{"ClusterBadURL", "redis://user:" + redisPW + "@host:6379/0", "127.0.0.1:7000"},
	{"ClusterBadAddr", "redis://user:zq7pwAret9xkB@host:6379/0", "127.0.0.1:7000,127.0.0.1:x"},
}

// requireNoRedisPassword fails if s holds the password or a piece of it.
func requireNoRedisPassword(t *testing.T, s, what string) {
	t.Helper()
	for _, secret := range []string{"zq7pwAret9xkB", redisPWHead, redisPWTail} {
		require.NotContains(t, s, secret, "%s shows the Redis password", what)
	}
}

// Not parallel: t.Setenv (CALLQ_REDIS_CLUSTER_ADDRS).
func TestRedisURLErrorsHidePassword(t *testing.T) {
	for _, tc := range badRedisURLs {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CALLQ_REDIS_CLUSTER_ADDRS", tc.cluster)
			rdb, err := openRedis(context.Background(), tc.url, "", 0)
			if rdb != nil {
				_ = rdb.Close()
			}
			require.Error(t, err)
			msg := err.Error()
			t.Logf("%s: %s", tc.name, msg)
			requireNoRedisPassword(t, msg, "the error")
			if tc.cluster != "" && tc.name != "ClusterBadURL" {
				require.Contains(t, msg, "CALLQ_REDIS_CLUSTER_ADDRS")
			} else {
				require.Contains(t, msg, "REDIS_URL")
			}
			// Nor behind the message, for a caller that logs the chain.
			for e := errors.Unwrap(err); e != nil; e = errors.Unwrap(e) {
				requireNoRedisPassword(t, e.Error(), "a wrapped error")
			}
		})
	}
}

// The binary, given a malformed REDIS_URL, exits non-zero naming REDIS_URL,
// and prints the password nowhere: not in its error, not in any log line.
func TestProcessRedisURLErrorsHidePassword(t *testing.T) {
	t.Parallel()
	bin := callqBinary(t)
	for _, tc := range badRedisURLs {
		for _, args := range [][]string{{"keys", "list"}, {"api"}, {"worker"}} {
			env := childEnv("REDIS_URL="+tc.url, "CALLQ_LOG_LEVEL=debug", "CALLQ_INTEGRATIONS=../../deploy/integrations.example.yaml")
			if tc.cluster != "" {
				env = append(env, "CALLQ_REDIS_CLUSTER_ADDRS="+tc.cluster)
			}
			cmd := exec.Command(bin, args...)
			cmd.Env = env
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee, "callq %s with REDIS_URL %s: %s", strings.Join(args, " "), tc.name, out.String())
			require.Equal(t, 1, ee.ExitCode(), "%s", out.String())
			requireNoRedisPassword(t, out.String(), "callq "+strings.Join(args, " ")+" ("+tc.name+")")
			require.Contains(t, out.String(), "REDIS")
		}
	}
}

// What the checks above refuse is only what cannot be a well-formed URL: a
// percent-encoded password, and an "@" in a query value, still work.
func TestRedisURLWellFormedPasswords(t *testing.T) {
	t.Parallel()
	c, err := newRedisClient("redis://user:a%2Fb%3Fc%23d@h:1/0", "", 0)
	require.NoError(t, err)
	opt := c.(*redis.Client).Options()
	require.Equal(t, "a/b?c#d", opt.Password)
	_ = c.Close()

	c, err = newRedisClient("redis-sentinel://s1:26379/m?sentinel_password=p@ss", "", 0)
	require.NoError(t, err)
	_ = c.Close()

	c, err = newRedisClient("redis://user:p%2Fw@h:1/0", " n1:7000, n2:7001", 0)
	require.NoError(t, err)
	copt := c.(*redis.ClusterClient).Options()
	require.Equal(t, []string{"n1:7000", "n2:7001"}, copt.Addrs)
	require.Equal(t, "p/w", copt.Password)
	_ = c.Close()

	require.Equal(t, "redis://user:xxxxx@h:1/0?xxxxx", redactURL("redis://user:pw@h:1/0?dial_timeout=1s"))
}

// The usage text, printed for -h and for a bad flag, shows each flag's
// default: the redis-url flag's is REDIS_URL's value, which must appear
// without its password (or the sentinel password in its query).
func TestProcessUsageHidesRedisPassword(t *testing.T) {
	t.Parallel()
	bin := callqBinary(t)
	for _, url := range []string{
		"redis://user:" + redisPWHead + "@h:6379/0",
		"redis-sentinel://:" + redisPWHead + "@s1:26379/mymaster?sentinel_password=" + redisPWTail,
	} {
		for _, args := range [][]string{{"worker", "-h"}, {"api", "--help"}, {"dev", "-h"}, {"worker", "--bogus"}} {
			cmd := exec.Command(bin, args...)
			cmd.Env = childEnv("REDIS_URL=" + url)
			out, _ := cmd.CombinedOutput()
			require.Contains(t, string(out), "-redis-url", "%v printed no usage:\n%s", args, out)
			require.Contains(t, string(out), "xxxxx", "%v: the usage shows the redacted URL", args)
			for _, secret := range []string{redisPWHead, redisPWTail} {
				require.NotContains(t, string(out), secret, "%v with REDIS_URL %s", args, url)
			}
		}
	}
}
