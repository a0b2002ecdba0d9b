// Package memlimit sets the Go runtime's memory knobs of Herald's processes
// from their container, the same way for the controller and the speaker.
package memlimit

import (
	"os"
	"runtime/debug"
	"strconv"
)

// EnvLimit is the variable the chart fills with the container's memory
// limit in bytes (the downward API's limits.memory).
const EnvLimit = "HERALD_MEMORY_LIMIT"

// Set halves the garbage collector's default headroom (GOGC 50, unless
// GOGC is set) and gives the runtime a soft memory limit of 90% of the
// container's limit (unless GOMEMLIMIT is set), so the collector works
// harder before the kernel kills the container. Herald's live heaps are
// small and steady (informer caches and plans); what raises their RSS is
// the garbage of informer events between collections, so collecting twice
// as often costs little CPU and keeps the RSS down. It returns the limit
// set, 0 for none.
func Set() int64 {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	limit, ok := Limit(os.Getenv)
	if !ok {
		return 0
	}
	debug.SetMemoryLimit(limit)
	return limit
}

// Limit is the soft memory limit to set from the environment: 90% of
// HERALD_MEMORY_LIMIT, unless GOMEMLIMIT is set (the runtime has read it)
// or there is no valid limit.
func Limit(getenv func(string) string) (int64, bool) {
	if getenv("GOMEMLIMIT") != "" {
		return 0, false
	}
	limit, err := strconv.ParseInt(getenv(EnvLimit), 10, 64)
	if err != nil || limit <= 0 {
		return 0, false
	}
	return limit / 10 * 9, true
}
