package producer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/callq/callq/tasks"
)

// The HTTP side of listing, replaying and counting calls.

// callSummary is a record as GET /v1/calls lists it: tasks.Record.Summary,
// without history, and the response without headers or body.
type callSummary struct {
	*tasks.Record
	// History shadows the record's: always nil, so left out.
	History  []tasks.Attempt  `json:"history,omitempty"`
	Response *responseSummary `json:"response"`
}

type responseSummary struct {
	Status       int    `json:"status"`
	Size         int64  `json:"size"`
	Truncated    bool   `json:"truncated"`
	BodyWithheld string `json:"body_withheld,omitempty"`
}

func summarize(rec *tasks.Record) callSummary {
	s := callSummary{Record: rec}
	if r := rec.Response; r != nil {
		s.Response = &responseSummary{Status: r.Status, Size: r.Size, Truncated: r.Truncated, BodyWithheld: r.BodyWithheld}
	}
	return s
}

type listAnswer struct {
	Calls      []callSummary `json:"calls"`
	NextCursor *string       `json:"next_cursor"`
}

func (h *handler) listCalls(w http.ResponseWriter, r *http.Request) {
	q, aerr := query(r)
	if aerr == nil {
		aerr = checkParams(q, []string{"status", "integration", "since", "until", "limit", "cursor"}, "status")
	}
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	fp := filterParams{Status: q["status"], Integration: q.Get("integration"), Since: q.Get("since"), Until: q.Get("until")}
	f, aerr := fp.filter(time.Now())
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	limit := tasks.DefaultListLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > tasks.MaxListLimit {
			writeError(w, invalidField("limit", "must be a number from 1 to %d", tasks.MaxListLimit))
			return
		}
		limit = n
	}
	page, err := h.client(r).List(r.Context(), f, q.Get("cursor"), limit)
	if err != nil {
		h.answerError(w, r, err)
		return
	}
	out := listAnswer{Calls: make([]callSummary, len(page.Calls))}
	for i, rec := range page.Calls {
		out.Calls[i] = summarize(rec)
	}
	if page.NextCursor != "" {
		out.NextCursor = &page.NextCursor
	}
	writeJSON(w, http.StatusOK, out)
}

type replayAnswer struct {
	enqueueAnswer
	ReplayOf string `json:"replay_of"`
}

func (h *handler) replayCall(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	body, aerr := h.readOptionalBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	var newID string
	if body != nil {
		if aerr := decodeFields(body, "", map[string]any{"correlation_id": &newID}); aerr != nil {
			writeError(w, aerr)
			return
		}
	}
	var opts []ReplayOption
	if newID != "" {
		opts = append(opts, ReplayAs(newID))
	}
	res, err := h.client(r).Replay(r.Context(), id, opts...)
	var notFinished *NotFinishedError
	var conflict *ConflictError
	var fe *tasks.FieldError
	switch {
	case err == nil:
		rec := res.Record
		a := replayAnswer{enqueueAnswer{CorrelationID: rec.CorrelationID, Status: rec.Status, URL: "/v1/calls/" + rec.CorrelationID}, id}
		w.Header().Set("Location", a.URL)
		writeJSON(w, http.StatusAccepted, a)
	case errors.As(err, &notFinished):
		writeError(w, &APIError{Status: http.StatusConflict, Code: CodeConflict,
			Message: fmt.Sprintf("call %q has not finished (%s); only a finished call can be replayed", id, notFinished.Record.Status)})
	case errors.Is(err, ErrNoPayload):
		writeError(w, &APIError{Status: http.StatusConflict, Code: CodeConflict,
			Message: fmt.Sprintf("call %q was recorded by a callq that did not keep calls' payloads, so it cannot be replayed", id)})
	case errors.As(err, &conflict):
		writeError(w, &APIError{Status: http.StatusConflict, Code: CodeConflict, Field: "correlation_id",
			Message: fmt.Sprintf("correlation_id %q is already used by another call", conflict.Existing.CorrelationID)})
	case errors.As(err, &fe) && fe.Field != "correlation_id":
		// The request is fine; the stored call is what the configuration
		// no longer accepts.
		writeError(w, &APIError{Status: http.StatusConflict, Code: CodeConflict, Field: fe.Field,
			Message: fmt.Sprintf("call %q can no longer be made: %s %s", id, fe.Field, fe.Message)})
	default:
		h.answerError(w, r, err)
	}
}

