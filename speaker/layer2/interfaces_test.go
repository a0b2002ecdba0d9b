package layer2

import (
	"net"
	"net/netip"
	"slices"
	"testing"
)

const running = net.FlagUp | net.FlagRunning | net.FlagBroadcast | net.FlagMulticast

// A node the way Kubernetes nodes look: a NIC with the LAN subnet, a bond of
// two NICs, a VLAN, pod veths on a CNI bridge, IPVS's dummy, a tunnel, a
// NIC in a VRF, one that lost carrier, and loopback.
func nodeLinks() []link {
	p := netip.MustParsePrefix
	return []link{
		{Index: 1, Name: "lo", Type: "device", Flags: net.FlagUp | net.FlagRunning | net.FlagLoopback, Addrs: []netip.Prefix{p("127.0.0.1/8"), p("::1/128")}},
		{Index: 2, Name: "eth0", Type: "device", Flags: running, Addrs: []netip.Prefix{p("198.51.100.11/25"), p("2001:db8:1::11/64"), p("fe80::1/64")}},
		{Index: 3, Name: "eth1", Type: "device", Flags: running, MasterIndex: 5},
		{Index: 4, Name: "eth2", Type: "device", Flags: running, MasterIndex: 5},
		{Index: 5, Name: "bond0", Type: "bond", Flags: running, Addrs: []netip.Prefix{p("203.0.113.11/24")}},
		{Index: 6, Name: "bond0.7", Type: "vlan", Flags: running, Addrs: []netip.Prefix{p("198.51.100.140/26")}},
		{Index: 7, Name: "cni0", Type: "bridge", Flags: running, Addrs: []netip.Prefix{p("198.51.100.1/25")}},
		{Index: 8, Name: "veth1234", Type: "veth", Flags: running, MasterIndex: 7},
		{Index: 9, Name: "vethpod", Type: "veth", Flags: running, Addrs: []netip.Prefix{p("198.51.100.12/25")}},
		{Index: 10, Name: "kube-ipvs0", Type: "dummy", Flags: running, Addrs: []netip.Prefix{p("198.51.100.120/32")}},
		{Index: 11, Name: "flannel.1", Type: "vxlan", Flags: running, Addrs: []netip.Prefix{p("198.51.100.13/25")}},
		{Index: 12, Name: "wg0", Type: "wireguard", Flags: running, Addrs: []netip.Prefix{p("2001:db8:1::99/64")}},
		{Index: 13, Name: "red", Type: "vrf", Flags: running},
		{Index: 14, Name: "eth3", Type: "device", Flags: running, MasterIndex: 13, Addrs: []netip.Prefix{p("2001:db8:2::11/64")}},
		{Index: 15, Name: "eth4", Type: "device", Flags: net.FlagUp | net.FlagBroadcast, Addrs: []netip.Prefix{p("198.51.100.14/25")}},
		{Index: 16, Name: "eth5", Type: "device", Flags: net.FlagBroadcast, Addrs: []netip.Prefix{p("198.51.100.15/25")}},
		{Index: 17, Name: "macvlan0", Type: "macvlan", Flags: running, Addrs: []netip.Prefix{p("2001:db8:3::11/64")}},
	}
}

func TestQualifyingInterfacesChoosesLANInterfacesInTheSubnet(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ip      string
		allowed []string
		want    []string
	}{
		{"a NIC with an address in the subnet qualifies; bridges, veths, tunnels and NICs without carrier do not",
			"198.51.100.100", nil, []string{"eth0"}},
		{"the host part does not matter, the subnet does", "198.51.100.126", nil, []string{"eth0"}},
		{"IPv6 subnets are matched too; a tunnel in the same subnet is not", "2001:db8:1::210", nil, []string{"eth0"}},
		{"IPv4-mapped IPv6 counts as IPv4", "::ffff:198.51.100.100", nil, []string{"eth0"}},
		{"a bond carries the address, its ports do not", "203.0.113.10", nil, []string{"bond0"}},
		{"a VLAN on a bond qualifies", "198.51.100.150", nil, []string{"bond0.7"}},
		{"a member of a VRF is still the LAN interface", "2001:db8:2::210", nil, []string{"eth3"}},
		{"a macvlan qualifies", "2001:db8:3::210", nil, []string{"macvlan0"}},
		{"no interface in the subnet: none", "192.0.2.10", nil, nil},
		{"an address on IPVS's dummy does not make it qualify", "198.51.100.120", nil, []string{"eth0"}},
		{"link-local subnets are not a reason", "fe80::99", nil, nil},

		{"named interfaces qualify whatever their subnet", "192.0.2.10", []string{"eth0"}, []string{"eth0"}},
		{"named interfaces qualify whatever their kind: loopback, veth, bridge, bridge port, tunnel",
			"198.51.100.100", []string{"lo", "vethpod", "cni0", "veth1234", "flannel.1"}, []string{"cni0", "flannel.1", "lo", "veth1234", "vethpod"}},
		{"a named interface that does not exist is left out", "198.51.100.100", []string{"eth9", "eth0"}, []string{"eth0"}},
		{"a named interface that is down or has no carrier is left out", "198.51.100.100", []string{"eth4", "eth5"}, nil},
		{"naming an interface twice lists it once", "198.51.100.100", []string{"eth0", "eth0"}, []string{"eth0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := qualifying(netip.MustParseAddr(tc.ip), tc.allowed, nodeLinks())
			if !slices.Equal(got, tc.want) {
				t.Errorf("qualifying(%s, %q) = %q, want %q", tc.ip, tc.allowed, got, tc.want)
			}
		})
	}
}

// LocalSubnets publishes what other speakers need to make the same choice
// QualifyingInterfaces makes here: for every address, the union of the
// interfaces of the subnets that contain it, and the up interfaces for names.
func TestLocalSubnetsAgreeWithQualifyingInterfaces(t *testing.T) {
	links := nodeLinks()
	subs, names := subnets(links)
	wantNames := []string{"bond0", "bond0.7", "cni0", "eth0", "eth1", "eth2", "eth3", "flannel.1", "kube-ipvs0", "lo", "macvlan0", "red", "veth1234", "vethpod", "wg0"}
	if !slices.Equal(names, wantNames) {
		t.Errorf("names = %q, want %q", names, wantNames)
	}
	for p := range subs {
		if p != p.Masked() || p.Addr().IsLinkLocalUnicast() {
			t.Errorf("subnet %s: want masked and not link-local", p)
		}
	}
	for _, s := range []string{"198.51.100.100", "198.51.100.150", "198.51.100.210", "203.0.113.10", "2001:db8:1::210", "2001:db8:2::210", "2001:db8:3::1", "192.0.2.1", "fe80::99"} {
		ip := netip.MustParseAddr(s)
		var union []string
		for p, ifs := range subs {
			if p.Contains(ip) {
				union = append(union, ifs...)
			}
		}
		slices.Sort(union)
		union = slices.Compact(union)
		if got := qualifying(ip, nil, links); !slices.Equal(got, union) {
			t.Errorf("%s: qualifying = %q, union of its subnets' interfaces = %q", ip, got, union)
		}
		allowed := []string{"eth0", "lo", "eth4", "eth9", "veth1234"}
		var inter []string
		for _, a := range allowed {
			if slices.Contains(names, a) {
				inter = append(inter, a)
			}
		}
		slices.Sort(inter)
		if got := qualifying(ip, allowed, links); !slices.Equal(got, inter) {
			t.Errorf("%s: qualifying(%q) = %q, allowed ∩ names = %q", ip, allowed, got, inter)
		}
	}
}
