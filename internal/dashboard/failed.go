package dashboard

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
)

// failedData is the failed calls page's.
type failedData struct {
	Since   string
	Windows []window
	Table   table
	// DryRun is the count of a dry run, if one was asked for.
	DryRun *dryRun
	// Result is what a bulk replay did, on the page it answers with.
	Result *producer.ReplayResult
}

// dryRun is what a bulk replay of the window would do, and the window it
// counted, fixed, for the confirmation to replay the same calls.
type dryRun struct {
	Count, Skipped int
	// AtLimit: there may be more than one replay may make.
	AtLimit bool
	// Since ("" for no bound) and Until are RFC 3339.
	Since, Until string
}

// failedFilter selects the failed calls created in [since, until).
func failedFilter(since, until time.Time) tasks.Filter {
	return tasks.Filter{Statuses: []tasks.Status{tasks.StatusFailed}, Since: since, Until: until}
}

func (d *dashboard) failed(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	since := "1h"
	if q.Has("since") {
		since = q.Get("since")
	}
	data := &failedData{Since: since, Windows: windows}
	v := &view{Title: "Failed calls", Nav: "failed", S: s, Data: data}
	win, ok := parseWindow(since, windows)
	if !ok {
		v.Alert = windowAlert
		d.render(w, r, http.StatusBadRequest, "failed", v)
		return
	}
	now := time.Now()
	var from time.Time
	if win.D > 0 {
		from = now.Add(-win.D)
	}
	c := d.client(s)
	ff := filterForm{Since: since}
	cursor := q.Get("cursor")
	pg, err := c.List(r.Context(), failedFilter(from, time.Time{}), cursor, pageSize)
	if alert, bad := badRequest(err); bad {
		v.Alert = alert
		d.render(w, r, http.StatusBadRequest, "failed", v)
		return
	}
	if err != nil {
		d.unavailable(w, r, s, err)
		return
	}
	data.Table = table{Caption: "Failed calls", Calls: pg.Calls, Refresh: "/ui/failed?" + ff.query(cursor, "fragment", "rows")}
	if pg.NextCursor != "" {
		data.Table.Next = "/ui/failed?" + ff.query(pg.NextCursor)
	}
	if q.Get("dry_run") != "" {
		res, err := c.ReplayMany(r.Context(), producer.ReplayRequest{Filter: failedFilter(from, now), Limit: producer.MaxReplayLimit, DryRun: true})
		if err != nil {
			d.unavailable(w, r, s, err)
			return
		}
		data.DryRun = &dryRun{Count: res.Replayed, Skipped: res.Skipped, AtLimit: res.Replayed == producer.MaxReplayLimit, Until: now.UTC().Format(time.RFC3339Nano)}
		if !from.IsZero() {
			data.DryRun.Since = from.UTC().Format(time.RFC3339Nano)
		}
	}
	d.renderTable(w, r, "failed", v)
}

// replayFailed replays the failed calls of the window a dry run counted,
// at most as many as it counted.
func (d *dashboard) replayFailed(w http.ResponseWriter, r *http.Request, s *session) {
	data := &failedData{Since: "1h", Windows: windows}
	v := &view{Title: "Failed calls", Nav: "failed", S: s, Data: data}
	var since, until time.Time
	var err error
	if f := r.PostFormValue("since"); f != "" {
		if since, err = time.Parse(time.RFC3339Nano, f); err != nil {
			d.fail(w, r, s, http.StatusBadRequest, "The form's window is not valid. Count the replays again.")
			return
		}
	}
	until, err = time.Parse(time.RFC3339Nano, r.PostFormValue("until"))
	limit, lerr := strconv.Atoi(r.PostFormValue("limit"))
	if err != nil || lerr != nil || limit < 1 || limit > producer.MaxReplayLimit {
		d.fail(w, r, s, http.StatusBadRequest, "The form's window or count is not valid. Count the replays again.")
		return
	}
	res, err := d.client(s).ReplayMany(r.Context(), producer.ReplayRequest{Filter: failedFilter(since, until), Limit: limit})
	if alert, bad := badRequest(err); bad {
		d.fail(w, r, s, http.StatusBadRequest, alert)
		return
	}
	if err != nil && (res == nil || res.Replayed == 0) {
		d.unavailable(w, r, s, err)
		return
	}
	status := http.StatusOK
	if err != nil {
		d.log.Error().Err(err).Int("replayed", res.Replayed).Msg("bulk replay interrupted")
		v.Alert = fmt.Sprintf("The replay stopped after %s. Count and replay again to go on: calls replayed already are skipped.", count(res.Replayed, "call"))
		status = http.StatusServiceUnavailable
	}
	data.Result = res
	d.render(w, r, status, "failed", v)
}