func (h *handler) replayCalls(w http.ResponseWriter, r *http.Request) {
	body, aerr := h.readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	var filter json.RawMessage
	var limit *int
	var req ReplayRequest
	aerr = decodeFields(body, "", map[string]any{"filter": &filter, "limit": &limit, "dry_run": &req.DryRun, "again": &req.Again})
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if limit != nil {
		if *limit < 1 || *limit > MaxReplayLimit {
			writeError(w, invalidField("limit", "must be between 1 and %d", MaxReplayLimit))
			return
		}
		req.Limit = *limit
	}
	if filter != nil && string(filter) != "null" {
		var fp filterParams
		var status statusList
		aerr := decodeFields(filter, "filter.", map[string]any{"status": &status, "integration": &fp.Integration, "since": &fp.Since, "until": &fp.Until})
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		fp.Status, fp.prefix = status, "filter."
		if req.Filter, aerr = fp.filter(time.Now()); aerr != nil {
			writeError(w, aerr)
			return
		}
	}
	res, err := h.client(r).ReplayMany(r.Context(), req)
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, res)
	case res != nil && res.Replayed > 0 && !req.DryRun && r.Context().Err() == nil:
		h.log.Error().Err(err).Int("replayed", res.Replayed).Msg("bulk replay interrupted")
		storeDown(w)
		writeError(w, &APIError{Status: http.StatusServiceUnavailable, Code: CodeUnavailable,
			Message: fmt.Sprintf("the replay stopped after %d calls; repeat the request to go on (calls replayed already are skipped, unless again)", res.Replayed)})
	default:
		h.answerError(w, r, err)
	}
}

func (h *handler) stats(w http.ResponseWriter, r *http.Request) {
	q, aerr := query(r)
	if aerr == nil {
		aerr = checkParams(q, []string{"since", "until"})
	}
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	now := time.Now()
	since, until := time.Time{}, now // a duration is before the same now
	if v := q.Get("since"); v != "" {
		if since, aerr = parseWhen("since", v, now); aerr != nil {
			writeError(w, aerr)
			return
		}
	}
	if v := q.Get("until"); v != "" {
		if until, aerr = parseWhen("until", v, now); aerr != nil {
			writeError(w, aerr)
			return
		}
	}
	st, err := h.client(r).Stats(r.Context(), since, until)
	if err != nil {
		h.answerError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// answerError answers an error of List, ReplayMany or Stats: a bad field
// or cursor is the caller's, anything else the store's.
func (h *handler) answerError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, tasks.ErrBadCursor):
		writeError(w, invalidField("cursor", "is not a cursor this API returned"))
	case errors.Is(err, ErrNotFound):
		writeError(w, &APIError{Status: http.StatusNotFound, Code: CodeNotFound, Message: fmt.Sprintf("no call %q", r.PathValue("id"))})
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads this answer.
	default:
		if fe := fieldError(err); fe != nil {
			writeError(w, fe)
			return
		}
		h.unavailable(w, r, err)
	}
}

func invalidField(field, format string, args ...any) *APIError {
	return &APIError{Status: http.StatusBadRequest, Code: CodeInvalidField, Field: field, Message: fmt.Sprintf(format, args...)}
}

// checkParams refuses query parameters not in allowed, given more than
// once (unless in repeated), or given empty.
// query is r's query, or a 400 naming the first parameter that is not
// properly percent-encoded: url.Values drops such a pair, which would
// silently lift a filter.
func query(r *http.Request) (url.Values, *APIError) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err == nil {
		return q, nil
	}
	for pair := range strings.SplitSeq(r.URL.RawQuery, "&") {
		k, v, _ := strings.Cut(pair, "=")
		name, kerr := url.QueryUnescape(k)
		if kerr != nil {
			name = k
		}
		if _, verr := url.QueryUnescape(v); kerr != nil || verr != nil || strings.Contains(pair, ";") {
			return nil, invalidField(name, "is not properly percent-encoded")
		}
	}
	return nil, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidField, Message: "the query string is malformed: " + err.Error()}
}

