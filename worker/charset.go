package worker

import (
	"bufio"
	"io"
	"mime"
	"strings"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/encoding/unicode/utf32"
	"golang.org/x/text/transform"
)

// sniffLen is how many bytes of a body tell the byte order of UTF-16 or
// UTF-32 labelled without one.
const sniffLen = 512

// transcode returns body as UTF-8 if it is in UTF-16 or UTF-32, by its
// Content-Type charset or, in a textual type, its byte order mark, and
// whether it is: a secret in them is NUL bytes apart, where neither the
// redactor's escapes nor a reader's eye would join it.
func transcode(body io.Reader, contentType string) (io.Reader, bool) {
	mediaType, params, _ := mime.ParseMediaType(contentType)
	width, order := utfLabel(params["charset"])
	br := bufio.NewReaderSize(body, sniffLen)
	head, _ := br.Peek(sniffLen)
	if w, o := bom(head); w != 0 && (width != 0 || textual(mediaType)) {
		width, order = w, o
	}
	var enc encoding.Encoding
	switch {
	case width == 0:
		return br, false
	case order == "" && width == 2:
		order = guessOrder(head, 2)
	case order == "" && width == 4:
		order = guessOrder(head, 4)
	}
	if width == 2 {
		enc = unicode.UTF16(map[string]unicode.Endianness{"le": unicode.LittleEndian, "be": unicode.BigEndian}[order], unicode.UseBOM)
	} else {
		enc = utf32.UTF32(map[string]utf32.Endianness{"le": utf32.LittleEndian, "be": utf32.BigEndian}[order], utf32.UseBOM)
	}
	return transform.NewReader(br, enc.NewDecoder()), true
}

// utfLabel returns the code unit width (2 or 4, 0 for other charsets) and
// byte order ("le", "be", "" when the label does not say) of a charset.
func utfLabel(charset string) (int, string) {
	switch strings.ToLower(strings.TrimSpace(charset)) {
	case "utf-16le":
		return 2, "le"
	case "utf-16be", "unicodefffe":
		return 2, "be"
	case "utf-16", "utf16", "ucs-2", "iso-10646-ucs-2", "csunicode", "unicode":
		return 2, ""
	case "utf-32le":
		return 4, "le"
	case "utf-32be":
		return 4, "be"
	case "utf-32", "utf32", "ucs-4", "iso-10646-ucs-4", "csucs4":
		return 4, ""
	}
	return 0, ""
}

// bom returns the width and byte order its byte order mark gives head.
func bom(head []byte) (int, string) {
	switch {
	case strings.HasPrefix(string(head), "\xff\xfe\x00\x00"):
		return 4, "le"
	case strings.HasPrefix(string(head), "\x00\x00\xfe\xff"):
		return 4, "be"
	case strings.HasPrefix(string(head), "\xff\xfe"):
		return 2, "le"
	case strings.HasPrefix(string(head), "\xfe\xff"):
		return 2, "be"
	}
	return 0, ""
}

// guessOrder tells the byte order of text of code units width wide by
// where its NUL bytes fall: the high bytes of ASCII characters are zero.
func guessOrder(head []byte, width int) string {
	first, last := 0, 0
	for i, c := range head[:len(head)/width*width] {
		if c != 0 {
			continue
		}
		switch i % width {
		case 0:
			first++
		case width - 1:
			last++
		}
	}
	if first > last {
		return "be"
	}
	return "le"
}

// textual reports whether a media type is text, whose byte order mark
// says how it is encoded; other bodies may begin with the same bytes.
func textual(mediaType string) bool {
	if mediaType == "" || strings.HasPrefix(mediaType, "text/") {
		return true
	}
	for _, s := range []string{"json", "xml", "javascript", "x-www-form-urlencoded", "yaml", "csv"} {
		if strings.Contains(mediaType, s) {
			return true
		}
	}
	return false
}
