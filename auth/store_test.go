package auth

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

type storeBundle struct {
	ctx     context.Context
	mr      *miniredis.Miniredis
	rdb     *redis.Client
	keyring *Keyring
	store   *Store
}

func setupStore(t *testing.T) *storeBundle {
	t.Helper()
	mr, rdb := testRedis(t)
	ring := testKeyring(t, "k1")
	store, err := NewStore(rdb, &StoreConfig{Keyring: ring})
	require.NoError(t, err)
	store.now = func() time.Time { return time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC) }
	return &storeBundle{ctx: t.Context(), mr: mr, rdb: rdb, keyring: ring, store: store}
}

func TestNewStore(t *testing.T) {
	t.Parallel()

	_, rdb := testRedis(t)
	ring := testKeyring(t, "k1")

	_, err := NewStore(nil, &StoreConfig{Keyring: ring})
	require.EqualError(t, err, "redis client is nil: NewStore needs one")

	_, err = NewStore(rdb, nil)
	require.EqualError(t, err, "StoreConfig is nil: NewStore needs at least a Keyring")

	_, err = NewStore(rdb, &StoreConfig{})
	require.ErrorContains(t, err, "StoreConfig.Keyring is required")

	// No brace reaches a key: it would move the {tenant} hash tag that keeps
	// a tenant's keys in one cluster slot (internal/rediskeys tests the slots).
	s, err := NewStore(rdb, &StoreConfig{Keyring: ring})
	require.NoError(t, err)
	var fe *FieldError
	_, err = s.Put(t.Context(), "a{b}", "gh", "github", map[string]string{"token": "t"})
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "tenant", fe.Field)
	_, err = s.Put(t.Context(), "acme", "g{h}", "github", map[string]string{"token": "t"})
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "ref", fe.Field)
}

