package worker_test

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/leaktest"
	"github.com/callq/callq/tasks"
)

// serveEcho answers the request's headers, as httpbin's /headers does,
// written the way /echo/{form} says: compressed, escaped, encoded or
// served with range support, as an upstream might hand a credential back.
func serveEcho(w http.ResponseWriter, r *http.Request) {
	form := strings.TrimPrefix(r.URL.Path, "/echo/")
	echo, _ := json.Marshal(map[string]any{"headers": r.Header})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	body := echo
	switch form {
	case "gzip", "x-gzip":
		h.Set("Content-Encoding", form)
		body = compress(gzipWriter, echo)
	case "gzip-gzip":
		h.Set("Content-Encoding", "gzip, gzip")
		body = compress(gzipWriter, compress(gzipWriter, echo))
	case "deflate-then-gzip":
		h.Set("Content-Encoding", "deflate, GZIP")
		body = compress(gzipWriter, compress(zlibWriter, echo))
	case "deflate":
		h.Set("Content-Encoding", "deflate")
		body = compress(zlibWriter, echo)
	case "raw-deflate":
		h.Set("Content-Encoding", "deflate")
		body = compress(flateWriter, echo)
	case "br", "zstd", "x-snappy":
		h.Set("Content-Encoding", form) // labelled so, sent as it is
	case "corrupt-gzip":
		h.Set("Content-Encoding", "gzip")
	case "cut-gzip":
		h.Set("Content-Encoding", "gzip")
		gz := compress(gzipWriter, echo)
		body = gz[:len(gz)*2/3]
	case "bomb":
		// The echo, then a second gzip member: 8 MiB of zeros in 8 KiB.
		h.Set("Content-Encoding", "gzip")
		body = append(compress(gzipWriter, echo), zerosGzip()...)
	case "php":
		body = bytes.ReplaceAll(echo, []byte("/"), []byte(`\/`))
	case "uescape":
		body = uEscapeStrings(echo)
	case "form":
		h.Set("Content-Type", "application/x-www-form-urlencoded")
		body = []byte(url.Values(r.Header).Encode())
	case "percent-lower":
		h.Set("Content-Type", "text/plain")
		body = regexp.MustCompile(`%[0-9A-F]{2}`).ReplaceAllFunc([]byte(url.PathEscape(string(echo))), bytes.ToLower)
	case "base64":
		h.Set("Content-Type", "text/plain")
		body = []byte(base64.StdEncoding.EncodeToString(echo))
	case "base64url":
		h.Set("Content-Type", "text/plain")
		body = []byte("x" + base64.RawURLEncoding.EncodeToString(echo))
	case "base64-php":
		body, _ = json.Marshal(map[string]string{"data": base64.StdEncoding.EncodeToString(echo)})
		body = bytes.ReplaceAll(body, []byte("/"), []byte(`\/`))
	case "range":
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(echo))
		return
	case "cut-hang", "cut-reset":
		serveCut(w, r, form, echo)
		return
	case "header":
		// Echoed in response headers, in a few forms, and in no body.
		for k, vs := range r.Header {
			v := strings.Join(vs, ", ")
			h.Set("X-Echo-"+k, v)
			h.Set("X-Echo-B64-"+k, base64.StdEncoding.EncodeToString([]byte(k+": "+v)))
			h.Set("X-Echo-Pct-"+k, url.QueryEscape(v))
			h.Set("X-Echo-Json-"+k, strings.ReplaceAll(v, "/", `\/`))
		}
		body = []byte(`{}`)
	default:
		var ok bool
		if body, ok = writtenEcho(form, echo, h); !ok {
			http.NotFound(w, r)
			return
		}
	}
	_, _ = w.Write(body)
}

