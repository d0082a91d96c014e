package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestProcessRedisTimeoutsBoundAPILatency pauses Redis (CLIENT PAUSE) under
// two `callq api` processes: one whose REDIS_URL sets read_timeout and
// max_retries answers 503 unavailable while Redis is paused; the other, on
// go-redis's defaults, holds the same request until the pause ends and then
// answers it (404), which shows the parameters made the difference.
func TestProcessRedisTimeoutsBoundAPILatency(t *testing.T) {
	t.Parallel()
	d := deploy(t, 0)
	var fastURL string
	d.procs.startListening(func() (*child, []string) {
		addr := freeAddr(t)
		fastURL = "http://" + addr
		env := append(slices.Clone(d.env), "CALLQ_API_ADDR="+addr, "REDIS_URL="+d.redis.URL+"?read_timeout=300ms&max_retries=-1")
		return d.procs.start("api-fast", "", env, "api"), []string{fastURL + "/healthz", fastURL + "/readyz"}
	})

	get := func(base string) (int, string) {
		req, err := http.NewRequest(http.MethodGet, base+"/v1/calls/no-such-call", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+d.apiKey)
		resp, err := d.http.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		return resp.StatusCode, e.Error.Code
	}
	for _, base := range []string{d.apiURL, fastURL} {
		code, _ := get(base) // warms each API's connection pool
		require.Equal(t, http.StatusNotFound, code, base)
	}

	const pause = 6 * time.Second // well under the defaults' ~10s (two tries of 5s)
	rdb := d.redis.Client(t)
	require.NoError(t, rdb.Do(context.Background(), "CLIENT", "PAUSE", pause.Milliseconds(), "ALL").Err())
	paused := time.Now()

	type answer struct {
		code int
		err  string
		took time.Duration
	}
	var wg sync.WaitGroup
	answers := make([]answer, 2)
	for i, base := range []string{fastURL, d.apiURL} {
		wg.Go(func() {
			code, errCode := get(base)
			answers[i] = answer{code, errCode, time.Since(paused)}
		})
	}
	wg.Wait()
	t.Logf("with read_timeout=300ms&max_retries=-1: %d %q after %s; with the defaults: %d after %s (pause %s)",
		answers[0].code, answers[0].err, answers[0].took.Round(time.Millisecond), answers[1].code, answers[1].took.Round(time.Millisecond), pause)
	require.Equal(t, http.StatusServiceUnavailable, answers[0].code, "the API with Redis timeouts in REDIS_URL")
	require.Equal(t, "unavailable", answers[0].err)
	require.Equal(t, http.StatusNotFound, answers[1].code, "the API on go-redis's defaults outlasts the pause")

	// A read_timeout below ?wait= does not cut long polls short: waiting is
	// pub/sub, not a blocking read.
	d.apiURL = fastURL
	d.enqueue("timeouts-wait")
	var rec struct{ Status string }
	require.Equal(t, http.StatusOK, d.do(http.MethodGet, "/v1/calls/timeouts-wait?wait=1500ms", nil, &rec))
	require.Equal(t, "queued", rec.Status, "no worker runs in this test")
}
