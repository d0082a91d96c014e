package rediskeys

// Schedules is the hash of tenant's schedules: schedule id → the
// schedule's JSON (producer's schedules). It shares the {tenant} tag with
// ScheduleState, so that the scripts that change a schedule and its state
// touch one slot.
func Schedules(tenant string) string {
	return tenantTag(tenant) + "sched"
}

// ScheduleState is the hash of what the scheduler did with tenant's
// schedules: "<id>" → the Unix second of the schedule's last firing,
// "<id>:error" → why its last firing did not enqueue a call. Schedule ids
// hold no ":", so the two never collide.
func ScheduleState(tenant string) string {
	return tenantTag(tenant) + "sched:state"
}

// ScheduleTenants is the set of tenants that have had schedules: what the
// fleet's scheduler walks when it reads every schedule.
const ScheduleTenants = Prefix + ":sched:tenants"

// ScheduleVersion is a counter every change of a schedule increments, after
// the change: the scheduler reads the schedules again when it moves.
const ScheduleVersion = Prefix + ":sched:version"

// SchedulerLease is the lease of the fleet's one running scheduler.
const SchedulerLease = Prefix + ":sched:lease"
