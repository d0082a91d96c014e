package main

// The CLI over the calls API: list, get, replay and cancel calls, and
// their stats.

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
)

// callsFilter is the list filter's flags, shared by ls and bulk replay.
type callsFilter struct {
	statuses    multiFlag
	integration string
	since       string
	until       string
}

func (f *callsFilter) flags(fs *cmdFlags) {
	fs.Var(&f.statuses, "status", "queued, running, retrying, succeeded, failed or canceled (repeatable: any of them)")
	fs.StringVar(&f.integration, "integration", "", "only calls to this integration")
	fs.StringVar(&f.since, "since", "", "only calls created since then: a duration ago (1h) or RFC 3339")
	fs.StringVar(&f.until, "until", "", "only calls created before then: a duration ago (10m) or RFC 3339")
}

func (f *callsFilter) empty() bool {
	return len(f.statuses) == 0 && f.integration == "" && f.since == "" && f.until == ""
}

// query is f as GET /v1/calls's query.
func (f *callsFilter) query() url.Values {
	q := url.Values{}
	for _, s := range f.statuses {
		q.Add("status", s)
	}
	for k, v := range map[string]string{"integration": f.integration, "since": f.since, "until": f.until} {
		if v != "" {
			q.Set(k, v)
		}
	}
	return q
}

// body is f as POST /v1/calls/replay's "filter".
func (f *callsFilter) body() map[string]any {
	b := map[string]any{}
	if len(f.statuses) > 0 {
		b["status"] = []string(f.statuses)
	}
	for k, v := range map[string]string{"integration": f.integration, "since": f.since, "until": f.until} {
		if v != "" {
			b[k] = v
		}
	}
	return b
}

// callsPage is GET /v1/calls's answer.
type callsPage struct {
	Calls      []json.RawMessage `json:"calls"`
	NextCursor *string           `json:"next_cursor"`
}

func runCallsList(ctx context.Context, x *invocation, args []string) error {
	fs := x.flags()
	var f callsFilter
	f.flags(fs)
	limit := fs.Int("limit", 0, fmt.Sprintf("calls per page, 1 to %d (default %d; %d with --all)", tasks.MaxListLimit, tasks.DefaultListLimit, tasks.MaxListLimit))
	cursor := fs.String("cursor", "", "continue after the page that printed this cursor")
	all := fs.Bool("all", false, "follow the cursors: list every matching call")
	asJSON := fs.Bool("json", false, "print the API's JSON")
	if err := fs.parseNoArgs(args); err != nil {
		return err
	}
	q := f.query()
	if *limit == 0 && *all {
		*limit = tasks.MaxListLimit // fewer round trips
	}
	if *limit != 0 {
		q.Set("limit", strconv.Itoa(*limit))
	}
	c := newAPIClient(fs.cfg)
	var calls []json.RawMessage
	next := *cursor
	for {
		if next != "" {
			q.Set("cursor", next)
		}
		out, err := c.do(ctx, http.MethodGet, "/v1/calls?"+q.Encode(), nil)
		if err != nil {
			return err
		}
		if *asJSON && !*all {
			return printJSON(x.stdout, out) // as the API answered, next_cursor included
		}
		var page callsPage
		if err := json.Unmarshal(out, &page); err != nil {
			return fmt.Errorf("callq API answered GET /v1/calls with %w", err)
		}
		calls = append(calls, page.Calls...)
		next = ""
		if page.NextCursor != nil {
			next = *page.NextCursor
		}
		if next == "" || !*all {
			break
		}
	}
	if *asJSON {
		b, err := json.Marshal(callsPage{Calls: calls})
		if err != nil {
			return err
		}
		return printJSON(x.stdout, b)
	}
	if err := writeCallsTable(x.stdout, calls); err != nil {
		return err
	}
	if next != "" {
		// A page may stop short of --limit (even at none) when a filter
		// leaves out most of the calls the API reads, so "may".
		fmt.Fprintf(x.stderr, "callq: more calls may follow: --cursor %s\n", next)
	} else if len(calls) == 0 && *cursor == "" {
		fmt.Fprintln(x.stderr, "callq: no calls match")
	}
	return nil
}

// writeCallsTable prints call summaries as a table; CREATED is in UTC so
// that the output does not depend on where it runs.
func writeCallsTable(w io.Writer, calls []json.RawMessage) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CORRELATION ID\tSTATUS\tINTEGRATION\tMETHOD\tPATH\tATTEMPTS\tHTTP\tERROR\tCREATED\tREPLAY OF")
	for _, raw := range calls {
		var r tasks.Record
		if err := json.Unmarshal(raw, &r); err != nil {
			return fmt.Errorf("callq API answered a call summary that is not a record: %w", err)
		}
		httpStatus, kind, replayOf := "-", "-", cmp.Or(r.ReplayOf, "-")
		if r.Response != nil && r.Response.Status != 0 {
			httpStatus = strconv.Itoa(r.Response.Status)
		}
		if r.Error != nil && r.Error.Kind != "" {
			kind = string(r.Error.Kind)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\t%s\n", r.CorrelationID, r.Status, r.Integration, r.Method, r.Path,
			r.Attempts, r.MaxAttempts, httpStatus, kind, r.CreatedAt.UTC().Format(time.RFC3339), replayOf)
	}
	return tw.Flush()
}

