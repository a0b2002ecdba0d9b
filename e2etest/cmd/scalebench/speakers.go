package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

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

// metrics is one scrape of a speaker's Prometheus endpoint: every sample by
// its full text key (name{labels}).
type metrics map[string]float64

func scrape(ctx context.Context, n lab.Node) (metrics, error) {
	req, _ := httpGet(ctx, "http://"+herald.SpeakerMetrics+"/metrics")
	resp, err := herald.SpeakerHTTPClient(n).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	m := metrics{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m, nil
}

// get returns the sum of name's samples whose labels contain every one of
// labels (`scope="full"`), and whether there was any.
func (m metrics) get(name string, labels ...string) (float64, bool) {
	var sum float64
	found := false
	for k, v := range m {
		base, rest, _ := strings.Cut(k, "{")
		if base != name {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(rest, l)
		}
		if ok {
			sum += v
			found = true
		}
	}
	return sum, found
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
		v, ok := m.get(mOwned)
		if !ok {
			return nil, false
		}
		out[n.Name] = int(v)
	}
	return out, true
}

func waitFor(ctx context.Context, timeout, every time.Duration, cond func() bool) error {
	for deadline := time.Now().Add(timeout); ; time.Sleep(every) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if cond() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", timeout)
		}
	}
}
