package main

import (
	"os/exec"
	"regexp"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// The binary the process tests run is built with coverage: a run writes its
// counters to GOCOVERDIR, and `go tool covdata percent -i=DIR` (what
// `make cover` prints, over every process of the suite) reads them.
func TestBinaryCoverage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cmd := exec.Command(callqBinary(t), "integrations", "--integrations", "../../deploy/integrations.example.yaml")
	cmd.Env = append(childEnv(), "GOCOVERDIR="+dir)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)

	out, err = exec.Command("go", "tool", "covdata", "percent", "-i="+dir).CombinedOutput()
	require.NoError(t, err, "%s", out)
	m := regexp.MustCompile(`github\.com/callq/callq/cmd/callq\s+coverage: ([0-9.]+)% of statements`).FindSubmatch(out)
	require.NotNil(t, m, "covdata percent printed:\n%s", out)
	pct, err := strconv.ParseFloat(string(m[1]), 64)
	require.NoError(t, err)
	require.Positive(t, pct, "the integrations command ran code of cmd/callq")
	require.Contains(t, string(out), "github.com/callq/callq/tasks", "coverage spans callq's packages, not only main")
}
