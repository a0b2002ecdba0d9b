package runner

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	duration *prometheus.HistogramVec
	syncs    *prometheus.CounterVec
	owned    prometheus.Gauge
	cutOff   prometheus.Gauge
	cutOffs  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "herald_speaker_sync_duration_seconds",
			Help:    "Time of one plan-and-apply pass of the speaker: partial (some Services changed) or full (every address re-planned).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"scope"}),
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_speaker_syncs_total",
			Help: "Plan-and-apply passes of the speaker, by scope (partial, full).",
		}, []string{"scope"}),
		owned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_speaker_layer2_owned_addresses",
			Help: "Addresses this node answers ARP/NDP for.",
		}),
		cutOff: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_speaker_gossip_cut_off",
			Help: "1 while this speaker announces nothing because it hears the gossip of fewer than a majority of the speakers the API server shows alive.",
		}),
		cutOffs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_speaker_gossip_cut_offs_total",
			Help: "Times this speaker was cut off from a majority of its peers' gossip (see herald_speaker_gossip_cut_off).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.duration, m.syncs, m.owned, m.cutOff, m.cutOffs)
	}
	return m
}

func (m *metrics) observe(scope string, d time.Duration, owned int) {
	m.duration.WithLabelValues(scope).Observe(d.Seconds())
	m.syncs.WithLabelValues(scope).Inc()
	m.owned.Set(float64(owned))
}

// cut records a cut-off from the peers' gossip starting (true) or ending.
func (m *metrics) cut(on bool) {
	if on {
		m.cutOff.Set(1)
		m.cutOffs.Inc()
		return
	}
	m.cutOff.Set(0)
}
