package main

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

func TestParseRedisURL(t *testing.T) {
	t.Parallel()
	c, err := parseRedisURL("redis://:pw@10.0.0.5:6380/2", 70)
	require.NoError(t, err)
	opt := c.(*redis.Client).Options()
	require.Equal(t, "10.0.0.5:6380", opt.Addr)
	require.Equal(t, 2, opt.DB)
	require.Equal(t, "pw", opt.Password)
	require.Equal(t, 70, opt.PoolSize)

	c, err = parseRedisURL("rediss://user:pw@redis.example:6379/0?pool_size=9", 70)
	require.NoError(t, err)
	opt = c.(*redis.Client).Options()
	require.NotNil(t, opt.TLSConfig, "rediss:// is TLS")
	require.Equal(t, "user", opt.Username)
	require.Equal(t, 9, opt.PoolSize, "a pool_size in the URL wins")

	// Sentinel: a failover client (its options are the master's), and bad
	// forms are refused.
	c, err = parseRedisURL("redis-sentinel://:pw@s1:26379,s2:26379/mymaster/3?sentinel_password=sp", 0)
	require.NoError(t, err)
	require.NotNil(t, c)
	_ = c.Close()
	for _, bad := range []string{"redis-sentinel://s1:26379", "redis-sentinel:///mymaster", "redis-sentinel://s1:26379/mymaster/x", "http://x", "redis://[bad"} {
		_, err := parseRedisURL(bad, 0)
		require.Error(t, err, bad)
	}
	require.Equal(t, "redis://:xxxxx@h:1/0", redactURL("redis://:secretpw@h:1/0"))

	// Timeouts in the query bound how long a request waits on a Redis that
	// does not answer, in every form (TestProcessRedisTimeoutsBoundAPILatency).
	const q = "read_timeout=750ms&write_timeout=1s&dial_timeout=2s&pool_timeout=3s&max_retries=1&pool_size=7"
	for _, raw := range []string{"redis://h:1/0?" + q, "redis-sentinel://s1:26379/mymaster?sentinel_password=sp&" + q} {
		c, err := parseRedisURL(raw, 70)
		require.NoError(t, err, raw)
		opt := c.(*redis.Client).Options()
		require.Equal(t, 750*time.Millisecond, opt.ReadTimeout, raw)
		require.Equal(t, time.Second, opt.WriteTimeout, raw)
		require.Equal(t, 2*time.Second, opt.DialTimeout, raw)
		require.Equal(t, 3*time.Second, opt.PoolTimeout, raw)
		require.Equal(t, 1, opt.MaxRetries, raw)
		require.Equal(t, 7, opt.PoolSize, raw)
		_ = c.Close()
	}
	cc, err := newRedisClient("redis://u:pw@ignored:1/0?"+q, "n1:7000,n2:7000", 70)
	require.NoError(t, err)
	copt := cc.(*redis.ClusterClient).Options()
	_ = cc.Close()
	require.Equal(t, []string{"n1:7000", "n2:7000"}, copt.Addrs)
	require.Equal(t, "pw", copt.Password)
	require.Equal(t, 750*time.Millisecond, copt.ReadTimeout)
	require.Equal(t, 1, copt.MaxRetries)
	require.Equal(t, 7, copt.PoolSize)
	for _, bad := range []string{"read_timeout=soon", "reed_timeout=1s"} {
		_, err := parseRedisURL("redis-sentinel://s1:26379/m?"+bad, 0)
		require.Error(t, err, bad)
		_, err = newRedisClient("redis://h:1/0?"+bad, "n1:7000", 0)
		require.Error(t, err, bad)
	}
	require.NotContains(t, redactURL("redis-sentinel://s1:26379/m?sentinel_password=sp-secret"), "sp-secret")
}

func TestParseQueues(t *testing.T) {
	t.Parallel()
	q, names, err := parseQueues("critical=6,default=3,low=1")
	require.NoError(t, err)
	require.Equal(t, map[string]int{"critical": 6, "default": 3, "low": 1}, q)
	require.Equal(t, []string{"critical", "default", "low"}, names)
	for _, bad := range []string{"", "a", "a=0", "a=x", "=3", "a#1=3"} {
		_, _, err := parseQueues(bad)
		require.Error(t, err, bad)
	}
	_, _, err = parseQueues("default=3,bulk#1=1")
	require.EqualError(t, err, `CALLQ_QUEUES: queue "bulk#1": a queue's name must not hold "#", which separates a queue from its shards`)
}
