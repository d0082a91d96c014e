package worker

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/callq/callq/internal/flow"
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
	// circuitState is, per integration, the worst state of its circuits
	// (every tenant's, every credential's) as this worker last saw them;
	// circuitChanges counts the changes this worker made.
	circuitState   *prometheus.GaugeVec
	circuitChanges *prometheus.CounterVec
	circuits       circuitView
	slots          *prometheus.GaugeVec
}

// circuitView is what a worker last saw of the circuits that are not
// closed: the checks and reports it makes tell it each circuit's state.
type circuitView struct {
	mu sync.Mutex
	// notClosed maps an integration to its circuits seen open or
	// half-open.
	notClosed map[string]map[circuitID]flow.State
}

// circuitID names one of an integration's circuits.
type circuitID struct{ tenant, credential string }

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
		circuitState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "callq", Name: "circuit_state",
			Help: "The worst state of an integration's circuit breakers (any tenant's, any credential's) as this worker last saw it: 0 closed, 1 half-open, 2 open.",
		}, []string{"integration"}),
		circuitChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "callq", Name: "circuit_changes_total",
			Help: "Changes of state this worker made to an integration's circuit breakers, by the state entered (open, half_open, closed).",
		}, []string{"integration", "to"}),
		circuits: circuitView{notClosed: map[string]map[circuitID]flow.State{}},
		slots: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "callq", Name: "concurrency_slots_in_use",
			Help: "Concurrency slots this worker holds, by integration: its requests in flight under a concurrency cap. Summed over the workers, the fleet's (all tenants).",
		}, []string{"integration"}),
	}
	for _, c := range []prometheus.Collector{m.attempts, m.calls, m.webhooks, m.runs, m.slots, m.circuitState, m.circuitChanges} {
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

// circuitBreaker makes integration's circuit metrics show (closed) before
// any call to it.
func (m *Metrics) circuitBreaker(integration string) {
	if m != nil {
		m.circuitState.WithLabelValues(integration)
	}
}

// circuitSeen notes the state in which this worker found one of
// integration's circuits. A closed circuit this worker has not seen
// otherwise costs a map lookup.
func (m *Metrics) circuitSeen(integration string, id circuitID, s flow.State) {
	if m == nil {
		return
	}
	v := &m.circuits
	v.mu.Lock()
	defer v.mu.Unlock()
	seen := v.notClosed[integration]
	if seen[id] == s || (s == flow.Closed && seen[id] == "") {
		return
	}
	if s == flow.Closed {
		delete(seen, id)
	} else {
		if seen == nil {
			seen = map[circuitID]flow.State{}
			v.notClosed[integration] = seen
		}
		seen[id] = s
	}
	worst := flow.Closed
	for _, st := range seen {
		if st.Gauge() > worst.Gauge() {
			worst = st
		}
	}
	m.circuitState.WithLabelValues(integration).Set(worst.Gauge())
}

// circuitChanged counts a change of state this worker made, and notes it.
func (m *Metrics) circuitChanged(integration string, id circuitID, to flow.State) {
	if m == nil {
		return
	}
	m.circuitChanges.WithLabelValues(integration, string(to)).Inc()
	m.circuitSeen(integration, id, to)
}

// slot counts a concurrency slot taken (+1) or released (-1).
func (m *Metrics) slot(integration string, delta float64) {
	if m != nil {
		m.slots.WithLabelValues(integration).Add(delta)
	}
}
