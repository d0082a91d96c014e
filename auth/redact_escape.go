package auth

// How the matcher reads text: as pieces, each a raw byte or an escape and
// what it decodes to. An escape may itself be written escaped the way an
// outer layer writes it (JSON's \/ percent-encoded as %5C%2F, %2F
// percent-encoded again as %252F).

// text is what the matcher reads: a string or a byte slice, without copying.
type text interface{ ~string | ~[]byte }

// special marks the bytes that may begin an escape.
var special = [256]bool{'%': true, '\\': true, '+': true, '&': true, '=': true, 0xEF: true}

// maxEscapeLen bounds the bytes of one escape: a surrogate pair written
// \uD83D\uDE00 with every character percent-encoded.
const maxEscapeLen = 36

// maxUnitLen bounds the bytes one decoded byte takes: \u002f with every
// character percent-encoded, or a named HTML reference.
const maxUnitLen = 18

// maxPieces is how many readings an escape can have at one position.
const maxPieces = 4

// piece is one reading of the text at a position.
type piece struct {
	b    [4]byte // decoded bytes
	n    int     // how many of b; none for a quoted-printable soft line break
	end  int     // where the piece ends in the text
	fffd bool    // U+FFFD, which stands for invalid bytes
}

// readPieces writes the readings of h at j: the raw byte, and the escapes
// beginning there, if any.
func readPieces[T text](h T, j int, ps *[maxPieces]piece) int {
	c := h[j]
	ps[0] = piece{b: [4]byte{c}, n: 1, end: j + 1}
	switch c {
	case '+':
		ps[1] = piece{b: [4]byte{' '}, n: 1, end: j + 1}
		return 2
	case '%':
		d, ok := hexByte(h, j+1)
		if !ok {
			return 1
		}
		ps[1] = piece{b: [4]byte{d}, n: 1, end: j + 3}
		switch d {
		case '%':
			if d2, end, ok := hexDigits(h, j+3, 2); ok {
				ps[2] = piece{b: [4]byte{byte(d2)}, n: 1, end: end} // %252F, %25%32%46
				return 3
			}
		case '\\':
			if p, ok := backslashEscape(h, j+3); ok {
				ps[2] = p // %5C%2F, %5Cu002f
				return 3
			}
		case 0xEF:
			if j+8 < len(h) && h[j+3] == '%' && h[j+6] == '%' {
				b2, ok2 := hexByte(h, j+4)
				b3, ok3 := hexByte(h, j+7)
				if ok2 && ok3 && b2 == 0xBF && b3 == 0xBD {
					ps[2] = piece{b: [4]byte{0xEF, 0xBF, 0xBD}, n: 3, end: j + 9, fffd: true} // U+FFFD percent-encoded
					return 3
				}
			}
		}
		return 2
	case 0xEF:
		if j+2 < len(h) && h[j+1] == 0xBF && h[j+2] == 0xBD {
			ps[1] = piece{b: [4]byte{0xEF, 0xBF, 0xBD}, n: 3, end: j + 3, fffd: true}
			return 2
		}
	case '\\':
		if p, ok := backslashEscape(h, j+1); ok {
			ps[1] = p
			return 2
		}
	case '&':
		if r, end, ok := htmlReference(h, j+1); ok {
			ps[1] = runePiece(r, end)
			return 2
		}
	case '=':
		// Quoted-printable: =XX, or a soft line break, which is nothing.
		switch d, ok := hexByte(h, j+1); {
		case ok:
			ps[1] = piece{b: [4]byte{d}, n: 1, end: j + 3}
			return 2
		case j+2 < len(h) && h[j+1] == '\r' && h[j+2] == '\n':
			ps[1] = piece{end: j + 3}
			return 2
		case j+1 < len(h) && h[j+1] == '\n':
			ps[1] = piece{end: j + 2}
			return 2
		}
	}
	return 1
}

// escapeChar reads one character of an escape at h[i:], raw or
// percent-encoded, and returns it and where it ends.
func escapeChar[T text](h T, i int) (byte, int, bool) {
	if i >= len(h) {
		return 0, i, false
	}
	if h[i] == '%' {
		if d, ok := hexByte(h, i+1); ok {
			return d, i + 3, true
		}
	}
	return h[i], i + 1, true
}

// backslashEscape reads the escape after a backslash, at h[i:]: JSON's
// short escapes and \uXXXX (with surrogate pairs), and \xHH, a byte (as C,
// Python and PHP write bytes; JavaScript's, a code point, is the same
// byte for ASCII).
func backslashEscape[T text](h T, i int) (piece, bool) {
	c, i, ok := escapeChar(h, i)
	if !ok {
		return piece{}, false
	}
	if d, ok := shortEscape(c); ok {
		return piece{b: [4]byte{d}, n: 1, end: i}, true
	}
	digits := 4
	switch c {
	case 'x':
		digits = 2
	case 'u':
	default:
		return piece{}, false
	}
	r, end, ok := hexDigits(h, i, digits)
	if !ok {
		return piece{}, false
	}
	if digits == 2 {
		return piece{b: [4]byte{byte(r)}, n: 1, end: end}, true
	}
	if digits == 4 && r >= 0xD800 && r < 0xDC00 {
		// A high surrogate: the low one follows, escaped alike.
		if bs, at, ok := escapeChar(h, end); ok && bs == '\\' {
			if u, at, ok := escapeChar(h, at); ok && u == 'u' {
				if r2, at, ok := hexDigits(h, at, 4); ok && r2 >= 0xDC00 && r2 < 0xE000 {
					r, end = 0x10000+(r-0xD800)<<10+(r2-0xDC00), at
				}
			}
		}
	}
	return runePiece(r, end), true
}

