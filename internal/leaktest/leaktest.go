// Package leaktest finds a secret in text in any form an upstream could
// hand it back in, so that tests can check a record holds none of them. It
// is an oracle written apart from auth.Redactor: it decodes, where the
// redactor matches encoded forms.
//
// Find looks for the secret's bytes in the text as it is and after every
// chain of up to three decodings: JSON and JavaScript string escapes (\/,
// \", \uXXXX with surrogate pairs, \xHH), percent-encoding, form encoding
// (+ for space), base64 (standard or URL alphabet, padded or not, at each
// of the four offsets of every run of base64 characters, line breaks
// inside a run ignored), HTML character references (numeric and named),
// quoted-printable (=XX and soft line breaks), hex (in either case, bytes
// apart or separated by one space or colon) and, for text holding NUL
// bytes, UTF-16 and UTF-32 of either byte order. Inflate undoes gzip, zlib or
// raw deflate, for bytes an upstream may have compressed; Find does not try
// it on its own, because inflating arbitrary bytes yields short strings by
// chance.
package leaktest

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/base64"
	"io"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// maxDepth is how many decodings Find chains.
const maxDepth = 3

// maxInflated bounds what Find decompresses from one input.
const maxInflated = 8 << 20

// Decoding is one of the decodings Find tries.
type Decoding int

// Decodings.
const (
	JSON            Decoding = iota // JSON string escapes, and JavaScript's \xHH
	Percent                         // %XX
	Form                            // %XX and + for a space
	Base64                          // every run of base64 characters, from each offset
	HTML                            // &#NN; &#xHH; and named character references
	QuotedPrintable                 // =XX and soft line breaks
	Hex                             // runs of hex digit pairs, from each offset
	UTF                             // UTF-16 and UTF-32, either byte order, each alignment
)

var decodings = []struct {
	name string
	// decode returns the decodings of b; sep is a byte not in the secret,
	// to join pieces with.
	decode func(b []byte, sep byte) [][]byte
}{
	JSON:            {"json", one(UnescapeJSON)},
	Percent:         {"percent", one(func(b []byte) []byte { return unescapePercent(b, false) })},
	Form:            {"form", one(func(b []byte) []byte { return unescapePercent(b, true) })},
	Base64:          {"base64", base64Runs},
	HTML:            {"html", one(unescapeHTML)},
	QuotedPrintable: {"qp", one(unescapeQP)},
	Hex:             {"hex", hexRuns},
	UTF:             {"utf", transcodeUTF},
}

func one(f func([]byte) []byte) func([]byte, byte) [][]byte {
	return func(b []byte, _ byte) [][]byte { return [][]byte{f(b)} }
}

// Find returns the chain of decodings under which secret occurs in text
// ("raw", "json", "base64(percent)", ...), or "" if it occurs under none.
// It searches breadth first, so it names the shortest chain.
func Find(text []byte, secret string) string {
	if secret == "" {
		return ""
	}
	type node struct {
		text []byte
		path string
	}
	sep := separator(secret)
	level := []node{{text, "raw"}}
	for depth := 0; ; depth++ {
		for _, n := range level {
			if bytes.Contains(n.text, []byte(secret)) {
				return n.path
			}
		}
		if depth == maxDepth {
			return ""
		}
		var next []node
		for _, n := range level {
			for _, d := range decodings {
				for _, out := range d.decode(n.text, sep) {
					if len(out) == 0 || bytes.Equal(out, n.text) {
						continue
					}
					path := d.name
					if n.path != "raw" {
						path = d.name + "(" + n.path + ")"
					}
					next = append(next, node{out, path})
				}
			}
		}
		level = next
	}
}

// FoundAfter reports whether secret occurs in text as it is or after the
// decodings, applied in order: the inverse of one way of writing text,
// where Find tries every way.
func FoundAfter(text []byte, secret string, chain ...Decoding) bool {
	if bytes.Contains(text, []byte(secret)) {
		return true
	}
	sep := separator(secret)
	texts := [][]byte{text}
	for _, d := range chain {
		var next [][]byte
		for _, t := range texts {
			next = append(next, decodings[d].decode(t, sep)...)
		}
		texts = next
	}
	for _, t := range texts {
		if bytes.Contains(t, []byte(secret)) {
			return true
		}
	}
	return false
}

// separator is a byte not in secret, to join decoded pieces with.
func separator(secret string) byte {
	var sep byte
	for strings.IndexByte(secret, sep) >= 0 && sep < 255 {
		sep++
	}
	return sep
}

