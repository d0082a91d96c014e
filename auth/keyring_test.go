package auth

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseKeyring(t *testing.T) {
	t.Parallel()

	key1, err := GenerateKey()
	require.NoError(t, err)
	key2, err := GenerateKey()
	require.NoError(t, err)

	t.Run("BareKey", func(t *testing.T) {
		t.Parallel()
		ring, err := ParseKeyring(key1)
		require.NoError(t, err)
		require.Equal(t, DefaultKeyID, ring.PrimaryID())
	})

	t.Run("BareKeyWithSpace", func(t *testing.T) {
		t.Parallel()
		ring, err := ParseKeyring(" " + key1 + "\n")
		require.NoError(t, err)
		require.Equal(t, DefaultKeyID, ring.PrimaryID())
	})

	t.Run("ListFirstSeals", func(t *testing.T) {
		t.Parallel()
		ring, err := ParseKeyring("new:" + key1 + ", old:" + key2)
		require.NoError(t, err)
		require.Equal(t, "new", ring.PrimaryID())
	})

	t.Run("GenerateKeyDecodesTo32Bytes", func(t *testing.T) {
		t.Parallel()
		raw, err := base64.StdEncoding.DecodeString(key1)
		require.NoError(t, err)
		require.Len(t, raw, KeySize)
		require.NotEqual(t, key1, key2)
	})

	short := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	errorCases := []struct {
		name  string
		input string
		want  string
	}{
		{"Empty", "", "CALLQ_SECRET_KEY is empty"},
		{"Blank", "  \t", "CALLQ_SECRET_KEY is empty"},
		{"BadBase64", "k1:" + key1[:20] + "!!" + key1[22:], `key "k1" is not valid base64`},
		{"BareBadBase64", "%%%" + key1, `key "default" is not valid base64`},
		{"WrongLength", "k1:" + short, `key "k1" is 16 bytes, want 32`},
		{"DuplicateKid", "k1:" + key1 + ",k1:" + key2, `key id "k1" more than once`},
		{"ListEntryWithoutKid", "k1:" + key1 + "," + key2, "entry 2 has no key id"},
		{"EmptyKey", "k1:" + key1 + ",k2:", `key "k2" is empty`},
		{"EmptyKid", ":" + key1, "entry 1 has an invalid key id"},
		{"DotInKid", "a.b:" + key1, "entry 1 has an invalid key id"},
		{"TrailingComma", "k1:" + key1 + ",", "entry 2 has no key id"},
	}
	for _, tc := range errorCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ring, err := ParseKeyring(tc.input)
			require.Nil(t, ring)
			require.ErrorContains(t, err, tc.want)
			// No key material, whole or in part, in the message.
			for _, key := range []string{key1, key2, short} {
				require.NotContains(t, err.Error(), key[:8])
				require.NotContains(t, err.Error(), key[len(key)-12:])
			}
		})
	}
}

