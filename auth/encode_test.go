package auth

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"unicode/utf16"
)

// The ways of writing text back that an upstream may choose, for the
// redactor's tests: each writes s, choosing per character where the form
// allows a choice (rng may be nil for the plainest choice).

// utfBytes is s in UTF-16 (width 2) or UTF-32 (width 4), in order.
func utfBytes(s string, width int, order binary.AppendByteOrder) string {
	var b []byte
	for _, r := range s {
		if width == 4 {
			b = order.AppendUint32(b, uint32(r))
			continue
		}
		for _, u := range utf16.Encode([]rune{r}) {
			b = order.AppendUint16(b, u)
		}
	}
	return string(b)
}

// wrap breaks s into lines of width, as MIME (76) and PEM (64) write base64.
func wrap(s string, width int, eol string) string {
	var sb strings.Builder
	for len(s) > width {
		sb.WriteString(s[:width] + eol)
		s = s[width:]
	}
	sb.WriteString(s)
	return sb.String()
}

// pick is rng's choice among n, or 0 without one.
func pick(rng *rand.Rand, n int) int {
	if rng == nil {
		return 0
	}
	return rng.IntN(n)
}

// randomQP writes s quoted-printable: each byte raw (where legal) or =XX,
// with soft line breaks (=\r\n or =\n) between some bytes.
func randomQP(rng *rand.Rand, s string) string {
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 33 && c <= 126 && c != '=' && pick(rng, 2) == 0 {
			sb.WriteByte(c)
		} else {
			fmt.Fprintf(&sb, "=%02X", c)
		}
		switch pick(rng, 8) {
		case 1:
			sb.WriteString("=\r\n")
		case 2:
			sb.WriteString("=\n")
		}
	}
	return sb.String()
}

// htmlNames are named references an HTML escaper may write for ASCII.
var htmlNames = map[byte][]string{
	'/': {"sol"}, '+': {"plus"}, '=': {"equals"}, '&': {"amp", "AMP"}, '"': {"quot", "QUOT"},
	'_': {"lowbar", "UnderBar"}, '<': {"lt", "LT"}, '>': {"gt", "GT"}, '\'': {"apos"}, ':': {"colon"},
	'.': {"period"}, ',': {"comma"}, '%': {"percnt"}, '\\': {"bsol"}, '\n': {"NewLine"}, '\t': {"Tab"},
}

// randomHTML writes s with characters as HTML character references:
// decimal or hex (either case, leading zeros) or named, or raw.
func randomHTML(rng *rand.Rand, s string) string {
	var sb strings.Builder
	for _, r := range s {
		names := htmlNames[byte(r)]
		if r >= 0x80 {
			names = nil
		}
		switch c := pick(rng, 5); {
		case c == 0 && r != '&' && r != '<':
			sb.WriteRune(r)
		case c == 1:
			fmt.Fprintf(&sb, "&#%0*d;", 1+pick(rng, 4), r)
		case c == 2 && len(names) > 0:
			sb.WriteString("&" + names[pick(rng, len(names))] + ";")
		case c == 3:
			fmt.Fprintf(&sb, "&#X%0*X;", 1+pick(rng, 4), r)
		default:
			fmt.Fprintf(&sb, "&#x%x;", r)
		}
	}
	return sb.String()
}

// randomJSHex writes s with bytes as JavaScript's \xHH, hex in either case.
func randomJSHex(rng *rand.Rand, s string) string {
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		switch pick(rng, 3) {
		case 0:
			fmt.Fprintf(&sb, `\x%02x`, s[i])
		case 1:
			fmt.Fprintf(&sb, `\x%02X`, s[i])
		default:
			if s[i] == '\\' {
				sb.WriteString(`\\`)
			} else {
				sb.WriteByte(s[i])
			}
		}
	}
	return sb.String()
}

// randomHex writes s's bytes in hex, in either case, apart or with one
// space or colon between bytes.
func randomHex(rng *rand.Rand, s string) string {
	sep := []string{"", " ", ":"}[pick(rng, 3)]
	format := []string{"%02x", "%02X"}[pick(rng, 2)]
	parts := make([]string, len(s))
	for i := range len(s) {
		parts[i] = fmt.Sprintf(format, s[i])
	}
	return strings.Join(parts, sep)
}