func runCallsReplay(ctx context.Context, x *invocation, args []string) error {
	fs := x.flags()
	var f callsFilter
	f.flags(fs)
	as := fs.String("as", "", "the new call's correlation ID (one call; default: generated)")
	limit := fs.Int("limit", 0, "replay at most this many calls, 1 to 10000 (default 1000)")
	dryRun := fs.Bool("dry-run", false, "list the calls that would be replayed; replay none")
	again := fs.Bool("again", false, "replay calls that were replayed before too")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	c := newAPIClient(fs.cfg)
	switch {
	case len(pos) > 1:
		return fs.usageError("one ID at most")
	case len(pos) == 1:
		if !f.empty() || *limit != 0 || *dryRun || *again {
			return fs.usageError("an ID or a filter, not both")
		}
		var body any
		if *as != "" {
			body = map[string]string{"correlation_id": *as}
		}
		out, err := c.do(ctx, http.MethodPost, "/v1/calls/"+url.PathEscape(pos[0])+"/replay", body)
		if err != nil {
			return err
		}
		return printJSON(x.stdout, out)
	}
	if f.empty() {
		return fs.usageError("an ID or a filter (--status, --integration, --since, --until)")
	}
	if *as != "" {
		return fs.usageError("--as names the new call of a single replay")
	}
	body := map[string]any{"filter": f.body(), "dry_run": *dryRun, "again": *again}
	if *limit != 0 {
		body["limit"] = *limit
	}
	out, err := c.do(ctx, http.MethodPost, "/v1/calls/replay", body)
	if err != nil {
		return err
	}
	return printJSON(x.stdout, out)
}

func runCallsCancel(ctx context.Context, x *invocation, args []string) error {
	fs := x.flags()
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fs.usageError("")
	}
	out, err := newAPIClient(fs.cfg).do(ctx, http.MethodDelete, "/v1/calls/"+url.PathEscape(pos[0]), nil)
	if err != nil {
		return err
	}
	return printJSON(x.stdout, out)
}

func runStats(ctx context.Context, x *invocation, args []string) error {
	fs := x.flags()
	since := fs.String("since", "", "the window's start: a duration ago or RFC 3339, at most 168h before its end (default 1h)")
	until := fs.String("until", "", "the window's end: a duration ago or RFC 3339 (default now)")
	asJSON := fs.Bool("json", false, "print the API's JSON")
	if err := fs.parseNoArgs(args); err != nil {
		return err
	}
	q := url.Values{}
	for k, v := range map[string]string{"since": *since, "until": *until} {
		if v != "" {
			q.Set(k, v)
		}
	}
	path := "/v1/stats"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	out, err := newAPIClient(fs.cfg).do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(x.stdout, out)
	}
	var st producer.Stats
	if err := json.Unmarshal(out, &st); err != nil {
		return fmt.Errorf("callq API answered GET /v1/stats with %w", err)
	}
	return writeStats(x.stdout, &st)
}

func writeStats(w io.Writer, st *producer.Stats) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%d calls created from %s to %s\n\n", st.Total,
		st.Since.UTC().Format(time.RFC3339), st.Until.UTC().Format(time.RFC3339))
	fmt.Fprintln(tw, "STATUS\tCALLS")
	statuses := tasks.Statuses()
	for _, s := range slices.Sorted(maps.Keys(st.ByStatus)) {
		if !slices.Contains(statuses, s) {
			statuses = append(statuses, s) // a status this CLI does not know yet
		}
	}
	for _, s := range statuses {
		fmt.Fprintf(tw, "%s\t%d\n", s, st.ByStatus[s])
	}
	fmt.Fprintln(tw, "\nINTEGRATION\tCALLS")
	integrations := slices.Collect(maps.Keys(st.ByIntegration))
	slices.SortFunc(integrations, func(a, b string) int { // most calls first
		return cmp.Or(cmp.Compare(st.ByIntegration[b], st.ByIntegration[a]), strings.Compare(a, b))
	})
	for _, in := range integrations {
		fmt.Fprintf(tw, "%s\t%d\n", in, st.ByIntegration[in])
	}
	fmt.Fprintln(tw, "\nQUEUE\tPENDING\tACTIVE\tSCHEDULED\tRETRY\tARCHIVED")
	for _, name := range slices.Sorted(maps.Keys(st.Queues)) {
		q := st.Queues[name]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\n", name, q.Pending, q.Active, q.Scheduled, q.Retry, q.Archived)
	}
	return tw.Flush()
}
