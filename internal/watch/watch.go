package watch

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// retryWait is the pause between a broken subscription and the next
// attempt, so that a Redis that is down is not dialed in a tight loop.
const retryWait = 50 * time.Millisecond

// Channel subscribes to channel on rdb until ctx ends. It calls reset(true)
// each time the subscription is (re)established, reset(false) each time it
// breaks and when Channel returns, and message with each message's payload.
// The callbacks run on Channel's goroutine, one at a time.
func Channel(ctx context.Context, rdb redis.UniversalClient, channel string, message func(payload string), reset func(live bool)) {
	ps := rdb.Subscribe(context.WithoutCancel(ctx), channel)
	// A Receive blocked on the connection does not see ctx end; closing
	// the subscription ends it.
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer func() {
		stop()
		reset(false)
		_ = ps.Close()
	}()
	for {
		msg, err := ps.Receive(context.WithoutCancel(ctx))
		if err != nil {
			reset(false)
			if ctx.Err() != nil || errors.Is(err, redis.ErrClosed) {
				return
			}
			// go-redis reconnects and subscribes again on the next Receive.
			select {
			case <-ctx.Done():
				return
			case <-time.After(retryWait):
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription: // subscribed, at first or after a reconnect
			reset(true)
		case *redis.Message:
			message(m.Payload)
		}
	}
}
