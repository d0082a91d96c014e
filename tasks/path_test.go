package tasks_test

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
	"golang.org/x/text/unicode/norm"

	"github.com/callq/callq/tasks"
)

// hostilePaths would leave the integration's origin or base path, or smuggle
// syntax some hop might reinterpret. Each must be refused on field "path".
var hostilePaths = []struct {
	name     string
	path     string
	tooLarge bool
}{
	{name: "empty", path: ""},
	{name: "relative", path: "repositories"},
	{name: "absolute http URL", path: "http://evil.com"},
	{name: "absolute https URL", path: "https://evil.com/x"},
	{name: "scheme without slashes", path: "https:evil.com"},
	{name: "protocol-relative", path: "//evil.com"},
	{name: "protocol-relative with path", path: "//evil.com/x"},
	{name: "triple slash", path: "///evil.com"},
	{name: "backslash host", path: "\\\\evil.com"},
	{name: "slash backslash", path: "/\\evil.com"},
	{name: "encoded backslash", path: "/%5cevil.com"},
	{name: "encoded backslash upper", path: "/%5Cevil.com"},
	{name: "userinfo at", path: "@evil.com"},
	{name: "userinfo host@", path: "evil.com@x"},
	{name: "javascript scheme", path: "javascript:alert(1)"},
	{name: "scheme in first segment", path: "/http://evil.com"},
	{name: "encoded scheme in first segment", path: "/https:%2F%2Fevil.com"},
	{name: "host:port then //", path: "/evil.com:443//x"},
	{name: "NUL", path: "/a\x00b"},
	{name: "CRLF", path: "/a\r\nHost: evil.com"},
	{name: "tab", path: "/a\tb"},
	{name: "DEL", path: "/a\x7f"},
	{name: "encoded CRLF", path: "/a%0d%0aHost:%20evil.com"},
	{name: "encoded NUL", path: "/a%00"},
	{name: "encoded tab", path: "/a%09b"},
	{name: "dotdot", path: "/.."},
	{name: "dotdot slash", path: "/../"},
	{name: "dotdot admin", path: "/../admin"},
	{name: "climb two from one", path: "/a/../../b"},
	{name: "climb after dot", path: "/a/./../.."},
	{name: "encoded dotdot", path: "/%2e%2e/admin"},
	{name: "encoded dotdot upper", path: "/%2E%2E/"},
	{name: "half-encoded dotdot", path: "/.%2e/x"},
	{name: "dotdot with encoded slashes", path: "/a/..%2f..%2fb"},
	{name: "double-encoded dotdot", path: "/%252e%252e/admin"},
	{name: "double-encoded slash", path: "/a%252fb"},
	{name: "double-encoded backslash", path: "/a%255cb"},
	{name: "raw division slash", path: "/\u2215evil.com"},
	{name: "raw fullwidth dots", path: "/\uff0e\uff0e/"},
	{name: "encoded division slash U+2215", path: "/%E2%88%95evil.com"},
	{name: "encoded fullwidth slash U+FF0F", path: "/%EF%BC%8Fevil.com"},
	{name: "encoded fullwidth dots U+FF0E", path: "/%EF%BC%8E%EF%BC%8E/admin"},
	{name: "encoded one-dot leaders U+2024", path: "/%E2%80%A4%E2%80%A4/admin"},
	{name: "encoded fullwidth at U+FF20", path: "/%EF%BC%A0evil.com"},
	{name: "encoded fullwidth colon U+FF1A", path: "/%EF%BC%9Aevil"},
	{name: "encoded fullwidth backslash U+FF3C", path: "/%EF%BC%BCevil"},
	// NFKC folds each of these into URL syntax; a hand list missed them.
	{name: "encoded vertical two dot leader U+FE30", path: "/%EF%B8%B0/admin"},
	{name: "encoded vertical question mark U+FE16", path: "/a%EF%B8%96b=1"},
	{name: "encoded double question mark U+2047", path: "/a%E2%81%87"},
	{name: "encoded question exclamation U+2048", path: "/a%E2%81%88"},
	{name: "encoded exclamation question U+2049", path: "/a%E2%81%89"},
	{name: "encoded double colon equals U+2A74", path: "/http%E2%A9%B4//evil.com"},
	{name: "encoded digit full stop U+2488", path: "/%E2%92%88%E2%92%88/admin"},
	{name: "encoded vertical ellipsis U+FE19", path: "/%EF%B8%99/admin"},
	{name: "encoded digit zero full stop U+1F100", path: "/%F0%9F%84%80"},
	// Look-alikes NFKC leaves as they are, refused all the same.
	{name: "encoded division slash U+2215 alone", path: "/a%E2%88%95b"},
	{name: "encoded ideographic full stop U+3002", path: "/%E3%80%82%E3%80%82/admin"},
	{name: "query string", path: "/a?b=1"},
	{name: "fragment", path: "/a#frag"},
	{name: "raw non-ASCII", path: "/café"},
	{name: "invalid percent-encoding", path: "/%zz"},
	{name: "truncated percent-encoding", path: "/a%"},
	{name: "too long", path: "/" + strings.Repeat("a", 2048), tooLarge: true},
}

