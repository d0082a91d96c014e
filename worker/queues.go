package worker

import (
	"cmp"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/callq/callq/tasks"
)

// DefaultQueues returns the queue priorities used unless CALLQ_QUEUES says
// otherwise, in a map of the caller's own.
func DefaultQueues() map[string]int {
	return map[string]int{"critical": 6, tasks.DefaultQueue: 3, "low": 1}
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
