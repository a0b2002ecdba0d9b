package lab

import (
	"fmt"
	"net/netip"
)

// The lab's address plan. Only documentation ranges are used (RFC 5737 for
// IPv4, RFC 3849 for IPv6), and only inside the lab's own namespaces.
//
//	198.51.100.0/25    the LAN: routers .1-.9, nodes .11-.18, client .100,
//	                   .64-.99 free for layer-2 pools in tests
//	198.51.100.128/25  pod CIDRs, one /28 per node (so at most 8 nodes)
//	203.0.113.0/25     Service ClusterIPs (IPv4)
//	203.0.113.128/25   free for BGP pools in tests
//	2001:db8:1::/64    the LAN (IPv6); 2001:db8:1::1:0/112 free for pools
//	2001:db8:2:N::/64  pod CIDR of node N
//	2001:db8:3::/112   Service ClusterIPs (IPv6)
//	2001:db8:4::/48    free for BGP pools in tests
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
	MaxNodes             = 8
)

// labRanges are the ranges the lab puts on its links; the lab refuses to start
// if any of them overlaps an address or route of the machine's own namespace.
var labRanges = []string{"198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"}

// Node is one lab node: a network namespace on the LAN that plays a Kubernetes node.
type Node struct {
	Index     int    // 1-based
	Name      string // Node object name, e.g. "node-1"
	Netns     string // network namespace, e.g. "hl-node-1"
	IPv4      netip.Addr
	IPv6      netip.Addr
	PodCIDRv4 netip.Prefix
	PodCIDRv6 netip.Prefix
}

func newNode(i int) Node {
	return Node{
		Index:     i,
		Name:      fmt.Sprintf("node-%d", i),
		Netns:     fmt.Sprintf("%snode-%d", nsPrefix, i),
		IPv4:      netip.MustParseAddr(fmt.Sprintf("198.51.100.%d", 10+i)),
		IPv6:      netip.MustParseAddr(fmt.Sprintf("2001:db8:1::%d", 10+i)),
		PodCIDRv4: netip.MustParsePrefix(fmt.Sprintf("198.51.100.%d/28", 128+16*(i-1))),
		PodCIDRv6: netip.MustParsePrefix(fmt.Sprintf("2001:db8:2:%d::/64", i)),
	}
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