func TestValidatePathRefusesHostile(t *testing.T) {
	t.Parallel()
	require.GreaterOrEqual(t, len(hostilePaths), 35)
	cat := testCatalog(t)
	in := integration(t, cat, "gh")
	for _, tc := range hostilePaths {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fe := requireFieldError(t, tasks.ValidatePath(tc.path), "path")
			require.Equal(t, tc.tooLarge, fe.TooLarge)
			require.Equal(t, tc.tooLarge, errors.Is(fe, tasks.ErrTooLarge))

			u, err := in.URL(tc.path, nil)
			require.Nil(t, u)
			requireFieldError(t, err, "path")

			c := tasks.Call{Integration: "gh", Method: "GET", Path: tc.path}
			_, err = c.Normalize(cat, nil)
			requireFieldError(t, err, "path")
		})
	}
}

func TestValidatePathLengthLimit(t *testing.T) {
	t.Parallel()
	require.NoError(t, tasks.ValidatePath("/"+strings.Repeat("a", 2047)), "2048 bytes is allowed")
	fe := requireFieldError(t, tasks.ValidatePath("/"+strings.Repeat("a", 2048)), "path")
	require.True(t, fe.TooLarge)
}

// TestIntegrationURL checks that accepted paths join the base URL keeping
// its scheme, host and base path.
func TestIntegrationURL(t *testing.T) {
	t.Parallel()
	cat, err := tasks.ParseCatalog([]byte(`
integrations:
  v2:
    base_url: https://api.example.com/v2
  slash:
    base_url: http://api.example.com:8080/api/
  root:
    base_url: https://root.example.com
`))
	require.NoError(t, err)

	tests := []struct {
		base string
		path string
		want string
	}{
		{"v2", "/", "https://api.example.com/v2/"},
		{"v2", "/repositories", "https://api.example.com/v2/repositories"},
		{"v2", "/users/@me", "https://api.example.com/v2/users/@me"},
		{"v2", "/a/../b", "https://api.example.com/v2/a/../b"},
		{"v2", "/a/./b", "https://api.example.com/v2/a/./b"},
		{"v2", "/v1/items/abc%2Fdef", "https://api.example.com/v2/v1/items/abc%2Fdef"},
		{"v2", "/search/a+b", "https://api.example.com/v2/search/a+b"},
		{"v2", "/x;y=1", "https://api.example.com/v2/x;y=1"},
		{"v2", "/caf%C3%A9", "https://api.example.com/v2/caf%C3%A9"},
		{"v2", "/a%3Fb%23c", "https://api.example.com/v2/a%3Fb%23c"},
		{"v2", "/a b", "https://api.example.com/v2/a%20b"},
		{"v2", "/@evil.com", "https://api.example.com/v2/@evil.com"},
		// A colon in the first segment without "//" is a path, not a scheme.
		{"v2", "/http:evil.com", "https://api.example.com/v2/http:evil.com"},
		// Encoded slashes stay encoded: the origin does not move.
		{"v2", "/%2F%2Fevil.com", "https://api.example.com/v2/%2F%2Fevil.com"},
		{"slash", "/repos", "http://api.example.com:8080/api/repos"},
		{"slash", "/", "http://api.example.com:8080/api/"},
		{"root", "/", "https://root.example.com/"},
		{"root", "/users/@me", "https://root.example.com/users/@me"},
	}
	for _, tc := range tests {
		t.Run(tc.base+tc.path, func(t *testing.T) {
			t.Parallel()
			require.NoError(t, tasks.ValidatePath(tc.path))
			in := integration(t, cat, tc.base)
			u, err := in.URL(tc.path, nil)
			require.NoError(t, err)
			require.Equal(t, tc.want, u.String())
			base := in.Base()
			require.Equal(t, base.Scheme, u.Scheme)
			require.Equal(t, base.Host, u.Host)
			require.Nil(t, u.User)
			require.True(t, strings.HasPrefix(u.EscapedPath(), strings.TrimSuffix(base.EscapedPath(), "/")+"/"))

			// What a client would send goes to the same origin.
			again, err := url.Parse(u.String())
			require.NoError(t, err)
			require.Equal(t, base.Host, again.Host)
			require.Equal(t, base.Scheme, again.Scheme)
		})
	}
}

