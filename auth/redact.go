package auth

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Redacted replaces a secret in redacted text.
const Redacted = "[REDACTED]"

// MinRedactLen is the shortest secret a Redactor redacts. Shorter values
// ("1", "yes", "abc") occur in ordinary text so often that redacting them
// would garble records and hide little: a secret that short protects
// nothing anyway.
const MinRedactLen = 4

// Redactor replaces known secret values in text with Redacted, in every
// form an upstream may write a value back in:
//
//   - as it is, or with any of its characters escaped the ways JSON allows
//     (\/, \", \uXXXX in either letter case, surrogate pairs), percent-encoded
//     (%XX in either case) or form-encoded (+ for a space), in any mix;
//   - base64, standard or URL alphabet, padded or not, of the value or of
//     its JSON- or percent-escaped forms, alone or anywhere inside a longer
//     base64 stream (an echoed body encoded whole), with the same escapes
//     allowed on each base64 character (PHP writes / as \/);
//   - the same for the header values the auth type composes from the
//     secrets ("Bearer " + token, basic auth's base64 pair);
//   - base64 wrapped in lines: CR and LF (raw or escaped) between any of
//     its characters;
//   - with characters written as HTML references (&#47; &#x2F; &sol;, any
//     case, leading zeros), quoted-printable (=2F, soft line breaks
//     anywhere), JavaScript's \xHH, percent-encoded twice (%252F), or as
//     percent-encoded JSON escapes (%5C%2F, %5Cu002f);
//   - in hex, either case, its bytes apart or separated by a space or a
//     colon; and in UTF-16 and UTF-32 of either byte order, for a body
//     that does not say it is in one (callers transcode those that do).
//
// Compressed text is not matched: callers decode it first. A Redactor is
// immutable once built and safe for concurrent use; the nil *Redactor
// redacts nothing.
type Redactor struct {
	values   []string // as given to NewRedactor, for WithBasic to build on
	pairs    []string // "username:password" pairs from WithBasic
	composed []string // header values the auth type builds from the secrets
	m        *matcher // nil when there is nothing to redact
}

// NewRedactor returns a Redactor of values. Empty values and values shorter
// than MinRedactLen bytes are ignored.
func NewRedactor(values ...string) *Redactor {
	return buildRedactor(append([]string(nil), values...), nil, nil)
}

// WithBasic returns a Redactor that also redacts base64("username:password"),
// the form basic auth puts in an Authorization header, whatever the length
// of either part.
func (r *Redactor) WithBasic(username, password string) *Redactor {
	var values, pairs, composed []string
	if r != nil {
		values = append(values, r.values...)
		pairs = append(pairs, r.pairs...)
		composed = r.composed
	}
	values = append(values, username, password)
	if username != "" || password != "" {
		pairs = append(pairs, username+":"+password)
	}
	return buildRedactor(values, pairs, composed)
}

// NewSecretsRedactor returns a Redactor of every value in secrets, of the
// header values s composes from them, and, if s is basic auth, of the basic
// auth pair.
func NewSecretsRedactor(s *Spec, secrets Secrets) *Redactor {
	values := make([]string, 0, len(secrets))
	for _, v := range secrets {
		values = append(values, v)
	}
	sort.Strings(values) // the same needles in the same order, whatever the map's
	r := buildRedactor(values, nil, composedHeaders(s, secrets))
	if s.authType() == TypeBasic {
		r = r.WithBasic(secrets[FieldUsername], secrets[FieldPassword])
	}
	return r
}

// composedHeaders returns the values of the headers s sets from secrets:
// "Bearer " + token holds more known bytes than the token alone, which
// pins a short token inside a base64 stream.
func composedHeaders(s *Spec, secrets Secrets) []string {
	names := s.SensitiveHeaders()
	if len(names) == 0 {
		return nil
	}
	req := &http.Request{Header: http.Header{}, URL: &url.URL{}}
	if err := s.Apply(req, secrets); err != nil {
		return nil // no request carries them either
	}
	var out []string
	for _, name := range names {
		out = append(out, req.Header.Values(name)...)
	}
	return out
}

