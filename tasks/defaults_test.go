package tasks_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/tasks"
)

// A default is handed out fresh: a caller changing its copy changes nobody
// else's.
func TestDefaultQueuesIsAFreshSlice(t *testing.T) {
	t.Parallel()
	q := tasks.DefaultQueues()
	require.Equal(t, []string{"critical", tasks.DefaultQueue, "low"}, q)
	q[0] = "changed"
	require.Equal(t, []string{"critical", tasks.DefaultQueue, "low"}, tasks.DefaultQueues())
}
