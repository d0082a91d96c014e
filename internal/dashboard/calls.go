package dashboard

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/callq/callq/producer"
	"github.com/callq/callq/tasks"
)

// pageSize is how many calls a table shows.
const pageSize = 50

// window is a choice of the time window select.
type window struct {
	Value, Label string
	D            time.Duration // 0: no bound
}

var (
	windows = []window{
		{"15m", "Last 15 minutes", 15 * time.Minute},
		{"1h", "Last hour", time.Hour},
		{"24h", "Last 24 hours", 24 * time.Hour},
		{"7d", "Last 7 days", 7 * 24 * time.Hour},
		{"", "All", 0},
	}
	// boundedWindows are the windows of the overview, whose counts span
	// at most producer.MaxStatsWindow.
	boundedWindows = windows[:4]
)

// parseWindow reads a since parameter among choices.
func parseWindow(v string, choices []window) (window, bool) {
	for _, w := range choices {
		if w.Value == v {
			return w, true
		}
	}
	return window{}, false
}

// windowAlert says what a window may be.
const windowAlert = "Window must be one of 15m, 1h, 24h, 7d or empty (all)."

// filterForm is the calls filter as the form and URL hold it.
type filterForm struct {
	Status, Integration, Since string
}

// query is the URL query of the filter, with cursor if not "".
func (f filterForm) query(cursor string, extra ...string) string {
	q := url.Values{}
	if f.Status != "" {
		q.Set("status", f.Status)
	}
	if f.Integration != "" {
		q.Set("integration", f.Integration)
	}
	q.Set("since", f.Since)
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	return q.Encode()
}

// table is a page of calls as the rows template shows it.
type table struct {
	Caption string
	Calls   []*tasks.Record
	// Next is the URL of the next page, "" on the last.
	Next string
	// Refresh is the URL the rows are refreshed from.
	Refresh string
}

// callsData is the calls page's.
type callsData struct {
	Filter       filterForm
	Statuses     []tasks.Status
	Windows      []window
	Integrations []string
	Table        table
}

func (d *dashboard) calls(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	ff := filterForm{Status: q.Get("status"), Integration: q.Get("integration"), Since: q.Get("since")}
	data := &callsData{Filter: ff, Statuses: tasks.Statuses(), Windows: windows, Integrations: d.cfg.Catalog.Names()}
	v := &view{Title: "Calls", Nav: "calls", S: s, Data: data}
	f := tasks.Filter{Integration: ff.Integration}
	if ff.Status != "" {
		f.Statuses = []tasks.Status{tasks.Status(ff.Status)}
	}
	win, ok := parseWindow(ff.Since, windows)
	if !ok {
		v.Alert = windowAlert
		d.render(w, r, http.StatusBadRequest, "calls", v)
		return
	}
	if win.D > 0 {
		f.Since = time.Now().Add(-win.D)
	}
	cursor := q.Get("cursor")
	pg, err := d.client(s).List(r.Context(), f, cursor, pageSize)
	if alert, bad := badRequest(err); bad {
		v.Alert = alert
		d.render(w, r, http.StatusBadRequest, "calls", v)
		return
	}
	if err != nil {
		d.unavailable(w, r, s, err)
		return
	}
	data.Table = table{Caption: "Calls", Calls: pg.Calls, Refresh: "/ui/calls?" + ff.query(cursor, "fragment", "rows")}
	if pg.NextCursor != "" {
		data.Table.Next = "/ui/calls?" + ff.query(pg.NextCursor)
	}
	d.renderTable(w, r, "calls", v)
}

// renderTable answers the page, or only its rows for the refresh.
func (d *dashboard) renderTable(w http.ResponseWriter, r *http.Request, name string, v *view) {
	if r.URL.Query().Get("fragment") == "rows" {
		d.execute(w, r, http.StatusOK, name, "fragment", v)
		return
	}
	d.render(w, r, http.StatusOK, name, v)
}

// badRequest says what is wrong with a filter or cursor the client refused.
func badRequest(err error) (string, bool) {
	var fe *tasks.FieldError
	switch {
	case errors.Is(err, tasks.ErrBadCursor):
		return "That page link is not valid; start again from the first page.", true
	case errors.As(err, &fe):
		return fmt.Sprintf("The %s %s.", fe.Field, fe.Message), true
	}
	return "", false
}

// client is the session's tenant's client.
func (d *dashboard) client(s *session) *producer.Client {
	c, err := d.cfg.Producer.Tenant(s.Tenant)
	if err != nil {
		// Sessions are made from API keys, whose tenants are valid.
		panic(err)
	}
	return c
}

// callData is the call page's.
type callData struct {
	Rec      *tasks.Record
	Headers  []header
	Body     string
	BodyKind string
	// What the buttons may do.
	CanReplay, CanCancel, CanRedeliver bool
}

// notices are what the call page says after a button did its work, by
// the done parameter of the redirect: fixed texts, so that a link cannot
// make the page say anything else.
var notices = map[string]string{
	"replayed":    "The replay is queued.",
	"canceled":    "The call is canceled.",
	"redelivered": "A new delivery of the webhook is queued.",
}

