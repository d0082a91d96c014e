package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/callq/callq/worker"
)

// Report is what Run measured: Result, the JSON object, and the notes the
// table shows beside it.
type Report struct {
	Result Result
	// Cluster is what a Config.Cluster run measured; then Result holds
	// only the machine, calls, concurrency and date.
	Cluster *ClusterResult
	// Scaling is what a Config.Scaling run measured; then Result holds
	// only the machine, calls, concurrency and date.
	Scaling *ScalingResult

	notes   notes
	rounds  rounds
	nRounds int
}

// WriteJSON writes Result as one indented JSON object.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if rep.Cluster != nil {
		r := &rep.Result
		return enc.Encode(clusterOutput{Cluster: rep.Cluster, Machine: r.Machine, Calls: r.Calls, Concurrency: r.Concurrency, Date: r.Date})
	}
	if rep.Scaling != nil {
		r := &rep.Result
		return enc.Encode(scalingOutput{Scaling: rep.Scaling, Machine: r.Machine, Calls: r.Calls, Date: r.Date})
	}
	return enc.Encode(rep.Result)
}

// Latency is a latency distribution in milliseconds.
type Latency struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
}

// Machine is where a run took place.
type Machine struct {
	Cores int    `json:"cores"`
	Go    string `json:"go"`
	Redis string `json:"redis"`
}

// Result is the JSON object of a run (callq bench --json): exactly these
// keys, which the README's Performance section shows.
type Result struct {
	AsynqNoopPerS    float64 `json:"asynq_noop_per_s"`
	AsynqHTTPPerS    float64 `json:"asynq_http_per_s"`
	CallqPerS        float64 `json:"callq_per_s"`
	CallqVsAsynqHTTP float64 `json:"callq_vs_asynq_http"`
	CallqVsAsynqNoop float64 `json:"callq_vs_asynq_noop"`
	// The credential phases: callq with a bearer credential on every
	// call, against asynq + net/http sending the same token read from the
	// environment.
	AsynqHTTPCredPerS         float64  `json:"asynq_http_cred_per_s"`
	CallqCredPerS             float64  `json:"callq_cred_per_s"`
	CallqCredVsAsynqHTTP      float64  `json:"callq_cred_vs_asynq_http"`
	CallqCredRedisCmdsPerCall float64  `json:"callq_cred_redis_cmds_per_call"`
	RedisCPUUSPerCall         RedisCPU `json:"redis_cpu_us_per_call"`
	HTTPEnqueuePerS           float64  `json:"http_enqueue_per_s"`
	GoEnqueuePerS             float64  `json:"go_enqueue_per_s"`
	WaitLatencyMS             Latency  `json:"wait_latency_ms"`
	IdlePickupMS              Latency  `json:"idle_pickup_ms"`
	RedisCmdsPerCall          float64  `json:"redis_cmds_per_call"`
	AsynqHTTPRedisCmdsPerCall float64  `json:"asynq_http_redis_cmds_per_call"`
	WorkerPeakRSSMB           float64  `json:"worker_peak_rss_mb"`
	ListP99MS                 float64  `json:"list_p99_ms"`
	Machine                   Machine  `json:"machine"`
	Calls                     int      `json:"calls"`
	Concurrency               int      `json:"concurrency"`
	Date                      string   `json:"date"`
}

// RedisCPU is redis-server's CPU per call, in microseconds (INFO's
// used_cpu_sys + used_cpu_user over a phase's execution window, divided by
// its calls), by phase.
type RedisCPU struct {
	AsynqNoop float64 `json:"asynq_noop"`
	AsynqHTTP float64 `json:"asynq_http"`
	Callq     float64 `json:"callq"`
	CallqCred float64 `json:"callq_cred"`
}

// rounds keeps each round's throughput figures; the result is their
// median (peak RSS: their maximum).
type rounds struct {
	noop, http, callq, goEnqueue, httpCmds, callqCmds, rss []float64
	httpCred, callqCred, callqCredCmds                     []float64
	cpu                                                    cpuRounds // Redis µs per call, by RedisCPU's key
}

// cpuRounds is each round's Redis CPU per call, by phase.
type cpuRounds map[string][]float64

func (c *cpuRounds) add(phase string, us float64) {
	if *c == nil {
		*c = cpuRounds{}
	}
	(*c)[phase] = append((*c)[phase], us)
}

