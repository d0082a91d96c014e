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

func runSchedulesList(ctx context.Context, x *invocation, args []string) error {
	fs := x.flags()
	asJSON := fs.Bool("json", false, "print the API's JSON")
	if err := fs.parseNoArgs(args); err != nil {
		return err
	}
	out, err := newAPIClient(fs.cfg).do(ctx, http.MethodGet, "/v1/schedules", nil)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(x.stdout, out)
	}
	var list struct {
		Schedules []producer.Schedule `json:"schedules"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return fmt.Errorf("callq API answered GET /v1/schedules with %w", err)
	}
	if len(list.Schedules) == 0 {
		fmt.Fprintln(x.stderr, "callq: no schedules")
	}
	return writeSchedulesTable(x.stdout, list.Schedules)
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

func runSchedulesGet(ctx context.Context, x *invocation, args []string) error {
	fs := x.flags()
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fs.usageError("")
	}
	out, err := newAPIClient(fs.cfg).do(ctx, http.MethodGet, "/v1/schedules/"+url.PathEscape(pos[0]), nil)
	if err != nil {
		return err
	}
	return printJSON(x.stdout, out)
}

func runSchedulesAdd(ctx context.Context, x *invocation, args []string) error {
	fs := x.flags()
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
	if len(pos) != 3 {
		return fs.usageError("")
	}
	if *cron == "" || *integration == "" {
		return fs.usageError("--cron and --integration are required")
	}
	call := tasks.Call{Integration: *integration, Method: pos[1], Path: pos[2], Credential: *credential,
		Timeout: tasks.Duration(*timeout), Queue: *queue}
	if call.Query, err = query.query(); err != nil {
		return err
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
	out, err := newAPIClient(fs.cfg).do(ctx, method, path, sched)
	if err != nil {
		return err
	}
	return printJSON(x.stdout, out)
}

func runSchedulesRemove(ctx context.Context, x *invocation, args []string) error {
	fs := x.flags()
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fs.usageError("")
	}
	if _, err := newAPIClient(fs.cfg).do(ctx, http.MethodDelete, "/v1/schedules/"+url.PathEscape(pos[0]), nil); err != nil {
		return err
	}
	b, _ := json.Marshal(map[string]string{"deleted": pos[0]})
	return printJSON(x.stdout, b)
}
