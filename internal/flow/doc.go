// Package flow keeps the fleet-wide flow control state of callq's
// integrations in Redis, shared by every worker: concurrency slots (Slots),
// and the circuit breakers (Circuits). It also holds the fleet-wide Lease
// under which one process at a time runs the reconciler or the scheduler.
//
// Its keys are built in internal/rediskeys, tagged {<tenant>}: each script
// here touches the keys of one tenant only, so one Redis Cluster slot (a
// Lease touches its one key).
// Time is Redis's (TIME, in the scripts), not the workers': leases end at
// the same instant for every worker, whatever their clocks say.
package flow
