package auth

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"
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
