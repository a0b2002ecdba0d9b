package lab

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/heraldlb/herald/internal/bgprouter"
)

// The lab's BGP routers (Config.Routers): FRR and BIRD, each a host on the
// LAN, ready to take every lab node as a neighbour; and a client behind
// FRR, on a link of its own, whose traffic to a LoadBalancer IP follows the
// routes FRR learned over BGP (ECMP over the nodes that announce it).
//
//	hl-frr         FRR (zebra, bgpd, bfdd), AS 64512, 198.51.100.1 and
//	               2001:db8:1::1 on the LAN; 203.0.113.249/29 and
//	               2001:db8:5::1/64 towards the BGP client
//	hl-bird        BIRD 2, AS 64513, 198.51.100.2 and 2001:db8:1::2
//	hl-client-bgp  the BGP client, 203.0.113.250/29 and 2001:db8:5::100/64,
//	               default routes via FRR
//
// Every node routes the BGP client's link via FRR (as if FRR were its
// gateway), so replies to the client go back the way they came.
const (
	FRRNetns       = nsPrefix + "frr"
	BIRDNetns      = nsPrefix + "bird"
	BGPClientNetns = nsPrefix + "client-bgp"

	FRRIPv4  = "198.51.100.1"
	FRRIPv6  = "2001:db8:1::1"
	BIRDIPv4 = "198.51.100.2"
	BIRDIPv6 = "2001:db8:1::2"
	FRRASN   = 64512
	BIRDASN  = 64513
	// FRRMAC and BIRDMAC are the routers' fixed MACs on the LAN.
	FRRMAC  = "02:00:00:00:02:01"
	BIRDMAC = "02:00:00:00:02:02"

	// BGPClientLinkV4 and BGPClientLinkV6 are the link between FRR and the
	// BGP client (the top /29 of the BGP pools' range 203.0.113.128/25).
	BGPClientLinkV4 = "203.0.113.248/29"
	BGPClientLinkV6 = "2001:db8:5::/64"
	BGPClientIPv4   = "203.0.113.250"
	BGPClientIPv6   = "2001:db8:5::100"
	frrClientSideV4 = "203.0.113.249"
	frrClientSideV6 = "2001:db8:5::1"
)

// DefaultFRRConfig is FRR's configuration when the lab starts: AS 64512,
// any lab node (AS other than 64512) may open a session from its LAN
// address, IPv4 or IPv6, through a listen range of peer-group "nodes"; BFD
// on every such session (300 ms x 3); every route accepted, none sent back;
// ECMP over up to 16 paths, whatever the nodes' AS paths.
func DefaultFRRConfig() string {
	return fmt.Sprintf(`frr defaults traditional
hostname hl-frr
!
route-map export-nothing deny 10
!
router bgp %d
 bgp router-id %s
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 bgp bestpath as-path multipath-relax
 neighbor nodes peer-group
 neighbor nodes remote-as external
 neighbor nodes bfd
 bgp listen range %s peer-group nodes
 bgp listen range %s peer-group nodes
 address-family ipv4 unicast
  neighbor nodes activate
  neighbor nodes route-map export-nothing out
  maximum-paths 16
  maximum-paths ibgp 16
 exit-address-family
 address-family ipv6 unicast
  neighbor nodes activate
  neighbor nodes route-map export-nothing out
  maximum-paths 16
  maximum-paths ibgp 16
 exit-address-family
!
`, FRRASN, FRRIPv4, LANv4Prefix, LANv6Prefix)
}

// DefaultBIRDConfig is BIRD's configuration when the lab starts: AS 64513,
// dynamic neighbours (`neighbor range`, external) from the LAN's IPv4 and
// IPv6 prefixes, named node1, node2, ... as they connect; every route of
// both families accepted, none sent back; what BIRD selects goes to the
// kernel, equal paths merged into one ECMP route. A BFD protocol runs, for
// configurations that turn `bfd on`.
func DefaultBIRDConfig() string {
	return fmt.Sprintf(`router id %s;
timeformat protocol iso long;
protocol device {}
protocol kernel { ipv4 { import none; export all; }; merge paths on; }
protocol kernel { ipv6 { import none; export all; }; merge paths on; }
protocol bfd {}
template bgp nodes {
  local as %d;
  dynamic name "node";
  ipv4 { import all; export none; };
  ipv6 { import all; export none; };
}
protocol bgp nodes4 from nodes { neighbor range %s external; }
protocol bgp nodes6 from nodes { neighbor range %s external; }
`, BIRDIPv4, BIRDASN, LANv4Prefix, LANv6Prefix)
}

