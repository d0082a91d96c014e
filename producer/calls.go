package producer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/callq/callq/tasks"
)

type enqueueAnswer struct {
	CorrelationID string       `json:"correlation_id"`
	Status        tasks.Status `json:"status"`
	URL           string       `json:"url"`
}

func (h *handler) enqueue(w http.ResponseWriter, r *http.Request) {
	body, aerr := h.readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	call, aerr := decodeCall(body)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if hdr := r.Header.Get("Correlation-Id"); hdr != "" {
		if call.CorrelationID != "" && call.CorrelationID != hdr {
			writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidField, Field: "correlation_id",
				Message: "the Correlation-Id header and the correlation_id field disagree"})
			return
		}
		call.CorrelationID = hdr
	}
	status, v, aerr := h.enqueueOne(r.Context(), h.client(r), call)
	if aerr != nil {
		if aerr.Status >= 500 {
			h.log.Error().Str("message", aerr.Message).Msg("enqueue failed")
			storeDown(w)
		}
		writeError(w, aerr)
		return
	}
	if status == http.StatusAccepted {
		w.Header().Set("Location", v.(enqueueAnswer).URL)
	}
	writeJSON(w, status, v)
}

// enqueueOne answers 202 with a new call, 200 with an existing record.
func (h *handler) enqueueOne(ctx context.Context, c *Client, call *tasks.Call) (int, any, *APIError) {
	res, err := c.Enqueue(ctx, call)
	var conflict *ConflictError
	switch {
	case errors.As(err, &conflict):
		return 0, nil, &APIError{Status: http.StatusConflict, Code: CodeConflict, Field: "correlation_id",
			Message: fmt.Sprintf("correlation_id %q is already used by a call with a different payload", conflict.Existing.CorrelationID)}
	case err != nil:
		if fe := fieldError(err); fe != nil {
			return 0, nil, fe
		}
		return 0, nil, &APIError{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: "the call could not be queued; try again: " + err.Error()}
	case res.Duplicate:
		return http.StatusOK, res.Record, nil
	}
	h.cfg.Metrics.enqueuedCall(res.Record.Integration)
	return http.StatusAccepted, enqueueAnswer{CorrelationID: res.Record.CorrelationID, Status: res.Record.Status,
		URL: "/v1/calls/" + res.Record.CorrelationID}, nil
}

type batchItem struct {
	Status int       `json:"status"`
	Result any       `json:"result,omitempty"`
	Error  *APIError `json:"error,omitempty"`
}

func (h *handler) enqueueBatch(w http.ResponseWriter, r *http.Request) {
	body, aerr := h.readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	var top map[string]json.RawMessage
	var calls []json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidJSON, Message: `the body must be {"calls": [...]}`})
		return
	}
	if k, ok := unknownKey(top, []string{"calls"}); ok {
		writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidField, Field: k, Message: fmt.Sprintf(`unknown field %q; the body is {"calls": [...]}`, k)})
		return
	}
	if err := json.Unmarshal(top["calls"], &calls); err != nil {
		writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidField, Field: "calls", Message: "must be an array of calls"})
		return
	}
	req := struct{ Calls []json.RawMessage }{calls}
	if len(req.Calls) == 0 || len(req.Calls) > maxBatch {
		writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidField, Field: "calls", Message: fmt.Sprintf("must hold 1 to %d calls", maxBatch)})
		return
	}
	c := h.client(r)
	items := make([]batchItem, len(req.Calls))
	for i, raw := range req.Calls {
		call, aerr := decodeCall(raw)
		if aerr == nil {
			var status int
			var v any
			status, v, aerr = h.enqueueOne(r.Context(), c, call)
			if aerr == nil {
				items[i] = batchItem{Status: status, Result: v}
				continue
			}
		}
		items[i] = batchItem{Status: aerr.Status, Error: aerr}
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": items})
}

func (h *handler) getCall(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c := h.client(r)
	wait, aerr := h.parseWait(r.URL.Query().Get("wait"))
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	var rec *tasks.Record
	var err error
	if wait > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		rec, err = c.Wait(ctx, id)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil {
			// The wait ran out: answer the record as it stands. If it ran
			// out before the record was read at all, read it now, under
			// the request's context: the wait's has expired.
			if rec == nil {
				rec, err = c.Get(r.Context(), id)
			} else {
				err = nil
			}
		}
	} else {
		rec, err = c.Get(r.Context(), id)
	}
	h.answerRecord(w, r, rec, err, http.StatusOK)
}

func (h *handler) parseWait(v string) (time.Duration, *APIError) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		secs, nerr := strconv.ParseFloat(v, 64)
		if nerr != nil {
			return 0, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidField, Field: "wait", Message: `must be a duration such as "30s"`}
		}
		d = time.Duration(secs * float64(time.Second))
	}
	if d < 0 || d > h.cfg.MaxWait {
		return 0, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidField, Field: "wait", Message: fmt.Sprintf("must be between 0s and %s", h.cfg.MaxWait)}
	}
	return d, nil
}

func (h *handler) answerRecord(w http.ResponseWriter, r *http.Request, rec *tasks.Record, err error, status int) {
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, &APIError{Status: http.StatusNotFound, Code: CodeNotFound, Message: fmt.Sprintf("no call %q", r.PathValue("id"))})
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads this answer.
	case err != nil:
		h.unavailable(w, r, err)
	default:
		writeJSON(w, status, rec)
	}
}

func (h *handler) cancelCall(w http.ResponseWriter, r *http.Request) {
	rec, err := h.client(r).Cancel(r.Context(), r.PathValue("id"))
	var finished *FinishedError
	if errors.As(err, &finished) {
		writeError(w, &APIError{Status: http.StatusConflict, Code: CodeConflict,
			Message: fmt.Sprintf("call %q has already finished (%s) and cannot be canceled", finished.Record.CorrelationID, finished.Record.Status)})
		return
	}
	h.answerRecord(w, r, rec, err, http.StatusOK)
}

func (h *handler) redeliverWebhook(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	rec, err := h.client(r).RedeliverWebhook(r.Context(), id)
	var notFinished *NotFinishedError
	switch {
	case errors.Is(err, ErrNoWebhook):
		writeError(w, &APIError{Status: http.StatusConflict, Code: CodeConflict, Message: fmt.Sprintf("call %q was enqueued without a webhook", id)})
	case errors.As(err, &notFinished):
		writeError(w, &APIError{Status: http.StatusConflict, Code: CodeConflict, Message: fmt.Sprintf("call %q has not finished (%s); its webhook is sent when it does", id, notFinished.Record.Status)})
	case errors.Is(err, ErrRedeliveryPending):
		writeError(w, &APIError{Status: http.StatusConflict, Code: CodeConflict, Message: fmt.Sprintf("a redelivery of call %q's webhook is already pending; its outcome shows in the record's webhook block", id)})
	default:
		h.answerRecord(w, r, rec, err, http.StatusAccepted)
	}
}
