package auth

import "math/bits"

// The Redactor's matcher. A needle is a value as a sequence of units, each
// the byte (or set of bytes) one of its characters decodes to. Text is read
// as pieces: a raw byte, or an escape (%XX, \uXXXX, \/, + for a space) and
// what it decodes to. A needle matches where some reading of the text into
// pieces decodes to its units, so every mix of escapes matches without
// listing them. The scan looks only at bytes that can begin a match (a
// needle's first byte, or the start of an escape), which keeps a clean body
// at a table lookup per byte.

// matcher finds needles in text. It is read-only once built.
type matcher struct {
	needles []needle
	// firstIDs[firstAt[c]:firstAt[c+1]] are the needles that can begin
	// with decoded byte c; badFirst those beginning with an invalid UTF-8
	// byte.
	firstAt  [257]int32
	firstIDs []int32
	badFirst []int32
	// start marks the bytes a match can begin at, and pairs the two raw
	// bytes it can begin with.
	start    [256]bool
	pairs    [256]byteSet
	maxMatch int
}

// needle is one form of a value.
type needle struct {
	units []unit
	// base64: the character that may come just before, holding the value's
	// first bits, and the last, holding its last bits and the next byte's.
	lead, tail byteSet
	pad        bool // base64: '=' padding may follow
}

// unit is what one byte of a needle may decode from.
type unit struct {
	b, alt byte // the byte, or the other alphabet's (base64)
	tail   bool // any byte in needle.tail instead
	bad    bool // an invalid UTF-8 byte, which a JSON encoder writes as U+FFFD
}

type byteSet [4]uint64

func (s *byteSet) add(c byte)      { s[c>>6] |= 1 << (c & 63) }
func (s *byteSet) has(c byte) bool { return s[c>>6]&(1<<(c&63)) != 0 }
func (s *byteSet) union(o *byteSet) {
	for i := range s {
		s[i] |= o[i]
	}
}

// each calls f with every byte in s.
func (s *byteSet) each(f func(byte)) {
	for i, w := range s {
		for ; w != 0; w &= w - 1 {
			f(byte(i*64 + bits.TrailingZeros64(w)))
		}
	}
}

// unitSet is the bytes unit i of n matches.
func (n *needle) unitSet(i int) byteSet {
	u := n.units[i]
	if u.tail {
		return n.tail
	}
	var s byteSet
	s.add(u.b)
	s.add(u.alt)
	return s
}

func (n *needle) matches(u unit, c byte) bool {
	if u.tail {
		return n.tail.has(c)
	}
	return c == u.b || c == u.alt
}

// maxLen bounds the bytes a match of n spans: \u00XX, six bytes, is the
// longest escape of one byte, and padding may follow.
func (n *needle) maxLen() int {
	l := 6 * len(n.units)
	if n.pad {
		l += 12
	}
	return l
}

// text is what the matcher reads: a string or a byte slice, without copying.
type text interface{ ~string | ~[]byte }

// special marks the bytes that may begin an escape.
var special = [256]bool{'%': true, '\\': true, '+': true, 0xEF: true}

// piece is one reading of the text at a position.
type piece struct {
	b    [4]byte // decoded bytes
	n    int     // how many of b
	end  int     // where the piece ends in the text
	fffd bool    // U+FFFD, which stands for invalid bytes
}