// median is the median of phase's rounds, to a tenth of a µs.
func (c cpuRounds) median(phase string) float64 { return round(median(c[phase]), 1) }

// notes is what the table shows beside the JSON figures.
type notes struct {
	asynqNoopCmds     float64
	callqSentCmds     float64 // commands sent by callq's clients per call (no Lua inner commands)
	asynqHTTPSentCmds float64
	asynqNoopCPU      cpuUse
	asynqHTTPCPU      cpuUse
	callqCPU          cpuUse
	asynqHTTPCredCPU  cpuUse
	callqCredCPU      cpuUse
	rssStartMB        float64
	rssMethod         string
	httpRequests      int
	waitSamples       int
	pickupSamples     int
	elapsed           time.Duration
	listP50MS         float64
	listRecords       int
	listSamples       int
}

// summarize turns the rounds' figures into Result: medians (peak RSS: the
// maximum), ratios, rounded.
func (h *harness) summarize() {
	r := &h.res
	rs := &h.rounds
	r.AsynqNoopPerS, r.AsynqHTTPPerS, r.CallqPerS = median(rs.noop), median(rs.http), median(rs.callq)
	r.GoEnqueuePerS = median(rs.goEnqueue)
	r.RedisCmdsPerCall, r.AsynqHTTPRedisCmdsPerCall = median(rs.callqCmds), median(rs.httpCmds)
	r.WorkerPeakRSSMB = slices.Max(rs.rss)
	r.CallqVsAsynqHTTP = round(ratio(r.CallqPerS, r.AsynqHTTPPerS), 3)
	r.CallqVsAsynqNoop = round(ratio(r.CallqPerS, r.AsynqNoopPerS), 3)
	r.AsynqHTTPCredPerS, r.CallqCredPerS = median(rs.httpCred), median(rs.callqCred)
	r.CallqCredVsAsynqHTTP = round(ratio(r.CallqCredPerS, r.AsynqHTTPCredPerS), 3)
	r.CallqCredRedisCmdsPerCall = round(median(rs.callqCredCmds), 2)
	r.RedisCPUUSPerCall = RedisCPU{AsynqNoop: rs.cpu.median("asynq_noop"), AsynqHTTP: rs.cpu.median("asynq_http"),
		Callq: rs.cpu.median("callq"), CallqCred: rs.cpu.median("callq_cred")}
	for _, v := range []*float64{&r.AsynqNoopPerS, &r.AsynqHTTPPerS, &r.CallqPerS, &r.HTTPEnqueuePerS, &r.GoEnqueuePerS, &r.AsynqHTTPCredPerS, &r.CallqCredPerS} {
		*v = round(*v, 0)
	}
	r.RedisCmdsPerCall = round(r.RedisCmdsPerCall, 2)
	r.AsynqHTTPRedisCmdsPerCall = round(r.AsynqHTTPRedisCmdsPerCall, 2)
	r.WorkerPeakRSSMB = round(r.WorkerPeakRSSMB, 1)
}