func buildRedactor(values, pairs, composed []string) *Redactor {
	r := &Redactor{values: values, pairs: pairs, composed: composed}
	var b matcherBuilder
	for _, list := range [][]string{values, pairs} {
		for _, v := range list {
			if len(v) >= MinRedactLen {
				b.addValue(v)
			}
		}
	}
	for _, p := range pairs {
		b.addValue(base64.StdEncoding.EncodeToString([]byte(p)))
	}
	// A composed header as text holds a secret already redacted (or one too
	// short to be); base64-encoded, its known prefix pins a short secret.
	for _, v := range composed {
		if len(v) >= MinRedactLen {
			b.addBase64(v)
		}
	}
	r.m = b.build()
	return r
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
	return r == nil || r.m == nil
}

// String returns s with every secret replaced by Redacted.
func (r *Redactor) String(s string) string {
	if r.Empty() {
		return s
	}
	if out, changed := redact(r.m, s, len(s), false); changed {
		return string(out)
	}
	return s
}

// Bytes returns b with every secret replaced by Redacted. It does not modify
// b; it returns b itself when there is nothing to redact.
func (r *Redactor) Bytes(b []byte) []byte {
	if r.Empty() || len(b) == 0 {
		return b
	}
	if out, changed := redact(r.m, b, len(b), false); changed {
		return out
	}
	return b
}

// Prefix returns the redacted form of b[:n], for cutting a body at a limit
// or where reading it failed: an occurrence that begins before n is read
// to its end in b and redacted whole, and nothing of b after it is kept.
// b is taken to be cut short at its end: text running into its end that
// may begin an occurrence (the first bytes of a secret in any form, or an
// escape cut in two) is redacted to the end, so that no prefix of a secret
// is kept. So that no more is redacted than an occurrence, b should hold
// MaxMatch bytes past n. It does not modify b.
func (r *Redactor) Prefix(b []byte, n int) []byte {
	n = min(max(n, 0), len(b))
	if r.Empty() {
		return b[:n]
	}
	if out, changed := redact(r.m, b, n, true); changed {
		return out
	}
	return b[:n]
}

// MaxMatch bounds the bytes one redacted occurrence spans, its every
// character escaped: how far past a cut to read so that an occurrence
// straddling it is redacted as itself rather than to the end (see Prefix).
func (r *Redactor) MaxMatch() int {
	if r.Empty() {
		return 0
	}
	return r.m.maxMatch
}

// matcherBuilder collects the needles of a Redactor, each once.
type matcherBuilder struct {
	needles []needle
	seen    []seenForm // few: a linear search beats a map
}

type seenForm struct {
	base64 bool // the form's base64 needles, or else its text needle
	form   string
}

// first reports whether f is new, and remembers it.
func (b *matcherBuilder) first(f seenForm) bool {
	if slices.Contains(b.seen, f) {
		return false
	}
	b.seen = append(b.seen, f)
	return true
}

// addValue adds v as text, in hex and in UTF-16 and UTF-32 and, at each of
// its three base64 alignments, v and the escaped forms an upstream may have
// written before encoding.
func (b *matcherBuilder) addValue(v string) {
	if b.first(seenForm{false, v}) {
		b.needles = append(b.needles, textNeedle(v), hexNeedle(v))
		for _, form := range utfForms(v) {
			b.needles = append(b.needles, rawNeedle(form))
		}
	}
	escaped := jsonEscape(v, false)
	b.addBase64(
		v,
		escaped,
		jsonEscape(v, true),
		strings.ReplaceAll(escaped, "/", `\/`), // PHP
		asciiJSON(v, false),                    // Python
		asciiJSON(v, true),                     // PHP
		url.QueryEscape(v),
		url.PathEscape(v),
	)
}

