package tasks_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/callq/callq/tasks"
)

func TestDurationJSON(t *testing.T) {
	t.Parallel()
	good := []struct {
		in   string
		want time.Duration
	}{
		{`"10s"`, 10 * time.Second},
		{`"1.5s"`, 1500 * time.Millisecond},
		{`"2m"`, 2 * time.Minute},
		{`"1h30m"`, 90 * time.Minute},
		{`"250ms"`, 250 * time.Millisecond},
		{`"0s"`, 0},
		{`10`, 10 * time.Second},
		{`1.5`, 1500 * time.Millisecond},
		{`0.001`, time.Millisecond},
		{`0`, 0},
		{`-1`, -time.Second},
	}
	for _, tc := range good {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			var d tasks.Duration
			require.NoError(t, json.Unmarshal([]byte(tc.in), &d))
			require.Equal(t, tc.want, d.D())
		})
	}
	bad := []string{`"10"`, `"ten seconds"`, `""`, `"10x"`, `true`, `[10]`, `{"s": 10}`}
	for _, in := range bad {
		t.Run("bad "+in, func(t *testing.T) {
			t.Parallel()
			var d tasks.Duration
			require.Error(t, json.Unmarshal([]byte(in), &d))
		})
	}
	t.Run("bad in a call", func(t *testing.T) {
		t.Parallel()
		var c tasks.Call
		err := json.Unmarshal([]byte(`{"timeout": "soon"}`), &c)
		require.Error(t, err)
		require.Contains(t, err.Error(), "soon")
	})
}

func TestDurationMarshal(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		10 * time.Second:        `"10s"`,
		1500 * time.Millisecond: `"1.5s"`,
		90 * time.Minute:        `"1h30m0s"`,
		0:                       `"0s"`,
	} {
		b, err := json.Marshal(tasks.Duration(d))
		require.NoError(t, err)
		require.Equal(t, want, string(b))
		var back tasks.Duration
		require.NoError(t, json.Unmarshal(b, &back))
		require.Equal(t, d, back.D())
		require.Equal(t, d.String(), tasks.Duration(d).String())
	}
}

func TestDurationYAML(t *testing.T) {
	t.Parallel()
	good := []struct {
		in   string
		want time.Duration
	}{
		{`d: 10s`, 10 * time.Second},
		{`d: "10s"`, 10 * time.Second},
		{`d: 1m30s`, 90 * time.Second},
		{`d: 10`, 10 * time.Second},
		{`d: 1.5`, 1500 * time.Millisecond},
		{`d: 0`, 0},
	}
	for _, tc := range good {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			var v struct{ D tasks.Duration }
			require.NoError(t, yaml.Unmarshal([]byte(tc.in), &v))
			require.Equal(t, tc.want, v.D.D())
		})
	}
	for _, in := range []string{`d: abc`, `d: "10"`, `d: 10x`, `d: true`} {
		t.Run("bad "+in, func(t *testing.T) {
			t.Parallel()
			var v struct{ D tasks.Duration }
			require.Error(t, yaml.Unmarshal([]byte(in), &v))
		})
	}
	t.Run("numbers in the catalog are seconds", func(t *testing.T) {
		t.Parallel()
		cat, err := tasks.ParseCatalog([]byte("integrations:\n  a:\n    base_url: https://a.example\n    timeout: 2\n    max_timeout: 7.5\n    retry: {initial_interval: 0.5, max_elapsed: 10m}\n"))
		require.NoError(t, err)
		in := integration(t, cat, "a")
		require.Equal(t, 2*time.Second, in.Timeout.D())
		require.Equal(t, 7500*time.Millisecond, in.MaxTimeout.D())
		require.Equal(t, 500*time.Millisecond, in.Retry.InitialInterval.D())
		require.Equal(t, 10*time.Minute, in.Retry.MaxElapsed.D())
	})
}