// writtenEcho is the echo transcoded, wrapped or written the ways of HTML,
// mail, JavaScript and dumps, setting its Content-Type in h.
func writtenEcho(form string, echo []byte, h http.Header) ([]byte, bool) {
	text := func(ct string, b []byte) ([]byte, bool) {
		h.Set("Content-Type", ct)
		return b, true
	}
	b64 := base64.StdEncoding.EncodeToString
	// Three shifts of the echo, wrapped: one has a line break inside each
	// value, whatever its length and place.
	wrapped := func(width int, eol string) []byte {
		var out []string
		for pad := range 3 {
			out = append(out, wrapLines(b64(append(bytes.Repeat([]byte("x"), pad*width/4), echo...)), width, eol))
		}
		return []byte(strings.Join(out, eol+eol))
	}
	switch form {
	case "utf16-labelled":
		return text("application/json; charset=utf-16", utfEcho(echo, 2, binary.LittleEndian))
	case "utf16be-labelled":
		return text("text/plain; charset=UTF-16", utfEcho(echo, 2, binary.BigEndian))
	case "utf16be-bom":
		return text("text/plain", append([]byte{0xfe, 0xff}, utfEcho(echo, 2, binary.BigEndian)...))
	case "utf16-unlabelled":
		return text("application/octet-stream", utfEcho(echo, 2, binary.LittleEndian))
	case "utf32be-labelled":
		return text("text/plain; charset=UTF-32BE", utfEcho(echo, 4, binary.BigEndian))
	case "utf32le-unlabelled":
		return text("application/octet-stream", utfEcho(echo, 4, binary.LittleEndian))
	case "base64-mime":
		return text("text/plain", wrapped(76, "\r\n"))
	case "base64-pem":
		return text("text/plain", wrapped(64, "\n"))
	case "quoted-printable":
		var qp bytes.Buffer
		qw := quotedprintable.NewWriter(&qp)
		_, _ = qw.Write(echo)
		_ = qw.Close()
		return text("text/plain", qp.Bytes())
	case "html-template":
		var out bytes.Buffer
		_ = template.Must(template.New("").Parse(`<pre>{{.}}</pre>`)).Execute(&out, string(echo))
		return text("text/html", out.Bytes())
	case "html-references":
		return text("text/html", []byte(strings.NewReplacer("/", "&sol;", "+", "&#X2B;", "=", "&#061;", `"`, "&quot;").Replace(string(echo))))
	case "js-hex":
		return text("application/javascript", []byte(strings.NewReplacer("/", `\x2f`, "+", `\x2B`, "=", `\x3d`).Replace(string(echo))))
	case "percent-twice":
		return text("text/plain", []byte(url.QueryEscape(url.QueryEscape(string(echo)))))
	case "percent-php":
		return text("text/plain", []byte(url.QueryEscape(strings.ReplaceAll(string(echo), "/", `\/`))))
	case "hex":
		return text("text/plain", []byte(hex.EncodeToString(echo)))
	case "hex-colons":
		return text("text/plain", []byte(strings.ReplaceAll(fmt.Sprintf("% X", echo), " ", ":")))
	}
	return nil, false
}

// serveCut sends the echo up to 4 bytes before the end of the Bearer
// token, saying it is longer, then waits for the client to give up
// (cut-hang) or resets the connection (cut-reset).
func serveCut(w http.ResponseWriter, r *http.Request, form string, echo []byte) {
	token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	at := bytes.Index(echo, []byte(token))
	if token == "" || at < 0 {
		http.Error(w, "no bearer token to cut", http.StatusBadRequest)
		return
	}
	part := echo[:at+len(token)-4]
	if form == "cut-hang" {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(echo)))
		_, _ = w.Write(part)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		return
	}
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(echo), part)
	_ = buf.Flush()
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // close with a reset
	}
	_ = conn.Close()
}

// utfEcho is b in UTF-16 (width 2) or UTF-32 (width 4).
func utfEcho(b []byte, width int, order binary.AppendByteOrder) []byte {
	var out []byte
	for _, r := range string(b) {
		if width == 4 {
			out = order.AppendUint32(out, uint32(r))
			continue
		}
		for _, u := range utf16.Encode([]rune{r}) {
			out = order.AppendUint16(out, u)
		}
	}
	return out
}

