package runner

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/speaker/dataplane"
	"github.com/heraldlb/herald/speaker/plan"
)

// forwarder is the dataplane output: the virtual services of every Service
// this node forwards, regenerated only for the Services the plan names (and
// all of them when the healthy nodes change), and synced to the backend,
// which changes in the kernel only what differs.
type forwarder struct {
	backend dataplane.Backend
	nodes   dataplane.Nodes
	vs      map[types.NamespacedName][]dataplane.VirtualService
	// warned is the last warning sent per Service, so each is sent once.
	warned  map[types.NamespacedName]string
	pending bool // vs changed since the last successful sync
	failed  bool
	m       *dataplaneMetrics
}

func newForwarder(b dataplane.Backend, self string, viaNodePorts bool, reg prometheus.Registerer) *forwarder {
	if b == nil {
		return nil
	}
	return &forwarder{
		backend: b, nodes: dataplane.Nodes{Self: self, ViaNodePorts: viaNodePorts},
		vs:      map[types.NamespacedName][]dataplane.VirtualService{},
		warned:  map[types.NamespacedName]string{},
		pending: true, // the first sync adopts or clears what a previous run left
		m:       newDataplaneMetrics(reg, b.Name()),
	}
}

// setNodes records the healthy nodes; when traffic goes through their
// NodePorts, every forwarded Service's destinations are derived again when
// they changed.
func (f *forwarder) setNodes(healthy []dataplane.Node) []types.NamespacedName {
	if !f.nodes.ViaNodePorts || slices.EqualFunc(healthy, f.nodes.Healthy, func(a, b dataplane.Node) bool {
		return a.Name == b.Name && slices.Equal(a.Addrs, b.Addrs)
	}) {
		return nil
	}
	f.nodes.Healthy = healthy
	return slices.Collect(maps.Keys(f.vs))
}

// update regenerates the virtual services of keys from the plan, and
// returns the warnings not sent before.
func (f *forwarder) update(p *plan.Planner, keys []types.NamespacedName) []dataplane.Warning {
	var fresh []dataplane.Warning
	for _, k := range keys {
		svc, ok := p.Forwarding(k)
		if !ok {
			if _, had := f.vs[k]; had {
				delete(f.vs, k)
				f.pending = true
			}
			delete(f.warned, k)
			continue
		}
		vs, warns := dataplane.ServiceRules(&svc, f.nodes, f.backend.Supports)
		if !slices.EqualFunc(vs, f.vs[k], func(a, b dataplane.VirtualService) bool { return a.Equal(&b) }) {
			f.vs[k] = vs
			f.pending = true
		}
		msg := ""
		for _, w := range warns {
			msg += w.Message + "; "
		}
		if msg != f.warned[k] {
			f.warned[k] = msg
			fresh = append(fresh, warns...)
		}
	}
	return fresh
}

// sync programs the desired virtual services when they changed since the
// last successful sync, or the last one failed; nil stats: nothing to do.
func (f *forwarder) sync(ctx context.Context) (*dataplane.Stats, error) {
	if !f.pending && !f.failed {
		return nil, nil
	}
	var rs dataplane.RuleSet
	for _, vs := range f.vs {
		rs.Services = append(rs.Services, vs...)
	}
	// A port claimed twice was refused by the controller; the one that
	// keeps it is chosen the same way on every node, so nothing to say here.
	rs, _ = dataplane.Merge(rs.Services)
	start := time.Now()
	stats, err := f.backend.Sync(ctx, rs)
	f.m.observe(stats, time.Since(start), err)
	f.failed = err != nil
	if err != nil {
		return nil, err
	}
	f.pending = false
	return &stats, nil
}

type dataplaneMetrics struct {
	duration *prometheus.HistogramVec
	errors   prometheus.Counter
	services prometheus.Gauge
	rules    prometheus.Gauge
}

func newDataplaneMetrics(reg prometheus.Registerer, backend string) *dataplaneMetrics {
	labels := prometheus.Labels{"backend": backend}
	m := &dataplaneMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:        "herald_speaker_dataplane_sync_duration_seconds",
			Help:        "Time of one dataplane sync: full (everything Herald owns rewritten) or partial (the virtual services that changed).",
			Buckets:     prometheus.ExponentialBuckets(0.0001, 2, 18),
			ConstLabels: labels,
		}, []string{"scope"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_speaker_dataplane_sync_errors_total", Help: "Dataplane syncs that failed (the next one is full).", ConstLabels: labels,
		}),
		services: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_speaker_dataplane_virtual_services", Help: "Virtual services (address, protocol, port) programmed.", ConstLabels: labels,
		}),
		rules: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_speaker_dataplane_rules", Help: "Kernel objects programmed: rules, set and map elements, IPVS services and destinations.", ConstLabels: labels,
		}),
	}
	if reg != nil {
		reg.MustRegister(m.duration, m.errors, m.services, m.rules)
	}
	return m
}

func (m *dataplaneMetrics) observe(s dataplane.Stats, d time.Duration, err error) {
	if err != nil {
		m.errors.Inc()
		return
	}
	scope := "partial"
	if s.Full {
		scope = "full"
	}
	m.duration.WithLabelValues(scope).Observe(d.Seconds())
	m.services.Set(float64(s.Services))
	m.rules.Set(float64(s.Rules))
}
