package bgp

import "github.com/prometheus/client_golang/prometheus"

// collector exports the Output's metrics, read from GoBGP when Prometheus
// scrapes: no polling loop runs between scrapes.
type collector struct{ o *Output }

var (
	descSessionUp = prometheus.NewDesc("herald_speaker_bgp_session_up",
		"1 when the BGP session with the peer is Established, else 0.", []string{"peer"}, nil)
	descBFDUp = prometheus.NewDesc("herald_speaker_bgp_bfd_up",
		"1 when the BFD session with the peer is Up, else 0; absent for sessions without BFD.", []string{"peer"}, nil)
	descPrefixes = prometheus.NewDesc("herald_speaker_bgp_prefixes_advertised",
		"Prefixes announced to the peer, as GoBGP counts them (0 unless Established).", []string{"peer"}, nil)
	descUpdates = prometheus.NewDesc("herald_speaker_bgp_updates_sent_total",
		"BGP UPDATE messages sent to the peer since the session was configured.", []string{"peer"}, nil)
	descFlaps = prometheus.NewDesc("herald_speaker_bgp_session_flaps_total",
		"Times the BGP session with the peer left Established.", []string{"peer"}, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSessionUp, descBFDUp, descPrefixes, descUpdates, descFlaps} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	for _, s := range c.o.State() {
		ch <- prometheus.MustNewConstMetric(descSessionUp, prometheus.GaugeValue, b2f(s.State == StateEstablished), s.Name)
		if s.BFD != "" {
			ch <- prometheus.MustNewConstMetric(descBFDUp, prometheus.GaugeValue, b2f(s.BFD == "Up"), s.Name)
		}
		ch <- prometheus.MustNewConstMetric(descPrefixes, prometheus.GaugeValue, float64(s.AdvertisedCount), s.Name)
		ch <- prometheus.MustNewConstMetric(descUpdates, prometheus.CounterValue, float64(s.UpdatesSent), s.Name)
		ch <- prometheus.MustNewConstMetric(descFlaps, prometheus.CounterValue, float64(s.Flaps), s.Name)
	}
}
