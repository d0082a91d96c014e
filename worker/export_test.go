package worker

import (
	"context"
	"runtime"
	"time"

	"github.com/redis/go-redis/v9"
)

// SetReconcilerClock makes r's age cutoff ("created more than an interval
// ago") read now instead of the wall clock, so tests need not wait for
// calls to age.
func SetReconcilerClock(r *Reconciler, now func() time.Time) { r.now = now }

// CredentialsCached is how many credentials w keeps in memory (auth.Cache),
// or -1 without a cache.
func CredentialsCached(w *Worker) int {
	if w.credCache == nil {
		return -1
	}
	return w.credCache.Len()
}

// WatchCredentials runs what Start runs for w's credential cache, until ctx
// ends, for a test that calls the handler directly; it returns once the
// cache is subscribed.
func WatchCredentials(ctx context.Context, w *Worker) {
	go w.credCache.Watch(ctx)
	for !w.credCache.Live() && ctx.Err() == nil {
		runtime.Gosched()
	}
}

// AsynqDoneSHA is the SHA-1 of asynq's Done script (asynqDoneScript).
var AsynqDoneSHA = asynqDoneSHA

// RecordScripts makes rdb count the scripts it sends, and returns how many
// EVALSHAs of a SHA had a given first key.
func RecordScripts(rdb *redis.Client) func(sha, firstKey string) int {
	rec := newSHARecorder()
	rdb.AddHook(rec)
	return rec.countOn
}
