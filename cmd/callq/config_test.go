package main

import (
	"testing"

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

	// Sentinel: a failover client; its options are not exposed, so check
	// that it was built and that bad forms are refused.
	c, err = parseRedisURL("redis-sentinel://:pw@s1:26379,s2:26379/mymaster/3?sentinel_password=sp", 0)
	require.NoError(t, err)
	require.NotNil(t, c)
	_ = c.Close()
	for _, bad := range []string{"redis-sentinel://s1:26379", "redis-sentinel:///mymaster", "redis-sentinel://s1:26379/mymaster/x", "http://x", "redis://[bad"} {
		_, err := parseRedisURL(bad, 0)
		require.Error(t, err, bad)
	}
	require.Equal(t, "redis://:xxxxx@h:1/0", redactURL("redis://:secretpw@h:1/0"))
	require.NotContains(t, redactURL("redis-sentinel://s1:26379/m?sentinel_password=sp-secret"), "sp-secret")
}

func TestParseQueues(t *testing.T) {
	t.Parallel()
	q, names, err := parseQueues("critical=6,default=3,low=1")
	require.NoError(t, err)
	require.Equal(t, map[string]int{"critical": 6, "default": 3, "low": 1}, q)
	require.Equal(t, []string{"critical", "default", "low"}, names)
	for _, bad := range []string{"", "a", "a=0", "a=x", "=3"} {
		_, _, err := parseQueues(bad)
		require.Error(t, err, bad)
	}
}
