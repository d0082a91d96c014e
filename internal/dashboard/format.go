package dashboard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/callq/callq/tasks"
)

// funcs are the templates' helpers. None returns template.HTML or another
// trusted type: whatever they make is escaped like any other text.
var funcs = template.FuncMap{
	"ts":       stamp,
	"int":      func(n int64) int { return int(n) },
	"windowOf": func(since string, ws []window) windowSelect { return windowSelect{since, ws} },
	"ms":       millis,
	"count":    count,
	"trunc":    truncate,
	"join":     func(s []string) string { return strings.Join(s, ", ") },
	"dur":      func(d tasks.Duration) string { return shortDur(d.D()) },
	"attempts": func(r *tasks.Record) string { return fmt.Sprintf("%d/%d", r.Attempts, r.MaxAttempts) },
	"httpStatus": func(r *tasks.Record) string {
		if r.Response == nil || r.Response.Status == 0 {
			return ""
		}
		return strconv.Itoa(r.Response.Status)
	},
	"callError": func(e *tasks.CallError) string {
		if e == nil {
			return ""
		}
		return truncate(string(e.Kind)+": "+e.Message, 120)
	},
}

// when is a time as a page shows it: ISO for the datetime attribute, and
// a shorter form to read, both UTC.
type when struct {
	ISO  string
	Text string
}

// stamp formats a time.Time or *time.Time, nil for none or zero.
func stamp(v any) *when {
	var t time.Time
	switch x := v.(type) {
	case time.Time:
		t = x
	case *time.Time:
		if x == nil {
			return nil
		}
		t = *x
	default:
		return nil
	}
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &when{ISO: t.Format(time.RFC3339Nano), Text: t.Format("2006-01-02 15:04:05Z")}
}

// millis formats a duration in milliseconds.
func millis(ms int64) string {
	if ms < 1000 {
		return strconv.FormatInt(ms, 10) + " ms"
	}
	return strconv.FormatFloat(float64(ms)/1000, 'f', 2, 64) + " s"
}

// count is "1 call", "2 calls".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// truncate cuts s to at most n runes, marking the cut.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// header is one response header.
type header struct {
	Name, Value string
}

// sortedHeaders lists h by name.
func sortedHeaders(h map[string]string) []header {
	out := make([]header, 0, len(h))
	for k, v := range h {
		out = append(out, header{k, v})
	}
	slices.SortFunc(out, func(a, b header) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// responseBody is a response's body as the call page shows it, as text,
// and what it is.
func responseBody(resp *tasks.Response) (body, kind string) {
	switch {
	case resp.BodyWithheld != "":
		return "", "Withheld: " + resp.BodyWithheld
	case resp.Body != nil:
		return indentJSON(resp.Body), "JSON"
	case resp.BodyText != nil:
		return *resp.BodyText, "Text"
	case resp.BodyBase64 != "":
		return resp.BodyBase64, "Base64 (the body is not text)"
	}
	return "", "No body"
}

// indentJSON indents a JSON body to read. Go's encoder wrote <, > and &
// (and U+2028, U+2029) in strings as \u escapes; they are written back as
// the characters the upstream sent, since the page shows text anyway.
func indentJSON(raw []byte) string {
	var out bytes.Buffer
	if err := json.Indent(&out, unescapeHTML(raw), "", "  "); err != nil {
		return string(raw)
	}
	return out.String()
}

// unescapeHTML undoes encoding/json's HTML escapes in raw, leaving every
// other escape as it is. A backslash always begins a pair ("\\" included),
// so an escape is never read from the middle of another.
func unescapeHTML(raw []byte) []byte {
	if !bytes.Contains(raw, []byte(`\u`)) {
		return raw
	}
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' || i+1 >= len(raw) {
			out = append(out, raw[i])
			continue
		}
		if raw[i+1] == 'u' && i+6 <= len(raw) {
			if r, ok := htmlEscapes[strings.ToLower(string(raw[i+2:i+6]))]; ok {
				out = utf8.AppendRune(out, r)
				i += 5
				continue
			}
		}
		out = append(out, raw[i], raw[i+1])
		i++
	}
	return out
}

var htmlEscapes = map[string]rune{"003c": '<', "003e": '>', "0026": '&', "2028": '\u2028', "2029": '\u2029'}

// sortedStrings sorts s in place and returns it.
func sortedStrings(s []string) []string {
	slices.Sort(s)
	return s
}

// windowSelect is what the window template renders.
type windowSelect struct {
	Since   string
	Windows []window
}

// shortDur is d as time.Duration.String writes it, without the zero
// minutes and seconds it ends in ("1h", not "1h0m0s").
func shortDur(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
