package layer2

import (
	"errors"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Announcer's counters; a nil *metrics counts nothing.
type metrics struct {
	arpRequests       *prometheus.CounterVec
	arpReplies        *prometheus.CounterVec
	ndpSolicitations  *prometheus.CounterVec
	ndpAdvertisements *prometheus.CounterVec
	announcements     *prometheus.CounterVec
	limited           *prometheus.CounterVec
}

func newMetrics(log logr.Logger, reg prometheus.Registerer) *metrics {
	if reg == nil {
		return nil
	}
	return &metrics{
		arpRequests: counter(log, reg, "herald_speaker_arp_requests_total",
			"ARP requests received on the interface for an address this node owns, answered or not (a request on an interface the address is not announced on is not).", "interface"),
		arpReplies: counter(log, reg, "herald_speaker_arp_replies_total",
			"ARP replies sent from the interface.", "interface"),
		ndpSolicitations: counter(log, reg, "herald_speaker_ndp_solicitations_total",
			"IPv6 neighbour solicitations received on the interface for an address this node owns, answered or not.", "interface"),
		ndpAdvertisements: counter(log, reg, "herald_speaker_ndp_advertisements_total",
			"Neighbour advertisements sent from the interface in answer to a solicitation (unsolicited ones count as gratuitous announcements).", "interface"),
		announcements: counter(log, reg, "herald_speaker_gratuitous_announcements_total",
			"Unsolicited announcements sent, one per address, interface and repeat: gratuitous ARP (a request and a reply frame) for ipv4, an unsolicited neighbour advertisement for ipv6.", "family"),
		limited: counter(log, reg, "herald_speaker_layer2_replies_limited_total",
			"Requests for an owned address left unanswered by the reply rate limits (--layer2-reply-*): reason requester (that requester's budget is spent), total (all requesters' budget is spent) or table (the table of requesters is full of busy ones).", "family", "reason"),
	}
}

// counter registers a counter vector, or returns the one reg already has
// under that name (two Announcers on one registry share their counters).
func counter(log logr.Logger, reg prometheus.Registerer, name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return existing
			}
		}
		log.Error(err, "registering a metric; it is not exported", "metric", name)
	}
	return c
}

func (m *metrics) arpRequest(ifname string) {
	if m != nil {
		m.arpRequests.WithLabelValues(ifname).Inc()
	}
}

func (m *metrics) arpReply(ifname string) {
	if m != nil {
		m.arpReplies.WithLabelValues(ifname).Inc()
	}
}

func (m *metrics) ndpSolicitation(ifname string) {
	if m != nil {
		m.ndpSolicitations.WithLabelValues(ifname).Inc()
	}
}

func (m *metrics) ndpAdvertisement(ifname string) {
	if m != nil {
		m.ndpAdvertisements.WithLabelValues(ifname).Inc()
	}
}

func (m *metrics) announced(family string) {
	if m != nil {
		m.announcements.WithLabelValues(family).Inc()
	}
}

func (m *metrics) limitedReply(family, reason string) {
	if m != nil {
		m.limited.WithLabelValues(family, reason).Inc()
	}
}
