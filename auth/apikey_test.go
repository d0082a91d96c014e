package auth

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/stretchr/testify/require"
)

type keyStoreBundle struct {
	ctx   context.Context
	mr    *miniredis.Miniredis
	store *KeyStore
}

func setupKeyStore(t *testing.T) *keyStoreBundle {
	t.Helper()
	mr, rdb := testRedis(t)
	store := NewKeyStore(rdb)
	store.now = func() time.Time { return time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC) }
	return &keyStoreBundle{ctx: t.Context(), mr: mr, store: store}
}

func TestKeyStore(t *testing.T) {
	t.Parallel()

	t.Run("CreateAuthenticateListRevoke", func(t *testing.T) {
		t.Parallel()
		b := setupKeyStore(t)

		admin, adminSecret, err := b.store.Create(b.ctx, "acme", RoleAdmin)
		require.NoError(t, err)
		require.Regexp(t, regexp.MustCompile(`^cq_[A-Za-z0-9_-]{43}$`), adminSecret)
		require.Regexp(t, regexp.MustCompile(`^key_[0-9a-f]{12}$`), admin.ID)
		require.Equal(t, "acme", admin.Tenant)
		require.Equal(t, RoleAdmin, admin.Role)
		require.Equal(t, time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), admin.CreatedAt)
		require.True(t, strings.HasPrefix(hashSecret(adminSecret), strings.TrimPrefix(admin.ID, "key_")))

		producer, producerSecret, err := b.store.Create(b.ctx, "acme", RoleProducer)
		require.NoError(t, err)
		other, otherSecret, err := b.store.Create(b.ctx, "beta", RoleProducer)
		require.NoError(t, err)
		require.NotEqual(t, adminSecret, producerSecret)

		got, err := b.store.Authenticate(b.ctx, adminSecret)
		require.NoError(t, err)
		require.Equal(t, admin, got)
		got, err = b.store.Authenticate(b.ctx, otherSecret)
		require.NoError(t, err)
		require.Equal(t, other, got)

		// Redis holds no secret: not in any key, field or value.
		dump := redisDump(t, b.mr)
		for _, secret := range []string{adminSecret, producerSecret, otherSecret} {
			require.NotContains(t, dump, secret)
			require.NotContains(t, dump, strings.TrimPrefix(secret, "cq_"))
		}
		require.Contains(t, dump, "callq:apikey:"+hashSecret(adminSecret))

		list, err := b.store.List(b.ctx)
		require.NoError(t, err)
		require.Len(t, list, 3)
		require.Equal(t, "acme", list[0].Tenant)
		require.Equal(t, "acme", list[1].Tenant)
		require.Less(t, list[0].ID, list[1].ID)
		require.Equal(t, other, list[2])

		found, err := b.store.Lookup(b.ctx, admin.ID)
		require.NoError(t, err)
		require.Equal(t, admin, found)
		require.NoError(t, b.store.Revoke(b.ctx, admin.ID))
		_, err = b.store.Authenticate(b.ctx, adminSecret)
		require.ErrorIs(t, err, ErrInvalidAPIKey)
		_, err = b.store.Lookup(b.ctx, admin.ID)
		require.ErrorIs(t, err, ErrAPIKeyNotFound)
		err = b.store.Revoke(b.ctx, admin.ID)
		require.ErrorIs(t, err, ErrAPIKeyNotFound)
		require.ErrorContains(t, err, admin.ID)

		list, err = b.store.List(b.ctx)
		require.NoError(t, err)
		require.Equal(t, []*APIKey{producer, other}, list)
	})

	t.Run("AuthenticateInvalid", func(t *testing.T) {
		t.Parallel()
		b := setupKeyStore(t)
		for _, secret := range []string{"", "cq_unknown", "Bearer x"} {
			key, err := b.store.Authenticate(b.ctx, secret)
			require.Nil(t, key)
			require.ErrorIs(t, err, ErrInvalidAPIKey)
			require.EqualError(t, err, "API key is not valid")
		}
	})

	t.Run("CreateWithSecret", func(t *testing.T) {
		t.Parallel()
		b := setupKeyStore(t)
		const secret = "dev-key-0123456789"

		key, err := b.store.CreateWithSecret(b.ctx, "dev", RoleAdmin, secret)
		require.NoError(t, err)
		require.Equal(t, "dev", key.Tenant)

		// Idempotent: same secret, tenant and role.
		b.store.now = func() time.Time { return time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC) }
		again, err := b.store.CreateWithSecret(b.ctx, "dev", RoleAdmin, secret)
		require.NoError(t, err)
		require.Equal(t, key, again)

		got, err := b.store.Authenticate(b.ctx, secret)
		require.NoError(t, err)
		require.Equal(t, key, got)

		_, err = b.store.CreateWithSecret(b.ctx, "dev", RoleProducer, secret)
		require.ErrorContains(t, err, "already registered as "+key.ID+" for another tenant or role")
		_, err = b.store.CreateWithSecret(b.ctx, "other", RoleAdmin, secret)
		require.ErrorContains(t, err, "already registered")

		_, err = b.store.CreateWithSecret(b.ctx, "dev", RoleAdmin, "short-secret")
		require.EqualError(t, err, "API key secret is 12 characters, at least 16 are required")

		list, err := b.store.List(b.ctx)
		require.NoError(t, err)
		require.Equal(t, []*APIKey{key}, list)
		require.NotContains(t, redisDump(t, b.mr), secret)
	})

	t.Run("Validation", func(t *testing.T) {
		t.Parallel()
		b := setupKeyStore(t)

		_, _, err := b.store.Create(b.ctx, "Acme", RoleProducer)
		var fe *FieldError
		require.ErrorAs(t, err, &fe)
		require.Equal(t, "tenant", fe.Field)

		_, _, err = b.store.Create(b.ctx, "acme", "root")
		require.ErrorAs(t, err, &fe)
		require.Equal(t, "role", fe.Field)
		require.ErrorContains(t, err, `role "root" is not valid: want producer or admin`)

		_, err = b.store.CreateWithSecret(b.ctx, "", RoleAdmin, "dev-key-0123456789")
		require.ErrorContains(t, err, "tenant is required")

		require.Empty(t, b.mr.Keys())
	})

	t.Run("ListEmptyAndDangling", func(t *testing.T) {
		t.Parallel()
		b := setupKeyStore(t)
		list, err := b.store.List(b.ctx)
		require.NoError(t, err)
		require.Empty(t, list)

		// An index entry whose key was never written is skipped, and can
		// be revoked.
		b.mr.HSet("callq:apikeys", "key_000000000000", strings.Repeat("0", 64))
		list, err = b.store.List(b.ctx)
		require.NoError(t, err)
		require.Empty(t, list)
		require.NoError(t, b.store.Revoke(b.ctx, "key_000000000000"))
		require.Empty(t, b.mr.Keys())
	})

	t.Run("Layout", func(t *testing.T) {
		t.Parallel()
		mr, rdb := testRedis(t)
		store := NewKeyStore(rdb)
		key, secret, err := store.Create(t.Context(), "acme", RoleProducer)
		require.NoError(t, err)
		hash := hashSecret(secret)
		require.Equal(t, hash, mr.HGet("callq:apikeys", key.ID))
		require.ElementsMatch(t, []string{"callq:apikeys", "callq:apikey:" + hash}, mr.Keys())
	})
}

func TestParseRole(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"producer", "admin"} {
		r, err := ParseRole(s)
		require.NoError(t, err)
		require.Equal(t, Role(s), r)
	}
	for _, s := range []string{"", "Admin", "root"} {
		_, err := ParseRole(s)
		require.ErrorContains(t, err, "want producer or admin")
	}
}

func TestValidateTenant(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"a", "0", "acme", "acme-eu_1", strings.Repeat("a", 63)} {
		require.NoError(t, ValidateTenant(ok), ok)
	}
	for _, bad := range []string{"", "Acme", "-acme", "_a", "a.b", "a b", "a{b}", "a:b", strings.Repeat("a", 64)} {
		require.Error(t, ValidateTenant(bad), bad)
	}
	require.EqualError(t, ValidateTenant("A"), `tenant "A" is not valid: want a lowercase letter or digit, then up to 62 of a-z 0-9 _ -`)
}
