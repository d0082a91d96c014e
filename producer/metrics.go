package producer

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the HTTP API's Prometheus metrics. Labels are bounded: the
// route pattern (never the raw path), a known method, the status code and
// the integration (from the catalog).
type Metrics struct {
	requests    *prometheus.CounterVec
	enqueued    *prometheus.CounterVec
	unavailable prometheus.Counter
}

// NewMetrics registers the API's metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "callq", Name: "http_requests_total",
			Help: "HTTP API requests answered, by route pattern (unmatched for a path no route serves), method and status code.",
		}, []string{"route", "method", "code"}),
		enqueued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "callq", Name: "calls_enqueued_total",
			Help: "Calls the API queued (new ones; an idempotent repeat is not counted), by integration.",
		}, []string{"integration"}),
		unavailable: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "callq", Name: "http_unavailable_total",
			Help: "HTTP API requests answered 503 because Redis could not be reached.",
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.enqueued, m.unavailable} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// request counts one answered request; storeDown says a 503 was answered
// because Redis could not be reached.
func (m *Metrics) request(route, method string, code int, storeDown bool) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(route, knownMethod(method), strconv.Itoa(code)).Inc()
	if code == http.StatusServiceUnavailable && storeDown {
		m.unavailable.Inc()
	}
}

func (m *Metrics) enqueuedCall(integration string) {
	if m != nil {
		m.enqueued.WithLabelValues(integration).Inc()
	}
}

// knownMethod bounds the method label: a client may send any token.
func knownMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}