func checkParams(q url.Values, allowed []string, repeated ...string) *APIError {
	names := make([]string, 0, len(q))
	for k := range q {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		switch {
		case !slices.Contains(allowed, k):
			return invalidField(k, "unknown query parameter %q; known: %s", k, strings.Join(allowed, ", "))
		case len(q[k]) > 1 && !slices.Contains(repeated, k):
			return invalidField(k, "must be given once")
		case slices.Contains(q[k], ""):
			return invalidField(k, "must not be empty")
		}
	}
	return nil
}

// filterParams are a list filter as the API takes it, in a query or in a
// bulk replay's "filter" (whose fields are named with prefix "filter.").
type filterParams struct {
	Status      []string
	Integration string
	Since       string
	Until       string
	prefix      string
}

func (p *filterParams) filter(now time.Time) (tasks.Filter, *APIError) {
	var f tasks.Filter
	for _, s := range p.Status {
		f.Statuses = append(f.Statuses, tasks.Status(s))
	}
	f.Integration = p.Integration
	var aerr *APIError
	if p.Since != "" {
		if f.Since, aerr = parseWhen(p.prefix+"since", p.Since, now); aerr != nil {
			return f, aerr
		}
	}
	if p.Until != "" {
		if f.Until, aerr = parseWhen(p.prefix+"until", p.Until, now); aerr != nil {
			return f, aerr
		}
	}
	if err := f.Validate(); err != nil {
		aerr := fieldError(err)
		aerr.Field = p.prefix + aerr.Field
		return f, aerr
	}
	return f, nil
}

// parseWhen reads a since or until: an RFC 3339 time, or a Go duration
// meaning that long before now. A time before 1970, when no call was made,
// is 1970: Go's zero time would be no bound at all.
func parseWhen(field, v string, now time.Time) (time.Time, *APIError) {
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return time.Time{}, invalidField(field, `must be an RFC 3339 time ("2026-11-26T10:00:00Z") or a positive duration meaning that long ago ("1h")`)
		}
		t = now.Add(-d)
	}
	if epoch := time.Unix(0, 0).UTC(); t.Before(epoch) {
		t = epoch
	}
	return t, nil
}

// statusList is a filter's status: one status, or an array of them.
type statusList []string

func (s *statusList) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil // as for any other optional field
	}
	var one string
	if json.Unmarshal(b, &one) == nil {
		*s = statusList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("must be a status or an array of statuses")
	}
	*s = many
	return nil
}

// decodeFields decodes the JSON object raw into targets by field name,
// naming the field at fault (with prefix) when a field is unknown or of
// the wrong type.
func decodeFields(raw []byte, prefix string, targets map[string]any) *APIError {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		if prefix != "" {
			return invalidField(strings.TrimSuffix(prefix, "."), "must be an object")
		}
		return &APIError{Status: http.StatusBadRequest, Code: CodeInvalidJSON, Message: "the body must be a JSON object"}
	}
	allowed := make([]string, 0, len(targets))
	for k := range targets {
		allowed = append(allowed, k)
	}
	slices.Sort(allowed)
	if k, ok := unknownKey(fields, allowed); ok {
		return invalidField(prefix+k, "unknown field %q; known: %s", k, strings.Join(allowed, ", "))
	}
	for _, k := range allowed {
		v, ok := fields[k]
		if !ok {
			continue
		}
		if err := json.Unmarshal(v, targets[k]); err != nil {
			var te *json.UnmarshalTypeError
			msg := err.Error()
			if errors.As(err, &te) {
				msg = fmt.Sprintf("must be %s, not %s", jsonType(te.Type.Kind().String()), te.Value)
			}
			return invalidField(prefix+k, "%s", msg)
		}
	}
	return nil
}
