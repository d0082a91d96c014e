package auth

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"
)

// Redacted replaces a secret in redacted text.
const Redacted = "[REDACTED]"

// MinRedactLen is the shortest secret a Redactor redacts. Shorter values
// ("1", "yes", "abc") occur in ordinary text so often that redacting them
// would garble records and hide little: a secret that short protects
// nothing anyway.
const MinRedactLen = 4

// Redactor replaces known secret values in text with Redacted. Besides each
// value as given, it redacts the forms a value takes on its way into a
// record: base64 (padded and not), URL query escaping and JSON string
// escaping. It is immutable once built and safe for concurrent use; the nil
// *Redactor redacts nothing.
type Redactor struct {
	values   []string // as given to NewRedactor, for WithBasic to build on
	pairs    []string // "username:password" pairs from WithBasic
	replacer *strings.Replacer
}

// NewRedactor returns a Redactor of values. Empty values and values shorter
// than MinRedactLen bytes are ignored.
func NewRedactor(values ...string) *Redactor {
	return buildRedactor(append([]string(nil), values...), nil)
}

// WithBasic returns a Redactor that also redacts base64("username:password"),
// the form basic auth puts in an Authorization header, whatever the length
// of either part.
func (r *Redactor) WithBasic(username, password string) *Redactor {
	var values, pairs []string
	if r != nil {
		values = append(values, r.values...)
		pairs = append(pairs, r.pairs...)
	}
	values = append(values, username, password)
	if username != "" || password != "" {
		pairs = append(pairs, username+":"+password)
	}
	return buildRedactor(values, pairs)
}

// NewSecretsRedactor returns a Redactor of every value in secrets and, if s
// is basic auth, of the basic auth pair.
func NewSecretsRedactor(s *Spec, secrets Secrets) *Redactor {
	values := make([]string, 0, len(secrets))
	for _, v := range secrets {
		values = append(values, v)
	}
	r := NewRedactor(values...)
	if s.authType() == TypeBasic {
		r = r.WithBasic(secrets[FieldUsername], secrets[FieldPassword])
	}
	return r
}

func buildRedactor(values, pairs []string) *Redactor {
	patterns := make(map[string]struct{})
	add := func(p string) {
		if p != "" {
			patterns[p] = struct{}{}
		}
	}
	for _, v := range values {
		if len(v) < MinRedactLen {
			continue
		}
		add(v)
		add(base64.StdEncoding.EncodeToString([]byte(v)))
		add(base64.RawStdEncoding.EncodeToString([]byte(v)))
		add(url.QueryEscape(v))
		add(jsonEscape(v, true))
		add(jsonEscape(v, false))
	}
	for _, p := range pairs {
		add(base64.StdEncoding.EncodeToString([]byte(p)))
	}

	r := &Redactor{values: values, pairs: pairs}
	if len(patterns) == 0 {
		return r
	}
	sorted := make([]string, 0, len(patterns))
	for p := range patterns {
		sorted = append(sorted, p)
	}
	// strings.Replacer prefers earlier patterns among those matching at the
	// same position: longest first, so a secret's padded base64 wins over its
	// unpadded prefix and a secret over a shorter secret it contains.
	sort.Slice(sorted, func(i, j int) bool {
		if len(sorted[i]) != len(sorted[j]) {
			return len(sorted[i]) > len(sorted[j])
		}
		return sorted[i] < sorted[j]
	})
	oldnew := make([]string, 0, 2*len(sorted))
	for _, p := range sorted {
		oldnew = append(oldnew, p, Redacted)
	}
	r.replacer = strings.NewReplacer(oldnew...)
	return r
}

// jsonEscape returns v as it appears inside a JSON string.
func jsonEscape(v string, escapeHTML bool) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(escapeHTML)
	if err := enc.Encode(v); err != nil {
		return ""
	}
	out := strings.TrimSuffix(buf.String(), "\n")
	return out[1 : len(out)-1] // drop the quotes
}

// Format prints no secret for any verb: a Redactor holds the secrets it
// redacts, and its String method redacts rather than describes.
func (r *Redactor) Format(f fmt.State, _ rune) {
	n := 0
	if r != nil {
		n = len(r.values)
	}
	fmt.Fprintf(f, "auth.Redactor(%d values)", n)
}

// Empty reports whether r redacts nothing.
func (r *Redactor) Empty() bool {
	return r == nil || r.replacer == nil
}

// String returns s with every secret replaced by Redacted.
func (r *Redactor) String(s string) string {
	if r.Empty() {
		return s
	}
	return r.replacer.Replace(s)
}

// Bytes returns b with every secret replaced by Redacted. It does not modify
// b; it returns b itself when there is nothing to redact.
func (r *Redactor) Bytes(b []byte) []byte {
	if r.Empty() || len(b) == 0 {
		return b
	}
	s := string(b)
	out := r.replacer.Replace(s)
	if out == s {
		return b
	}
	return []byte(out)
}
