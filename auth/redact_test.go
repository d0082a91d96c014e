package auth

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	htmltemplate "html/template"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/leaktest"
)

func TestRedactor(t *testing.T) {
	t.Parallel()

	t.Run("Plain", func(t *testing.T) {
		t.Parallel()
		r := NewRedactor("ghp_secret", "second-secret")
		require.False(t, r.Empty())
		require.Equal(t,
			"token=[REDACTED] and [REDACTED]; again [REDACTED]",
			r.String("token=ghp_secret and second-secret; again ghp_secret"))
		require.Equal(t, "nothing here", r.String("nothing here"))
	})

	t.Run("Base64", func(t *testing.T) {
		t.Parallel()
		r := NewRedactor("ghp_secret1") // 11 bytes: padded base64
		padded := base64.StdEncoding.EncodeToString([]byte("ghp_secret1"))
		raw := base64.RawStdEncoding.EncodeToString([]byte("ghp_secret1"))
		require.NotEqual(t, padded, raw)
		require.Equal(t, "x [REDACTED] y", r.String("x "+padded+" y"))
		require.Equal(t, "x [REDACTED] y", r.String("x "+raw+" y"))
	})

	t.Run("EscapedForms", func(t *testing.T) {
		t.Parallel()
		secret := `a+b/c"<d>&`
		r := NewRedactor(secret)
		require.Equal(t, "k=[REDACTED]", r.String("k="+url.QueryEscape(secret)))
		b, err := json.Marshal(map[string]string{"k": secret})
		require.NoError(t, err)
		require.Equal(t, `{"k":"[REDACTED]"}`, r.String(string(b)))
	})

	t.Run("BasicPair", func(t *testing.T) {
		t.Parallel()
		// A short password is not redacted by itself, but the pair is.
		r := NewRedactor("sk_test_user").WithBasic("sk_test_user", "pw")
		header := "Basic " + base64.StdEncoding.EncodeToString([]byte("sk_test_user:pw"))
		require.Equal(t, "Authorization: Basic [REDACTED]", r.String("Authorization: "+header))
		require.Equal(t, "[REDACTED]", r.String("sk_test_user"))

		// WithBasic leaves the receiver as it was.
		base := NewRedactor("other-secret")
		_ = base.WithBasic("u", "p")
		require.Equal(t, base64.StdEncoding.EncodeToString([]byte("u:p")), base.String(base64.StdEncoding.EncodeToString([]byte("u:p"))))

		// And works on a nil Redactor.
		var nilRedactor *Redactor
		pair := base64.StdEncoding.EncodeToString([]byte("u:p"))
		require.Equal(t, "[REDACTED]", nilRedactor.WithBasic("u", "p").String(pair))
	})

	t.Run("ShortAndEmptyIgnored", func(t *testing.T) {
		t.Parallel()
		r := NewRedactor("", "a", "abc")
		require.True(t, r.Empty())
		require.Equal(t, "a abc", r.String("a abc"))

		r = NewRedactor("abc", "abcd")
		require.Equal(t, "abc [REDACTED]", r.String("abc abcd"))
	})

	t.Run("LongestFirst", func(t *testing.T) {
		t.Parallel()
		r := NewRedactor("token", "token-extended")
		require.Equal(t, "[REDACTED] [REDACTED]", r.String("token-extended token"))
	})

	t.Run("Bytes", func(t *testing.T) {
		t.Parallel()
		r := NewRedactor("ghp_secret")
		in := []byte(`{"token":"ghp_secret"}`)
		out := r.Bytes(in)
		require.Equal(t, `{"token":"[REDACTED]"}`, string(out))
		require.Equal(t, `{"token":"ghp_secret"}`, string(in), "input unchanged")

		clean := []byte("clean")
		require.Equal(t, "clean", string(r.Bytes(clean)))
		require.Nil(t, r.Bytes(nil))
	})

	t.Run("NilAndEmpty", func(t *testing.T) {
		t.Parallel()
		var r *Redactor
		require.True(t, r.Empty())
		require.Equal(t, "ghp_secret", r.String("ghp_secret"))
		require.Equal(t, []byte("x"), r.Bytes([]byte("x")))
		require.True(t, NewRedactor().Empty())
	})

	t.Run("SecretsRedactor", func(t *testing.T) {
		t.Parallel()
		r := NewSecretsRedactor(&Spec{Type: TypeBasic}, Secrets{"username": "acct_1234", "password": "pw"})
		pair := base64.StdEncoding.EncodeToString([]byte("acct_1234:pw"))
		require.Equal(t, "[REDACTED] Basic [REDACTED]", r.String("acct_1234 Basic "+pair))

		r = NewSecretsRedactor(datadogSpec(), Secrets{"api_key": "dd-api-key", "app_key": "dd-app-key"})
		require.Equal(t, "DD-API-KEY: [REDACTED]\nDD-APPLICATION-KEY: [REDACTED]",
			r.String("DD-API-KEY: dd-api-key\nDD-APPLICATION-KEY: dd-app-key"))

		require.True(t, NewSecretsRedactor(nil, nil).Empty())
	})
}