func (d *dashboard) call(w http.ResponseWriter, r *http.Request, s *session) {
	rec, err := d.client(s).Get(r.Context(), r.PathValue("id"))
	if errors.Is(err, producer.ErrNotFound) {
		d.fail(w, r, s, http.StatusNotFound, "There is no call with that ID in this tenant.")
		return
	}
	if err != nil {
		d.unavailable(w, r, s, err)
		return
	}
	d.showCall(w, r, s, http.StatusOK, rec, "", notices[r.URL.Query().Get("done")])
}

func (d *dashboard) showCall(w http.ResponseWriter, r *http.Request, s *session, status int, rec *tasks.Record, alert, notice string) {
	data := &callData{Rec: rec, CanReplay: rec.Status.Terminal(), CanCancel: !rec.Status.Terminal(),
		CanRedeliver: rec.Status.Terminal() && rec.Webhook != nil}
	if rec.Response != nil {
		data.Headers = sortedHeaders(rec.Response.Headers)
		data.Body, data.BodyKind = responseBody(rec.Response)
	}
	d.render(w, r, status, "call", &view{Title: "Call " + rec.CorrelationID, Nav: "calls", S: s, Alert: alert, Notice: notice, Data: data})
}

// callPath is the page of call id.
func callPath(id string) string { return "/ui/calls/" + url.PathEscape(id) }

// refused answers 409 with the call page of id saying why the button did
// nothing; rec is the record if the error held it.
func (d *dashboard) refused(w http.ResponseWriter, r *http.Request, s *session, id string, rec *tasks.Record, msg string) {
	if rec == nil {
		var err error
		if rec, err = d.client(s).Get(r.Context(), id); err != nil {
			d.fail(w, r, s, http.StatusConflict, msg)
			return
		}
	}
	d.showCall(w, r, s, http.StatusConflict, rec, msg, "")
}

// actionFailed answers an error the three buttons share: an unknown call,
// or callq's own failure.
func (d *dashboard) actionFailed(w http.ResponseWriter, r *http.Request, s *session, err error) {
	if errors.Is(err, producer.ErrNotFound) {
		d.fail(w, r, s, http.StatusNotFound, "There is no call with that ID in this tenant.")
		return
	}
	d.unavailable(w, r, s, err)
}

func (d *dashboard) replay(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	res, err := d.client(s).Replay(r.Context(), id)
	var notFinished *producer.NotFinishedError
	var fe *tasks.FieldError
	switch {
	case err == nil:
		http.Redirect(w, r, callPath(res.Record.CorrelationID)+"?done=replayed", http.StatusSeeOther)
	case errors.As(err, &notFinished):
		d.refused(w, r, s, id, notFinished.Record, fmt.Sprintf("This call has not finished (%s): only a finished call can be replayed.", notFinished.Record.Status))
	case errors.Is(err, producer.ErrNoPayload):
		d.refused(w, r, s, id, nil, "This call was recorded by a callq that did not keep calls' payloads, so it cannot be replayed.")
	case errors.As(err, &fe):
		d.refused(w, r, s, id, nil, fmt.Sprintf("This call can no longer be made: its %s %s.", fe.Field, fe.Message))
	default:
		d.actionFailed(w, r, s, err)
	}
}

func (d *dashboard) cancel(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	rec, err := d.client(s).Cancel(r.Context(), id)
	var finished *producer.FinishedError
	switch {
	case err == nil:
		http.Redirect(w, r, callPath(id)+"?done=canceled", http.StatusSeeOther)
	case errors.As(err, &finished):
		d.refused(w, r, s, id, finished.Record, fmt.Sprintf("This call has already finished (%s): it cannot be canceled.", finished.Record.Status))
	case rec != nil:
		// Canceled, but its webhook could not be queued.
		d.log.Error().Err(err).Str("path", r.URL.Path).Msg("cancel: webhook not queued")
		d.showCall(w, r, s, http.StatusServiceUnavailable, rec, "The call is canceled, but its webhook could not be queued.", "")
	default:
		d.actionFailed(w, r, s, err)
	}
}

func (d *dashboard) redeliver(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	_, err := d.client(s).RedeliverWebhook(r.Context(), id)
	var notFinished *producer.NotFinishedError
	switch {
	case err == nil:
		http.Redirect(w, r, callPath(id)+"?done=redelivered", http.StatusSeeOther)
	case errors.Is(err, producer.ErrNoWebhook):
		d.refused(w, r, s, id, nil, "This call has no webhook.")
	case errors.As(err, &notFinished):
		d.refused(w, r, s, id, notFinished.Record, "This call has not finished, so its webhook has not been sent yet.")
	case errors.Is(err, producer.ErrRedeliveryPending):
		d.refused(w, r, s, id, nil, "A redelivery of this call's webhook is already pending.")
	default:
		d.actionFailed(w, r, s, err)
	}
}
