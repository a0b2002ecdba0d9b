package dataplane

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Service is what the dataplane forwards of one LoadBalancer Service on this
// node.
type Service struct {
	Key types.NamespacedName
	// IPs are the Service's addresses this node receives traffic for.
	IPs   []netip.Addr
	Ports []Port
	// Local: externalTrafficPolicy Local.
	Local bool
	// NodePorts: allocateLoadBalancerNodePorts is not false. Without them
	// the traffic goes to the endpoints directly.
	NodePorts bool
	// Affinity: ClientIP session affinity with this timeout; 0: none.
	Affinity time.Duration
	// Scheduler is the herald.dev/ipvs-scheduler annotation as written.
	Scheduler string
}

// Port is one Service port.
type Port struct {
	Name     string
	Protocol Protocol
	Port     uint16
	// NodePort: 0 when the Service has none.
	NodePort uint16
	// Endpoints are the ready endpoints of this port, on every node.
	Endpoints []Endpoint
}

// Endpoint is one ready endpoint of a Service port.
type Endpoint struct {
	Addr netip.Addr
	Port uint16
	// Node runs the endpoint; "" when the EndpointSlice does not say.
	Node string
}

// Node is a node whose NodePorts can take traffic (Ready, not excluded
// from load balancers), with its addresses.
type Node struct {
	Name  string
	Addrs []netip.Addr
}

// Warning is a setting of a Service the dataplane could not honour, and
// what it did instead.
type Warning struct {
	Service types.NamespacedName
	Message string
}

// Nodes is the node view Generate reads: this node, the healthy nodes, and
// how traffic reaches the endpoints on other nodes.
type Nodes struct {
	Self    string
	Healthy []Node
	// ViaNodePorts sends the traffic for other nodes to their NodePorts
	// (kube-proxy's there picks the endpoint) rather than straight to the
	// endpoints. Straight is the default: one NAT instead of two, no
	// dependence on the other nodes' kube-proxy having synced a new Service
	// (their NodePorts refuse connections until then), and no linear walk
	// of kube-proxy's iptables rules on the second node (at 10,000 Services
	// that cost a quarter of the throughput).
	ViaNodePorts bool
}

// Generate turns the Services this node serves into virtual services, one
// per address and port, sorted. supports says which schedulers the backend
// has; an unknown or unsupported one falls back to DefaultScheduler with a
// warning.
func Generate(svcs []Service, nodes Nodes, supports func(Scheduler) bool) (RuleSet, []Warning) {
	var all []VirtualService
	var warns []Warning
	for i := range svcs {
		vs, w := ServiceRules(&svcs[i], nodes, supports)
		all = append(all, vs...)
		warns = append(warns, w...)
	}
	rs, w := Merge(all)
	return rs, append(warns, w...)
}

// Merge makes a RuleSet of the virtual services of several Services:
// sorted, and when two Services claim one address, protocol and port (the
// controller refuses such sharing), the first by name keeps it.
func Merge(vs []VirtualService) (RuleSet, []Warning) {
	slices.SortFunc(vs, func(a, b VirtualService) int {
		return cmp.Or(a.Key.Compare(b.Key), compareNames(a.Service, b.Service), strings.Compare(a.PortName, b.PortName))
	})
	var warns []Warning
	out := vs[:0]
	for _, v := range vs {
		if n := len(out); n > 0 && out[n-1].Key == v.Key {
			warns = append(warns, Warning{Service: v.Service, Message: fmt.Sprintf("%s is also a port of Service %s, which keeps it", v.Key, out[n-1].Service)})
			continue
		}
		out = append(out, v)
	}
	return RuleSet{Services: out}, warns
}

