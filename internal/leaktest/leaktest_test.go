package leaktest

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/base64"
	"io"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Find is the tests' oracle: each form it claims to see, it must see.
func TestFind(t *testing.T) {
	t.Parallel()
	const secret = "s3cr/t+k=y"
	compress := func(w func(io.Writer) io.WriteCloser, s string) string {
		var buf bytes.Buffer
		zw := w(&buf)
		_, _ = zw.Write([]byte(s))
		_ = zw.Close()
		return buf.String()
	}
	rawDeflate := func(w io.Writer) io.WriteCloser { zw, _ := flate.NewWriter(w, flate.BestSpeed); return zw }
	b64 := func(enc *base64.Encoding, s string) string { return enc.EncodeToString([]byte(s)) }
	for _, tc := range []struct{ text, form string }{
		{"x " + secret + " y", "raw"},
		{`{"a":"s3cr\/t+k=y"}`, "json"},
		{`{"a":"\u0073\u0033\u0063\u0072\u002F\u0074\u002b\u006B\u003d\u0079"}`, "json"},
		{"a=" + url.QueryEscape(secret), "percent"},
		{"a=s3cr%2ft%2Bk%3dy", "percent"},
		{"xx" + b64(base64.StdEncoding, "Bearer "+secret), "base64"},
		{"x" + b64(base64.RawURLEncoding, "ab"+secret+"cd"), "base64"},
		{"a=s3cr%2Ft%2Bk%3Dy+" + url.QueryEscape("a b"), "percent"},
		{`"s3cr\x2ft\x2Bk\x3dy"`, "json"},
		{"<p>s3cr&#x2F;t&#43;k&#0061;y</p>", "html"},
		{"<p>s3cr&sol;t&plus;k&equals;y</p>", "html"},
		{"Bearer s3cr/t=2Bk=\r\n=3Dy", "qp"},
		{"ab" + strings.ReplaceAll(b64(base64.StdEncoding, "Bearer "+secret), "y", "y\r\n"), "base64"},
		{"733363722f742b6b3d79", "hex"},
		{"x 73:33:63:72:2F:74:2B:6B:3D:79", "hex"},
		{"73 33 63 72 2f 74 2b 6b 3d 79", "hex"},
		{url.QueryEscape(url.QueryEscape(secret)), "percent(percent)"},
		{"s3cr%5C%2Ft%2Bk%3Dy", "json(percent)"},
		{"s3cr%5Cu002Ft+k=y", "json(percent)"},
		{"\xff\xfes\x003\x00c\x00r\x00/\x00t\x00+\x00k\x00=\x00y\x00", "utf"},
		{"\x00\x00\x00s\x00\x00\x003\x00\x00\x00c\x00\x00\x00r\x00\x00\x00/\x00\x00\x00t\x00\x00\x00+\x00\x00\x00k\x00\x00\x00=\x00\x00\x00y", "utf"},
	} {
		require.Equal(t, tc.form, Find([]byte(tc.text), secret), "in %q", tc.text)
	}
	for _, z := range []func(io.Writer) io.WriteCloser{
		func(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) },
		func(w io.Writer) io.WriteCloser { return zlib.NewWriter(w) },
		rawDeflate,
	} {
		body := compress(z, strings.Repeat("echo ", 50)+"Authorization: Bearer "+secret)
		require.Empty(t, Find([]byte(body), secret), "compressed")
		plain, ok := Inflate([]byte(body))
		require.True(t, ok)
		require.Equal(t, "raw", Find(plain, secret))
	}
	_, ok := Inflate([]byte("MDAyzDAx"))
	require.False(t, ok, "not a stream")
	// PHP writes base64's / as \/: "???" is "Pz8/".
	require.Equal(t, "base64(json)", Find([]byte(strings.ReplaceAll(b64(base64.StdEncoding, `{"h":"key???xyz"}`), "/", `\/`)), "key???xyz"))
	require.Equal(t, "form", Find([]byte("q=a+b%2Bc+d"), "a b+c d"))
	for _, text := range []string{"", "s3cr/t+k", "s3cr[REDACTED]", `{"a":"[REDACTED]"}`, b64(base64.StdEncoding, "s3cr/t+k")} {
		require.Empty(t, Find([]byte(text), secret), "in %q", text)
	}
}
