package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/redistest"
)

// The README's key rotation procedure: a new key first in CALLQ_SECRET_KEY,
// `callq creds reseal`, then the old key removed.
func TestCredsResealRotation(t *testing.T) {
	t.Parallel()
	bin := callqBinary(t)
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()

	oldKey, _ := auth.GenerateKey()
	newKey, _ := auth.GenerateKey()
	oldRing, err := auth.ParseKeyring(oldKey) // a bare key, as most start
	require.NoError(t, err)
	store, err := auth.NewStore(rdb, &auth.StoreConfig{Keyring: oldRing})
	require.NoError(t, err)
	_, err = store.Put(ctx, "acme", "gh", "github", map[string]string{"token": "ghp_rotate_me"})
	require.NoError(t, err)

	reseal := func(secretKey string) ([]byte, error) {
		cmd := exec.Command(bin, "creds", "reseal")
		cmd.Env = childEnv("REDIS_URL="+srv.URL, "CALLQ_SECRET_KEY="+secretKey)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Logf("callq creds reseal: %s", stderr.String())
		}
		return out, err
	}
	out, err := reseal("k2:" + newKey + ",default:" + oldKey)
	require.NoError(t, err)
	var ans struct {
		Primary  string           `json:"primary_key"`
		Resealed auth.ResealStats `json:"resealed"`
	}
	require.NoError(t, json.Unmarshal(out, &ans), "%s", out)
	require.Equal(t, "k2", ans.Primary)
	require.Equal(t, 1, ans.Resealed.Fields)
	require.NotContains(t, string(out), "ghp_rotate_me")

	newRing, err := auth.ParseKeyring("k2:" + newKey)
	require.NoError(t, err)
	cred, err := store.Get(ctx, "acme", "gh")
	require.NoError(t, err)
	secrets, err := cred.Resolve(newRing, nil)
	require.NoError(t, err, "after the reseal the old key can leave the ring")
	require.Equal(t, "ghp_rotate_me", secrets["token"])

	// With a key missing from the ring, reseal says which fields it cannot read.
	_, err = store.Put(ctx, "acme", "lost", "github", map[string]string{"token": "ghp_lost"})
	require.NoError(t, err) // sealed under the old key, which is then dropped
	out, err = reseal("k2:" + newKey)
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	require.Equal(t, 1, exit.ExitCode(), "a field reseal cannot open is an error")
	require.Contains(t, string(out), "acme/lost.token")
}
