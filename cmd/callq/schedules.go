package main

// The CLI over the schedules API: list, add and remove schedules.

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
)

const schedulesUsage = `Usage: callq schedules ls|get|add|rm ...

  callq schedules ls [--json]
  callq schedules get ID
  callq schedules add ID --cron "*/5 * * * *" [--timezone Europe/Paris] --integration NAME
                      METHOD PATH [--query k=v]... [--header k=v]... [--body JSON]
                      [--credential REF] [--timeout 10s] [--queue Q] [--replace]
  callq schedules rm ID

"callq schedules COMMAND -h" describes each.
`

// runSchedules dispatches `callq schedules`.
func runSchedules(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: callq schedules ls|get|add|rm", errUsage)
	}
	switch args[0] {
	case "ls":
		return runSchedulesList(ctx, args[1:], stdout, stderr)
	case "get":
		return runSchedulesGet(ctx, args[1:], stdout)
	case "add":
		return runSchedulesAdd(ctx, args[1:], stdout)
	case "rm":
		return runSchedulesRemove(ctx, args[1:], stdout)
	case "-h", "-help", "--help", "help":
		return &helpError{schedulesUsage}
	}
	return fmt.Errorf("%w: unknown schedules command %q", errUsage, args[0])
}

func runSchedulesList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newCmdFlags("schedules ls", "callq schedules ls [--json]",
		"Lists the tenant's schedules by ID, as a table (or the API's JSON with --json):\n"+
			"when each fires next, its last run and why its last firing enqueued no call,\n"+
			"if it did not. Times are UTC.")
	asJSON := fs.Bool("json", false, "print the API's JSON")
	if err := fs.parseNoArgs(args); err != nil {
		return err
	}
	out, err := newAPIClient().do(ctx, http.MethodGet, "/v1/schedules", nil)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, out)
	}
	var list struct {
		Schedules []producer.Schedule `json:"schedules"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return fmt.Errorf("callq API answered GET /v1/schedules with %w", err)
	}
	if len(list.Schedules) == 0 {
		fmt.Fprintln(stderr, "callq: no schedules")
	}
	return writeSchedulesTable(stdout, list.Schedules)
}

// writeSchedulesTable prints schedules as a table, times in UTC.
func writeSchedulesTable(w io.Writer, list []producer.Schedule) error {
	stamp := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCRON\tTIMEZONE\tINTEGRATION\tMETHOD\tPATH\tNEXT RUN\tLAST RUN\tLAST ERROR")
	for _, s := range list {
		lastErr := "-"
		if s.LastError != nil {
			lastErr = strings.ReplaceAll(*s.LastError, "\t", " ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Cron, cmp.Or(s.Timezone, "UTC"), s.Call.Integration,
			s.Call.Method, s.Call.Path, stamp(s.NextRunAt), stamp(s.LastRunAt), lastErr)
	}
	return tw.Flush()
}

func runSchedulesGet(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newCmdFlags("schedules get", "callq schedules get ID",
		"Prints a schedule, with its next run, last run, last correlation ID and last\nerror, as the API's JSON.")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fs.usageError("")
	}
	out, err := newAPIClient().do(ctx, http.MethodGet, "/v1/schedules/"+url.PathEscape(pos[0]), nil)
	if err != nil {
		return err
	}
	return printJSON(stdout, out)
}

func runSchedulesAdd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newCmdFlags("schedules add", `callq schedules add ID --cron "*/5 * * * *" [--timezone TZ] --integration NAME METHOD PATH [--query k=v]... [--header k=v]... [--body JSON] [--credential REF] [--timeout 10s] [--queue Q] [--replace]`,
		"Adds a schedule: at each instant --cron names, in --timezone (default UTC), the\n"+
			"call is enqueued under the correlation ID sched-ID-<unix seconds>. --cron takes\n"+
			"five fields (minute hour day-of-month month day-of-week), a descriptor\n"+
			"(@hourly, @daily, @weekly, @monthly, @yearly) or @every 30s. An ID in use is an\n"+
			"error (409) unless --replace, which replaces that schedule. Prints the API's JSON.")
	cron := fs.String("cron", "", `when the schedule fires: "*/5 * * * *", @daily, @every 30s`)
	timezone := fs.String("timezone", "", "IANA time zone the cron expression is read in (default UTC)")
	integration := fs.String("integration", "", "integration name")
	credential := fs.String("credential", "", "credential reference")
	body := fs.String("body", "", "JSON body")
	timeout := fs.Duration("timeout", 0, "call timeout")
	queue := fs.String("queue", "", "queue")
	replace := fs.Bool("replace", false, "replace the schedule under ID if there is one")
	var query, headers multiFlag
	fs.Var(&query, "query", "query parameter KEY=VALUE (repeatable)")
	fs.Var(&headers, "header", "header KEY=VALUE (repeatable)")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 3 || *cron == "" || *integration == "" {
		return fs.usageError("")
	}
	call := tasks.Call{Integration: *integration, Method: pos[1], Path: pos[2], Credential: *credential,
		Timeout: tasks.Duration(*timeout), Queue: *queue}
	q := tasks.Query{}
	for _, kv := range query {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("%w: --query %q is not KEY=VALUE", errUsage, kv)
		}
		q[k] = append(q[k], v)
	}
	if len(q) > 0 {
		call.Query = q
	}
	if call.Headers, err = headers.pairs("header"); err != nil {
		return err
	}
	if *body != "" {
		call.Body = json.RawMessage(*body)
	}
	sched := map[string]any{"id": pos[0], "cron": *cron, "call": call}
	if *timezone != "" {
		sched["timezone"] = *timezone
	}
	method, path := http.MethodPost, "/v1/schedules"
	if *replace {
		method, path = http.MethodPut, "/v1/schedules/"+url.PathEscape(pos[0])
	}
	out, err := newAPIClient().do(ctx, method, path, sched)
	if err != nil {
		return err
	}
	return printJSON(stdout, out)
}

func runSchedulesRemove(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newCmdFlags("schedules rm", "callq schedules rm ID",
		"Deletes a schedule: it fires no more (within a second or two). The calls it\nmade are kept.")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fs.usageError("")
	}
	if _, err := newAPIClient().do(ctx, http.MethodDelete, "/v1/schedules/"+url.PathEscape(pos[0]), nil); err != nil {
		return err
	}
	b, _ := json.Marshal(map[string]string{"deleted": pos[0]})
	return printJSON(stdout, b)
}
