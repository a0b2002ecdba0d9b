package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// vipLink is the link holding the VIPs, so that the kernel takes packets to
// them as local (IPVS sees only packets that reach LOCAL_IN), as kube-proxy's
// kube-ipvs0 does.
type vipLink interface {
	// Ensure creates the link if it is missing and reads its addresses.
	Ensure() ([]netip.Addr, error)
	AddAddr(netip.Addr) error
	DelAddr(netip.Addr) error
	// Addrs lists the link's addresses; none when it does not exist.
	Addrs() ([]netip.Addr, error)
	// Delete removes the link and with it every address on it.
	Delete() error
}

// dummyLink is a vipLink on a Linux dummy link.
//
// The node must never answer ARP or NDP for a VIP itself: the speaker alone
// announces it, from the one node that owns it. For IPv4 that takes
// arp_ignore=1 (answer only for addresses of the receiving interface) and
// arp_announce=2 (never use a VIP as the source of the node's own ARP
// requests) on every interface; the kernel uses the larger of "all" and the
// interface's own value, so setting "all" is enough. IPv6 needs nothing:
// the kernel answers a neighbour solicitation only for addresses on the
// interface it came in on. Addresses get nodad: duplicate address
// detection on a dummy link can only delay them.
type dummyLink struct {
	name string
}

// ipvsSysctls are the settings the backend needs, with why:
//   - arp_ignore, arp_announce: above.
//   - vs/conntrack: IPVS keeps conntrack entries, which the masquerade
//     rule matches (ipvs_masq.go); kube-proxy's IPVS mode sets it too.
var ipvsSysctls = map[string]string{
	"net/ipv4/conf/all/arp_ignore":   "1",
	"net/ipv4/conf/all/arp_announce": "2",
	"net/ipv4/vs/conntrack":          "1",
}

// setIPVSSysctls writes ipvsSysctls. They stay set on Cleanup: other
// software (kube-proxy's strict ARP) may want the same values.
func setIPVSSysctls() error {
	for k, v := range ipvsSysctls {
		p := filepath.Join("/proc/sys", k)
		if cur, err := os.ReadFile(p); err == nil && string(cur) == v+"\n" {
			continue
		}
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", k, v, err)
		}
	}
	return nil
}

func (l *dummyLink) Ensure() ([]netip.Addr, error) {
	link, err := netlink.LinkByName(l.name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		link = &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: l.name}}
		if err := netlink.LinkAdd(link); err != nil {
			return nil, fmt.Errorf("create dummy link %s: %w", l.name, err)
		}
		if link, err = netlink.LinkByName(l.name); err != nil {
			return nil, fmt.Errorf("link %s: %w", l.name, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("link %s: %w", l.name, err)
	}
	if link.Type() != "dummy" {
		return nil, fmt.Errorf("link %s is a %s link, not one Herald created", l.name, link.Type())
	}
	// Up, so that IPv6 addresses on it are usable (IPv4 would work down).
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("set link %s up: %w", l.name, err)
	}
	return l.Addrs()
}

func (l *dummyLink) Addrs() ([]netip.Addr, error) {
	link, err := netlink.LinkByName(l.name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("link %s: %w", l.name, err)
	}
	list, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("addresses of %s: %w", l.name, err)
	}
	var out []netip.Addr
	for _, a := range list {
		ip, ok := netip.AddrFromSlice(a.IP)
		// The link-local address the kernel gives every IPv6 link is not a VIP.
		if !ok || ip.Unmap().IsLinkLocalUnicast() {
			continue
		}
		out = append(out, ip.Unmap())
	}
	return out, nil
}

func (l *dummyLink) addr(a netip.Addr) (netlink.Link, *netlink.Addr, error) {
	link, err := netlink.LinkByName(l.name)
	if err != nil {
		return nil, nil, fmt.Errorf("link %s: %w", l.name, err)
	}
	na := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}}
	if a.Is6() {
		na.Flags = unix.IFA_F_NODAD
	}
	return link, na, nil
}

func (l *dummyLink) AddAddr(a netip.Addr) error {
	link, na, err := l.addr(a)
	if err == nil {
		err = netlink.AddrReplace(link, na)
	}
	if err != nil {
		return fmt.Errorf("add VIP %s to %s: %w", a, l.name, err)
	}
	return nil
}

func (l *dummyLink) DelAddr(a netip.Addr) error {
	link, na, err := l.addr(a)
	if err == nil {
		err = netlink.AddrDel(link, na)
	}
	if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("remove VIP %s from %s: %w", a, l.name, err)
	}
	return nil
}

func (l *dummyLink) Delete() error {
	link, err := netlink.LinkByName(l.name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err == nil {
		err = netlink.LinkDel(link)
	}
	if err != nil {
		return fmt.Errorf("delete link %s: %w", l.name, err)
	}
	return nil
}
