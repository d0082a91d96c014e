package producer

import "time"

// SetSchedulerClock makes s fire by now instead of the wall clock. Call it
// before s runs.
func SetSchedulerClock(s *Scheduler, now func() time.Time) { s.now = now }
