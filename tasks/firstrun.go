package tasks

// FirstRun reports whether a run of a call's task, after retried earlier
// runs (asynq's retry count), is the call's first attempt, which may
// rebuild the record from the payload instead of reading it.
//
// It states a rule the worker and the API share. A worker writes nothing
// to a call's record before the call's first attempt: the record stays as
// the producer created it until that attempt's outcome is written, which
// saves a Redis round trip per call. So:
//   - a run is the call's first when asynq has never run its task before
//     and the payload carries the record's CreatedAt (FirstRun); every way
//     a task runs again after an attempt began raises asynq's retry count:
//     the handler's error, or lease recovery;
//   - while the first attempt runs the record says queued and asynq holds
//     the task active: the call is running (CurrentStatus);
//   - a later run that finds the record still queued with no attempt in its
//     history knows the first attempt lost its worker (FirstAttemptLost).
//
// A first run that a gate holds back (a rate limit, say) writes the record
// (retrying, with a Note and no attempt) without raising the retry count,
// so the next run is a first run too: a record held so reads, to both
// rules, as a queued one (heldBeforeFirstAttempt).
//
// Later attempts mark the record running before their request.
func (p *Payload) FirstRun(retried int) bool {
	return retried == 0 && !p.CreatedAt.IsZero()
}

// CurrentStatus is the status a call is in: the record's, except that a
// record that says queued while asynq holds the call's task active is
// running (see FirstRun); its note and next attempt, of the wait that is
// over, are then cleared. So is one that says retrying with a Note: a first
// run held back before its attempt (a rate limit, say) wrote it, and the
// next first run does not mark the record before its attempt either.
// taskActive is asked only about such records.
func CurrentStatus(rec *Record, taskActive func(*Record) bool) Status {
	waiting := rec.Status == StatusQueued || heldBeforeFirstAttempt(rec)
	if waiting && taskActive(rec) {
		rec.Note, rec.NextAttemptAt = "", nil // the wait is over
		return StatusRunning
	}
	return rec.Status
}

// FirstAttemptLost reports whether rec, as a run of the call's task after
// retried earlier runs found it, shows that the call's first attempt lost
// its worker before recording an outcome (see FirstRun).
func FirstAttemptLost(rec *Record, retried int) bool {
	return retried > 0 && (rec.Status == StatusQueued || heldBeforeFirstAttempt(rec)) && len(rec.History) == 0
}

// heldBeforeFirstAttempt says rec was written by a first run a gate held
// back: retrying, with the Note saying why, and no attempt made.
func heldBeforeFirstAttempt(rec *Record) bool {
	return rec.Status == StatusRetrying && rec.Note != "" && rec.Attempts == 0 && len(rec.History) == 0
}
