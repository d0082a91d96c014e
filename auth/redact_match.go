package auth

import "math/bits"

// The Redactor's matcher. A needle is a value as a sequence of units, each
// the byte (or set of bytes) one of its characters decodes to. Text is read
// as pieces: a raw byte, or an escape (%XX, \uXXXX, \/, + for a space,
// &#47;, =2F, ...; see readPieces) and what it decodes to. A needle matches
// where some reading of the text into pieces decodes to its units, so every
// mix of escapes matches without listing them. Some needles let line
// breaks or separators come between their units (wrapped base64, hex
// dumps). The scan looks only at bytes that can begin a match (a
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
	// gaps are the bytes that may come between units (every gapEvery
	// units), standing for nothing: line breaks in wrapped base64, one
	// separator between a hex dump's bytes.
	gaps     byteSet
	gapEvery int
	// plain: a form (hex, UTF-16, UTF-32) whose bytes are not escaped
	// again in practice, which maxLen bounds unescaped.
	plain bool
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

// gapAt reports whether c may come before unit k of n, standing for nothing.
func (n *needle) gapAt(k int, c byte) bool {
	return n.gapEvery > 0 && k > 0 && k%n.gapEvery == 0 && n.gaps.has(c)
}

// maxLen bounds the bytes a match of n spans with every unit escaped and,
// where n allows gaps, one escaped line break (%0D%0A) before each;
// padding may follow. (A longer match is cut at the end of the text, and
// redacted there: see redact.)
func (n *needle) maxLen() int {
	if n.plain {
		return 2 * len(n.units) // a separator for each hex byte
	}
	per := maxUnitLen
	if n.gapEvery > 0 {
		per += 6
	}
	l := per * len(n.units)
	if n.pad {
		l += 2 * maxUnitLen
	}
	return l
}

// redact replaces every match that begins in h[:n] and returns the result
// up to where h[:n] (or a match straddling n) ends, and whether anything
// matched. Matches are leftmost, then longest. If cut, h is taken to be
// cut short at its end: a match that runs into the end (the beginning of a
// needle, or of an escape) is redacted to the end, so that no prefix of a
// secret is kept.
func redact[T text](m *matcher, h T, n int, cut bool) ([]byte, bool) {
	var out []byte
	last := 0
	for j := 0; j < n; j++ {
		c := h[j]
		if !m.start[c] || !special[c] && j+1 < len(h) && !special[h[j+1]] && !m.pairs[c].has(h[j+1]) {
			continue
		}
		end, nd := longestAt(m, h, j, cut)
		if end < 0 {
			continue
		}
		s := j
		if nd != nil {
			p := s - 1
			for p > last && nd.gapAt(1, h[p]) {
				p-- // a line break between it and the first
			}
			if p >= last && nd.lead.has(h[p]) {
				s = p // the character holding the value's first bits
			}
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
// needle (nil for an escape cut short at the end); -1 if none begins there.
func longestAt[T text](m *matcher, h T, j int, cut bool) (int, *needle) {
	best, bestNeedle := -1, (*needle)(nil)
	try := func(ids []int32) {
		for _, id := range ids {
			nd := &m.needles[id]
			if end := matchAt(nd, h, j, cut); end > best {
				best, bestNeedle = end, nd
			}
		}
	}
	if !special[h[j]] {
		try(m.firstIDs[m.firstAt[h[j]]:m.firstAt[int(h[j])+1]])
		return best, bestNeedle
	}
	var ps [maxPieces]piece
	np := readPieces(h, j, &ps)
	if cut && cutEscape(h, j) {
		return len(h), nil // an escape cut short may decode to a needle's first byte
	}
	for i, p := range ps[:np] {
		if p.n == 0 {
			continue
		}
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
// backslashes) from being followed twice. If cut, a match that reaches the
// end of h, or an escape there that does not read, ends at the end.
func matchAt[T text](nd *needle, h T, j int, cut bool) int {
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
		if pos >= len(h) {
			if cut && k > 0 {
				best = len(h)
			}
			continue
		}
		if !special[h[pos]] {
			if nd.gapAt(k, h[pos]) {
				stack = append(stack, state{k, pos + 1})
			}
			continue
		}
		var ps [maxPieces]piece
		np := readPieces(h, pos, &ps)
		if cut && k > 0 && cutEscape(h, pos) {
			best = len(h)
			continue
		}
		var nb [2 * maxPieces]state
		next := nb[:0]
		for _, p := range ps[:np] {
			if p.n == 0 || p.n == 1 && nd.gapAt(k, p.b[0]) {
				if k > 0 {
					next = append(next, state{k, p.end}) // a soft line break, or a gap
				}
				if p.n == 0 {
					continue
				}
			}
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
		var ps [maxPieces]piece
		np := readPieces(h, pos, &ps)
		end := -1
		for _, p := range ps[1:np] {
			if p.n == 1 && p.b[0] == '=' {
				end = max(end, p.end)
			}
		}
		if end < 0 {
			break
		}
		pos = end
	}
	return pos
}