func TestStore(t *testing.T) {
	t.Parallel()

	t.Run("PutGetListDelete", func(t *testing.T) {
		t.Parallel()
		b := setupStore(t)

		cred, err := b.store.Put(b.ctx, "acme", "gh", "github", map[string]string{
			"token":  "ghp_literal_secret",
			"backup": "env:GITHUB_TOKEN",
			"cert":   "file:/run/secrets/gh",
		})
		require.NoError(t, err)
		require.Equal(t, "gh", cred.Ref)
		require.Equal(t, "acme", cred.Tenant)
		require.Equal(t, "github", cred.Integration)
		require.Equal(t, []string{"backup", "cert", "token"}, cred.FieldNames())
		require.Equal(t, time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), cred.UpdatedAt)
		require.Equal(t, Value{Kind: KindEnv, Ref: "GITHUB_TOKEN"}, cred.Fields["backup"])
		require.Equal(t, Value{Kind: KindFile, Ref: "/run/secrets/gh"}, cred.Fields["cert"])
		require.Equal(t, KindLiteral, cred.Fields["token"].Kind)

		got, err := b.store.Get(b.ctx, "acme", "gh")
		require.NoError(t, err)
		require.Equal(t, cred, got)

		// The literal opens for this credential.
		secret, err := got.Fields["token"].Resolve(b.keyring, fieldAAD("acme", "gh", "token"), nil)
		require.NoError(t, err)
		require.Equal(t, "ghp_literal_secret", secret)

		// Redis holds it sealed, under the documented layout.
		raw, err := b.mr.Get("callq:{acme}:cred:gh")
		require.NoError(t, err)
		require.NotContains(t, raw, "ghp_literal_secret")
		require.True(t, json.Valid([]byte(raw)))
		require.NotContains(t, redisDump(t, b.mr), "ghp_literal_secret")
		members, err := b.mr.SMembers("callq:{acme}:creds")
		require.NoError(t, err)
		require.Equal(t, []string{"gh"}, members)

		_, err = b.store.Put(b.ctx, "acme", "dd", "datadog", map[string]string{"api_key": "dd-secret-1"})
		require.NoError(t, err)
		_, err = b.store.Put(b.ctx, "other", "aa", "github", map[string]string{"token": "t-other-1"})
		require.NoError(t, err)

		list, err := b.store.List(b.ctx, "acme")
		require.NoError(t, err)
		require.Len(t, list, 2)
		require.Equal(t, "dd", list[0].Ref)
		require.Equal(t, "gh", list[1].Ref)

		require.NoError(t, b.store.Delete(b.ctx, "acme", "gh"))
		_, err = b.store.Get(b.ctx, "acme", "gh")
		require.ErrorIs(t, err, ErrCredentialNotFound)
		require.ErrorIs(t, b.store.Delete(b.ctx, "acme", "gh"), ErrCredentialNotFound)
		require.False(t, b.mr.Exists("callq:{acme}:cred:gh"))

		list, err = b.store.List(b.ctx, "acme")
		require.NoError(t, err)
		require.Len(t, list, 1)
		require.Equal(t, "dd", list[0].Ref)
	})

	t.Run("PutReplaces", func(t *testing.T) {
		t.Parallel()
		b := setupStore(t)
		_, err := b.store.Put(b.ctx, "acme", "gh", "github", map[string]string{"token": "first-token", "extra": "x-extra"})
		require.NoError(t, err)
		_, err = b.store.Put(b.ctx, "acme", "gh", "github", map[string]string{"token": "second-token"})
		require.NoError(t, err)

		got, err := b.store.Get(b.ctx, "acme", "gh")
		require.NoError(t, err)
		secrets, err := got.Resolve(b.keyring, nil)
		require.NoError(t, err)
		require.Equal(t, Secrets{"token": "second-token"}, secrets)

		list, err := b.store.List(b.ctx, "acme")
		require.NoError(t, err)
		require.Len(t, list, 1)
	})

	t.Run("TenantsAreSeparate", func(t *testing.T) {
		t.Parallel()
		b := setupStore(t)
		_, err := b.store.Put(b.ctx, "acme", "gh", "github", map[string]string{"token": "acme-token"})
		require.NoError(t, err)

		_, err = b.store.Get(b.ctx, "other", "gh")
		require.ErrorIs(t, err, ErrCredentialNotFound)
		require.EqualError(t, err, `credential not found: tenant "other" has no credential "gh"`)
		require.ErrorIs(t, b.store.Delete(b.ctx, "other", "gh"), ErrCredentialNotFound)
		list, err := b.store.List(b.ctx, "other")
		require.NoError(t, err)
		require.Empty(t, list)

		// A blob copied under another tenant's key does not open there.
		raw, err := b.mr.Get("callq:{acme}:cred:gh")
		require.NoError(t, err)
		moved := strings.ReplaceAll(raw, `"tenant":"acme"`, `"tenant":"other"`)
		require.NoError(t, b.mr.Set("callq:{other}:cred:gh", moved))
		got, err := b.store.Get(b.ctx, "other", "gh")
		require.NoError(t, err)
		_, err = got.Resolve(b.keyring, nil)
		require.ErrorIs(t, err, ErrDecrypt)
	})

	t.Run("CorruptValue", func(t *testing.T) {
		t.Parallel()
		b := setupStore(t)
		require.NoError(t, b.mr.Set("callq:{acme}:cred:gh", "{not json"))
		_, err := b.store.Get(b.ctx, "acme", "gh")
		require.ErrorContains(t, err, `credential "gh" of tenant "acme" is corrupt in Redis`)

		require.NoError(t, b.mr.Set("callq:{acme}:cred:gh", `{"ref":"other","tenant":"acme"}`))
		_, err = b.store.Get(b.ctx, "acme", "gh")
		require.ErrorContains(t, err, `it names tenant "acme" and ref "other"`)
	})

	t.Run("ListSkipsDanglingRef", func(t *testing.T) {
		t.Parallel()
		b := setupStore(t)
		_, err := b.store.Put(b.ctx, "acme", "gh", "github", map[string]string{"token": "t0ken"})
		require.NoError(t, err)
		_, err = b.mr.SAdd("callq:{acme}:creds", "ghost")
		require.NoError(t, err)
		list, err := b.store.List(b.ctx, "acme")
		require.NoError(t, err)
		require.Len(t, list, 1)
	})
}