// addBase64 adds each form's needles at its three base64 alignments.
func (b *matcherBuilder) addBase64(forms ...string) {
	for _, form := range forms {
		if form == "" || !b.first(seenForm{true, form}) {
			continue
		}
		for align := range 3 {
			if nd := base64Needle(form, align); len(nd.units) > 0 {
				b.needles = append(b.needles, nd)
			}
		}
	}
}

func (b *matcherBuilder) build() *matcher {
	if len(b.needles) == 0 {
		return nil
	}
	m := &matcher{needles: b.needles}
	// Index the needles by their possible first bytes, in one slice.
	firsts := make([]byteSet, len(m.needles))
	var count [256]int32
	for i := range m.needles {
		nd := &m.needles[i]
		m.maxMatch = max(m.maxMatch, nd.maxLen())
		firsts[i] = nd.unitSet(0)
		second := byteSet{^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0)}
		if len(nd.units) > 1 {
			second = nd.unitSet(1)
			if nd.gapEvery == 1 {
				second.union(&nd.gaps)
			}
		}
		firsts[i].each(func(c byte) {
			count[c]++
			m.pairs[c].union(&second)
		})
		if nd.units[0].bad {
			m.badFirst = append(m.badFirst, int32(i))
		}
	}
	total := int32(0)
	for c := range 256 {
		m.firstAt[c] = total
		total += count[c]
	}
	m.firstAt[256] = total
	m.firstIDs = make([]int32, total)
	fill := m.firstAt
	for i := range firsts {
		firsts[i].each(func(c byte) {
			m.firstIDs[fill[c]] = int32(i)
			fill[c]++
		})
	}
	for c := range 256 {
		m.start[c] = count[c] > 0
	}
	// Escapes can decode to any byte; + is a space in form encoding; EF BF BD
	// is U+FFFD, which JSON encoders write for invalid UTF-8.
	m.start['%'], m.start['\\'], m.start['&'], m.start['='] = true, true, true, true
	m.start['+'] = m.start['+'] || m.start[' ']
	m.start[0xEF] = m.start[0xEF] || len(m.badFirst) > 0
	return m
}

