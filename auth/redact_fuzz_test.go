package auth

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"strings"
	"testing"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/callq/callq/internal/leaktest"
)

// encoding is a way an upstream may write text back: apply writes text,
// choosing with rng wherever the encoding allows a choice, and inverse
// decodes it.
type encoding struct {
	name    string
	bearer  bool // the text holds "Bearer " + secret, the composed header
	lossy   bool // invalid UTF-8 becomes U+FFFD (JSON)
	apply   func(rng *rand.Rand, text string) string
	inverse []leaktest.Decoding
}

var encodings = []encoding{
	{name: "raw", apply: func(_ *rand.Rand, s string) string { return s }},
	{name: "json", lossy: true, apply: randomJSON, inverse: []leaktest.Decoding{leaktest.JSON}},
	{name: "percent", apply: func(rng *rand.Rand, s string) string { return randomPercent(rng, s, false) },
		inverse: []leaktest.Decoding{leaktest.Percent}},
	{name: "form", apply: func(rng *rand.Rand, s string) string { return randomPercent(rng, s, true) },
		inverse: []leaktest.Decoding{leaktest.Form}},
	{name: "base64", apply: b64(base64.StdEncoding), inverse: []leaktest.Decoding{leaktest.Base64}},
	{name: "base64 raw", apply: b64(base64.RawStdEncoding), inverse: []leaktest.Decoding{leaktest.Base64}},
	{name: "base64 url", apply: b64(base64.URLEncoding), inverse: []leaktest.Decoding{leaktest.Base64}},
	{name: "base64 url raw", apply: b64(base64.RawURLEncoding), inverse: []leaktest.Decoding{leaktest.Base64}},
	{name: "base64 of the header", bearer: true, apply: b64(base64.StdEncoding), inverse: []leaktest.Decoding{leaktest.Base64}},
	{name: "base64 then json", apply: func(rng *rand.Rand, s string) string {
		return randomJSON(rng, base64.StdEncoding.EncodeToString([]byte(s)))
	}, inverse: []leaktest.Decoding{leaktest.JSON, leaktest.Base64}},
	{name: "base64 then form", apply: func(rng *rand.Rand, s string) string {
		return randomPercent(rng, base64.StdEncoding.EncodeToString([]byte(s)), true)
	}, inverse: []leaktest.Decoding{leaktest.Form, leaktest.Base64}},
	{name: "go json then base64", lossy: true, apply: func(_ *rand.Rand, s string) string {
		return base64.StdEncoding.EncodeToString([]byte(jsonEscape(s, true)))
	}, inverse: []leaktest.Decoding{leaktest.Base64, leaktest.JSON}},
	{name: "php json then base64", lossy: true, apply: func(_ *rand.Rand, s string) string {
		return base64.StdEncoding.EncodeToString([]byte(asciiJSON(s, true)))
	}, inverse: []leaktest.Decoding{leaktest.Base64, leaktest.JSON}},
	{name: "form then base64 url", apply: func(_ *rand.Rand, s string) string {
		return base64.URLEncoding.EncodeToString([]byte(url.QueryEscape(s)))
	}, inverse: []leaktest.Decoding{leaktest.Base64, leaktest.Form}},
	{name: "base64 wrapped", apply: func(rng *rand.Rand, s string) string {
		return wrap(base64.StdEncoding.EncodeToString([]byte(s)), 1+rng.IntN(80), []string{"\r\n", "\n"}[rng.IntN(2)])
	}, inverse: []leaktest.Decoding{leaktest.Base64}},
	{name: "base64 wrapped, JSON escaped", apply: func(rng *rand.Rand, s string) string {
		return randomJSON(rng, wrap(base64.StdEncoding.EncodeToString([]byte(s)), 1+rng.IntN(80), "\r\n"))
	}, inverse: []leaktest.Decoding{leaktest.JSON, leaktest.Base64}},
	{name: "base64 url wrapped, percent-encoded", apply: func(rng *rand.Rand, s string) string {
		return randomPercent(rng, wrap(base64.RawURLEncoding.EncodeToString([]byte(s)), 1+rng.IntN(80), "\n"), false)
	}, inverse: []leaktest.Decoding{leaktest.Percent, leaktest.Base64}},
	{name: "quoted-printable", apply: randomQP, inverse: []leaktest.Decoding{leaktest.QuotedPrintable}},
	{name: "html", lossy: true, apply: randomHTML, inverse: []leaktest.Decoding{leaktest.HTML}},
	{name: "javascript \\x", apply: randomJSHex, inverse: []leaktest.Decoding{leaktest.JSON}},
	{name: "percent twice", apply: func(rng *rand.Rand, s string) string {
		return randomPercent(rng, randomPercent(rng, s, false), false)
	}, inverse: []leaktest.Decoding{leaktest.Percent, leaktest.Percent}},
	{name: "json then percent", lossy: true, apply: func(rng *rand.Rand, s string) string {
		return randomPercent(rng, randomJSON(rng, s), false)
	}, inverse: []leaktest.Decoding{leaktest.Percent, leaktest.JSON}},
	{name: "hex", apply: randomHex, inverse: []leaktest.Decoding{leaktest.Hex}},
	{name: "utf-16le", lossy: true, apply: utf(2, binary.LittleEndian), inverse: []leaktest.Decoding{leaktest.UTF}},
	{name: "utf-16be", lossy: true, apply: utf(2, binary.BigEndian), inverse: []leaktest.Decoding{leaktest.UTF}},
	{name: "utf-32le", lossy: true, apply: utf(4, binary.LittleEndian), inverse: []leaktest.Decoding{leaktest.UTF}},
	{name: "utf-32be", lossy: true, apply: utf(4, binary.BigEndian), inverse: []leaktest.Decoding{leaktest.UTF}},
}

