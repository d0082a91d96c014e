package auth

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseValue(t *testing.T) {
	t.Parallel()

	ring := testKeyring(t, "k1")
	aad := fieldAAD("acme", "gh", "token")

	t.Run("Env", func(t *testing.T) {
		t.Parallel()
		v, err := ParseValue(ring, "env:GITHUB_TOKEN", aad)
		require.NoError(t, err)
		require.Equal(t, Value{Kind: KindEnv, Ref: "GITHUB_TOKEN"}, v)
		require.Equal(t, "env:GITHUB_TOKEN", v.String())

		v, err = ParseValue(ring, "env:_x9", aad)
		require.NoError(t, err)
		require.Equal(t, "_x9", v.Ref)
	})

	t.Run("File", func(t *testing.T) {
		t.Parallel()
		v, err := ParseValue(ring, "file:/run/secrets/../secrets/gh", aad)
		require.NoError(t, err)
		require.Equal(t, Value{Kind: KindFile, Ref: "/run/secrets/gh"}, v)
		require.Equal(t, "file:/run/secrets/gh", v.String())
	})

	t.Run("Literal", func(t *testing.T) {
		t.Parallel()
		v, err := ParseValue(ring, "ghp_literal", aad)
		require.NoError(t, err)
		require.Equal(t, KindLiteral, v.Kind)
		require.Empty(t, v.Ref)
		require.NotContains(t, v.Sealed, "ghp_literal")
		require.Equal(t, "literal", v.String())

		got, err := v.Resolve(ring, aad, nil)
		require.NoError(t, err)
		require.Equal(t, "ghp_literal", got)

		_, err = v.Resolve(ring, fieldAAD("acme", "gh", "other"), nil)
		require.ErrorIs(t, err, ErrDecrypt)
	})

	errorCases := []struct {
		name string
		raw  string
		want string
	}{
		{"EnvEmpty", "env:", `env var name "" is not valid`},
		{"EnvLeadingDigit", "env:1TOKEN", `env var name "1TOKEN" is not valid`},
		{"EnvDash", "env:GH-TOKEN", `env var name "GH-TOKEN" is not valid`},
		{"EnvSpace", "env: TOKEN", `env var name " TOKEN" is not valid`},
		{"FileEmpty", "file:", "file path is empty"},
		{"FileRelative", "file:secrets/gh", `file path "secrets/gh" is not absolute`},
		{"FileNUL", "file:/a\x00b", "NUL"},
		{"LiteralEmpty", "", "value is empty"},
	}
	for _, tc := range errorCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseValue(ring, tc.raw, aad)
			require.ErrorContains(t, err, tc.want)
		})
	}

	t.Run("LiteralWithoutKeyring", func(t *testing.T) {
		t.Parallel()
		_, err := ParseValue(nil, "ghp_literal", aad)
		require.ErrorContains(t, err, "CALLQ_SECRET_KEY")
		require.NotContains(t, err.Error(), "ghp_literal")
	})
}

// Not parallel: t.Setenv.
func TestValueResolveEnv(t *testing.T) {
	const name = "AUTHTEST_TOKEN"

	v := Value{Kind: KindEnv, Ref: name}

	t.Setenv(name, "from-env-1")
	got, err := v.Resolve(nil, nil, nil)
	require.NoError(t, err)
	require.Equal(t, "from-env-1", got)

	// Read at call time: a change takes effect on the next Resolve.
	t.Setenv(name, "from-env-2")
	got, err = v.Resolve(nil, nil, nil)
	require.NoError(t, err)
	require.Equal(t, "from-env-2", got)

	t.Setenv(name, "")
	_, err = v.Resolve(nil, nil, nil)
	require.EqualError(t, err, "env var AUTHTEST_TOKEN is empty")

	require.NoError(t, os.Unsetenv(name)) // t.Setenv restores it afterwards
	_, err = v.Resolve(nil, nil, nil)
	require.EqualError(t, err, "env var AUTHTEST_TOKEN is not set")

	// callq's own configuration is never a credential, set or not.
	for _, own := range []string{"CALLQ_SECRET_KEY", "CALLQ_WEBHOOK_SECRET", "REDIS_URL"} {
		_, err = Value{Kind: KindEnv, Ref: own}.Resolve(nil, nil, nil)
		require.ErrorContains(t, err, "callq's own configuration", own)
	}
}