// jsonEscape returns v as it appears inside a JSON string.
func jsonEscape(v string, escapeHTML bool) string {
	if plainASCII(v, escapeHTML) {
		return v
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(escapeHTML)
	if err := enc.Encode(v); err != nil {
		return ""
	}
	out := strings.TrimSuffix(buf.String(), "\n")
	return out[1 : len(out)-1] // drop the quotes
}

// asciiJSON returns v as encoders that write only ASCII put it inside a
// JSON string (PHP's json_encode, which also writes / as \/, and Python's
// json.dumps): anything else as \uXXXX in lower case.
func asciiJSON(v string, slash bool) string {
	if plainASCII(v, false) && (!slash || !strings.Contains(v, "/")) {
		return v
	}
	var sb strings.Builder
	u := func(r rune) {
		const hex = "0123456789abcdef"
		sb.WriteString(`\u`)
		for shift := 12; shift >= 0; shift -= 4 {
			sb.WriteByte(hex[r>>shift&0xf])
		}
	}
	for _, r := range v {
		switch {
		case r == '"' || r == '\\' || r == '/' && slash:
			sb.WriteByte('\\')
			sb.WriteRune(r)
		case r >= 0x20 && r < 0x7f:
			sb.WriteRune(r)
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

// plainASCII reports whether v is printable ASCII that no JSON encoder
// escapes (but for PHP's \/).
func plainASCII(v string, escapeHTML bool) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || escapeHTML && (c == '<' || c == '>' || c == '&') {
			return false
		}
	}
	return true
}

// rawNeedle matches the bytes of v.
func rawNeedle(v string) needle {
	nd := needle{units: make([]unit, len(v))}
	for i := range len(v) {
		nd.units[i] = unit{b: v[i], alt: v[i]}
	}
	nd.plain = true
	return nd
}

// hexNeedle matches v's bytes in hex, each digit in either case, the
// bytes apart or with one space or colon between them.
func hexNeedle(v string) needle {
	const lower, upper = "0123456789abcdef", "0123456789ABCDEF"
	nd := needle{units: make([]unit, 0, 2*len(v)), gapEvery: 2, plain: true}
	nd.gaps.add(' ')
	nd.gaps.add(':')
	for i := range len(v) {
		hi, lo := v[i]>>4, v[i]&0xf
		nd.units = append(nd.units, unit{b: lower[hi], alt: upper[hi]}, unit{b: lower[lo], alt: upper[lo]})
	}
	return nd
}

// utfForms is v in UTF-16 and UTF-32, each byte order; an invalid byte is
// U+FFFD, as transcoders write it.
func utfForms(v string) []string {
	var forms [4][]byte
	for _, r := range v {
		r1, r2 := r, rune(-1)
		if r > 0xffff {
			r1, r2 = utf16.EncodeRune(r)
		}
		for _, u := range []rune{r1, r2} {
			if u >= 0 {
				forms[0] = binary.LittleEndian.AppendUint16(forms[0], uint16(u))
				forms[1] = binary.BigEndian.AppendUint16(forms[1], uint16(u))
			}
		}
		forms[2] = binary.LittleEndian.AppendUint32(forms[2], uint32(r))
		forms[3] = binary.BigEndian.AppendUint32(forms[3], uint32(r))
	}
	return []string{string(forms[0]), string(forms[1]), string(forms[2]), string(forms[3])}
}

// textNeedle matches v itself, each byte decoded from whatever escape the
// text writes it in.
func textNeedle(v string) needle {
	nd := needle{units: make([]unit, len(v))}
	for i := 0; i < len(v); {
		r, size := utf8.DecodeRuneInString(v[i:])
		for j := range size {
			nd.units[i+j] = unit{b: v[i+j], alt: v[i+j], bad: r == utf8.RuneError && size == 1}
		}
		i += size
	}
	return nd
}

const (
	stdAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	urlAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
)

// base64Needle matches v inside a base64 stream, standard or URL alphabet,
// where v begins align bytes into a 3-byte group: the characters that
// encode only v's bits, then the one holding v's last bits and the next
// value's first (a set of the characters that fit). The character holding
// the previous value's last bits and v's first is the needle's lead.
func base64Needle(v string, align int) needle {
	at := func(k int) uint16 { // byte k of the stream, v's or a zero
		if k -= align; k < 0 || k >= len(v) {
			return 0
		}
		return uint16(v[k])
	}
	lo, hi := 8*align, 8*(align+len(v)) // the bits that are v's
	nd := needle{units: make([]unit, 0, (hi-lo)/6+1), gapEvery: 1}
	nd.gaps.add('\r')
	nd.gaps.add('\n')
	for i := lo / 6; 6*i < hi; i++ {
		bit := 6 * i
		word := at(bit/8)<<8 | at(bit/8+1)
		val := byte(word>>(10-bit%8)) & 0x3f
		mask := byte(0x3f)
		if bit < lo || bit+6 > hi {
			mask = 0
			for p := max(bit, lo); p < min(bit+6, hi); p++ {
				mask |= 1 << (5 - (p - bit))
			}
		}
		switch {
		case mask == 0x3f:
			nd.units = append(nd.units, unit{b: stdAlphabet[val], alt: urlAlphabet[val]})
		case bit < lo:
			nd.lead = base64Set(val, mask)
		default:
			nd.tail = base64Set(val, mask)
			nd.units = append(nd.units, unit{tail: true})
		}
	}
	nd.pad = hi%24 != 0
	return nd
}

// base64Set is every character whose known bits (mask) are val's.
func base64Set(val, mask byte) byteSet {
	var s byteSet
	for x := range byte(64) {
		if x&mask == val&mask {
			s.add(stdAlphabet[x])
			s.add(urlAlphabet[x])
		}
	}
	return s
}
