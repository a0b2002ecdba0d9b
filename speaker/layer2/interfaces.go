package layer2

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
)

// link is what the choice of interfaces needs to know about one network
// interface.
type link struct {
	Index       int
	Name        string
	Type        string // the rtnetlink kind: "device" for a NIC, "veth", "bridge", "macvlan", ...
	Flags       net.Flags
	MasterIndex int // the bridge, bond or VRF the link is a port of; 0 if none
	Addrs       []netip.Prefix
}

// up: administratively up and with carrier (IFF_UP and IFF_RUNNING).
func (l link) up() bool { return l.Flags&net.FlagUp != 0 && l.Flags&net.FlagRunning != 0 }

// notLAN reports whether kind is a kind of link that is not a node's LAN
// interface: pod ends (veth, netkit), bridges, and virtual links without a
// LAN behind them (dummy, ifb, tun/tap, VRF masters and tunnels).
func notLAN(kind string) bool {
	switch kind {
	case "veth", "netkit", "bridge", "dummy", "ifb", "tuntap", "vrf",
		"ipip", "sit", "gre", "gretap", "ip6gre", "ip6gretap", "ip6tnl", "vti", "vti6",
		"vxlan", "geneve", "wireguard", "xfrm", "gtp", "bareudp", "erspan", "ip6erspan":
		return true
	}
	return false
}

// byDefault reports whether l may announce the addresses of its subnets when
// no interface is named: it is up, not loopback, of a LAN kind, and not a
// port of a bridge or bond (whose master carries the address). A VRF member
// still is the interface on the LAN.
func byDefault(l link, byIndex map[int]link) bool {
	if !l.up() || l.Flags&net.FlagLoopback != 0 || notLAN(l.Type) {
		return false
	}
	if l.MasterIndex != 0 {
		m, ok := byIndex[l.MasterIndex]
		return ok && m.Type == "vrf"
	}
	return true
}

// subnetsOf lists the subnets of l's addresses, leaving out link-local ones,
// which no Service address is in.
func subnetsOf(l link) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range l.Addrs {
		if p.IsValid() && !p.Addr().IsLinkLocalUnicast() {
			out = append(out, p.Masked())
		}
	}
	return out
}

// qualifying is QualifyingInterfaces over a description of the links.
func qualifying(ip netip.Addr, allowed []string, links []link) []string {
	ip = ip.Unmap().WithZone("")
	byIndex := map[int]link{}
	for _, l := range links {
		byIndex[l.Index] = l
	}
	var out []string
	for _, l := range links {
		switch {
		case len(allowed) > 0:
			if slices.Contains(allowed, l.Name) && l.up() {
				out = append(out, l.Name)
			}
		case byDefault(l, byIndex):
			if slices.ContainsFunc(subnetsOf(l), func(p netip.Prefix) bool { return p.Contains(ip) }) {
				out = append(out, l.Name)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// subnets is LocalSubnets over a description of the links.
func subnets(links []link) (map[netip.Prefix][]string, []string) {
	byIndex := map[int]link{}
	for _, l := range links {
		byIndex[l.Index] = l
	}
	out := map[netip.Prefix][]string{}
	var names []string
	for _, l := range links {
		if !l.up() {
			continue
		}
		names = append(names, l.Name)
		if !byDefault(l, byIndex) {
			continue
		}
		for _, p := range subnetsOf(l) {
			if !slices.Contains(out[p], l.Name) {
				out[p] = append(out[p], l.Name)
			}
		}
	}
	for _, ns := range out {
		slices.Sort(ns)
	}
	slices.Sort(names)
	return out, slices.Compact(names)
}

// QualifyingInterfaces returns the interfaces of this network namespace (the
// calling thread's) on which ip may be announced, sorted. If allowed is not
// empty (an L2Advertisement's interfaces), those of the named interfaces that
// exist and are up. Otherwise every up interface with an address in a subnet
// that contains ip, but never loopback, veth, bridges, ports of a bridge or
// bond, dummy or tunnel interfaces: those qualify only when named.
func QualifyingInterfaces(ip netip.Addr, allowed []string) ([]string, error) {
	if !ip.IsValid() {
		return nil, errors.New("layer2: qualifying interfaces of an invalid address")
	}
	links, err := readLinks()
	if err != nil {
		return nil, err
	}
	return qualifying(ip, allowed, links), nil
}

// LocalSubnets reads this network namespace's interfaces once and returns
// what other speakers need to elect owners without asking: for each subnet
// this node has an address in, the interfaces that carry it and qualify by
// default (so that QualifyingInterfaces(ip, nil) is the union over the
// subnets that contain ip), and the names of every up interface (so that
// QualifyingInterfaces(ip, allowed) is allowed ∩ names). Subnets are masked
// (198.51.100.128/25); link-local subnets are left out.
func LocalSubnets() (map[netip.Prefix][]string, []string, error) {
	links, err := readLinks()
	if err != nil {
		return nil, nil, err
	}
	s, names := subnets(links)
	return s, names, nil
}

// readLinks describes every link and address of the calling thread's network
// namespace. A dump that a concurrent change interrupted is read again.
func readLinks() ([]link, error) {
	var err error
	for range 5 {
		var links []link
		if links, err = readLinksOnce(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return links, err
		}
	}
	return nil, err
}

func readLinksOnce() ([]link, error) {
	nls, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("layer2: list links: %w", err)
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("layer2: list addresses: %w", err)
	}
	prefixes := map[int][]netip.Prefix{}
	for _, a := range addrs {
		if a.IPNet == nil {
			continue
		}
		if p, ok := prefixOf(a.IPNet); ok {
			prefixes[a.LinkIndex] = append(prefixes[a.LinkIndex], p)
		}
	}
	out := make([]link, 0, len(nls))
	for _, nl := range nls {
		at := nl.Attrs()
		out = append(out, link{
			Index:       at.Index,
			Name:        at.Name,
			Type:        nl.Type(),
			Flags:       at.Flags,
			MasterIndex: at.MasterIndex,
			Addrs:       prefixes[at.Index],
		})
	}
	return out, nil
}
