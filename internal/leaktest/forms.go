package leaktest

import (
	"bytes"
	"encoding/binary"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// namedRefs are the HTML named character references for ASCII characters
// (the WHATWG list, those of one ASCII character), which HTML escapers and
// templates write.
var namedRefs = map[string]byte{
	"Tab": '\t', "NewLine": '\n', "excl": '!', "quot": '"', "QUOT": '"', "num": '#', "dollar": '$',
	"percnt": '%', "amp": '&', "AMP": '&', "apos": '\'', "lpar": '(', "rpar": ')', "ast": '*',
	"midast": '*', "plus": '+', "comma": ',', "period": '.', "sol": '/', "colon": ':', "semi": ';',
	"lt": '<', "LT": '<', "equals": '=', "gt": '>', "GT": '>', "quest": '?', "commat": '@',
	"lsqb": '[', "lbrack": '[', "bsol": '\\', "rsqb": ']', "rbrack": ']', "Hat": '^', "lowbar": '_',
	"UnderBar": '_', "grave": '`', "DiacriticalGrave": '`', "lcub": '{', "lbrace": '{',
	"verbar": '|', "vert": '|', "VerticalLine": '|', "rcub": '}', "rbrace": '}',
}

// unescapeHTML decodes the HTML character references in b: &#NN; and
// &#xHH; (any case, leading zeros) and the named ones of namedRefs.
func unescapeHTML(b []byte) []byte {
	if bytes.IndexByte(b, '&') < 0 {
		return b
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		semi := bytes.IndexByte(b[i+1:min(i+34, len(b))], ';')
		if b[i] != '&' || semi < 1 {
			out = append(out, b[i])
			continue
		}
		ref := string(b[i+1 : i+1+semi])
		if c, ok := namedRefs[ref]; ok {
			out = append(out, c)
			i += semi + 1
			continue
		}
		if ref[0] != '#' || len(ref) < 2 {
			out = append(out, b[i])
			continue
		}
		base, digits := 10, ref[1:]
		if digits[0] == 'x' || digits[0] == 'X' {
			base, digits = 16, digits[1:]
		}
		r, err := strconv.ParseUint(digits, base, 32)
		if err != nil || digits == "" || digits[0] == '+' {
			out = append(out, b[i])
			continue
		}
		out = utf8.AppendRune(out, rune(r))
		i += semi + 1
	}
	return out
}

// unescapeQP decodes quoted-printable: =XX in either case, and the soft
// line breaks =\r\n and =\n, which stand for nothing.
func unescapeQP(b []byte) []byte {
	if bytes.IndexByte(b, '=') < 0 {
		return b
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		switch {
		case b[i] != '=':
			out = append(out, b[i])
		case bytes.HasPrefix(b[i+1:], []byte("\r\n")):
			i += 2
		case bytes.HasPrefix(b[i+1:], []byte("\n")):
			i++
		case i+2 < len(b):
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

// hexRuns decodes every run of hex digits in b (at least 8, pairs
// optionally separated by one space or colon), from each of the two
// offsets, the runs' bytes joined by sep.
func hexRuns(b []byte, sep byte) [][]byte {
	outs := make([][]byte, 2)
	found := false
	for i := 0; i < len(b); {
		var digits []byte
		j := i
		for j < len(b) {
			if _, ok := unhex(b[j]); ok {
				digits = append(digits, b[j])
				j++
				continue
			}
			// One separator between two pairs.
			if len(digits)%2 == 0 && len(digits) > 0 && (b[j] == ' ' || b[j] == ':') && j+1 < len(b) {
				if _, ok := unhex(b[j+1]); ok {
					j++
					continue
				}
			}
			break
		}
		if len(digits) >= 8 {
			found = true
			for off := range 2 {
				for k := off; k+1 < len(digits); k += 2 {
					hi, _ := unhex(digits[k])
					lo, _ := unhex(digits[k+1])
					outs[off] = append(outs[off], hi<<4|lo)
				}
				outs[off] = append(outs[off], sep)
			}
		}
		i = max(j, i+1)
	}
	if !found {
		return nil
	}
	return outs
}

// transcodeUTF reads b as UTF-16 and UTF-32, each byte order, from each
// alignment, if it holds a NUL byte (which text in them of any ASCII does).
func transcodeUTF(b []byte, _ byte) [][]byte {
	if bytes.IndexByte(b, 0) < 0 {
		return nil
	}
	var outs [][]byte
	for _, order := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		for off := range 2 {
			var units []uint16
			for k := off; k+1 < len(b); k += 2 {
				units = append(units, order.Uint16(b[k:]))
			}
			outs = append(outs, []byte(string(utf16.Decode(units))))
		}
		for off := range 4 {
			var out []byte
			for k := off; k+3 < len(b); k += 4 {
				out = utf8.AppendRune(out, rune(order.Uint32(b[k:])))
			}
			outs = append(outs, out)
		}
	}
	return outs
}
