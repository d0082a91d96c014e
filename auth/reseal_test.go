package auth

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/redistest"
)

func TestResealMovesEverySecretToThePrimaryKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	oldKey, _ := GenerateKey()
	newKey, _ := GenerateKey()
	oldRing, err := ParseKeyring("k1:" + oldKey)
	require.NoError(t, err)
	oldStore, err := NewStore(rdb, &StoreConfig{Keyring: oldRing})
	require.NoError(t, err)
	userFile := filepath.Join(t.TempDir(), "user")
	require.NoError(t, os.WriteFile(userFile, []byte("octo\n"), 0o600))
	_, err = oldStore.Put(ctx, "acme", "gh", "github", map[string]string{"token": "ghp_reseal_secret", "user": "file:" + userFile})
	require.NoError(t, err)
	_, err = oldStore.Put(ctx, "beta", "dd", "datadog", map[string]string{"api_key": "dd_reseal_1", "app_key": "dd_reseal_2"})
	require.NoError(t, err)
	require.NoError(t, rdb.Set(ctx, "callq:{acme}:oauthcc:int:crm", "v1.k1.xyz", 0).Err())

	// Rotation: the new key first, the old one still in the ring.
	ring, err := ParseKeyring("k2:" + newKey + ",k1:" + oldKey)
	require.NoError(t, err)
	store, err := NewStore(rdb, &StoreConfig{Keyring: ring})
	require.NoError(t, err)
	stats, err := store.Reseal(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, stats.Credentials)
	require.Equal(t, 3, stats.Fields, "literals only: file: sources hold no secret")
	require.Empty(t, stats.Unreadable)
	require.Equal(t, 1, stats.TokensDropped)

	again, err := store.Reseal(ctx)
	require.NoError(t, err)
	require.Zero(t, again.Fields, "running it again changes nothing")

	// The old key can now leave the ring.
	newOnly, err := ParseKeyring("k2:" + newKey)
	require.NoError(t, err)
	final, err := NewStore(rdb, &StoreConfig{Keyring: newOnly})
	require.NoError(t, err)
	for _, c := range []struct{ tenant, ref, field, want string }{
		{"acme", "gh", "token", "ghp_reseal_secret"},
		{"beta", "dd", "api_key", "dd_reseal_1"},
		{"beta", "dd", "app_key", "dd_reseal_2"},
	} {
		cred, err := final.Get(ctx, c.tenant, c.ref)
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(cred.Fields[c.field].Sealed, "v1.k2."))
		secrets, err := cred.Resolve(newOnly, nil)
		require.NoError(t, err)
		require.Equal(t, c.want, secrets[c.field])
	}
}

func TestResealReportsSecretsUnderALostKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	lostKey, _ := GenerateKey()
	newKey, _ := GenerateKey()
	lost, _ := ParseKeyring("gone:" + lostKey)
	oldStore, err := NewStore(rdb, &StoreConfig{Keyring: lost})
	require.NoError(t, err)
	_, err = oldStore.Put(ctx, "acme", "gh", "github", map[string]string{"token": "ghp_lost_secret"})
	require.NoError(t, err)

	ring, _ := ParseKeyring("k2:" + newKey)
	store, err := NewStore(rdb, &StoreConfig{Keyring: ring})
	require.NoError(t, err)
	stats, err := store.Reseal(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"acme/gh.token"}, stats.Unreadable)
	require.Zero(t, stats.Fields)

	cred, err := store.Get(ctx, "acme", "gh")
	require.NoError(t, err)
	_, err = cred.Resolve(ring, nil)
	require.ErrorIs(t, err, ErrUnknownKey)
	require.Contains(t, err.Error(), "gone")
	require.NotContains(t, err.Error(), "ghp_lost_secret")
}