func utf(width int, order binary.AppendByteOrder) func(*rand.Rand, string) string {
	return func(_ *rand.Rand, s string) string { return utfBytes(s, width, order) }
}

func b64(enc *base64.Encoding) func(*rand.Rand, string) string {
	return func(_ *rand.Rand, s string) string { return enc.EncodeToString([]byte(s)) }
}

// randomJSON writes s as the inside of a JSON string, each character raw
// or escaped in one of the ways JSON allows, hex digits in random case.
// Invalid UTF-8 becomes U+FFFD, as JSON encoders write it.
func randomJSON(rng *rand.Rand, s string) string {
	var sb strings.Builder
	u := func(r rune) {
		sb.WriteString(`\u`)
		for _, c := range fmt.Sprintf("%04x", r) {
			if rng.IntN(2) == 0 {
				c = []rune(strings.ToUpper(string(c)))[0]
			}
			sb.WriteRune(c)
		}
	}
	for _, r := range s {
		short := map[rune]string{'"': `\"`, '\\': `\\`, '/': `\/`, '\b': `\b`, '\f': `\f`, '\n': `\n`, '\r': `\r`, '\t': `\t`}[r]
		mustEscape := r < 0x20 || r == '"' || r == '\\'
		switch choice := rng.IntN(3); {
		case choice == 0 && !mustEscape:
			sb.WriteRune(r) // invalid UTF-8 is written as U+FFFD
		case choice == 1 && short != "":
			sb.WriteString(short)
		case r > 0xffff:
			r1, r2 := utf16.EncodeRune(r)
			u(r1)
			u(r2)
		default:
			u(r)
		}
	}
	return sb.String()
}

// randomPercent percent-encodes s, unreserved bytes raw or escaped at
// random, hex digits in random case; form encoding writes a space as + or
// %20.
func randomPercent(rng *rand.Rand, s string, form bool) string {
	const hex = "0123456789abcdef0123456789ABCDEF"
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		unreserved := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~", c) >= 0
		switch {
		case unreserved && rng.IntN(2) == 0:
			sb.WriteByte(c)
		case c == ' ' && form && rng.IntN(2) == 0:
			sb.WriteByte('+')
		default:
			sb.WriteByte('%')
			sb.WriteByte(hex[c>>4+16*byte(rng.IntN(2))])
			sb.WriteByte(hex[c&15+16*byte(rng.IntN(2))])
		}
	}
	return sb.String()
}

// lossyImage is s as a JSON encoder leaves it: each invalid byte U+FFFD.
func lossyImage(s string) string {
	var sb strings.Builder
	for _, r := range s {
		sb.WriteRune(r)
	}
	return sb.String()
}

// FuzzRedactor: whatever the secret, whatever surrounds it, and however an
// upstream writes the text (character by character where the encoding
// allows a choice), the redacted text holds the secret neither as it is
// nor once decoded back. (Random surroundings may hold the secret encoded
// twice over, which the redactor does not undo: the check decodes only
// the encoding the text was written in.)
func FuzzRedactor(f *testing.F) {
	for i, secret := range []string{"tok/en+val=ue/42", "ab/+", "pass phrase/+= 9", "key-😀-é-\x7f", "\xff\xfe-bad-utf8", `q"\/\u0041%41`} {
		for mode := range encodings {
			f.Add(secret, "{\"h\":\"", "\"}", uint64(i*100+mode), uint8(mode))
		}
	}
	f.Fuzz(func(t *testing.T, secret, prefix, suffix string, seed uint64, mode uint8) {
		if len(secret) < MinRedactLen || len(secret) > 64 || len(prefix) > 128 || len(suffix) > 128 {
			t.Skip()
		}
		enc := encodings[int(mode)%len(encodings)]
		if slices.Contains(enc.inverse, leaktest.UTF) && !utf8.ValidString(secret) {
			// A UTF-16/32 body cannot carry bytes that are not UTF-8 as
			// themselves (its encoder writes U+FFFD), and decoding the
			// redacted text, whose marker breaks the code units'
			// alignment, yields U+FFFD too: the check could not tell a
			// leak from the marker (seen: "\x00\x00\x00\x80" after three
			// NULs in UTF-32).
			t.Skip()
		}
		plain := prefix + secret + suffix
		if enc.bearer {
			plain = prefix + "Bearer " + secret + suffix
		}
		rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
		text := enc.apply(rng, plain)
		want := secret
		if enc.lossy {
			want = lossyImage(secret)
		}
		r := NewSecretsRedactor(&Spec{Type: TypeBearer}, Secrets{FieldToken: secret})
		out := r.String(text)
		if leaktest.FoundAfter([]byte(out), want, enc.inverse...) || strings.Contains(out, secret) {
			t.Fatalf("%s: secret %q found in %q, redacted from %q", enc.name, secret, out, text)
		}
		if utf8.ValidString(secret) && !strings.Contains(text, Redacted) && !strings.Contains(out, Redacted) {
			t.Fatalf("%s: nothing redacted in %q (secret %q)", enc.name, text, secret)
		}
	})
}