// buildRouterNetwork puts FRR's and BIRD's namespaces on the LAN and the
// BGP client behind FRR.
func (l *Lab) buildRouterNetwork() error {
	if err := l.addHost(FRRNetns, FRRMAC, FRRIPv4, FRRIPv6); err != nil {
		return err
	}
	if err := l.addHost(BIRDNetns, BIRDMAC, BIRDIPv4, BIRDIPv6); err != nil {
		return err
	}
	if err := run("ip", "netns", "add", BGPClientNetns); err != nil {
		return err
	}
	v4bits, v6bits := 29, 64
	if err := ipBatch(FRRNetns,
		"link add eth1 type veth peer name eth0 netns "+BGPClientNetns,
		"link set eth1 up",
		fmt.Sprintf("addr add %s/%d dev eth1", frrClientSideV4, v4bits),
		fmt.Sprintf("addr add %s/%d dev eth1 nodad", frrClientSideV6, v6bits),
	); err != nil {
		return err
	}
	if err := ipBatch(BGPClientNetns,
		"link set lo up",
		"link set eth0 up",
		fmt.Sprintf("addr add %s/%d dev eth0", BGPClientIPv4, v4bits),
		fmt.Sprintf("addr add %s/%d dev eth0 nodad", BGPClientIPv6, v6bits),
		"route add default via "+frrClientSideV4,
		"route add default via "+frrClientSideV6,
	); err != nil {
		return err
	}
	// FRR forwards the client's traffic, and spreads flows over ECMP next
	// hops by their ports too (policy 1: layer 4), not only by addresses:
	// the client has one address.
	for _, kv := range [][2]string{
		{"net.ipv4.ip_forward", "1"}, {"net.ipv6.conf.all.forwarding", "1"},
		{"net.ipv4.fib_multipath_hash_policy", "1"}, {"net.ipv6.fib_multipath_hash_policy", "1"},
	} {
		if err := sysctl(FRRNetns, kv[0], kv[1]); err != nil {
			return err
		}
	}
	return nil
}

// routerRoutes are a node's routes to the BGP client's link, via FRR;
// none without routers.
func (l *Lab) routerRoutes() []string {
	if !l.Routers {
		return nil
	}
	return []string{
		fmt.Sprintf("route replace %s via %s", BGPClientLinkV4, FRRIPv4),
		fmt.Sprintf("route replace %s via %s", BGPClientLinkV6, FRRIPv6),
	}
}

func (l *Lab) routersDir() string { return filepath.Join(l.Dir, "routers") }

// startRouters starts FRR and BIRD with their default configurations.
func (l *Lab) startRouters(ctx context.Context) error {
	var err error
	l.FRR, err = bgprouter.StartFRR(ctx, bgprouter.Options{
		Netns: FRRNetns, Dir: filepath.Join(l.routersDir(), "frr"), LogDir: filepath.Join(l.logDir(), "frr"), Config: DefaultFRRConfig(),
	})
	if err != nil {
		return fmt.Errorf("lab router: %w", err)
	}
	l.BIRD, err = bgprouter.StartBIRD(ctx, bgprouter.Options{
		Netns: BIRDNetns, Dir: filepath.Join(l.routersDir(), "bird"), LogDir: filepath.Join(l.logDir(), "bird"), Config: DefaultBIRDConfig(),
	})
	if err != nil {
		return fmt.Errorf("lab router: %w", err)
	}
	return nil
}

// ResetRouters gives FRR and BIRD their default configurations back, for a
// test that changed them: FRR's BGP instance is replaced (its sessions
// reset), BIRD reconfigured (protocols whose configuration is unchanged
// keep their sessions).
func (l *Lab) ResetRouters(ctx context.Context) error {
	if l.FRR == nil || l.BIRD == nil {
		return fmt.Errorf("the lab runs no routers (Config.Routers)")
	}
	if err := l.FRR.Replace(ctx, DefaultFRRConfig()); err != nil {
		return err
	}
	return l.BIRD.Configure(ctx, DefaultBIRDConfig())
}

// stopRouters stops the routers' daemons; Clean would kill them anyway
// (they run in lab namespaces), this lets bgpd and BIRD close their
// sessions first.
func (l *Lab) stopRouters() {
	if l.FRR != nil {
		l.FRR.Stop()
	}
	if l.BIRD != nil {
		l.BIRD.Stop()
	}
}
