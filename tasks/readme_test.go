package tasks_test

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/tasks"
)

// The README's catalog example loads as written, its concurrency cap
// included.
func TestReadmeCatalogExample(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(readme), "## Integration catalog")
	require.True(t, ok, "README.md has no catalog section")
	_, block, ok := strings.Cut(section, "```yaml\n")
	require.True(t, ok, "the catalog section has no yaml block")
	block, _, ok = strings.Cut(block, "\n```")
	require.True(t, ok)
	cat, err := tasks.ParseCatalog([]byte(block))
	require.NoError(t, err)
	github := integration(t, cat, "github")
	require.Equal(t, &tasks.Concurrency{Limit: 10, Per: tasks.ConcurrencyPerCredential}, github.Concurrency)
	require.Equal(t, 5000, github.RateLimit.Requests)
}