// wrapLines breaks s into lines of width.
func wrapLines(s string, width int, eol string) string {
	var sb strings.Builder
	for len(s) > width {
		sb.WriteString(s[:width] + eol)
		s = s[width:]
	}
	sb.WriteString(s)
	return sb.String()
}

var zerosGzip = sync.OnceValue(func() []byte { return compress(gzipWriter, make([]byte, 8<<20)) })

func gzipWriter(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) }
func zlibWriter(w io.Writer) io.WriteCloser { return zlib.NewWriter(w) }
func flateWriter(w io.Writer) io.WriteCloser {
	zw, _ := flate.NewWriter(w, flate.BestCompression)
	return zw
}

func compress(newWriter func(io.Writer) io.WriteCloser, b []byte) []byte {
	var buf bytes.Buffer
	zw := newWriter(&buf)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}

// uEscapeStrings writes every character inside the JSON strings of doc as
// \uXXXX, hex digits alternating in case.
func uEscapeStrings(doc []byte) []byte {
	var out bytes.Buffer
	in, escaped := false, false
	for i, c := range string(doc) {
		switch {
		case !in:
			in = c == '"'
			out.WriteRune(c)
		case escaped:
			escaped = false
			out.WriteRune(c)
		case c == '\\':
			escaped = true
			out.WriteRune(c)
		case c == '"':
			in = false
			out.WriteRune(c)
		case i%2 == 0:
			fmt.Fprintf(&out, `\u%04x`, c)
		default:
			fmt.Fprintf(&out, `\u%04X`, c)
		}
	}
	return out.Bytes()
}

// requireNoSecret checks the record as the API serves it, its body
// decoded, and anything in it decompressed, for each secret in any form
// leaktest knows.
func requireNoSecret(t *testing.T, rec *tasks.Record, secrets ...string) {
	t.Helper()
	b, err := json.Marshal(rec)
	require.NoError(t, err)
	texts := [][]byte{b}
	if r := rec.Response; r != nil {
		texts = append(texts, r.Body)
		if r.BodyText != nil {
			texts = append(texts, []byte(*r.BodyText))
		}
		if r.BodyBase64 != "" {
			raw, err := base64.StdEncoding.DecodeString(r.BodyBase64)
			require.NoError(t, err)
			texts = append(texts, raw)
		}
		for k, v := range r.Headers {
			texts = append(texts, []byte(k+": "+v))
		}
	}
	for _, text := range texts {
		if plain, ok := leaktest.Inflate(text); ok {
			texts = append(texts, plain)
		}
	}
	for _, secret := range secrets {
		for _, text := range texts {
			require.Empty(t, leaktest.Find(text, secret), "secret %q is readable in %q", secret, text)
		}
	}
}