func TestStorePutValidation(t *testing.T) {
	t.Parallel()

	b := setupStore(t)
	manyFields := make(map[string]string, MaxFields+1)
	for i := range MaxFields + 1 {
		manyFields["f"+strings.Repeat("x", i)] = "v"
	}

	cases := []struct {
		name        string
		tenant, ref string
		integration string
		fields      map[string]string
		field       string
		want        string
	}{
		{"BadTenant", "Acme", "gh", "github", map[string]string{"token": "t"}, "tenant", `tenant "Acme" is not valid`},
		{"EmptyTenant", "", "gh", "github", map[string]string{"token": "t"}, "tenant", "tenant is required"},
		{"EmptyRef", "acme", "", "github", map[string]string{"token": "t"}, "ref", `credential ref "" is not valid`},
		{"RefWithSlash", "acme", "a/b", "github", map[string]string{"token": "t"}, "ref", `credential ref "a/b" is not valid`},
		{"RefWithBrace", "acme", "a}", "github", map[string]string{"token": "t"}, "ref", "is not valid"},
		{"RefTooLong", "acme", strings.Repeat("r", 129), "github", map[string]string{"token": "t"}, "ref", "is not valid"},
		{"NoIntegration", "acme", "gh", "", map[string]string{"token": "t"}, "integration", "integration is required"},
		{"IntegrationWithSpace", "acme", "gh", "git hub", map[string]string{"token": "t"}, "integration", "not a valid integration name"},
		{"NoFields", "acme", "gh", "github", nil, "fields", "at least one field"},
		{"TooManyFields", "acme", "gh", "github", manyFields, "fields", "at most 32 fields, this one has 33"},
		{"BadFieldName", "acme", "gh", "github", map[string]string{"to ken": "t"}, "fields", `field name "to ken" is not valid`},
		{"LongFieldName", "acme", "gh", "github", map[string]string{strings.Repeat("f", 65): "t"}, "fields", "is not valid"},
		{"ValueTooLarge", "acme", "gh", "github", map[string]string{"token": strings.Repeat("s", MaxFieldValueBytes+1)}, "fields.token", "value is 16385 bytes, at most 16384 are allowed"},
		{"EmptyValue", "acme", "gh", "github", map[string]string{"token": ""}, "fields.token", "value is empty"},
		{"BadEnv", "acme", "gh", "github", map[string]string{"token": "env:9X"}, "fields.token", `env var name "9X" is not valid`},
		{"RelativeFile", "acme", "gh", "github", map[string]string{"token": "file:x"}, "fields.token", `file path "x" is not absolute`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := b.store.Put(b.ctx, tc.tenant, tc.ref, tc.integration, tc.fields)
			var fe *FieldError
			require.ErrorAs(t, err, &fe)
			require.Equal(t, tc.field, fe.Field)
			require.ErrorContains(t, err, tc.want)
			require.True(t, strings.HasPrefix(err.Error(), tc.field+": "), err.Error())
		})
	}

	// A value of exactly the limit is fine.
	_, err := b.store.Put(b.ctx, "acme", "big", "github", map[string]string{"token": strings.Repeat("s", MaxFieldValueBytes)})
	require.NoError(t, err)

	// Get, List and Delete validate too, rather than build odd keys.
	_, err = b.store.Get(b.ctx, "acme", "a}b")
	require.ErrorAs(t, err, new(*FieldError))
	_, err = b.store.List(b.ctx, "ACME")
	require.ErrorAs(t, err, new(*FieldError))
	require.ErrorAs(t, b.store.Delete(b.ctx, "acme}", "gh"), new(*FieldError))
}
