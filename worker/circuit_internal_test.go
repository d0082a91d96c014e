package worker

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/flow"
	"github.com/callq/callq/tasks"
)

// What an attempt tells its circuit: the upstream failing (connection,
// timeout, 5xx but 501, 429) counts; any other answer ends a run of
// failures; no attempt, an interrupted one, or a failure of callq's own
// side says nothing.
func TestCircuitResult(t *testing.T) {
	t.Parallel()
	answered := func(status int, kind tasks.ErrorKind) *outcome {
		o := &outcome{response: &tasks.Response{Status: status}}
		if kind != "" {
			o.err = &tasks.CallError{Kind: kind}
		}
		return o
	}
	failed := func(kind tasks.ErrorKind) *outcome { return &outcome{err: &tasks.CallError{Kind: kind}} }
	for name, tc := range map[string]struct {
		out  *outcome
		want flow.Result
	}{
		"no attempt (a later gate held it)": {nil, flow.Neutral},
		"200":                               {answered(200, ""), flow.Answered},
		"302":                               {answered(302, ""), flow.Answered},
		"400":                               {answered(400, tasks.KindHTTPStatus), flow.Answered},
		"404":                               {answered(404, tasks.KindHTTPStatus), flow.Answered},
		"408":                               {answered(408, tasks.KindHTTPStatus), flow.Answered},
		"501":                               {answered(501, tasks.KindHTTPStatus), flow.Answered},
		"429":                               {answered(429, tasks.KindRateLimited), flow.Failed},
		"500":                               {answered(500, tasks.KindHTTPStatus), flow.Failed},
		"503":                               {answered(503, tasks.KindHTTPStatus), flow.Failed},
		"504":                               {answered(504, tasks.KindHTTPStatus), flow.Failed},
		"connection refused":                {failed(tasks.KindConnection), flow.Failed},
		"timeout":                           {failed(tasks.KindTimeout), flow.Failed},
		"timeout mid-body":                  {answered(200, tasks.KindTimeout), flow.Failed},
		"TLS verification":                  {failed(tasks.KindTLS), flow.Neutral},
		"credential missing":                {failed(tasks.KindCredential), flow.Neutral},
		"credential store unreadable":       {failed(tasks.KindInternal), flow.Neutral},
		"canceled":                          {failed(tasks.KindCanceled), flow.Neutral},
		"interrupted by the drain limit": {&outcome{err: &tasks.CallError{Kind: tasks.KindTimeout}, interrupted: true},
			flow.Neutral},
		"interrupted after a 503": {&outcome{response: &tasks.Response{Status: 503},
			err: &tasks.CallError{Kind: tasks.KindHTTPStatus}, interrupted: true}, flow.Neutral},
	} {
		require.Equal(t, tc.want, circuitResult(tc.out), name)
	}
}

func TestCircuitNote(t *testing.T) {
	t.Parallel()
	cb := &tasks.CircuitBreaker{Failures: 5, Per: tasks.CircuitPerIntegration}
	tk := &flow.Ticket{State: flow.Open, Failures: 5, NextProbeAt: time.Date(2026, 11, 26, 13, 30, 38, 0, time.UTC)}
	c := &flow.Circuit{Tenant: "acme", Integration: "crm", Credential: "cust-42", Breaker: cb}
	require.Equal(t, `circuit open for "crm": 5 consecutive failures; next probe at 2026-11-26T13:30:38Z`, circuitNote(c, tk))
	perCred := *cb
	perCred.Per = tasks.CircuitPerCredential
	c.Breaker = &perCred
	require.Equal(t, `circuit open for "crm" (credential "cust-42"): 5 consecutive failures; next probe at 2026-11-26T13:30:38Z`, circuitNote(c, tk))
	c.Credential = ""
	tk.State = flow.HalfOpen
	require.Equal(t, `circuit half-open for "crm" (no credential): waiting for the outcome of its probe call`, circuitNote(c, tk))
}
