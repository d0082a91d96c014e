package worker

import "time"

// SetReconcilerClock makes r's age cutoff ("created more than an interval
// ago") read now instead of the wall clock, so tests need not wait for
// calls to age.
func SetReconcilerClock(r *Reconciler, now func() time.Time) { r.now = now }