// WriteTable writes the figures as a table, with what each measures.
func (rep *Report) WriteTable(out io.Writer) {
	if rep.Cluster != nil {
		rep.writeClusterTable(out)
		return
	}
	if rep.Scaling != nil {
		rep.writeScalingTable(out)
		return
	}
	r, n, rs := &rep.Result, &rep.notes, &rep.rounds
	// each notes a figure's rounds when there were several.
	each := func(v []float64, format string) string {
		if len(v) < 2 {
			return ""
		}
		parts := make([]string, len(v))
		for i, x := range v {
			parts[i] = fmt.Sprintf(format, x)
		}
		return fmt.Sprintf("; median of %d rounds: %s", len(v), strings.Join(parts, " "))
	}
	perRound := func(a, b []float64) []float64 {
		out := make([]float64, min(len(a), len(b)))
		for i := range out {
			out[i] = ratio(a[i], b[i])
		}
		return out
	}
	fmt.Fprintf(out, "callq bench: %d calls at concurrency %d, %d round(s); %d cores, %s, redis %s; %s; took %s\n\n",
		r.Calls, r.Concurrency, rep.nRounds, r.Machine.Cores, r.Machine.Go, r.Machine.Redis, r.Date, n.elapsed.Round(100*time.Millisecond))
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	row := func(name, value, note string) { fmt.Fprintf(tw, "%s\t%s\t%s\n", name, value, note) }
	lat := func(l Latency) string { return fmt.Sprintf("p50 %.3f  p99 %.3f", l.P50, l.P99) }
	row("metric", "value", "what")
	row("asynq_noop_per_s", fmt.Sprintf("%.0f", r.AsynqNoopPerS), "raw asynq, no-op handler: the engine's ceiling; "+n.asynqNoopCPU.String()+each(rs.noop, "%.0f"))
	row("asynq_http_per_s", fmt.Sprintf("%.0f", r.AsynqHTTPPerS), "raw asynq, handler GETs the upstream with net/http, reads the body, stores nothing; "+n.asynqHTTPCPU.String()+each(rs.http, "%.0f"))
	row("callq_per_s", fmt.Sprintf("%.0f", r.CallqPerS), "callq worker in process: GET, response kept, terminal record written, published and its asynq task ended in one round trip; "+n.callqCPU.String()+each(rs.callq, "%.0f"))
	row("callq_vs_asynq_http", fmt.Sprintf("%.3f", r.CallqVsAsynqHTTP), "callq_per_s / asynq_http_per_s"+strings.Replace(each(perRound(rs.callq, rs.http), "%.3f"), "median of", "per round of", 1))
	row("callq_vs_asynq_noop", fmt.Sprintf("%.3f", r.CallqVsAsynqNoop), "callq_per_s / asynq_noop_per_s"+strings.Replace(each(perRound(rs.callq, rs.noop), "%.3f"), "median of", "per round of", 1))
	row("asynq_http_cred_per_s", fmt.Sprintf("%.0f", r.AsynqHTTPCredPerS), "raw asynq + net/http as above, sending a bearer token it reads from the environment on each call; "+n.asynqHTTPCredCPU.String()+each(rs.httpCred, "%.0f"))
	row("callq_cred_per_s", fmt.Sprintf("%.0f", r.CallqCredPerS), "callq as above, each call with a bearer credential (stored sealed, as PUT /v1/credentials stores it); "+n.callqCredCPU.String()+each(rs.callqCred, "%.0f"))
	row("callq_cred_vs_asynq_http", fmt.Sprintf("%.3f", r.CallqCredVsAsynqHTTP), "callq_cred_per_s / asynq_http_cred_per_s"+strings.Replace(each(perRound(rs.callqCred, rs.httpCred), "%.3f"), "median of", "per round of", 1))
	row("callq_cred_redis_cmds_per_call", fmt.Sprintf("%.2f", r.CallqCredRedisCmdsPerCall), "redis_cmds_per_call of the credential phase")
	c := r.RedisCPUUSPerCall
	row("redis_cpu_us_per_call", fmt.Sprintf("asynq_noop %.1f  asynq_http %.1f  callq %.1f  callq_cred %.1f", c.AsynqNoop, c.AsynqHTTP, c.Callq, c.CallqCred),
		fmt.Sprintf("redis-server CPU (INFO used_cpu_sys+used_cpu_user) per call over each phase's execution window; callq / asynq_http %.2f", ratio(c.Callq, c.AsynqHTTP)))
	row("http_enqueue_per_s", fmt.Sprintf("%.0f", r.HTTPEnqueuePerS), fmt.Sprintf("POST /v1/calls, %d keep-alive clients, %d requests, no worker", enqueuers, n.httpRequests))
	row("go_enqueue_per_s", fmt.Sprintf("%.0f", r.GoEnqueuePerS), fmt.Sprintf("producer.Client.Enqueue, %d goroutines, no worker (the enqueue step of the callq phase)", enqueuers)+each(rs.goEnqueue, "%.0f"))
	row("wait_latency_ms", lat(r.WaitLatencyMS), fmt.Sprintf("record completed_at (stamped by the worker just before its terminal write) to Wait returning; %d calls one at a time, Wait blocked first", n.waitSamples))
	row("idle_pickup_ms", lat(r.IdlePickupMS), fmt.Sprintf("Enqueue returning to the upstream receiving the request, idle worker, random 50-150ms pauses; %d calls", n.pickupSamples))
	row("redis_cmds_per_call", fmt.Sprintf("%.2f", r.RedisCmdsPerCall), fmt.Sprintf("callq phase, enqueue + execution: INFO total_commands_processed delta / calls (%.2f sent by clients; the rest run inside Lua scripts)", n.callqSentCmds))
	row("asynq_http_redis_cmds_per_call", fmt.Sprintf("%.2f", r.AsynqHTTPRedisCmdsPerCall), fmt.Sprintf("the same for the asynq + net/http phase (%.2f sent by clients; no-op phase: %.2f)", n.asynqHTTPSentCmds, n.asynqNoopCmds))
	row("worker_peak_rss_mb", fmt.Sprintf("%.1f", r.WorkerPeakRSSMB), fmt.Sprintf("peak RSS of this process (worker in process, with the harness and upstream) over the callq execution window; %s; %.1f MB at its start%s", n.rssMethod, n.rssStartMB, strings.Replace(each(rs.rss, "%.1f"), "median", "maximum", 1)))
	row("list_p99_ms", fmt.Sprintf("%.3f", r.ListP99MS), fmt.Sprintf("GET /v1/calls?status=failed&limit=50 over a tenant of %d records (a fifth failed), one request at a time following the cursor; %d requests, p50 %.3f", n.listRecords, n.listSamples, n.listP50MS))
	tw.Flush()
	fmt.Fprintf(out, "\nThroughput phases are enqueue-first: all %d tasks are queued with no worker running, then the worker\n"+
		"(asynq.Server or callq's, with callq's queues %s, TaskCheckInterval %s and\n"+
		"DelayedTaskCheckInterval %s) is started, and calls/s runs from its start to the last completion\n"+
		"(counted in the handler for asynq, by the worker's calls_finished_total for callq).\n"+
		"Redis command counts include the enqueue; the harness's own INFO commands are subtracted.\n"+
		"CPU per call is over the execution window only; this process holds the worker, the upstream and the harness.\n",
		r.Calls, worker.FormatQueues(worker.DefaultQueues()), worker.DefaultTaskCheckInterval, worker.DefaultDelayedTaskCheckInterval)
}

