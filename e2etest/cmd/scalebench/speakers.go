package main

import (
	"context"

	"github.com/heraldlb/herald/e2etest/benchkit"
	"github.com/heraldlb/herald/e2etest/herald"
	"github.com/heraldlb/herald/e2etest/lab"
)

// cpuAll is the CPU seconds of each node's speaker, by node name.
func cpuAll(h *herald.Herald, nodes []lab.Node) map[string]float64 {
	out := map[string]float64{}
	for _, n := range nodes {
		if p := h.Speaker(n.Name); p != nil && p.Running() {
			if d, err := benchkit.ProcessCPU(p.PID()); err == nil {
				out[n.Name] = d.Seconds()
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
