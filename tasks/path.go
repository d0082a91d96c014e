package tasks

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

var doubleEncoded = regexp.MustCompile(`%[0-9A-Fa-f]{2}`)

// urlSyntax is what a path may not gain when some hop between callq and the
// upstream normalises it: NFKC (or IDNA, which applies it) turns U+FF0F
// into "/", U+FE30 into ".." and U+2047 into "??".
const urlSyntax = `/.?#:@\%`

// unfoldedLookalikes render as URL syntax but NFKC leaves them alone: the
// division, fraction and box-drawing slashes and backslashes, the ratio
// sign, and the ideographic full stops IDNA maps to ".". Refused all the
// same.
const unfoldedLookalikes = "\u2215\u2044\u2571\u29F8\u2216\u29F5\u29F9\u2236\u3002\uFF61"

// ValidatePath checks that p is a path relative to an integration's base URL
// that cannot leave its origin: it must begin with a single "/", be ASCII
// (percent-encode anything else), and hold no scheme, authority, backslash,
// control character, fragment, query string, double encoding, character
// whose NFKC form holds URL syntax (or other look-alike of it), or ".." that
// climbs above the base path. Encoded "/", "?" and "#" (%2F, %3F, %23) are
// data inside a segment and stay encoded. Refusing at enqueue
// means credentials reach only their own integration.
func ValidatePath(p string) error {
	bad := func(format string, args ...any) error { return fieldErr("path", format, args...) }
	switch {
	case p == "":
		return bad("is required")
	case len(p) > maxPathBytes:
		return &FieldError{Field: "path", Message: fmt.Sprintf("is longer than %d bytes", maxPathBytes), TooLarge: true}
	case !strings.HasPrefix(p, "/"):
		return bad("must begin with \"/\"; it is relative to the integration's base_url, not a URL")
	case strings.HasPrefix(p, "//"):
		return bad("must not begin with \"//\", which names another host")
	}
	for _, r := range p {
		switch {
		case isControl(r):
			return bad("must not contain control characters")
		case r > 0x7e:
			return bad("must be ASCII; percent-encode other characters")
		case r == '\\':
			return bad("must not contain a backslash")
		case r == '#':
			return bad("must not contain a fragment (#)")
		case r == '?':
			return bad("must not contain a query string; put parameters in query")
		}
	}
	decoded, err := url.PathUnescape(p)
	if err != nil {
		return bad("has an invalid percent-encoding")
	}
	if !utf8.ValidString(decoded) {
		// Overlong forms such as %c0%ae ("."): some servers still decode them.
		return bad("must percent-encode valid UTF-8 only")
	}
	if doubleEncoded.MatchString(decoded) {
		return bad("must not be percent-encoded twice")
	}
	for _, r := range decoded {
		switch {
		case isControl(r):
			return bad("must not contain encoded control characters")
		case r == '\\':
			return bad("must not contain an encoded backslash")
		case r < utf8.RuneSelf:
			// ASCII decoded from %2F, %3F, %23...: data inside a segment.
		case strings.ContainsRune(unfoldedLookalikes, r):
			return bad("must not contain %U, which looks like URL syntax", r)
		case strings.ContainsAny(norm.NFKC.String(string(r)), urlSyntax):
			return bad("must not contain %U, which NFKC turns into %q", r, norm.NFKC.String(string(r)))
		}
	}
	// A scheme or authority smuggled into the first segment ("/http:...")
	// is harmless to Go's URL joining but not to every proxy; refuse it.
	first, _, _ := strings.Cut(strings.TrimPrefix(decoded, "/"), "/")
	if strings.Contains(first, ":") && strings.Contains(decoded, "//") {
		return bad("must not contain a scheme")
	}
	depth := 0
	for _, seg := range strings.Split(strings.TrimPrefix(decoded, "/"), "/") {
		// Servlet containers read "..;x" as ".." with a path parameter.
		seg, _, _ = strings.Cut(seg, ";")
		switch seg {
		case "..":
			depth--
			if depth < 0 {
				return bad("must not climb above the integration's base path with \"..\"")
			}
		case ".", "":
		default:
			depth++
		}
	}
	return nil
}

// URL joins the integration's base URL with a validated path and query. It
// fails if the result would not have the base URL's scheme and host, a check
// repeated by the worker before any credential is applied.
func (in *Integration) URL(p string, q Query) (*url.URL, error) {
	if err := ValidatePath(p); err != nil {
		return nil, err
	}
	decoded, err := url.PathUnescape(p)
	if err != nil {
		return nil, err
	}
	u := *in.base
	u.Path = strings.TrimSuffix(in.base.Path, "/") + decoded
	// Keep the caller's encoding exactly (Go would choose its own).
	u.RawPath = strings.TrimSuffix(in.base.EscapedPath(), "/") + p
	if len(q) > 0 {
		vals := in.base.Query()
		for k, vs := range q {
			for _, v := range vs {
				vals.Add(k, v)
			}
		}
		u.RawQuery = vals.Encode()
	}
	check, err := url.Parse(u.String())
	if err != nil || check.Scheme != in.base.Scheme || check.Host != in.base.Host || check.User != nil {
		return nil, fmt.Errorf("would leave the integration's origin %s://%s", in.base.Scheme, in.base.Host)
	}
	return &u, nil
}