// readPieces writes the readings of h at j: the raw byte, and the escape
// beginning there, if any.
func readPieces[T text](h T, j int, ps *[2]piece) int {
	c := h[j]
	ps[0] = piece{b: [4]byte{c}, n: 1, end: j + 1}
	switch c {
	case '+':
		ps[1] = piece{b: [4]byte{' '}, n: 1, end: j + 1}
		return 2
	case '%':
		if j+2 < len(h) {
			hi, ok1 := unhex(h[j+1])
			lo, ok2 := unhex(h[j+2])
			if ok1 && ok2 {
				ps[1] = piece{b: [4]byte{hi<<4 | lo}, n: 1, end: j + 3}
				return 2
			}
		}
	case 0xEF:
		if j+2 < len(h) && h[j+1] == 0xBF && h[j+2] == 0xBD {
			ps[1] = piece{b: [4]byte{0xEF, 0xBF, 0xBD}, n: 3, end: j + 3, fffd: true}
			return 2
		}
	case '\\':
		if j+1 >= len(h) {
			return 1
		}
		if d, ok := shortEscape(h[j+1]); ok {
			ps[1] = piece{b: [4]byte{d}, n: 1, end: j + 2}
			return 2
		}
		r, ok := hexRune(h, j+1)
		if !ok {
			return 1
		}
		end := j + 6
		if r >= 0xD800 && r < 0xDC00 && end+1 < len(h) && h[end] == '\\' {
			if r2, ok := hexRune(h, end+1); ok && r2 >= 0xDC00 && r2 < 0xE000 {
				r, end = 0x10000+(r-0xD800)<<10+(r2-0xDC00), end+6
			}
		}
		p := piece{end: end}
		if r >= 0xD800 && r < 0xE000 {
			r = 0xFFFD // a lone surrogate, which decoders replace
		}
		p.fffd = r == 0xFFFD
		p.n = encodeRune(&p.b, r)
		ps[1] = p
		return 2
	}
	return 1
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

// hexRune reads "uXXXX" at h[i:], hex digits in either case.
func hexRune[T text](h T, i int) (rune, bool) {
	if i+5 > len(h) || h[i] != 'u' {
		return 0, false
	}
	var r rune
	for k := i + 1; k < i+5; k++ {
		v, ok := unhex(h[k])
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

// redact replaces every match that begins in h[:n] and returns the result
// up to where h[:n] (or a match straddling n) ends, and whether anything
// matched. Matches are leftmost, then longest.
func redact[T text](m *matcher, h T, n int) ([]byte, bool) {
	var out []byte
	last := 0
	for j := 0; j < n; j++ {
		c := h[j]
		if !m.start[c] || !special[c] && j+1 < len(h) && !special[h[j+1]] && !m.pairs[c].has(h[j+1]) {
			continue
		}
		end, nd := longestAt(m, h, j)
		if end < 0 {
			continue
		}
		s := j
		if s > last && nd.lead.has(h[s-1]) {
			s-- // the character holding the value's first bits
		}
		if out == nil {
			out = make([]byte, 0, n+len(Redacted))
		}
		out = append(out, h[last:s]...)
		out = append(out, Redacted...)
		last = end
		j = end - 1
	}
	if out == nil {
		return nil, false
	}
	if last < n {
		out = append(out, h[last:n]...)
	}
	return out, true
}

// longestAt returns the end of the longest match beginning at j, and its
// needle; -1 if none begins there.
func longestAt[T text](m *matcher, h T, j int) (int, *needle) {
	best, bestNeedle := -1, (*needle)(nil)
	try := func(ids []int32) {
		for _, id := range ids {
			nd := &m.needles[id]
			if end := matchAt(nd, h, j); end > best {
				best, bestNeedle = end, nd
			}
		}
	}
	if !special[h[j]] {
		try(m.firstIDs[m.firstAt[h[j]]:m.firstAt[int(h[j])+1]])
		return best, bestNeedle
	}
	var ps [2]piece
	np := readPieces(h, j, &ps)
	for i, p := range ps[:np] {
		if i == 0 || p.b[0] != ps[0].b[0] {
			try(m.firstIDs[m.firstAt[p.b[0]]:m.firstAt[int(p.b[0])+1]])
		}
		if p.fffd {
			try(m.badFirst)
		}
	}
	return best, bestNeedle
}

// state is how far a match has come: units k of the needle read, the
// text read up to pos.
type state struct{ k, pos int }

// matchAt returns the end of the longest match of nd beginning at j, or -1.
// It follows every reading of the text into pieces; seen keeps a stretch
// that reads two ways (a secret of backslashes in a text of escaped
// backslashes) from being followed twice.
func matchAt[T text](nd *needle, h T, j int) int {
	best := -1
	var buf [8]state
	stack := append(buf[:0], state{0, j})
	var seen map[state]bool
	units := nd.units
	for len(stack) > 0 {
		st := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		k, pos := st.k, st.pos
		for k < len(units) && pos < len(h) && !special[h[pos]] && nd.matches(units[k], h[pos]) {
			k, pos = k+1, pos+1 // the common case: raw bytes
		}
		if k == len(units) {
			best = max(best, finish(nd, h, pos))
			continue
		}
		if pos >= len(h) || !special[h[pos]] {
			continue
		}
		var ps [2]piece
		np := readPieces(h, pos, &ps)
		var nb [4]state
		next := nb[:0]
		for _, p := range ps[:np] {
			if p.fffd && units[k].bad {
				// One U+FFFD for each invalid byte, or for a run of them.
				for kk := k; kk < len(units) && units[kk].bad; kk++ {
					next = append(next, state{kk + 1, p.end})
				}
			}
			if k+p.n > len(units) {
				continue
			}
			ok := true
			for i := range p.n {
				if !nd.matches(units[k+i], p.b[i]) {
					ok = false
					break
				}
			}
			if ok {
				next = append(next, state{k + p.n, p.end})
			}
		}
		if len(next) > 1 && seen == nil {
			seen = map[state]bool{}
		}
		for _, s := range next {
			if seen != nil {
				if seen[s] {
					continue
				}
				seen[s] = true
			}
			stack = append(stack, s)
		}
	}
	return best
}

// finish returns where a match ending at pos ends once base64 padding
// ('=', however escaped) is taken in.
func finish[T text](nd *needle, h T, pos int) int {
	for range 2 {
		if !nd.pad || pos >= len(h) {
			break
		}
		if h[pos] == '=' {
			pos++
			continue
		}
		if !special[h[pos]] {
			break
		}
		var ps [2]piece
		if np := readPieces(h, pos, &ps); np < 2 || ps[1].n != 1 || ps[1].b[0] != '=' {
			break
		}
		pos = ps[1].end
	}
	return pos
}
