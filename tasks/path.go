package tasks

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"
)

var doubleEncoded = regexp.MustCompile(`%[0-9A-Fa-f]{2}`)

// lookalikes are characters that some servers and proxies fold into URL
// syntax (NFKC and friends): fullwidth and mathematical slashes, dots,
// colons, at signs, question and number signs. A path may not carry them,
// decoded or not, so no hop between callq and the upstream can turn them into
// a different origin or a different path.
var lookalikes = []rune{
	'\u2215', '\u2044', '\u2571', '\u29F8', '\uFF0F', '\u2216', '\u29F5', '\u29F9', '\uFE68', '\uFF3C', // slashes
	'\u2024', '\u2025', '\u2026', '\uFE52', '\uFF0E', '\u3002', '\uFF61', // dots
	'\uFF1A', '\uFE55', '\uFE13', '\u2236', // colons
	'\uFF20', '\uFE6B', // at signs
	'\uFF1F', '\uFE56', '\uFF03', '\uFE5F', // ? and #
	'\u2100', '\u2101', '\u2105', '\u2106', // a/c, a/s, c/o, c/u: fold to a slash
	'\uFF05', '\uFE6A', // percent signs: fold into a second encoding
}

// lookalikeSet is lookalikes as a string, built once for ContainsRune.
var lookalikeSet = string(lookalikes)

// ValidatePath checks that p is a path relative to an integration's base URL
// that cannot leave its origin: it must begin with a single "/", be ASCII
// (percent-encode anything else), and hold no scheme, authority, backslash,
// control character, fragment, query string, double encoding, look-alike of
// URL syntax, or ".." that climbs above the base path. Refusing at enqueue
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
		case strings.ContainsRune(lookalikeSet, r):
			return bad("must not contain %U, which looks like URL syntax", r)
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