// UnescapeJSON decodes the JSON string escapes in b wherever they are, and
// JavaScript's \xHH, leaving everything else as it is. A lone surrogate
// becomes U+FFFD, as encoding/json decodes it.
func UnescapeJSON(b []byte) []byte {
	if bytes.IndexByte(b, '\\') < 0 {
		return b
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' || i+1 >= len(b) {
			out = append(out, b[i])
			continue
		}
		if c, ok := shortEscapes[b[i+1]]; ok {
			out = append(out, c)
			i++
			continue
		}
		if i+3 < len(b) && b[i+1] == 'x' {
			hi, ok1 := unhex(b[i+2])
			lo, ok2 := unhex(b[i+3])
			if ok1 && ok2 {
				out = append(out, hi<<4|lo)
				i += 3
				continue
			}
		}
		r, ok := hex4(b, i+1)
		if !ok {
			out = append(out, b[i])
			continue
		}
		n := 6
		if utf16.IsSurrogate(r) {
			if r2, ok := hex4(b, i+7); ok && i+7 < len(b) && b[i+6] == '\\' {
				if c := utf16.DecodeRune(r, r2); c != utf8.RuneError {
					r, n = c, 12
				}
			}
			if n == 6 {
				r = utf8.RuneError
			}
		}
		out = utf8.AppendRune(out, r)
		i += n - 1
	}
	return out
}

var shortEscapes = map[byte]byte{'"': '"', '\\': '\\', '/': '/', 'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t'}

// hex4 reads "uXXXX" at b[i:].
func hex4(b []byte, i int) (rune, bool) {
	if i+5 > len(b) || b[i] != 'u' {
		return 0, false
	}
	var r rune
	for _, c := range b[i+1 : i+5] {
		v, ok := unhex(c)
		if !ok {
			return 0, false
		}
		r = r<<4 | rune(v)
	}
	return r, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// unescapePercent decodes %XX wherever it is and, for form encoding, + as
// a space.
func unescapePercent(b []byte, form bool) []byte {
	if bytes.IndexByte(b, '%') < 0 && (!form || bytes.IndexByte(b, '+') < 0) {
		return b
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		switch {
		case b[i] == '+' && form:
			out = append(out, ' ')
		case b[i] == '%' && i+2 < len(b):
			hi, ok1 := unhex(b[i+1])
			lo, ok2 := unhex(b[i+2])
			if ok1 && ok2 {
				out = append(out, hi<<4|lo)
				i += 2
				continue
			}
			out = append(out, b[i])
		default:
			out = append(out, b[i])
		}
	}
	return out
}

// base64Runs decodes every run of base64 characters (either alphabet) from
// each of the four offsets: a value inside a longer base64 stream decodes
// whole from one of them. It returns one text per offset, the runs' bytes
// joined by sep. (A secret holding every byte value may be reported
// across a join.)
func base64Runs(b []byte, sep byte) [][]byte {
	if bytes.ContainsAny(b, "\r\n") {
		b = []byte(strings.NewReplacer("\r", "", "\n", "").Replace(string(b)))
	}
	var runs [][]byte
	start := -1
	for i := 0; i <= len(b); i++ {
		if i < len(b) && isBase64(b[i]) {
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 && i-start >= 4 {
			run := []byte(strings.NewReplacer("-", "+", "_", "/").Replace(string(b[start:i])))
			runs = append(runs, run)
		}
		start = -1
	}
	if len(runs) == 0 {
		return nil
	}
	outs := make([][]byte, 4)
	for off := range 4 {
		for _, run := range runs {
			if len(run) <= off {
				continue
			}
			r := run[off:]
			if len(r)%4 == 1 {
				r = r[:len(r)-1] // a lone character holds no whole byte
			}
			dec, err := base64.RawStdEncoding.DecodeString(string(r))
			if err != nil {
				continue
			}
			outs[off] = append(append(outs[off], dec...), sep)
		}
	}
	return outs
}

func isBase64(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/' || c == '-' || c == '_'
}

// Inflate decompresses b if it is a whole gzip, zlib or raw deflate
// stream (gzip and zlib checksums verified).
func Inflate(b []byte) ([]byte, bool) {
	br := bytes.NewReader(b)
	var rd io.Reader
	if zr, err := gzip.NewReader(br); err == nil {
		rd = zr
	} else if br.Reset(b); len(b) > 1 && (uint16(b[0])<<8|uint16(b[1]))%31 == 0 && b[0]&0x0f == 8 {
		zr, err := zlib.NewReader(br)
		if err != nil {
			return nil, false
		}
		rd = zr
	} else {
		br.Reset(b)
		rd = flate.NewReader(br)
	}
	out, err := io.ReadAll(io.LimitReader(rd, maxInflated))
	if err != nil || br.Len() > 0 && len(out) < maxInflated {
		return nil, false
	}
	return out, true
}
