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
	// all is every Service's virtual services sorted by Key (a Key
	// claimed twice: both, Merge keeps one), brought up to date for the
	// Services in changed at the next sync; spare and buf are arrays
	// reused for the next all and for the RuleSet. Why not gather vs and
	// sort at each sync: at 10,000 Services that took 20-25 ms of a
	// partial sync of one (2 shared cores), this takes about 1.
	all, spare, buf []dataplane.VirtualService
	changed         map[types.NamespacedName]bool
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
		changed: map[types.NamespacedName]bool{},
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
			f.set(k, nil)
			delete(f.warned, k)
			continue
		}
		vs, warns := dataplane.ServiceRules(&svc, f.nodes, f.backend.Supports)
		f.set(k, vs)
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

// set records the virtual services of k (nil: k forwards nothing); each
// names k as its Service.
func (f *forwarder) set(k types.NamespacedName, vs []dataplane.VirtualService) {
	if slices.EqualFunc(vs, f.vs[k], func(a, b dataplane.VirtualService) bool { return a.Equal(&b) }) {
		return
	}
	if vs == nil {
		delete(f.vs, k)
	} else {
		f.vs[k] = vs
	}
	f.changed[k] = true
	f.pending = true
}

// ruleSet is the RuleSet of every Service: all brought up to date (the
// entries of the changed Services dropped, their new ones sorted and
// merged in, in one pass), then Merge, which finds it sorted already.
func (f *forwarder) ruleSet() dataplane.RuleSet {
	if len(f.changed) > 0 {
		var fresh []dataplane.VirtualService
		for k := range f.changed {
			fresh = append(fresh, f.vs[k]...)
		}
		byKey := func(a, b dataplane.VirtualService) int { return a.Key.Compare(b.Key) }
		slices.SortFunc(fresh, byKey)
		next := f.spare[:0]
		for _, vs := range f.all {
			if f.changed[vs.Service] {
				continue
			}
			for len(fresh) > 0 && byKey(fresh[0], vs) < 0 {
				next, fresh = append(next, fresh[0]), fresh[1:]
			}
			next = append(next, vs)
		}
		next = append(next, fresh...)
		f.all, f.spare = next, f.all
		clear(f.changed)
	}
	// Merge drops duplicates in place: a copy, so all keeps them.
	f.buf = append(f.buf[:0], f.all...)
	// A port claimed twice was refused by the controller; the one that
	// keeps it is chosen the same way on every node, so nothing to say here.
	rs, _ := dataplane.Merge(f.buf)
	return rs
}

// sync programs the desired virtual services when they changed since the
// last successful sync, or the last one failed; nil stats: nothing to do.
func (f *forwarder) sync(ctx context.Context) (*dataplane.Stats, error) {
	if !f.pending && !f.failed {
		return nil, nil
	}
	rs := f.ruleSet()
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
