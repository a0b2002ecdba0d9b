package e2etest

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/e2etest/benchkit"
	"github.com/heraldlb/herald/e2etest/chaos"
	"github.com/heraldlb/herald/e2etest/herald"
)

// TestSoak churns announced Services at 20 changes/s for HERALD_SOAK (a Go
// duration; `make soak` sets 30m) while the controller's and every
// speaker's resident memory, goroutines and open files are sampled every
// 10 s: none may grow beyond noise from the first third of the run to the
// last. Skipped unless HERALD_SOAK is set.
func TestSoak(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv("HERALD_SOAK"))
	if err != nil || d <= 0 {
		t.Skip("set HERALD_SOAK to a duration (make soak) to run the soak")
	}
	keepRunning(t)
	ns := newNamespace(t)
	l2Setup(t, ns, []string{"2001:db8:1::2:0/116"})
	var pool v1alpha1.IPAddressPool
	if err := crClient.Get(context.Background(), client.ObjectKey{Name: ns + "-lan"}, &pool); err != nil {
		t.Fatal(err)
	}
	v6 := allocationOnly // announced, but no traffic: no NodePorts needed
	const services = 500
	if err := benchkit.CreateAll(context.Background(), crClient, "Services", services, 8, testLog{t}, func(i int) []client.Object {
		return []client.Object{newLBService(ns, fmt.Sprintf("s%d", i), v6)}
	}); err != nil {
		t.Fatal(err)
	}
	ch := startChurn(ns, &pool, services, "2001:db8:1::3:0/120", 50*time.Millisecond, v6)
	type source struct {
		name, url string
		c         *http.Client
	}
	sources := []source{{"controller", "http://" + herald.ControllerMetrics + "/metrics", http.DefaultClient}}
	for _, n := range theLab.Nodes {
		sources = append(sources, source{"speaker_" + n.Name, "http://" + herald.SpeakerMetrics + "/metrics", herald.SpeakerHTTPClient(n)})
	}
	gauges := []struct {
		metric, name string
		scale        float64
	}{
		{"process_resident_memory_bytes", "rss_mib", 1 << 20},
		{"go_goroutines", "goroutines", 1},
		{"process_open_fds", "open_fds", 1},
	}
	samples := map[string][]float64{} // source_gauge -> one value per tick
	start := time.Now()
	for tick := time.NewTicker(10 * time.Second); time.Since(start) < d; <-tick.C {
		for _, s := range sources {
			m, err := herald.Scrape(context.Background(), s.c, s.url)
			if err != nil {
				t.Logf("%s: %v", s.name, err) // a restart (the controller may lose its short Lease under load)
				continue
			}
			for _, g := range gauges {
				if v, ok := m.Get(g.metric); ok {
					samples[s.name+"_"+g.name] = append(samples[s.name+"_"+g.name], v/g.scale)
				}
			}
		}
	}
	changes := ch.stop()
	res := chaos.Result{Case: "soak", Duration: time.Since(start)}
	res.Extra = append(res.Extra, chaos.Figure{Name: "churn_changes", Value: float64(changes), Unit: "count"})
	for _, key := range slices.Sorted(maps.Keys(samples)) {
		v := samples[key]
		if len(v) < 6 {
			t.Errorf("%s: only %d samples", key, len(v))
			continue
		}
		third := len(v) / 3
		first, last := mean(v[:third]), mean(v[len(v)-third:])
		res.Extra = append(res.Extra,
			chaos.Figure{Name: key + "_first_third", Value: first, Unit: "mean"},
			chaos.Figure{Name: key + "_last_third", Value: last, Unit: "mean"},
			chaos.Figure{Name: key + "_max", Value: slices.Max(v), Unit: "max"})
		// Noise: a fifth, or a few units for small counts (a watch
		// reconnecting holds a socket and two goroutines for a while).
		if last > first*1.2+8 {
			t.Errorf("%s grew from %.1f (first third) to %.1f (last third)", key, first, last)
		}
	}
	reportChaos(t, res)
}

func mean(v []float64) float64 {
	var sum float64
	for _, x := range v {
		sum += x
	}
	return sum / float64(len(v))
}