// htmlTemplate is s written into HTML text by html/template (+ as &#43;).
func htmlTemplate(t *testing.T, s string) string {
	var sb strings.Builder
	require.NoError(t, htmltemplate.Must(htmltemplate.New("").Parse(`<p>{{.}}</p>`)).Execute(&sb, s))
	require.NotContains(t, sb.String(), s)
	return sb.String()
}

// An upstream may write a secret back in any legal encoding, and mix them
// character by character: each form must be redacted whole.
func TestRedactorEveryForm(t *testing.T) {
	t.Parallel()
	const secret = "tok/en+val=ue/42"
	const spaced = "pass phrase/+= 9"
	const emoji = "key-😀-é-end"
	b64 := func(enc *base64.Encoding, s string) string { return enc.EncodeToString([]byte(s)) }
	r := NewSecretsRedactor(&Spec{Type: TypeBearer}, Secrets{FieldToken: secret, "other": spaced, "third": emoji})
	for _, tc := range []struct {
		name, text, secret string
	}{
		{"raw", "x" + secret + "y", secret},
		{"PHP JSON", `{"auth":"Bearer tok\/en+val=ue\/42"}`, secret},
		{"JSON all \\u escapes", `{"a":"\u0074\u006F\u006b\u002F\u0065\u006e\u002B\u0076\u0061\u006C\u003d\u0075\u0065\u002f\u0034\u0032"}`, secret},
		{"JSON mixed escapes", `"t\u006fk\/en\u002bval=ue\u002F42"`, secret},
		{"JSON surrogate pair", `"key-\ud83d\ude00-\u00e9-end"`, emoji},
		{"JSON surrogate pair upper case", `"key-\uD83D\uDE00-\u00E9-end"`, emoji},
		{"percent lower case", "a=tok%2fen%2bval%3due%2f42", secret},
		{"percent every byte", "a=%74%6F%6B%2F%65%6E%2B%76%61%6C%3D%75%65%2F%34%32", secret},
		{"percent UTF-8", "a=key-%F0%9F%98%80-%c3%a9-end", emoji},
		{"form", "a=" + url.QueryEscape(spaced), spaced},
		{"form with %20", "a=pass%20phrase%2F%2B%3D+9", spaced},
		{"base64 std", "x " + b64(base64.StdEncoding, secret), secret},
		{"base64 url raw", b64(base64.RawURLEncoding, secret), secret},
		{"base64 inside a stream, offset 1", b64(base64.StdEncoding, "a"+secret+"tail"), secret},
		{"base64 inside a stream, offset 2", b64(base64.URLEncoding, `{"`+secret+`"}`), secret},
		{"base64 of the header", b64(base64.StdEncoding, "Authorization: Bearer "+secret), secret},
		{"base64 of an echoed JSON body", b64(base64.StdEncoding, `{"headers":{"Authorization":["Bearer `+secret+`"]}}`), secret},
		{"base64 of PHP JSON", b64(base64.StdEncoding, `{"a":"tok\/en+val=ue\/42"}`), secret},
		{"base64 JSON-escaped", strings.ReplaceAll(b64(base64.StdEncoding, "a"+secret), "/", `\/`), secret},
		{"base64 form-encoded", url.QueryEscape(b64(base64.StdEncoding, "?"+secret)), secret},
		{"base64 of the emoji secret", b64(base64.StdEncoding, "x"+emoji), emoji},
		// Text transcoded, wrapped or written the ways of HTML, mail, JavaScript and dumps.
		{"UTF-16LE", "\xff\xfe" + utfBytes(`{"a":"`+secret+`"}`, 2, binary.LittleEndian), secret},
		{"UTF-16BE", utfBytes("x"+secret, 2, binary.BigEndian), secret},
		{"UTF-16LE of the emoji secret", utfBytes(emoji, 2, binary.LittleEndian), emoji},
		{"UTF-32LE", utfBytes(secret, 4, binary.LittleEndian), secret},
		{"UTF-32BE", utfBytes("x"+emoji+"y", 4, binary.BigEndian), emoji},
		{"base64 wrapped at 76, CRLF", wrap(b64(base64.StdEncoding, strings.Repeat("A", 40)+"Bearer "+secret), 76, "\r\n"), secret},
		{"base64 wrapped at 64 (PEM)", wrap(b64(base64.StdEncoding, strings.Repeat("A", 30)+"Bearer "+secret), 64, "\n"), secret},
		{"base64 wrapped every 4", wrap(b64(base64.StdEncoding, "a"+secret), 4, "\r\n"), secret},
		{"base64 wrapped, JSON \\n", wrap(b64(base64.StdEncoding, "ab"+secret), 5, `\n`), secret},
		{"base64 wrapped, %0D%0A", wrap(b64(base64.URLEncoding, secret), 6, "%0D%0A"), secret},
		{"quoted-printable", "Bearer tok/en+val=3Due/42", secret},
		{"quoted-printable soft breaks", "tok/en+v=\r\nal=3Du=\ne/42", secret},
		{"quoted-printable, every byte", randomQP(nil, spaced), spaced},
		{"html/template", htmlTemplate(t, secret), secret},
		{"HTML numeric references", "tok&#x2F;en&#X2b;val&#0061;ue&#47;42", secret},
		{"HTML named references", "tok&sol;en&plus;val&equals;ue&sol;42", secret},
		{"HTML references of UTF-8", "key-&#128512;-&#xE9;-end", emoji},
		{"JavaScript \\x", `tok\x2fen\x2Bval\x3due\x2F42`, secret},
		{"percent twice", url.QueryEscape(url.QueryEscape(secret)), secret},
		{"percent of PHP JSON", url.QueryEscape(`tok\/en+val=ue\/42`), secret},
		{"percent of JSON \\u", "tok%5Cu002fen%5cu002Bval=ue%5C%2F42", secret},
		{"hex", hex.EncodeToString([]byte(secret)), secret},
		{"hex upper case", strings.ToUpper(hex.EncodeToString([]byte("Bearer " + secret))), secret},
		{"hex with spaces", fmt.Sprintf("% x", secret), secret},
		{"hex with colons", strings.ReplaceAll(fmt.Sprintf("% X", emoji), " ", ":"), emoji},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out := r.String(tc.text)
			require.Empty(t, leaktest.Find([]byte(out), tc.secret), "%q redacted to %q", tc.text, out)
			require.Contains(t, out, Redacted)
		})
	}
}

