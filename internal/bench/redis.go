package bench

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisSnap is what one INFO tells of Redis's work so far.
type redisSnap struct {
	cmds int64   // total_commands_processed
	cpu  float64 // used_cpu_user + used_cpu_sys, seconds
}

// snapshot reads INFO stats and cpu. Redis counts an INFO after answering
// it, so each snapshot taken before the last one of a window adds one
// command to that window's delta: subtract them.
func (h *harness) snapshot(ctx context.Context) (redisSnap, error) {
	return snapshotOf(ctx, h.adm)
}

// snapshotOf is snapshot of the server rdb talks to.
func snapshotOf(ctx context.Context, rdb *redis.Client) (redisSnap, error) {
	info, err := rdb.Info(ctx, "stats", "cpu").Result()
	if err != nil {
		return redisSnap{}, fmt.Errorf("INFO: %w", err)
	}
	cmds, err := strconv.ParseInt(redisInfoField(info, "total_commands_processed"), 10, 64)
	if err != nil {
		return redisSnap{}, fmt.Errorf("INFO stats: %w", err)
	}
	user, _ := strconv.ParseFloat(redisInfoField(info, "used_cpu_user"), 64)
	sys, _ := strconv.ParseFloat(redisInfoField(info, "used_cpu_sys"), 64)
	return redisSnap{cmds: cmds, cpu: user + sys}, nil
}

// cpuUse is where CPU went over an execution window, per call.
type cpuUse struct {
	redisUS, procUS float64 // microseconds per call; procUS < 0 when unknown
}

func (c cpuUse) String() string {
	proc := "n/a"
	if c.procUS >= 0 {
		proc = fmt.Sprintf("%.0f µs", c.procUS)
	}
	return fmt.Sprintf("CPU per call: redis-server %.0f µs, this process %s", c.redisUS, proc)
}

func measureCPU(n int, before, after redisSnap, procBefore, procAfter time.Duration) cpuUse {
	u := cpuUse{redisUS: (after.cpu - before.cpu) * 1e6 / float64(n), procUS: -1}
	if procBefore >= 0 && procAfter >= 0 {
		u.procUS = float64((procAfter-procBefore)/time.Microsecond) / float64(n)
	}
	return u
}

// cmdCounter is a go-redis hook counting the commands a client sends.
type cmdCounter struct{ n *atomic.Int64 }

func (c cmdCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c cmdCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}

func (c cmdCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// redisInfoField reads one "name:value" line of an INFO answer.
func redisInfoField(info, name string) string {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}