func TestKeyringSealOpen(t *testing.T) {
	t.Parallel()

	ring := testKeyring(t, "k1")
	aad := []byte("acme\x00gh\x00token")

	t.Run("RoundTrip", func(t *testing.T) {
		t.Parallel()
		sealed, err := ring.Seal([]byte("ghp_secret"), aad)
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(sealed, "v1.k1."), sealed)
		require.NotContains(t, sealed, "ghp_secret")

		plaintext, err := ring.Open(sealed, aad)
		require.NoError(t, err)
		require.Equal(t, "ghp_secret", string(plaintext))
	})

	t.Run("NoncesDiffer", func(t *testing.T) {
		t.Parallel()
		a, err := ring.Seal([]byte("same"), aad)
		require.NoError(t, err)
		b, err := ring.Seal([]byte("same"), aad)
		require.NoError(t, err)
		require.NotEqual(t, a, b)
	})

	t.Run("EmptyPlaintext", func(t *testing.T) {
		t.Parallel()
		sealed, err := ring.Seal(nil, aad)
		require.NoError(t, err)
		plaintext, err := ring.Open(sealed, aad)
		require.NoError(t, err)
		require.Empty(t, plaintext)
	})

	t.Run("RotationOpensOldKey", func(t *testing.T) {
		t.Parallel()
		oldKey, err := GenerateKey()
		require.NoError(t, err)
		newKey, err := GenerateKey()
		require.NoError(t, err)
		oldRing, err := ParseKeyring("old:" + oldKey)
		require.NoError(t, err)
		rotated, err := ParseKeyring("new:" + newKey + ",old:" + oldKey)
		require.NoError(t, err)

		sealed, err := oldRing.Seal([]byte("v"), aad)
		require.NoError(t, err)
		plaintext, err := rotated.Open(sealed, aad)
		require.NoError(t, err)
		require.Equal(t, "v", string(plaintext))

		resealed, err := rotated.Seal([]byte("v"), aad)
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(resealed, "v1.new."))
	})

	t.Run("UnknownKey", func(t *testing.T) {
		t.Parallel()
		sealed, err := testKeyring(t, "gone").Seal([]byte("v"), aad)
		require.NoError(t, err)

		_, err = ring.Open(sealed, aad)
		require.ErrorIs(t, err, ErrUnknownKey)
		var unknown *UnknownKeyError
		require.ErrorAs(t, err, &unknown)
		require.Equal(t, "gone", unknown.KeyID)
		require.ErrorContains(t, err, `key id "gone" is not in CALLQ_SECRET_KEY`)
	})

	t.Run("SameKidOtherKey", func(t *testing.T) {
		t.Parallel()
		sealed, err := testKeyring(t, "k1").Seal([]byte("v"), aad)
		require.NoError(t, err)
		_, err = ring.Open(sealed, aad)
		require.ErrorIs(t, err, ErrDecrypt)
	})

	t.Run("AADMismatch", func(t *testing.T) {
		t.Parallel()
		sealed, err := ring.Seal([]byte("v"), aad)
		require.NoError(t, err)
		_, err = ring.Open(sealed, []byte("acme\x00gh\x00other"))
		require.ErrorIs(t, err, ErrDecrypt)
		_, err = ring.Open(sealed, nil)
		require.ErrorIs(t, err, ErrDecrypt)
	})

	t.Run("Tampered", func(t *testing.T) {
		t.Parallel()
		sealed, err := ring.Seal([]byte("ghp_secret"), aad)
		require.NoError(t, err)
		prefix := "v1.k1."
		blob, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(sealed, prefix))
		require.NoError(t, err)

		for i := range blob {
			flipped := append([]byte(nil), blob...)
			flipped[i] ^= 0x01
			_, err := ring.Open(prefix+base64.RawURLEncoding.EncodeToString(flipped), aad)
			require.ErrorIs(t, err, ErrDecrypt, "byte %d flipped", i)
		}
	})

	t.Run("Malformed", func(t *testing.T) {
		t.Parallel()
		sealed, err := ring.Seal([]byte("v"), aad)
		require.NoError(t, err)
		for _, bad := range []string{
			"",
			"garbage",
			"v2" + strings.TrimPrefix(sealed, "v1"),
			"v1.k1",
			"v1..abc",
			"v1.k1.!!!",
			"v1.k1.AAAA",
			sealed[:len(sealed)-4],
		} {
			_, err := ring.Open(bad, aad)
			require.ErrorIs(t, err, ErrDecrypt, "input %q", bad)
		}
	})

	t.Run("NilKeyring", func(t *testing.T) {
		t.Parallel()
		var nilRing *Keyring
		require.Empty(t, nilRing.PrimaryID())
		_, err := nilRing.Seal([]byte("v"), aad)
		require.ErrorContains(t, err, "CALLQ_SECRET_KEY")
		_, err = nilRing.Open("v1.k1.AAAA", aad)
		require.ErrorContains(t, err, "CALLQ_SECRET_KEY")
	})
}

func TestNothingSecretPrints(t *testing.T) {
	t.Parallel()

	key, err := GenerateKey()
	require.NoError(t, err)
	ring, err := ParseKeyring("new:" + key)
	require.NoError(t, err)
	secrets := Secrets{"token": "ghp_secret", "key": "k-secret"}
	redactor := NewRedactor("ghp_secret")

	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		require.Equal(t, "auth.Keyring(new)", fmt.Sprintf(verb, ring))
		require.Equal(t, "auth.Secrets[key token]", fmt.Sprintf(verb, secrets))
		require.Equal(t, "auth.Redactor(1 values)", fmt.Sprintf(verb, redactor))
		require.NotContains(t, fmt.Sprintf(verb, struct{ S Secrets }{secrets}), "secret")
	}
}
