package worker

import (
	"cmp"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/callq/callq/tasks"
)

// defaultPriorities are the priorities of tasks.DefaultQueues, in its
// order: the queues are tasks' to name, their weights the worker's.
var defaultPriorities = [...]int{6, 3, 1}

// DefaultQueues returns the queue priorities used unless CALLQ_QUEUES says
// otherwise (tasks.DefaultQueues with defaultPriorities), in a map of the
// caller's own.
func DefaultQueues() map[string]int {
	names := tasks.DefaultQueues()
	out := make(map[string]int, len(names))
	for i, n := range names {
		out[n] = defaultPriorities[i]
	}
	return out
}

// FormatQueues writes queue priorities as CALLQ_QUEUES reads them,
// "critical=6,default=3,low=1": highest priority first, then by name.
func FormatQueues(queues map[string]int) string {
	names := slices.Collect(maps.Keys(queues))
	slices.SortFunc(names, func(a, b string) int {
		return cmp.Or(cmp.Compare(queues[b], queues[a]), strings.Compare(a, b))
	})
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + "=" + strconv.Itoa(queues[n])
	}
	return strings.Join(parts, ",")
}
