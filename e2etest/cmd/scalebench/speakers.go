package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/heraldlb/herald/e2etest/herald"
	"github.com/heraldlb/herald/e2etest/lab"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat:
// 100 on every Linux architecture Go runs on.
const clockTicks = 100

// cpuSeconds is a process's user+system CPU time so far.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: count fields after its ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	return (ut + st) / clockTicks, nil
}

// cpuAll is the CPU seconds of each node's speaker, by node name.
func cpuAll(h *herald.Herald, nodes []lab.Node) map[string]float64 {
	out := map[string]float64{}
	for _, n := range nodes {
		if p := h.Speaker(n.Name); p != nil && p.Running() {
			if s, err := cpuSeconds(p.PID()); err == nil {
				out[n.Name] = s
			}
		}
	}
	return out
}

// scrape reads n's speaker metrics.
func scrape(ctx context.Context, n lab.Node) (herald.Metrics, error) {
	return herald.Scrape(ctx, herald.SpeakerHTTPClient(n), "http://"+herald.SpeakerMetrics+"/metrics")
}

// Names of the speaker's own metrics (the new core's); a figure built on
// them is skipped with a message when a speaker does not have them.
const (
	mSyncDuration = "herald_speaker_sync_duration_seconds"
	mSyncs        = "herald_speaker_syncs_total"
	mOwned        = "herald_speaker_layer2_owned_addresses"
)

// ownedByMetrics sums herald_speaker_layer2_owned_addresses over nodes, per
// node; ok is false when a speaker does not export it.
func ownedByMetrics(ctx context.Context, nodes []lab.Node) (map[string]int, bool) {
	out := map[string]int{}
	for _, n := range nodes {
		m, err := scrape(ctx, n)
		if err != nil {
			return nil, false
		}
		v, ok := m.Get(mOwned)
		if !ok {
			return nil, false
		}
		out[n.Name] = int(v)
	}
	return out, true
}