// Prefix takes its text to be cut at the end: wherever a form of the
// secret is cut, no prefix of it is kept, while the text before it is.
func TestRedactorPrefixCut(t *testing.T) {
	t.Parallel()
	const secret = "Zq9/Kx+Wv=Jt7"
	r := NewRedactor(secret)
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, form := range []string{
		secret,
		`\u005Aq9\/Kx\u002bWv=Jt7`,
		"Zq9%2FKx%2BWv%3DJt7",
		"Zq9%252FKx%252BWv%253DJt7",
		"Zq9&#x2F;Kx&plus;Wv&#61;Jt7",
		"Zq9=2FKx+Wv=3D=\r\nJt7",
		wrap(b64("Bearer "+secret), 5, "\r\n"),
		hex.EncodeToString([]byte(secret)),
		utfBytes(secret, 2, binary.LittleEndian),
	} {
		const before = "kept-before: "
		text := before + form
		for i := len(before); i < len(text); i++ {
			out := string(r.Prefix([]byte(text[:i]), i))
			require.True(t, strings.HasPrefix(out, before), "cut at %d of %q: %q", i, text, out)
			for m := 3; m <= len(secret); m++ {
				require.Empty(t, leaktest.Find([]byte(out), secret[:m]), "cut at %d of %q: %q keeps %q", i, text, out, secret[:m])
			}
		}
	}
	// An occurrence cut at the end is redacted to the end; the text is
	// kept up to it.
	require.Equal(t, "a [REDACTED]", string(r.Prefix([]byte("a Zq9/Kx+W"), 10)))
	require.Equal(t, "a [REDACTED]", string(r.Prefix([]byte("a Zq9%2"), 7)))
	require.Equal(t, "a Zq b", string(r.Prefix([]byte("a Zq b"), 6)), "not the secret: kept")
	require.Equal(t, "a Zq9/Kx+Wv=Jt", r.String("a Zq9/Kx+Wv=Jt"), "String does not take its text to be cut")
}
