package flow_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/flow"
	"github.com/callq/callq/internal/redistest"
)

// One holder at a time; a lapsed lease goes to another, and its first
// holder's Keep says so; Release hands it over at once, and only its own.
func TestLease(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client(t)
	ctx := t.Context()
	a := flow.NewLease(rdb, "callq:test:lease", "a", 300*time.Millisecond, "the test's lease")
	b := flow.NewLease(rdb, "callq:test:lease", "b", 300*time.Millisecond, "the test's lease")

	ok, err := a.Hold(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = b.Hold(ctx)
	require.NoError(t, err)
	require.False(t, ok, "held by a")
	require.NoError(t, a.Keep(ctx), "a is within its lease")

	// a stops renewing: the key lapses and b takes it.
	require.Eventually(t, func() bool {
		ok, err := b.Hold(ctx)
		require.NoError(t, err)
		return ok
	}, 10*time.Second, 20*time.Millisecond)
	require.ErrorIs(t, a.Keep(ctx), flow.ErrLeaseLapsed)
	require.False(t, a.Held())
	require.NoError(t, a.Release(ctx), "a holds nothing to release")
	token, err := rdb.Get(ctx, "callq:test:lease").Result()
	require.NoError(t, err)
	require.Equal(t, "b", token, "a's release left b's lease alone")

	require.NoError(t, b.Release(ctx))
	ok, err = a.Hold(ctx)
	require.NoError(t, err)
	require.True(t, ok, "released: taken at once")
}
