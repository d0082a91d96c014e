package producer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"

	"github.com/callq/callq/tasks"
)

// readBody reads a JSON request body within the size and depth limits.
func (h *handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *APIError) {
	body, aerr := h.readOptionalBody(w, r)
	if aerr == nil && body == nil {
		return nil, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidJSON, Message: "the request body is empty; send a JSON object"}
	}
	return body, aerr
}

// readOptionalBody is readBody for a request whose body may be left out:
// an empty body is nil.
func (h *handler) readOptionalBody(w http.ResponseWriter, r *http.Request) ([]byte, *APIError) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, &APIError{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge, Message: fmt.Sprintf("the request body is larger than %d bytes", h.cfg.MaxBodyBytes)}
	}
	if err != nil {
		return nil, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidJSON, Message: "the request body could not be read"}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, nil
	}
	if jsonDepth(body) > maxJSONDepth {
		return nil, &APIError{Status: http.StatusBadRequest, Code: CodeInvalidJSON, Message: fmt.Sprintf("the JSON is nested deeper than %d levels", maxJSONDepth)}
	}
	return body, nil
}

// jsonDepth returns the deepest nesting of objects and arrays in b.
func jsonDepth(b []byte) int {
	depth, deepest, inString, escaped := 0, 0, false, false
	for _, c := range b {
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			depth++
			deepest = max(deepest, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return deepest
}

var callFields = []string{"integration", "method", "path", "query", "headers", "body", "body_text", "body_base64",
	"credential", "correlation_id", "timeout", "retry", "webhook", "delay", "queue"}

var nestedFields = map[string][]string{
	"retry":   {"max_attempts", "initial_interval", "max_interval", "multiplier", "max_elapsed"},
	"webhook": {"url"},
}

// unknownKey returns a key of m that is not in allowed (keys are matched
// exactly: encoding/json would also take "Method" for "method").
func unknownKey(m map[string]json.RawMessage, allowed []string) (string, bool) {
	for k := range m {
		if !slices.Contains(allowed, k) {
			return k, true
		}
	}
	return "", false
}

// decodeCall reads a call, naming the field at fault when it cannot.
func decodeCall(raw json.RawMessage) (*tasks.Call, *APIError) {
	bad := func(field, msg string) *APIError {
		code := CodeInvalidField
		if field == "" {
			code = CodeInvalidJSON
		}
		return &APIError{Status: http.StatusBadRequest, Code: code, Message: msg, Field: field}
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return nil, bad("", "the body must be a JSON object")
	}
	if k, ok := unknownKey(fields, callFields); ok {
		return nil, bad(k, fmt.Sprintf("unknown field %q", k))
	}
	// Objects inside a call are checked too: a typo such as
	// "retry": {"max_attempt": 10} must not fall back to a default.
	for name, allowed := range nestedFields {
		var inner map[string]json.RawMessage
		if v, ok := fields[name]; ok && json.Unmarshal(v, &inner) == nil {
			if k, ok := unknownKey(inner, allowed); ok {
				return nil, bad(name+"."+k, fmt.Sprintf("unknown field %q", k))
			}
		}
	}
	// encoding/json reads a null header value as "": refuse it, as the
	// OpenAPI document does (a header is sent with the value given).
	var headers map[string]json.RawMessage
	if v, ok := fields["headers"]; ok && json.Unmarshal(v, &headers) == nil {
		for k, hv := range headers {
			if string(bytes.TrimSpace(hv)) == "null" {
				return nil, bad("headers."+k, "must be a string, not null")
			}
		}
	}
	var call tasks.Call
	if err := json.Unmarshal(raw, &call); err != nil {
		// Find the field at fault by decoding each alone.
		for _, k := range callFields {
			v, ok := fields[k]
			if !ok {
				continue
			}
			one, _ := json.Marshal(map[string]json.RawMessage{k: v})
			var probe tasks.Call
			if ferr := json.Unmarshal(one, &probe); ferr != nil {
				var te *json.UnmarshalTypeError
				msg := ferr.Error()
				if errors.As(ferr, &te) {
					msg = fmt.Sprintf("must be %s, not %s", jsonType(te.Type.Kind().String()), te.Value)
					if te.Field != "" && te.Field != k {
						return nil, bad(te.Field, msg)
					}
				}
				return nil, bad(k, msg)
			}
		}
		return nil, bad("", err.Error())
	}
	return &call, nil
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "int", "int64", "float64":
		return "a number"
	case "map", "struct":
		return "an object"
	case "slice":
		return "an array"
	case "bool":
		return "a boolean"
	}
	return kind
}

func fieldError(err error) *APIError {
	var fe *tasks.FieldError
	if errors.As(err, &fe) {
		if fe.TooLarge {
			return &APIError{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge, Message: fe.Message, Field: fe.Field}
		}
		return &APIError{Status: http.StatusBadRequest, Code: CodeInvalidField, Message: fe.Message, Field: fe.Field}
	}
	return nil
}
