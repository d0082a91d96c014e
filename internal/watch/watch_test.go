package watch_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/internal/redistest"
	"github.com/callq/callq/internal/watch"
)

// Channel reports the subscription, each message, a break and the
// subscription again, and the end, in that order.
func TestChannelReportsMessagesBreaksAndTheEnd(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	events := make(chan string, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		watch.Channel(ctx, srv.Client(t), "test:channel",
			func(payload string) { events <- "message " + payload },
			func(live bool) {
				if live {
					events <- "live"
				} else {
					events <- "down"
				}
			})
	}()
	next := func() string {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-time.After(10 * time.Second):
			t.Fatal("no event within 10s")
			return ""
		}
	}
	require.Equal(t, "live", next())
	require.NoError(t, rdb.Publish(ctx, "test:channel", "one").Err())
	require.Equal(t, "message one", next())

	require.NoError(t, rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err())
	require.Equal(t, "down", next())
	for e := next(); e != "live"; e = next() { // a reconnect may fail first
		require.Equal(t, "down", e, "subscribed again after the break")
	}
	require.NoError(t, rdb.Publish(ctx, "test:channel", "two").Err())
	require.Equal(t, "message two", next())

	cancel()
	<-done
	require.Equal(t, "down", next(), "the end is reported as a break")
}
