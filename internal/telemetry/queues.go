package telemetry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// QueueCollectorConfig configures NewQueueCollector.
type QueueCollectorConfig struct {
	// Timeout bounds how long a scrape waits for asynq's queue stats.
	// Default 2s (DefaultQueueStatsTimeout). When it runs out, or Redis
	// cannot be reached, the scrape reports callq_queue_stats_up 0 and no
	// depths rather than fail or hang.
	Timeout time.Duration
}

// DefaultQueueStatsTimeout is QueueCollectorConfig.Timeout's default.
const DefaultQueueStatsTimeout = 2 * time.Second

func (c *QueueCollectorConfig) validate() error {
	if c.Timeout < 0 {
		return errors.New("QueueCollectorConfig.Timeout must not be negative")
	}
	return nil
}

// queueStates are the task states a depth is reported for, as asynq's
// QueueInfo counts them.
var queueStates = []string{"pending", "active", "scheduled", "retry", "archived"}

// QueueCollector is a Prometheus collector of asynq's queue depths, read
// with asynq's Inspector on each scrape: callq_queue_tasks{queue, state},
// a gauge per asynq queue (each shard of a sharded queue, and the webhook
// queue) and state. It is written here, not taken from asynq's x/metrics,
// because that one names its gauges as counters (_total).
type QueueCollector struct {
	inspector *asynq.Inspector
	timeout   time.Duration
	tasks     *prometheus.Desc
	up        *prometheus.Desc
	// mu lets one scrape read the stats at a time: asynq's Inspector takes
	// no context, so a read that times out still runs to its end, and
	// later scrapes must not pile more reads on a Redis that is slow.
	mu      sync.Mutex
	pending chan struct{} // closed when the read in flight ends; nil when none
}

// NewQueueCollector returns the collector of the queues asynq keeps in rdb.
func NewQueueCollector(rdb redis.UniversalClient, cfg *QueueCollectorConfig) (*QueueCollector, error) {
	c := QueueCollectorConfig{}
	if cfg != nil {
		c = *cfg
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultQueueStatsTimeout
	}
	return &QueueCollector{
		inspector: asynq.NewInspectorFromRedisClient(rdb),
		timeout:   c.Timeout,
		tasks: prometheus.NewDesc("callq_queue_tasks",
			"Tasks in an asynq queue, by queue and state (pending, active, scheduled, retry, archived), read from asynq when scraped.",
			[]string{"queue", "state"}, nil),
		up: prometheus.NewDesc("callq_queue_stats_up",
			"Whether the last scrape could read the asynq queues' depths (1) or not (0: Redis unreachable or slower than the timeout).",
			nil, nil),
	}, nil
}

// Describe implements prometheus.Collector.
func (q *QueueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- q.tasks
	ch <- q.up
}

// Collect implements prometheus.Collector.
func (q *QueueCollector) Collect(ch chan<- prometheus.Metric) {
	infos, err := q.read()
	if err != nil {
		ch <- prometheus.MustNewConstMetric(q.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(q.up, prometheus.GaugeValue, 1)
	for _, in := range infos {
		for i, n := range []int{in.Pending, in.Active, in.Scheduled, in.Retry, in.Archived} {
			ch <- prometheus.MustNewConstMetric(q.tasks, prometheus.GaugeValue, float64(n), in.Queue, queueStates[i])
		}
	}
}

// errSlow says the queue stats were not read within the timeout.
var errSlow = errors.New("telemetry: the asynq queue stats were not read in time")

// read reads every queue's stats within the timeout.
func (q *QueueCollector) read() ([]*asynq.QueueInfo, error) {
	q.mu.Lock()
	if q.pending != nil {
		q.mu.Unlock()
		return nil, errSlow // the last read has not ended yet
	}
	done := make(chan struct{})
	q.pending = done
	q.mu.Unlock()

	var infos []*asynq.QueueInfo
	var err error
	go func() {
		defer func() {
			q.mu.Lock()
			q.pending = nil
			q.mu.Unlock()
			close(done)
		}()
		var names []string
		if names, err = q.inspector.Queues(); err != nil {
			return
		}
		for _, name := range names {
			in, qerr := q.inspector.GetQueueInfo(name)
			if qerr != nil {
				err = qerr
				return
			}
			infos = append(infos, in)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), q.timeout)
	defer cancel()
	select {
	case <-done:
		return infos, err
	case <-ctx.Done():
		return nil, errSlow
	}
}
