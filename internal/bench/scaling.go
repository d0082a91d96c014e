package bench

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// The settings of a Config.Scaling run: each concurrency with the small
// body, then each body size at Config.Concurrency.
var (
	ScalingConcurrencies = []int{10, 50, 200}
	ScalingBodies        = []int{1 << 10, 64 << 10, 1 << 20}
)

// scalingBodyBudget bounds the response bytes one scaling phase makes
// Redis hold (callq keeps each response in its record): the calls of a
// large body are fewer than Config.Calls, at least scalingMinCalls.
const (
	scalingBodyBudget = 256 << 20
	scalingMinCalls   = 100
)

// scalingSetting is one point of the scaling report. A body of 0 is the
// small JSON body of the other phases (upstreamBody).
type scalingSetting struct {
	concurrency, body, calls int
}

func (s scalingSetting) String() string {
	body := fmt.Sprintf("%d-byte body", len(upstreamBody))
	if s.body > 0 {
		body = fmt.Sprintf("%d KiB body", s.body>>10)
	}
	return fmt.Sprintf("concurrency %d, %s, %d calls", s.concurrency, body, s.calls)
}

func (s scalingSetting) path() string {
	if s.body == 0 {
		return "/ok"
	}
	return fmt.Sprintf("%s%d", bytesPath, s.body)
}

// scalingRounds are one setting's figures, a value per round.
type scalingRounds struct {
	asynq, callq, asynqCPU, callqCPU []float64
}

func (h *harness) scalingSettings() []scalingSetting {
	var out []scalingSetting
	for _, c := range ScalingConcurrencies {
		out = append(out, scalingSetting{concurrency: c, calls: h.cfg.Calls})
	}
	for _, b := range ScalingBodies {
		calls := min(h.cfg.Calls, max(scalingMinCalls, scalingBodyBudget/b))
		out = append(out, scalingSetting{concurrency: h.cfg.Concurrency, body: b, calls: calls})
	}
	return out
}

// scalingPhase runs the asynq + net/http phase, or callq's, at s.
func (h *harness) scalingPhase(s scalingSetting, callq bool) func(context.Context) error {
	return func(ctx context.Context) error {
		saved := h.cfg
		h.cfg.Concurrency, h.cfg.Calls = s.concurrency, s.calls
		defer func() { h.cfg = saved }()
		sr := h.scalingRounds[s]
		if sr == nil {
			sr = &scalingRounds{}
			h.scalingRounds[s] = sr
		}
		if callq {
			r, err := h.runCallq(ctx, callqSpec{path: s.path()})
			if err != nil {
				return err
			}
			sr.callq, sr.callqCPU = append(sr.callq, r.perS), append(sr.callqCPU, r.cpu.redisUS)
			return nil
		}
		r, err := h.runAsynqHTTP(ctx, s.path(), false)
		if err != nil {
			return err
		}
		sr.asynq, sr.asynqCPU = append(sr.asynq, r.perS), append(sr.asynqCPU, r.cpu.redisUS)
		return nil
	}
}

// ScalingResult is what a Config.Scaling run measured: a run per setting,
// medians over the rounds.
type ScalingResult struct {
	Runs []ScalingRun `json:"runs"`
}

// ScalingRun is one setting: the worker concurrency, the upstream's
// response body (bytes; 0 for the small JSON body of the default phases),
// the calls of each phase, and the two throughputs and Redis CPU per call.
type ScalingRun struct {
	Concurrency       int     `json:"concurrency"`
	BodyBytes         int     `json:"body_bytes"`
	Calls             int     `json:"calls"`
	AsynqHTTPPerS     float64 `json:"asynq_http_per_s"`
	CallqPerS         float64 `json:"callq_per_s"`
	CallqVsAsynqHTTP  float64 `json:"callq_vs_asynq_http"`
	RedisCPUUSPerCall struct {
		AsynqHTTP float64 `json:"asynq_http"`
		Callq     float64 `json:"callq"`
	} `json:"redis_cpu_us_per_call"`
}

type scalingOutput struct {
	Scaling *ScalingResult `json:"scaling"`
	Machine Machine        `json:"machine"`
	Calls   int            `json:"calls"`
	Date    string         `json:"date"`
}

func (h *harness) summarizeScaling() {
	h.sres = &ScalingResult{}
	for _, s := range h.scalingSettings() {
		sr := h.scalingRounds[s]
		if sr == nil {
			continue
		}
		run := ScalingRun{Concurrency: s.concurrency, BodyBytes: s.body, Calls: s.calls,
			AsynqHTTPPerS: round(median(sr.asynq), 0), CallqPerS: round(median(sr.callq), 0)}
		run.CallqVsAsynqHTTP = round(ratio(median(sr.callq), median(sr.asynq)), 3)
		run.RedisCPUUSPerCall.AsynqHTTP = round(median(sr.asynqCPU), 1)
		run.RedisCPUUSPerCall.Callq = round(median(sr.callqCPU), 1)
		h.sres.Runs = append(h.sres.Runs, run)
	}
}

// writeScalingTable writes a --scaling run: one row per setting.
func (rep *Report) writeScalingTable(out io.Writer) {
	r := &rep.Result
	fmt.Fprintf(out, "callq bench --scaling: up to %d calls per phase, %d round(s); %d cores, %s, redis %s; %s; took %s\n\n",
		r.Calls, rep.nRounds, r.Machine.Cores, r.Machine.Go, r.Machine.Redis, r.Date, rep.notes.elapsed.Round(100*time.Millisecond))
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "concurrency\tbody_bytes\tcalls\tasynq_http_per_s\tcallq_per_s\tcallq_vs_asynq_http\tredis_cpu_us_per_call (asynq_http, callq)")
	for _, run := range rep.Scaling.Runs {
		body := fmt.Sprint(run.BodyBytes)
		if run.BodyBytes == 0 {
			body = fmt.Sprintf("%d (small)", len(upstreamBody))
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%.0f\t%.0f\t%.3f\t%.1f, %.1f\n", run.Concurrency, body, run.Calls, run.AsynqHTTPPerS,
			run.CallqPerS, run.CallqVsAsynqHTTP, run.RedisCPUUSPerCall.AsynqHTTP, run.RedisCPUUSPerCall.Callq)
	}
	tw.Flush()
	fmt.Fprintf(out, "\nEach setting runs the asynq + net/http phase and the callq phase as the default bench does (enqueue first,\n"+
		"then timed from the worker's start to the last completion), both at the setting's concurrency and body.\n"+
		"A large body's phases make fewer calls (at most %d MiB of responses each), since callq keeps each response.\n",
		scalingBodyBudget>>20)
}
