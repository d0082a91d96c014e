package producer

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// scheduleList is GET /v1/schedules's answer.
type scheduleList struct {
	Schedules []*Schedule `json:"schedules"`
}

// decodeSchedule reads a schedule's body: {"id", "cron", "timezone",
// "call"}, naming the field at fault ("call.path"). pathID is the ID in the
// URL of a PUT ("" for a POST): the body's id may then be left out, and
// must match when given.
func decodeSchedule(body []byte, pathID string) (*Schedule, *APIError) {
	var s Schedule
	var id *string
	var call json.RawMessage
	if aerr := decodeFields(body, "", map[string]any{"id": &id, "cron": &s.Cron, "timezone": &s.Timezone, "call": &call}); aerr != nil {
		return nil, aerr
	}
	switch {
	case id != nil && pathID != "" && *id != pathID:
		return nil, invalidField("id", "is %q, but the URL names schedule %q", *id, pathID)
	case id != nil:
		s.ID = *id
	case pathID != "":
		s.ID = pathID
	default:
		return nil, invalidField("id", "is required")
	}
	if len(call) == 0 || string(call) == "null" {
		return nil, invalidField("call", "is required: the call each firing enqueues")
	}
	c, aerr := decodeCall(call)
	if aerr != nil {
		if aerr.Field == "" {
			return nil, invalidField("call", "must be a JSON object: the call each firing enqueues")
		}
		aerr.Field = "call." + aerr.Field
		return nil, aerr
	}
	s.Call = *c
	return &s, nil
}

func (h *handler) createSchedule(w http.ResponseWriter, r *http.Request) {
	body, aerr := h.readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	s, aerr := decodeSchedule(body, "")
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	out, err := h.client(r).CreateSchedule(r.Context(), s)
	h.answerSchedule(w, r, s.ID, out, err, http.StatusCreated)
}

func (h *handler) putSchedule(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !ValidScheduleID(id) {
		writeError(w, invalidField("id", "must be %s", ScheduleIDRule))
		return
	}
	body, aerr := h.readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	s, aerr := decodeSchedule(body, id)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	out, created, err := h.client(r).PutSchedule(r.Context(), s)
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	h.answerSchedule(w, r, id, out, err, status)
}

func (h *handler) getSchedule(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	out, err := h.client(r).GetSchedule(r.Context(), id)
	h.answerSchedule(w, r, id, out, err, http.StatusOK)
}

func (h *handler) listSchedules(w http.ResponseWriter, r *http.Request) {
	list, err := h.client(r).ListSchedules(r.Context())
	if err != nil {
		h.unavailable(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, scheduleList{Schedules: list})
}

func (h *handler) deleteSchedule(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := h.client(r).DeleteSchedule(r.Context(), id); err != nil {
		h.answerSchedule(w, r, id, nil, err, 0)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// answerSchedule answers a schedule, or the error of a schedule method.
func (h *handler) answerSchedule(w http.ResponseWriter, r *http.Request, id string, s *Schedule, err error, status int) {
	switch {
	case err == nil:
		if status == http.StatusCreated {
			w.Header().Set("Location", "/v1/schedules/"+url.PathEscape(s.ID))
		}
		writeJSON(w, status, s)
	case errors.Is(err, ErrScheduleNotFound):
		writeError(w, &APIError{Status: http.StatusNotFound, Code: CodeNotFound, Message: fmt.Sprintf("no schedule %q", id)})
	case errors.Is(err, ErrScheduleExists):
		writeError(w, &APIError{Status: http.StatusConflict, Code: CodeConflict, Field: "id",
			Message: fmt.Sprintf("schedule %q already exists; PUT /v1/schedules/%s replaces it", id, id)})
	case errors.Is(err, ErrTooManySchedules):
		writeError(w, &APIError{Status: http.StatusConflict, Code: CodeConflict, Message: strings.TrimPrefix(err.Error(), "producer: ")})
	default:
		if fe := fieldError(err); fe != nil {
			writeError(w, fe)
			return
		}
		h.unavailable(w, r, err)
	}
}
