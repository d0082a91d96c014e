package tasks_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/tasks"
)

// A claim under an ID another call holds is given up, so that the next
// replay is claimed under its own fresh ID rather than taking that one up.
func TestReleaseReplayLetsTheNextClaimUseItsOwnID(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	rec := newRecord("acme", "orig")
	require.NoError(t, e.store.Create(e.ctx, rec, "fp", 0, []byte(`{"tenant":"acme"}`)))
	e.finish(t, rec, 500)

	claim, err := e.store.ClaimReplay(e.ctx, "acme", "orig", "taken", true, true)
	require.NoError(t, err)
	require.Equal(t, "taken", claim.ID)

	// Not released: the next claim takes it up.
	claim, err = e.store.ClaimReplay(e.ctx, "acme", "orig", "fresh-1", true, false)
	require.NoError(t, err)
	require.Equal(t, "taken", claim.ID)

	// Releasing another ID leaves the claim; releasing its own ends it.
	require.NoError(t, e.store.ReleaseReplay(e.ctx, "acme", "orig", "other"))
	claim, err = e.store.ClaimReplay(e.ctx, "acme", "orig", "fresh-2", true, false)
	require.NoError(t, err)
	require.Equal(t, "taken", claim.ID)
	require.NoError(t, e.store.ReleaseReplay(e.ctx, "acme", "orig", "taken"))
	claim, err = e.store.ClaimReplay(e.ctx, "acme", "orig", "fresh-3", true, false)
	require.NoError(t, err)
	require.Equal(t, "fresh-3", claim.ID)

	// Releasing the claim of a record that is gone is a no-op.
	require.NoError(t, e.store.ReleaseReplay(e.ctx, "acme", "gone", "x"))
	_, err = e.store.ClaimReplay(e.ctx, "acme", "gone", "x", true, false)
	require.ErrorIs(t, err, tasks.ErrNotFound)
}

// A record created without a payload (Create's payload nil) has none to
// replay, like one written before callq kept payloads.
func TestClaimReplayOfARecordCreatedWithoutPayload(t *testing.T) {
	parallelRedis(t)
	e := setup(t)
	rec := newRecord("acme", "bare")
	require.NoError(t, e.store.Create(e.ctx, rec, "fp", 0, nil))
	e.finish(t, rec, 200)
	_, err := e.store.ClaimReplay(e.ctx, "acme", "bare", "new", true, false)
	require.ErrorIs(t, err, tasks.ErrNoPayload)
}