// An upstream that echoes the request hands the credential back in
// whatever form it likes: the record holds it in none. The secrets hold
// / + and =, which every encoding escapes differently.
func TestEchoedCredentialNeverRecorded(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := uid()
	token := "tok/en+val=ue/" + id
	key := "key+/=" + id
	user, pass := "acct/+="+id, "pw/+="+id
	e.putCred(t, "echo-bearer-"+id, "bin-bearer", map[string]string{"token": token})
	e.putCred(t, "echo-key-"+id, "bin-key", map[string]string{"key": key})
	e.putCred(t, "echo-basic-"+id, "bin-basic", map[string]string{"username": user, "password": pass})
	pair := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	creds := map[string][]string{
		"bin-bearer": {token},
		"bin-key":    {key},
		"bin-basic":  {user, pass, pair},
	}

	type row struct {
		path     string
		withheld string // what body_withheld names, if the body cannot be decoded
		utf8     bool   // the body is in UTF-16 or UTF-32 by its label or BOM: kept as UTF-8
	}
	rows := []row{
		{path: "/echo/gzip"}, {path: "/echo/x-gzip"}, {path: "/echo/gzip-gzip"}, {path: "/echo/deflate-then-gzip"},
		{path: "/echo/deflate"}, {path: "/echo/raw-deflate"},
		{path: "/echo/br", withheld: "br"}, {path: "/echo/zstd", withheld: "zstd"}, {path: "/echo/x-snappy", withheld: "x-snappy"},
		{path: "/echo/corrupt-gzip", withheld: "gzip"}, {path: "/echo/cut-gzip", withheld: "gzip"},
		{path: "/echo/php"}, {path: "/echo/uescape"}, {path: "/echo/form"}, {path: "/echo/percent-lower"},
		{path: "/echo/base64"}, {path: "/echo/base64url"}, {path: "/echo/base64-php"}, {path: "/echo/range"},
		{path: "/echo/bomb"},
		{path: "/echo/utf16-labelled", utf8: true}, {path: "/echo/utf16be-labelled", utf8: true},
		{path: "/echo/utf16be-bom", utf8: true}, {path: "/echo/utf32be-labelled", utf8: true},
		{path: "/echo/utf16-unlabelled"}, {path: "/echo/utf32le-unlabelled"},
		{path: "/echo/base64-mime"}, {path: "/echo/base64-pem"}, {path: "/echo/quoted-printable"},
		{path: "/echo/html-template"}, {path: "/echo/html-references"}, {path: "/echo/js-hex"},
		{path: "/echo/percent-twice"}, {path: "/echo/percent-php"}, {path: "/echo/hex"}, {path: "/echo/hex-colons"},
		// go-httpbin's own echoes.
		{path: "/gzip"}, {path: "/deflate"}, {path: "/dump/request"}, {path: "/anything"},
	}
	for _, integration := range []string{"bin-bearer", "bin-key", "bin-basic"} {
		for _, tc := range rows {
			t.Run(integration+tc.path, func(t *testing.T) {
				t.Parallel()
				ref := strings.TrimPrefix(integration, "bin-")
				rec := e.run(t, &tasks.Call{Integration: integration, Method: "GET", Path: tc.path, Credential: "echo-" + ref + "-" + id})
				require.Equal(t, tasks.StatusSucceeded, rec.Status, "error: %+v", rec.Error)
				r := rec.Response
				require.Equal(t, http.StatusOK, r.Status)
				requireNoSecret(t, rec, creds[integration]...)
				if tc.withheld != "" {
					require.Contains(t, r.BodyWithheld, tc.withheld)
					require.Contains(t, r.BodyWithheld, "could not be redacted")
					require.Empty(t, r.Body)
					require.Nil(t, r.BodyText)
					require.Empty(t, r.BodyBase64)
					require.NotEmpty(t, r.Headers["Content-Encoding"], "the record says how it came")
					return
				}
				require.Empty(t, r.BodyWithheld)
				require.Empty(t, r.Headers["Content-Encoding"], "the body is kept decoded")
				// Positive control: the echo is there, redacted.
				b, _ := json.Marshal(r)
				if strings.Contains(tc.path, "base64") {
					b = []byte(strings.Join(decodedRuns(string(b)), " "))
				}
				require.Contains(t, string(b), auth.Redacted, "the echo was redacted, not lost")
				if tc.utf8 {
					require.True(t, r.Body != nil || r.BodyText != nil, "kept as text")
					require.NotContains(t, string(b), `\u0000`, "transcoded")
					require.Contains(t, string(b), "Accept-Encoding", "transcoded")
					require.Empty(t, r.Headers["Content-Length"], "it gave the UTF-16 length")
				}
				if tc.path == "/echo/bomb" {
					require.True(t, r.Truncated)
					require.Less(t, r.Size, int64(1<<20), "decoding stopped near the limit")
				}
			})
		}
	}
}