// runePiece is the piece of r, ending at end. A lone surrogate, or a code
// point past Unicode, is U+FFFD, as decoders replace it.
func runePiece(r rune, end int) piece {
	if r >= 0xD800 && r < 0xE000 || r > 0x10FFFF {
		r = 0xFFFD
	}
	p := piece{end: end, fffd: r == 0xFFFD}
	p.n = encodeRune(&p.b, r)
	return p
}

// hexDigits reads n hex digits at h[i:], each raw or percent-encoded.
func hexDigits[T text](h T, i, n int) (rune, int, bool) {
	var r rune
	for range n {
		c, next, ok := escapeChar(h, i)
		if !ok {
			return 0, i, false
		}
		v, ok := unhex(c)
		if !ok {
			return 0, i, false
		}
		r, i = r<<4|rune(v), next
	}
	return r, i, true
}

// hexByte reads two raw hex digits at h[i:].
func hexByte[T text](h T, i int) (byte, bool) {
	if i+1 >= len(h) {
		return 0, false
	}
	hi, ok1 := unhex(h[i])
	lo, ok2 := unhex(h[i+1])
	return hi<<4 | lo, ok1 && ok2
}

// htmlRefs are the HTML named character references of one ASCII
// character (from the WHATWG list), which HTML escapers write.
var htmlRefs = map[string]byte{
	"Tab": '\t', "NewLine": '\n', "excl": '!', "quot": '"', "QUOT": '"', "num": '#', "dollar": '$',
	"percnt": '%', "amp": '&', "AMP": '&', "apos": '\'', "lpar": '(', "rpar": ')', "ast": '*',
	"midast": '*', "plus": '+', "comma": ',', "period": '.', "sol": '/', "colon": ':', "semi": ';',
	"lt": '<', "LT": '<', "equals": '=', "gt": '>', "GT": '>', "quest": '?', "commat": '@',
	"lsqb": '[', "lbrack": '[', "bsol": '\\', "rsqb": ']', "rbrack": ']', "Hat": '^', "lowbar": '_',
	"UnderBar": '_', "grave": '`', "DiacriticalGrave": '`', "lcub": '{', "lbrace": '{',
	"verbar": '|', "vert": '|', "VerticalLine": '|', "rcub": '}', "rbrace": '}',
}

// htmlReference reads an HTML character reference after its '&', at h[i:]:
// &#NN; or &#xHH; (any case, leading zeros) or a name of htmlRefs.
func htmlReference[T text](h T, i int) (rune, int, bool) {
	if i >= len(h) {
		return 0, i, false
	}
	if h[i] != '#' {
		k := i
		for k < len(h) && k-i < 16 && ('a' <= h[k] && h[k] <= 'z' || 'A' <= h[k] && h[k] <= 'Z') {
			k++
		}
		if k == i || k >= len(h) || h[k] != ';' {
			return 0, i, false
		}
		c, ok := htmlRefs[string(h[i:k])]
		return rune(c), k + 1, ok
	}
	i++
	base, maxDigits := rune(10), 10
	if i < len(h) && (h[i] == 'x' || h[i] == 'X') {
		base, maxDigits = 16, 8
		i++
	}
	var r rune
	k := i
	for ; k < len(h) && k-i < maxDigits; k++ {
		v, ok := unhex(h[k])
		if !ok || rune(v) >= base {
			break
		}
		r = min(r*base+rune(v), 0x110000) // past Unicode: U+FFFD
	}
	if k == i || k >= len(h) || h[k] != ';' {
		return 0, i, false
	}
	return r, k + 1, true
}

// cutEscape reports whether h[pos:], at the end of h, may be an escape the
// end cut short (or one that a longer escape, cut short, begins with):
// it is short and holds only what the escape beginning with h[pos] may.
func cutEscape[T text](h T, pos int) bool {
	rest := h[pos+1:]
	if len(rest) >= maxEscapeLen {
		return false
	}
	all := func(ok func(c byte) bool) bool {
		for i := range len(rest) {
			if !ok(rest[i]) {
				return false
			}
		}
		return true
	}
	isHex := func(c byte) bool { _, ok := unhex(c); return ok }
	switch h[pos] {
	case '=':
		return len(rest) < 2 && all(func(c byte) bool { return isHex(c) || c == '\r' })
	case 0xEF:
		return len(rest) < 2
	case '&':
		if len(rest) > 0 && rest[0] == '#' {
			return all(func(c byte) bool { return isHex(c) || c == '#' || c == 'x' || c == 'X' })
		}
		return all(func(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' })
	case '%', '\\':
		return all(func(c byte) bool {
			_, short := shortEscape(c)
			return isHex(c) || short || c == '%' || c == 'u' || c == 'x'
		})
	}
	return false
}

func shortEscape(c byte) (byte, bool) {
	switch c {
	case '"', '\\', '/':
		return c, true
	case 'b':
		return '\b', true
	case 'f':
		return '\f', true
	case 'n':
		return '\n', true
	case 'r':
		return '\r', true
	case 't':
		return '\t', true
	}
	return 0, false
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

// encodeRune is utf8.EncodeRune into a fixed array.
func encodeRune(b *[4]byte, r rune) int {
	switch {
	case r < 0x80:
		b[0] = byte(r)
		return 1
	case r < 0x800:
		b[0], b[1] = 0xC0|byte(r>>6), 0x80|byte(r)&0x3F
		return 2
	case r < 0x10000:
		b[0], b[1], b[2] = 0xE0|byte(r>>12), 0x80|byte(r>>6)&0x3F, 0x80|byte(r)&0x3F
		return 3
	default:
		b[0], b[1], b[2], b[3] = 0xF0|byte(r>>18), 0x80|byte(r>>12)&0x3F, 0x80|byte(r>>6)&0x3F, 0x80|byte(r)&0x3F
		return 4
	}
}
