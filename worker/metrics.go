package worker

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/callq/callq/tasks"
)

// Metrics are a worker's Prometheus metrics. Labels are bounded: the
// integration (from the catalog), an outcome and an error kind, never a
// correlation ID, tenant or URL.
type Metrics struct {
	attempts *prometheus.HistogramVec
	calls    *prometheus.CounterVec
	webhooks *prometheus.CounterVec
	runs     *prometheus.CounterVec
	slots    *prometheus.GaugeVec
}

// NewMetrics registers a worker's metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		attempts: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "callq", Name: "attempt_duration_seconds",
			Help:    "Duration of attempts at upstream calls, by integration and outcome (succeeded, retrying, failed, interrupted).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"integration", "outcome"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "callq", Name: "calls_finished_total",
			Help: "Calls that reached a terminal status in this worker, by integration, status and error kind.",
		}, []string{"integration", "status", "error_kind"}),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "callq", Name: "webhook_deliveries_total",
			Help: "Webhook delivery attempts, by outcome (delivered, retrying, failed).",
		}, []string{"outcome"}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "callq", Name: "reconcile_runs_total",
			Help: "Reconciler runs this worker made holding the fleet's lease, by result (ok, error). The calls they failed are in calls_finished_total with error_kind lost.",
		}, []string{"result"}),
		slots: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "callq", Name: "concurrency_slots_in_use",
			Help: "Concurrency slots this worker holds, by integration: its requests in flight under a concurrency cap. Summed over the workers, the fleet's (all tenants).",
		}, []string{"integration"}),
	}
	for _, c := range []prometheus.Collector{m.attempts, m.calls, m.webhooks, m.runs, m.slots} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) attempt(integration, outcome string, d time.Duration) {
	if m != nil {
		m.attempts.WithLabelValues(integration, outcome).Observe(d.Seconds())
	}
}

func (m *Metrics) finished(rec *tasks.Record) {
	if m == nil {
		return
	}
	kind := ""
	if rec.Error != nil {
		kind = string(rec.Error.Kind)
	}
	m.calls.WithLabelValues(rec.Integration, string(rec.Status), kind).Inc()
}

func (m *Metrics) webhook(outcome string) {
	if m != nil {
		m.webhooks.WithLabelValues(outcome).Inc()
	}
}

func (m *Metrics) reconciled(ok bool) {
	if m == nil {
		return
	}
	result := "ok"
	if !ok {
		result = "error"
	}
	m.runs.WithLabelValues(result).Inc()
}

// slot counts a concurrency slot taken (+1) or released (-1).
func (m *Metrics) slot(integration string, delta float64) {
	if m != nil {
		m.slots.WithLabelValues(integration).Add(delta)
	}
}
