package lab

import (
	"fmt"
	"net/netip"
)

// The lab's address plan. Only documentation ranges are used (RFC 5737 for
// IPv4, RFC 3849 for IPv6), and only inside the lab's own namespaces.
//
//	198.51.100.0/25    the LAN: routers .1-.9 (FRR .1, BIRD .2 with
//	                   Config.Routers), nodes .11-.60 (node N at 10+N),
//	                   .64-.99 free for layer-2 pools in tests, client .100,
//	                   .101-.126 free
//	198.51.100.128/25  pod CIDRs, one /28 per pod node (so at most 8 of them)
//	203.0.113.0/25     Service ClusterIPs (IPv4)
//	203.0.113.128/25   free for BGP pools in tests, but its top /29
//	203.0.113.248/29   the link from FRR (.249) to the BGP client (.250)
//	203.0.113.224/27   the real-node cluster's uplink and pod CIDR
//	                   (realnode_cluster_test.go; it holds the lab lock)
//	2001:db8:1::/64    the LAN (IPv6): FRR ::1, BIRD ::2, node N at ::(10+N)
//	                   written in decimal digits (::11 to ::60), client ::100;
//	                   2001:db8:1::1:0/112 free for pools
//	2001:db8:2:N::/64  pod CIDR of pod node N
//	2001:db8:3::/112   Service ClusterIPs (IPv6)
//	2001:db8:4::/48    free for BGP pools in tests
//	2001:db8:5::/64    the link from FRR (::1) to the BGP client (::100)
//
// Nodes come in two kinds. Pod nodes (the first Config.Nodes) have a pod
// CIDR, a kube-proxy and run pods; the /28 per node limits them to
// MaxPodNodes. Speaker-only nodes (the next Config.SpeakerNodes) are a
// namespace on the LAN with a Node object and a speaker, nothing else, so
// membership and election can be measured at MaxNodes.
const (
	LANv4Prefix          = "198.51.100.0/25"
	LANv6Prefix          = "2001:db8:1::/64"
	PodCIDRv4            = "198.51.100.128/25"
	PodCIDRv6            = "2001:db8:2::/48"
	ServiceCIDRv4        = "203.0.113.0/25"
	ServiceCIDRv6        = "2001:db8:3::/112"
	ServiceCIDRv4FirstIP = "203.0.113.1" // the kubernetes Service's ClusterIP
	ClientIPv4           = "198.51.100.100"
	ClientIPv6           = "2001:db8:1::100"
	// ClientMAC is the client's fixed MAC on the LAN.
	ClientMAC = "02:00:00:00:01:64"
	// MaxPodNodes is how many nodes can run pods: one /28 each in PodCIDRv4.
	MaxPodNodes = 8
	// MaxNodes is how many nodes, of both kinds, fit on the LAN between the
	// routers (.1-.9) and the pool range (.64-.99).
	MaxNodes = 50
)

// labRanges are the ranges the lab puts on its links; the lab refuses to start
// if any of them overlaps an address or route of the machine's own namespace.
var labRanges = []string{"198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"}

// Node is one lab node: a network namespace on the LAN that plays a Kubernetes node.
type Node struct {
	Index int    // 1-based
	Name  string // Node object name, e.g. "node-1"
	Netns string // network namespace, e.g. "hl-node-1"
	IPv4  netip.Addr
	IPv6  netip.Addr
	// MAC of the node's LAN interface, fixed so a neighbour table tells
	// which node answered.
	MAC string
	// SpeakerOnly: no pod CIDR, kube-proxy or pods; a speaker and a Node object.
	SpeakerOnly bool
	PodCIDRv4   netip.Prefix // invalid on speaker-only nodes
	PodCIDRv6   netip.Prefix // invalid on speaker-only nodes
	// BridgeMAC is the fixed MAC of the pods' bridge, cbr0 (empty on
	// speaker-only nodes). A Linux bridge whose MAC was not set takes its
	// ports' lowest: tearing a pod down would change the pods' gateway's
	// MAC under the others, whose neighbour entries keep the old one and
	// lose their replies until they re-resolve it (IPv6 for tens of
	// seconds).
	BridgeMAC string
}

// NodeMAC is the fixed MAC of lab node i's LAN interface.
func NodeMAC(i int) string { return fmt.Sprintf("02:00:00:00:01:%02x", i) }

func newNode(i int, speakerOnly bool) Node {
	n := Node{
		Index:       i,
		Name:        fmt.Sprintf("node-%d", i),
		Netns:       fmt.Sprintf("%snode-%d", nsPrefix, i),
		IPv4:        netip.MustParseAddr(fmt.Sprintf("198.51.100.%d", 10+i)),
		IPv6:        netip.MustParseAddr(fmt.Sprintf("2001:db8:1::%d", 10+i)),
		MAC:         NodeMAC(i),
		SpeakerOnly: speakerOnly,
	}
	if !speakerOnly {
		n.PodCIDRv4 = netip.MustParsePrefix(fmt.Sprintf("198.51.100.%d/28", 128+16*(i-1)))
		n.PodCIDRv6 = netip.MustParsePrefix(fmt.Sprintf("2001:db8:2:%d::/64", i))
		n.BridgeMAC = fmt.Sprintf("02:00:00:00:03:%02x", i)
	}
	return n
}

// planNodes lays out podNodes pod nodes, then speakerNodes speaker-only
// nodes, checking that they fit the plan.
func planNodes(podNodes, speakerNodes int) ([]Node, error) {
	if podNodes < 0 || podNodes > MaxPodNodes {
		return nil, fmt.Errorf("lab nodes: %d pod nodes is outside 0..%d (one pod /28 each in %s)", podNodes, MaxPodNodes, PodCIDRv4)
	}
	if speakerNodes < 0 || podNodes+speakerNodes < 1 || podNodes+speakerNodes > MaxNodes {
		return nil, fmt.Errorf("lab nodes: %d pod + %d speaker-only nodes is outside 1..%d (the LAN's node range 198.51.100.11-.60)", podNodes, speakerNodes, MaxNodes)
	}
	var nodes []Node
	for i := 1; i <= podNodes+speakerNodes; i++ {
		nodes = append(nodes, newNode(i, i > podNodes))
	}
	return nodes, nil
}

// podGateway is the node's own address on its pod bridge: the first host of the CIDR.
func podGateway(p netip.Prefix) netip.Addr { return p.Addr().Next() }

// podAddr is the pod address at slot (0-based) in the CIDR, after the gateway.
func podAddr(p netip.Prefix, slot int) netip.Addr {
	a := podGateway(p)
	for i := 0; i <= slot; i++ {
		a = a.Next()
	}
	return a
}

// podSlots is how many pods fit in a node's IPv4 /28: minus network, gateway, broadcast.
const podSlots = 13
