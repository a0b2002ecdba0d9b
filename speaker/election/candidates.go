package election

import (
	"cmp"
	"net/netip"
	"slices"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/heraldlb/herald/internal/model"
)

// LabelExcludeFromLB marks a node that must not receive load balancer
// traffic; its presence, whatever its value, excludes the node
// (https://kubernetes.io/docs/reference/labels-annotations-taints/#node-kubernetes-io-exclude-from-external-load-balancers).
const LabelExcludeFromLB = "node.kubernetes.io/exclude-from-external-load-balancers"

// Node is what the election needs to know about a node.
type Node struct {
	Name   string
	Labels map[string]string
	// SpeakerLive: the node is in the live set computed by Live.
	SpeakerLive bool
	// ExcludedFromLB: the node carries LabelExcludeFromLB. A node whose Labels
	// carry it is excluded too.
	ExcludedFromLB bool
	// NetworkUnavailable: the node's NetworkUnavailable condition is True.
	NetworkUnavailable bool
	// Interfaces: the subnets the node has addresses in, and on which
	// interfaces, as published by its speaker (which leaves out loopback, veth
	// and bridge-port style interfaces).
	Interfaces map[netip.Prefix][]string
	// InterfaceNames: every interface the speaker may announce on, with or
	// without an address; an advertisement's interfaces are matched against it.
	InterfaceNames []string
	// Forwards: the node's speaker runs Herald's dataplane, so it forwards
	// what it receives itself; else only kube-proxy does.
	Forwards bool
}

// Advertisement is an L2Advertisement that covers the Service's pool and
// selects the Service.
type Advertisement struct {
	// Name orders advertisements when their preferred nodes are merged, so the
	// order they are passed in does not matter.
	Name string
	// NodeSelectors: a node must match one; none matches every node.
	NodeSelectors []labels.Selector
	// Interfaces: when set, announce only on these interfaces; when empty, on
	// the interfaces with an address in a subnet that contains the IP.
	Interfaces     []string
	PreferredNodes []string
}

// ServiceInfo is what the election needs to know about a Service address.
type ServiceInfo struct {
	IP netip.Addr
	// LocalTrafficPolicy: externalTrafficPolicy is Local, so only nodes with a
	// ready endpoint may announce.
	LocalTrafficPolicy bool
	// NodesWithReadyEndpoints: node names with at least one ready endpoint of
	// the Service (EndpointSlice endpoints with conditions.ready and nodeName).
	NodesWithReadyEndpoints map[string]bool
	// NeedsForwarding: the address's ipMode is Proxy, so kube-proxy leaves it
	// alone and only a node whose speaker forwards (Node.Forwards) can serve
	// it. While the dataplane is switched on or off across the nodes, this
	// keeps every address on a node that serves it.
	NeedsForwarding bool
}

// Candidates returns the nodes that may announce svc.IP (sorted by name), the
// preferred nodes of the advertisements (in the order of the advertisements'
// names, then of each list, without repeats; pass it to Owner) and, for each
// candidate, the interfaces to announce on (sorted). A node qualifies through
// any advertisement whose selectors match it and that gives it an interface;
// its interfaces are the union over those advertisements.
func Candidates(svc ServiceInfo, ads []Advertisement, nodes []Node) (cands []string, preferred []string, ifaces map[string][]string) {
	ip := svc.IP.Unmap().WithZone("")
	ads = slices.SortedStableFunc(slices.Values(ads), func(a, b Advertisement) int { return cmp.Compare(a.Name, b.Name) })
	ifaces = map[string][]string{}
	for i := range nodes {
		n := &nodes[i]
		if !eligible(n, svc) {
			continue
		}
		var on []string
		for _, ad := range ads {
			if model.AnyMatches(ad.NodeSelectors, n.Labels) {
				on = append(on, qualifyingInterfaces(n, ad, ip)...)
			}
		}
		if len(on) == 0 {
			continue
		}
		slices.Sort(on)
		ifaces[n.Name] = slices.Compact(on)
		cands = append(cands, n.Name)
	}
	slices.Sort(cands)
	cands = slices.Compact(cands)
	return cands, PreferredNodes(ads), ifaces
}

// PreferredNodes merges the advertisements' preferredNodes: the advertisements
// in the order of their names, each one's list in its own order, a node once.
// The result does not depend on the order of ads.
func PreferredNodes(ads []Advertisement) []string {
	ads = slices.SortedStableFunc(slices.Values(ads), func(a, b Advertisement) int { return cmp.Compare(a.Name, b.Name) })
	var preferred []string
	for _, ad := range ads {
		for _, p := range ad.PreferredNodes {
			if !slices.Contains(preferred, p) {
				preferred = append(preferred, p)
			}
		}
	}
	return preferred
}

// Excluded reports whether the node must not receive load balancer traffic
// at all: it is excluded from load balancers, or its network is unavailable.
func (n *Node) Excluded() bool {
	if n.NetworkUnavailable || n.ExcludedFromLB {
		return true
	}
	_, ok := n.Labels[LabelExcludeFromLB]
	return ok
}

// eligible applies the rules that do not depend on an advertisement.
func eligible(n *Node, svc ServiceInfo) bool {
	if !n.SpeakerLive || n.Excluded() || (svc.NeedsForwarding && !n.Forwards) {
		return false
	}
	return !svc.LocalTrafficPolicy || svc.NodesWithReadyEndpoints[n.Name]
}

// qualifyingInterfaces are the interfaces of n that ad lets announce ip.
func qualifyingInterfaces(n *Node, ad Advertisement, ip netip.Addr) []string {
	var out []string
	if len(ad.Interfaces) > 0 {
		for _, name := range ad.Interfaces {
			if slices.Contains(n.InterfaceNames, name) {
				out = append(out, name)
			}
		}
		return out
	}
	for subnet, names := range n.Interfaces {
		if subnet.Contains(ip) {
			out = append(out, names...)
		}
	}
	return out
}
