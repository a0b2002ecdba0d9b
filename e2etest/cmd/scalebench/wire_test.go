package main

import (
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/heraldlb/herald/e2etest/benchkit"
	"github.com/heraldlb/herald/e2etest/herald"
	"github.com/heraldlb/herald/e2etest/lab"
)

func TestDoublesCountsProbesAnsweredByTwoMACsOnly(t *testing.T) {
	ip := netip.MustParseAddr("198.51.100.64")
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	w := &wire{
		probes: map[netip.Addr][]time.Time{ip: {at(0), at(50), at(100)}},
		answers: map[netip.Addr][]lab.L2Answer{ip: {
			{IP: ip, MAC: "a", At: at(1)},
			{IP: ip, MAC: "a", At: at(2)},                     // the same MAC twice: one owner
			{IP: ip, MAC: "b", At: at(40), Unsolicited: true}, // an announcement answers no probe
			{IP: ip, MAC: "a", At: at(51)},
			{IP: ip, MAC: "b", At: at(52)}, // second probe: two owners
			{IP: ip, MAC: "b", At: at(101)},
		}},
	}
	probes, ds := w.doubles()
	if probes != 3 || len(ds) != 1 || !ds[0].at.Equal(at(50)) || len(ds[0].macs) != 2 {
		t.Fatalf("doubles = %d probes, %+v; want 3 probes and one double at the second probe", probes, ds)
	}
}

func TestMetricsGetSumsMatchingSamples(t *testing.T) {
	m := herald.Metrics{
		`herald_speaker_sync_duration_seconds_count{scope="full"}`:    3,
		`herald_speaker_sync_duration_seconds_count{scope="partial"}`: 40,
		`herald_speaker_layer2_owned_addresses`:                       7,
	}
	if v, ok := m.Get(mSyncDuration+"_count", `scope="partial"`); !ok || v != 40 {
		t.Errorf("partial count = %v %v, want 40", v, ok)
	}
	if v, ok := m.Get(mOwned); !ok || v != 7 {
		t.Errorf("owned = %v %v, want 7", v, ok)
	}
	if _, ok := m.Get(mSyncs); ok {
		t.Errorf("a missing metric was found")
	}
}

func TestOwnProcessCPUAndRSSAreRead(t *testing.T) {
	cpu, err := benchkit.ProcessCPU(os.Getpid())
	if err != nil || cpu < 0 {
		t.Fatalf("benchkit.ProcessCPU = %v, %v", cpu, err)
	}
	rss, err := herald.RSSMiB(os.Getpid())
	if err != nil || rss < 1 || rss > 4096 {
		t.Fatalf("rssMiB = %v, %v", rss, err)
	}
}