// decodedRuns decodes the base64 in s (the redacted echo, whose
// [REDACTED] splits the runs), leniently.
func decodedRuns(s string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(s, func(r rune) bool {
		return !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune(`+/-_\`, r))
	}) {
		f = strings.NewReplacer(`\/`, "/", "-", "+", "_", "/").Replace(f)
		for off := range 4 {
			if len(f) > off {
				d, _ := base64.RawStdEncoding.DecodeString(f[off : off+(len(f)-off)/4*4])
				out = append(out, string(d))
			}
		}
	}
	return append(out, s)
}

// The worker asks for the encodings it decodes, and no ranges.
func TestWorkerChoosesEncodingsAndRanges(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := "encodings-" + uid()
	rec := e.run(t, &tasks.Call{Integration: "bin", Method: "GET", Path: "/headers", Headers: map[string]string{"X-Test-ID": id}})
	require.Equal(t, tasks.StatusSucceeded, rec.Status)
	got := e.up.headers(id)
	require.Len(t, got, 1)
	require.Equal(t, "gzip, deflate", got[0].Get("Accept-Encoding"))
	require.Empty(t, got[0].Values("Range"))

	// A call may not choose them.
	for _, h := range []string{"Accept-Encoding", "range", "If-Range", "TE", "accept-charset"} {
		_, err := e.client.Enqueue(context.Background(), &tasks.Call{Integration: "bin", Method: "GET", Path: "/range/100",
			Headers: map[string]string{h: "bytes=0-3"}})
		var fe *tasks.FieldError
		require.True(t, errors.As(err, &fe), "header %s: %v", h, err)
		require.Equal(t, "headers."+h, fe.Field)
	}
}

// A credential echoed in response headers, in any form, is redacted there
// (the auth headers themselves are left out of the record).
func TestSecretEchoedInResponseHeadersIsRedacted(t *testing.T) {
	t.Parallel()
	e := setup(t)
	token := "hdr/tok+en=" + uid()
	e.putCred(t, "echo-header-"+token[len(token)-12:], "bin-bearer", map[string]string{"token": token})
	rec := e.run(t, &tasks.Call{Integration: "bin-bearer", Method: "GET", Path: "/echo/header", Credential: "echo-header-" + token[len(token)-12:]})
	require.Equal(t, tasks.StatusSucceeded, rec.Status)
	h := rec.Response.Headers
	for _, name := range []string{"X-Echo-Authorization", "X-Echo-B64-Authorization", "X-Echo-Pct-Authorization", "X-Echo-Json-Authorization"} {
		require.Contains(t, h, name, "the upstream echoed it")
		require.Contains(t, h[name], auth.Redacted, "%s: %q", name, h[name])
	}
	requireNoSecret(t, rec, token)
}

// A body cut off by a timeout or a reset ends in a prefix of the token:
// the record keeps the body up to it and none of it, however short the
// producer makes the timeout.
func TestCutBodyKeepsNoPrefixOfASecret(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for path, kind := range map[string]tasks.ErrorKind{"/echo/cut-hang": tasks.KindTimeout, "/echo/cut-reset": tasks.KindConnection} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			id := uid()
			token := "tok/en+val=ue/" + id
			e.putCred(t, "cut-"+id, "bin-bearer", map[string]string{"token": token})
			call := &tasks.Call{Integration: "bin-bearer", Method: "GET", Path: path, Credential: "cut-" + id,
				Timeout: tasks.Duration(300 * time.Millisecond)}
			rec := e.run(t, call)
			require.Equal(t, tasks.StatusFailed, rec.Status)
			require.NotNil(t, rec.Error)
			// A body the call's timeout cut is a timeout, though the read
			// sees its connection closed; a reset is a connection error.
			require.Equal(t, kind, rec.Error.Kind, "error: %+v", rec.Error)
			require.Contains(t, rec.Error.Message, "reading the response body")
			r := rec.Response
			require.NotNil(t, r, "the response read so far is kept")
			require.NotNil(t, r.BodyText, "the body read so far is kept: %+v", r)
			require.Contains(t, *r.BodyText, `{"headers":{`, "the body up to the cut is kept")
			require.Contains(t, *r.BodyText, "Bearer "+auth.Redacted, "the token's prefix is redacted")
			requireNoSecret(t, rec, token[:len(token)-4], token[:len("tok/en+val=ue/")+2])
		})
	}
}