func TestValueResolveFile(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	v, err := ParseValue(nil, "file:"+path, nil)
	require.NoError(t, err)

	t.Run("Rotation", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(dir, "rotated")
		v := Value{Kind: KindFile, Ref: path}

		require.NoError(t, os.WriteFile(path, []byte("first-secret\n"), 0o600))
		got, err := v.Resolve(nil, nil, nil)
		require.NoError(t, err)
		require.Equal(t, "first-secret", got)

		require.NoError(t, os.WriteFile(path, []byte("second-secret\r\n\r\n"), 0o600))
		got, err = v.Resolve(nil, nil, nil)
		require.NoError(t, err)
		require.Equal(t, "second-secret", got)
	})

	t.Run("KeepsInnerWhitespace", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(dir, "inner")
		require.NoError(t, os.WriteFile(path, []byte(" a b\n"), 0o600))
		got, err := Value{Kind: KindFile, Ref: path}.Resolve(nil, nil, nil)
		require.NoError(t, err)
		require.Equal(t, " a b", got)
	})

	t.Run("Missing", func(t *testing.T) {
		t.Parallel()
		_, err := v.Resolve(nil, nil, nil)
		require.EqualError(t, err, cannotRead(path))
	})

	t.Run("Empty", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(dir, "empty")
		require.NoError(t, os.WriteFile(path, []byte("\n"), 0o600))
		_, err := Value{Kind: KindFile, Ref: path}.Resolve(nil, nil, nil)
		require.EqualError(t, err, cannotRead(path))
	})

	t.Run("TooLarge", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(dir, "large")
		big := make([]byte, maxFileValueBytes+1)
		for i := range big {
			big[i] = 'x'
		}
		require.NoError(t, os.WriteFile(path, big, 0o600))
		_, err := Value{Kind: KindFile, Ref: path}.Resolve(nil, nil, nil)
		require.EqualError(t, err, cannotRead(path))
		require.NotContains(t, err.Error(), "xxxx")
	})

	t.Run("Directory", func(t *testing.T) {
		t.Parallel()
		_, err := Value{Kind: KindFile, Ref: dir}.Resolve(nil, nil, nil)
		require.EqualError(t, err, cannotRead(dir))
	})
}

func TestValueResolveUnknownKind(t *testing.T) {
	t.Parallel()
	_, err := Value{Kind: "vault", Ref: "x"}.Resolve(nil, nil, nil)
	require.EqualError(t, err, `value kind "vault" is not known: want literal, env or file`)
}

func TestCredential(t *testing.T) {
	t.Parallel()

	ring := testKeyring(t, "k1")

	seal := func(t *testing.T, tenant, ref, field, secret string) Value {
		t.Helper()
		v, err := ParseValue(ring, secret, fieldAAD(tenant, ref, field))
		require.NoError(t, err)
		return v
	}

	t.Run("ResolveAndFieldNames", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "key")
		require.NoError(t, os.WriteFile(path, []byte("file-secret\n"), 0o600))

		cred := &Credential{
			Ref:    "dd",
			Tenant: "acme",
			Fields: map[string]Value{
				"app_key": seal(t, "acme", "dd", "app_key", "app-secret"),
				"api_key": {Kind: KindFile, Ref: path},
			},
		}
		require.Equal(t, []string{"api_key", "app_key"}, cred.FieldNames())

		secrets, err := cred.Resolve(ring, nil)
		require.NoError(t, err)
		require.Equal(t, Secrets{"api_key": "file-secret", "app_key": "app-secret"}, secrets)
	})

	t.Run("SealedBlobDoesNotMove", func(t *testing.T) {
		t.Parallel()
		blob := seal(t, "acme", "gh", "token", "ghp_secret")

		for _, c := range []struct{ tenant, ref, field string }{
			{"other", "gh", "token"},
			{"acme", "gh2", "token"},
			{"acme", "gh", "password"},
		} {
			cred := &Credential{Ref: c.ref, Tenant: c.tenant, Fields: map[string]Value{c.field: blob}}
			_, err := cred.Resolve(ring, nil)
			require.ErrorIs(t, err, ErrDecrypt)
			require.ErrorContains(t, err, `credential "`+c.ref+`" field "`+c.field+`"`)
			require.NotContains(t, err.Error(), "ghp_secret")
		}
	})

	t.Run("ErrorNamesSource", func(t *testing.T) {
		t.Parallel()
		cred := &Credential{Ref: "gh", Tenant: "acme", Fields: map[string]Value{
			"token": {Kind: KindFile, Ref: "/nonexistent/callq/token"},
		}}
		_, err := cred.Resolve(ring, nil)
		require.ErrorContains(t, err, `credential "gh" field "token": secret file /nonexistent/callq/token cannot be read: `)
	})

	t.Run("NoFields", func(t *testing.T) {
		t.Parallel()
		secrets, err := (&Credential{}).Resolve(ring, nil)
		require.NoError(t, err)
		require.Empty(t, secrets)
	})
}

func TestIsSourceRef(t *testing.T) {
	t.Parallel()

	ring := testKeyring(t, "k1")
	aad := fieldAAD("acme", "gh", "token")
	for _, tc := range []struct {
		raw  string
		want bool
	}{
		{"env:GITHUB_TOKEN", true},
		{"file:/run/secrets/gh", true},
		{"env:", true},              // a source, if not a valid one: ParseValue says why
		{"file:secrets/gh", true},   // likewise
		{"ghp_literal", false},      // a literal secret
		{"", false},                 // nothing
		{"ENV:GITHUB_TOKEN", false}, // prefixes are case-sensitive
		{" env:GITHUB_TOKEN", false},
		{"environment:GITHUB_TOKEN", false},
		{"files:/run/secrets/gh", false},
		{"my-env:token", false},
	} {
		t.Run(tc.raw, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, IsSourceRef(tc.raw))
			// ParseValue reads the same prefixes: a source is never sealed
			// as a literal, a literal never read as a source.
			if v, err := ParseValue(ring, tc.raw, aad); err == nil {
				require.Equal(t, tc.want, v.Kind != KindLiteral, "ParseValue gave kind %s", v.Kind)
			}
		})
	}
}
