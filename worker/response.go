package worker

import (
	"bufio"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/tasks"
)

// acceptEncoding is what the worker asks upstreams for: the encodings
// readResponse decodes. The transport's own gzip handling is off, so that
// one path decodes whatever comes, asked for or not.
const acceptEncoding = "gzip, deflate"

// maxEncodings bounds a stack of Content-Encodings ("gzip, gzip").
const maxEncodings = 4

// readResponse keeps the response in the record's form: the body decoded
// from its Content-Encoding and, in UTF-16 or UTF-32, transcoded to UTF-8,
// redacted, and cut at limit; the headers
// redacted, without Set-Cookie and the auth headers. A body callq cannot
// decode is withheld, saying why: its bytes could not be redacted. The
// error is the transport's, reading the body.
func readResponse(resp *http.Response, limit int64, redactor *auth.Redactor, in *tasks.Integration) (*tasks.Response, error) {
	r := &tasks.Response{Status: resp.StatusCode}
	body, decoded, err := readBody(resp, r, limit, redactor)
	r.Headers = make(map[string]string, len(resp.Header))
	for k, vs := range resp.Header {
		switch {
		case k == "Set-Cookie", in.Auth.IsSensitiveHeader(k):
			continue
		case decoded && (k == "Content-Encoding" || k == "Content-Length"):
			continue // they describe the encoded bytes; the record keeps them decoded
		}
		r.Headers[redactor.String(k)] = redactor.String(strings.Join(vs, ", "))
	}
	if len(body) == 0 {
		return r, err
	}
	mediaType, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	isJSON := mediaType == "application/json" || strings.HasSuffix(mediaType, "+json")
	switch {
	case isJSON && !r.Truncated && json.Valid(body):
		r.Body = json.RawMessage(body)
	case utf8.Valid(body):
		s := string(body)
		r.BodyText = &s
	default:
		r.BodyBase64 = base64.StdEncoding.EncodeToString(body)
	}
	return r, err
}

// readBody returns the body decoded (and whether it had to be), redacted
// and cut at limit, and sets r's size and truncated; or it sets r's
// body_withheld and returns none. A body whose reading failed is cut where
// it failed: the redactor takes its end to be cut (see auth.Redactor.Prefix),
// so a secret the failure cut in two leaves no prefix behind.
func readBody(resp *http.Response, r *tasks.Response, limit int64, redactor *auth.Redactor) ([]byte, bool, error) {
	withhold := func(why string) ([]byte, bool, error) {
		r.BodyWithheld = redactor.String(why)
		r.Size = max(resp.ContentLength, 0)
		return nil, false, nil
	}
	encodings, why := contentEncodings(resp.Header)
	if why != "" && resp.ContentLength != 0 {
		return withhold(why)
	}
	// Read past the limit by more than any secret's longest form and redact
	// before cutting: a secret straddling the cut must not leave its prefix
	// behind. Decoding stops there too, whatever the stream would inflate to.
	wire := &wireReader{r: resp.Body}
	body, transcoded, err := readDecoded(wire, encodings, resp.Header.Get("Content-Type"), limit+int64(redactor.MaxMatch())+1)
	if err != nil && wire.err == nil {
		return withhold(fmt.Sprintf("the %s-encoded body does not decode (%v), so it could not be redacted",
			resp.Header.Get("Content-Encoding"), err))
	}
	decoded := len(encodings) > 0 || transcoded
	read := int64(len(body))
	r.Size = read // a lower bound when truncated and the upstream did not say
	if !decoded {
		r.Size = max(read, resp.ContentLength)
	}
	switch {
	case read > limit:
		r.Truncated = true
		body = redactor.Prefix(body, int(limit))
		return body[:min(int64(len(body)), limit)], decoded, err
	case err != nil:
		return redactor.Prefix(body, len(body)), decoded, err
	}
	return redactor.Bytes(body), decoded, err
}

// contentEncodings returns the codings of a body in the order to undo
// them, or says why the body cannot be decoded.
func contentEncodings(h http.Header) (encodings []string, withheld string) {
	for _, v := range h.Values("Content-Encoding") {
		for token := range strings.SplitSeq(v, ",") {
			token = strings.ToLower(strings.TrimSpace(token))
			switch token {
			case "", "identity":
			case "gzip", "x-gzip", "deflate":
				encodings = append(encodings, token)
			default:
				return nil, fmt.Sprintf("content-encoding %q cannot be decoded, so the body could not be redacted", token)
			}
		}
	}
	if len(encodings) > maxEncodings {
		return nil, fmt.Sprintf("content-encoding stacks %d encodings, more than %d, so the body could not be redacted", len(encodings), maxEncodings)
	}
	slices.Reverse(encodings) // applied in the order listed: undone last first
	return encodings, ""
}

// readDecoded reads up to max bytes of the body undone from encodings and
// transcoded to UTF-8 from UTF-16 or UTF-32 (and says whether it was). An
// empty body is empty whatever its encoding says (HEAD, 204, 304).
func readDecoded(body io.Reader, encodings []string, contentType string, max int64) ([]byte, bool, error) {
	rd := body
	if len(encodings) > 0 {
		br := bufio.NewReader(body)
		if _, err := br.Peek(1); err == io.EOF {
			return nil, false, nil
		}
		rd = br
	}
	for _, enc := range encodings {
		var err error
		if rd, err = decoder(enc, rd); err != nil {
			return nil, false, err
		}
	}
	rd, transcoded := transcode(rd, contentType)
	b, err := io.ReadAll(io.LimitReader(rd, max))
	return b, transcoded, err
}

// decoder undoes one content coding. Deflate is zlib-wrapped by the
// standard, raw by some servers: the first two bytes tell which.
func decoder(enc string, rd io.Reader) (io.Reader, error) {
	if enc == "gzip" || enc == "x-gzip" {
		return gzip.NewReader(rd)
	}
	br := bufio.NewReader(rd)
	if b, err := br.Peek(2); err == nil && b[0]&0x0f == 8 && (uint16(b[0])<<8|uint16(b[1]))%31 == 0 {
		return zlib.NewReader(br)
	}
	return flate.NewReader(br), nil
}

// wireReader remembers an error reading the body from the connection, to
// tell it from a stream that does not decode.
type wireReader struct {
	r   io.Reader
	err error
}

func (w *wireReader) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		w.err = err
	}
	return n, err
}