// ServiceRules is Generate for one Service, unsorted across addresses.
//
// Where a connection goes: with externalTrafficPolicy Cluster, every ready
// endpoint, masqueraded as kube-proxy does for Cluster, so that the reply
// comes back through this node and every pod sees the same kind of source.
// With Local, only this node's endpoints, not masqueraded, so every pod sees
// the client's address; a node without one (the plan elects nodes with
// one, so only for a moment) sends to the others' rather than drop the
// traffic, masqueraded. With Nodes.ViaNodePorts, the traffic for other
// nodes goes to their NodePorts instead (for Local, the nodes running an
// endpoint); this node's own endpoints are still reached directly, since a
// connection gets one DNAT per netfilter hook and this node's NodePort
// could not be the target. Ports without a NodePort
// (allocateLoadBalancerNodePorts false) always go to the endpoints.
func ServiceRules(s *Service, nodes Nodes, supports func(Scheduler) bool) ([]VirtualService, []Warning) {
	var warns []Warning
	sched := DefaultScheduler
	if s.Scheduler != "" {
		sched = Scheduler(s.Scheduler)
		switch {
		case !sched.Known():
			warns = append(warns, Warning{Service: s.Key, Message: fmt.Sprintf("annotation herald.dev/ipvs-scheduler: scheduler %q is not one of %v: using %s", s.Scheduler, Schedulers, DefaultScheduler)})
			sched = DefaultScheduler
		case !supports(sched):
			warns = append(warns, Warning{Service: s.Key, Message: fmt.Sprintf("annotation herald.dev/ipvs-scheduler: scheduler %q is not available in this node's dataplane: using %s", s.Scheduler, DefaultScheduler)})
			sched = DefaultScheduler
		}
	}
	var out []VirtualService
	for _, ip := range s.IPs {
		for _, p := range s.Ports {
			vs := VirtualService{
				Key:     Key{IP: ip, Protocol: p.Protocol, Port: p.Port},
				Service: s.Key, PortName: p.Name,
				Affinity: s.Affinity, Scheduler: sched,
			}
			vs.Destinations, vs.Masquerade = destinations(s, &p, ip.Is4(), nodes)
			out = append(out, vs)
		}
	}
	return out, warns
}

// destinations of one port for one address family, sorted, and whether
// they are masqueraded.
func destinations(s *Service, p *Port, v4 bool, nodes Nodes) ([]Destination, bool) {
	viaNodePorts := nodes.ViaNodePorts && s.NodePorts && p.NodePort != 0
	var local, remote []Destination
	withEndpoints := map[string]bool{}
	for _, e := range p.Endpoints {
		if e.Addr.Is4() != v4 {
			continue
		}
		withEndpoints[e.Node] = true
		d := Destination{Addr: e.Addr, Port: e.Port}
		switch {
		case e.Node == nodes.Self && e.Node != "":
			local = append(local, d)
		case !viaNodePorts:
			remote = append(remote, d)
		}
	}
	if s.Local && len(local) > 0 {
		return sortedDestinations(local), false
	}
	if viaNodePorts {
		for _, n := range nodes.Healthy {
			if n.Name == nodes.Self || (s.Local && !withEndpoints[n.Name]) {
				continue
			}
			if a, ok := firstOfFamily(n.Addrs, v4); ok {
				remote = append(remote, Destination{Addr: a, Port: p.NodePort})
			}
		}
	}
	out := sortedDestinations(append(local, remote...))
	return out, len(out) > 0
}

func sortedDestinations(ds []Destination) []Destination {
	slices.SortFunc(ds, Destination.Compare)
	return slices.CompactFunc(ds, func(a, b Destination) bool { return a.Compare(b) == 0 })
}

func firstOfFamily(addrs []netip.Addr, v4 bool) (netip.Addr, bool) {
	for _, a := range addrs {
		if a.Is4() == v4 {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// Schedulers lists every scheduler a Service can ask for.
var Schedulers = []Scheduler{Random, RoundRobin, WeightedRR, LeastConn, DestinationHash, SourceHash, ShortestDelay, NeverQueue}

// Known reports whether s is one of Schedulers.
func (s Scheduler) Known() bool { return slices.Contains(Schedulers, s) }

func compareNames(a, b types.NamespacedName) int {
	return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
}
