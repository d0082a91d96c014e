package producer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/callq/callq/auth"
)

// credentialView is a credential as the API shows it: field names, never values.
type credentialView struct {
	Ref         string    `json:"ref"`
	Integration string    `json:"integration"`
	Fields      []string  `json:"fields"`
	UpdatedAt   time.Time `json:"updated_at"`
	// Connected says how an end user connected it (connect sessions).
	Connected *auth.Connection `json:"connected,omitempty"`
}

func viewCredential(c *auth.Credential) credentialView {
	return credentialView{Ref: c.Ref, Integration: c.Integration, Fields: c.FieldNames(), UpdatedAt: c.UpdatedAt, Connected: c.Connected}
}

func (h *handler) putCredential(w http.ResponseWriter, r *http.Request) {
	body, aerr := h.readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	var req struct {
		Integration string            `json:"integration"`
		Fields      map[string]string `json:"fields"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidJSON,
			Message: `the body must be {"integration": "...", "fields": {"name": "value"}} with string values`})
		return
	}
	in, ok := h.cfg.Producer.catalog().Lookup(req.Integration)
	if !ok {
		writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidField, Field: "integration",
			Message: fmt.Sprintf("unknown integration %q", req.Integration)})
		return
	}
	for _, f := range in.Auth.RequiredFields() {
		if req.Fields[f] == "" {
			writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidField, Field: "fields." + f,
				Message: fmt.Sprintf("is required by integration %q (auth type %s)", in.Name, in.Auth.Type)})
			return
		}
	}
	if !h.cfg.AllowSourceRefs {
		for name, v := range req.Fields {
			if auth.IsSourceRef(v) {
				writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidField, Field: "fields." + name,
					Message: "env: and file: values read the workers' own environment and files; this API refuses them (the operator can allow them with CALLQ_ALLOW_SOURCE_REFS=true when every admin is the operator)"})
				return
			}
		}
	}
	cred, err := h.cfg.Credentials.Put(r.Context(), h.tenant(r), r.PathValue("ref"), req.Integration, req.Fields)
	var fe *auth.FieldError
	if errors.As(err, &fe) {
		writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidField, Field: fe.Field, Message: fe.Message})
		return
	}
	if err != nil {
		h.unavailable(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, viewCredential(cred))
}

func (h *handler) getCredential(w http.ResponseWriter, r *http.Request) {
	cred, err := h.cfg.Credentials.Get(r.Context(), h.tenant(r), r.PathValue("ref"))
	if h.credentialError(w, r, err) {
		return
	}
	writeJSON(w, http.StatusOK, viewCredential(cred))
}

func (h *handler) deleteCredential(w http.ResponseWriter, r *http.Request) {
	err := h.cfg.Credentials.Delete(r.Context(), h.tenant(r), r.PathValue("ref"))
	if h.credentialError(w, r, err) {
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) credentialError(w http.ResponseWriter, r *http.Request, err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, auth.ErrCredentialNotFound):
		writeError(w, &APIError{Status: http.StatusNotFound, Code: CodeNotFound, Message: fmt.Sprintf("no credential %q", r.PathValue("ref"))})
	default:
		var fe *auth.FieldError
		if errors.As(err, &fe) {
			writeError(w, &APIError{Status: http.StatusNotFound, Code: CodeNotFound, Message: fmt.Sprintf("no credential %q", r.PathValue("ref"))})
			return true
		}
		h.unavailable(w, r, err)
	}
	return true
}

func (h *handler) listCredentials(w http.ResponseWriter, r *http.Request) {
	creds, err := h.cfg.Credentials.List(r.Context(), h.tenant(r))
	if err != nil {
		h.unavailable(w, r, err)
		return
	}
	out := make([]credentialView, 0, len(creds))
	for _, c := range creds {
		out = append(out, viewCredential(c))
	}
	writeJSON(w, http.StatusOK, map[string]any{"credentials": out})
}
