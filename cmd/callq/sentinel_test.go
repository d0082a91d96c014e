package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/redistest"
)

// REDIS_URL=redis-sentinel://... reaches the master a real Sentinel names.
func TestRedisSentinelURL(t *testing.T) {
	t.Parallel()
	master := redistest.Start(t)
	if master.Dir == "" {
		t.Skip("needs a redis-server of its own, not CALLQ_TEST_REDIS_URL")
	}
	sentinelAddr := freeAddr(t)
	_, port, _ := strings.Cut(sentinelAddr, ":")
	host, mport, _ := strings.Cut(master.Addr, ":")
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	require.NoError(t, os.WriteFile(conf, fmt.Appendf(nil, "port %s\nbind 127.0.0.1\ndir %s\nsentinel monitor mymaster %s %s 1\n", port, dir, host, mport), 0o644))
	cmd := exec.Command("redis-server", conf, "--sentinel")
	cmd.Stdout, cmd.Stderr = nil, nil
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	ctx := context.Background()
	require.NoError(t, master.Client(t).Set(ctx, "callq:sentinel-probe", "through the master", 0).Err())
	var rdb redis.UniversalClient
	require.Eventually(t, func() bool {
		var err error
		rdb, err = openRedis(ctx, "redis-sentinel://"+sentinelAddr+"/mymaster", "", 0)
		return err == nil
	}, 10*time.Second, 100*time.Millisecond, "the sentinel never answered")
	defer rdb.Close()
	v, err := rdb.Get(ctx, "callq:sentinel-probe").Result()
	require.NoError(t, err)
	require.Equal(t, "through the master", v)
}