func TestIntegrationURLQuery(t *testing.T) {
	t.Parallel()
	in := integration(t, testCatalog(t), "gh")
	u, err := in.URL("/search", tasks.Query{
		"since": {"364"},
		"id":    {"2", "1"},
		"q":     {"a b&c=d"},
		"empty": {""},
	})
	require.NoError(t, err)
	require.Equal(t, "https://api.example.com/v2/search?empty=&id=2&id=1&q=a+b%26c%3Dd&since=364", u.String())
	require.Equal(t, []string{"2", "1"}, u.Query()["id"], "repeated values keep their order")

	u, err = in.URL("/search", tasks.Query{})
	require.NoError(t, err)
	require.Empty(t, u.RawQuery)
	require.Equal(t, "https://api.example.com/v2/search", u.String())
}

func TestIntegrationBaseIsACopy(t *testing.T) {
	t.Parallel()
	in := integration(t, testCatalog(t), "gh")
	b := in.Base()
	b.Host = "evil.com"
	b.Path = "/x"
	u, err := in.URL("/repos", nil)
	require.NoError(t, err)
	require.Equal(t, "https://api.example.com/v2/repos", u.String())
	require.Equal(t, "api.example.com", in.Base().Host)
}

// percentEncode encodes every byte of s as %XX.
func percentEncode(s string) string {
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, 3*len(s))
	for i := 0; i < len(s); i++ {
		b = append(b, '%', hex[s[i]>>4], hex[s[i]&15])
	}
	return string(b)
}

// TestValidatePathRefusesEveryNFKCFoldOfURLSyntax sweeps all of Unicode: an
// encoded character is refused exactly when its NFKC form holds any of
// "/ . ? # : @ \ %" (as norm computes it here), or it is one of the few
// look-alikes NFKC leaves alone. A hop that normalises the decoded path
// (NFKC, IDNA) could otherwise turn data into syntax.
func TestValidatePathRefusesEveryNFKCFoldOfURLSyntax(t *testing.T) {
	t.Parallel()
	unfolded := []rune{'\u2215', '\u2044', '\u2571', '\u29F8', '\u2216', '\u29F5', '\u29F9', '\u3002', '\uFF61', '\u2236'}
	var folds int
	var accepted, refused []string
	var batch []rune // characters that must be accepted, checked many to a path
	checkBatch := func() {
		if len(batch) == 0 || tasks.ValidatePath("/a"+percentEncode(string(batch))) == nil {
			batch = batch[:0]
			return
		}
		for _, r := range batch {
			if err := tasks.ValidatePath("/a" + percentEncode(string(r))); err != nil {
				refused = append(refused, fmt.Sprintf("%U (NFKC %q): %v", r, norm.NFKC.String(string(r)), err))
			}
		}
		batch = batch[:0]
	}
	for r := rune(0x80); r <= unicode.MaxRune; r++ {
		if !utf8.ValidRune(r) {
			continue // surrogates have no UTF-8 form
		}
		nfkc := norm.NFKC.String(string(r))
		folding := strings.ContainsAny(nfkc, `/.?#:@\%`)
		if !folding && !slices.Contains(unfolded, r) {
			if batch = append(batch, r); len(batch) == 150 {
				checkBatch()
			}
			continue
		}
		folds++
		err := tasks.ValidatePath("/a" + percentEncode(string(r)) + "b")
		var fe *tasks.FieldError
		switch {
		case !errors.As(err, &fe):
			accepted = append(accepted, fmt.Sprintf("%U (NFKC %q)", r, nfkc))
		case !strings.Contains(fe.Message, fmt.Sprintf("%U", r)):
			refused = append(refused, fmt.Sprintf("%U: message %q does not name it", r, fe.Message))
		}
	}
	checkBatch()
	require.Greater(t, folds, 60, "the sweep found the folding characters")
	require.Empty(t, accepted, "characters that fold into URL syntax were accepted")
	require.Empty(t, refused, "characters that are not URL syntax were refused")
}