// percentiles returns the nearest-rank p50 and p99 of samples, in ms.
func percentiles(samples []float64) Latency {
	if len(samples) == 0 {
		return Latency{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return Latency{P50: round(rank(0.50), 3), P99: round(rank(0.99), 3)}
}

// median of v; 0 for none.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// round rounds v to places decimal places.
func round(v float64, places int) float64 {
	p := math.Pow(10, float64(places))
	return math.Round(v*p) / p
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// writeClusterTable writes a --cluster run: one row per shard count.
func (rep *Report) writeClusterTable(out io.Writer) {
	r, c := &rep.Result, rep.Cluster
	fmt.Fprintf(out, "callq bench --cluster: %d calls at concurrency %d, %d round(s); %d cores, %s, redis %s; %s; took %s\n",
		r.Calls, r.Concurrency, rep.nRounds, r.Machine.Cores, r.Machine.Go, r.Machine.Redis, r.Date, rep.notes.elapsed.Round(100*time.Millisecond))
	fmt.Fprintf(out, "a local Redis Cluster of %d masters with %d replica(s) each; the callq throughput phase at each shard count\n\n", c.Masters, c.ReplicasPerMaster)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "queue_shards\tcallq_per_s\tgo_enqueue_per_s\tmaster_cmds_per_call\tspread\tmaster_cpu_us_per_call")
	for _, run := range c.Runs {
		fmt.Fprintf(tw, "%d\t%.0f\t%.0f\t%s\t%.2f\t%s\n", run.QueueShards, run.CallqPerS, run.GoEnqueuePerS,
			formatList(run.MasterCmdsPerCall, 2), run.Spread, formatList(run.MasterCPUUSPerCall, 0))
	}
	tw.Flush()
	fmt.Fprintf(out, "\nmaster_cmds_per_call: each master's INFO total_commands_processed over the phase (enqueue and execution,\n"+
		"commands inside Lua scripts included) per call, masters in the order of their addresses; spread: the busiest\n"+
		"master's over the idlest's (1 is even). master_cpu_us_per_call: each master's CPU over the execution window.\n"+
		"Every node runs on this machine, so callq_per_s shows no gain from the masters' cores: the spread is the figure.\n")
}
