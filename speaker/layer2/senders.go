package layer2

import (
	"net"
	"net/netip"

	"github.com/mdlayher/ndp"
)

// A reply goes where the request says its sender is, so a request that lies
// about its sender would have the node send its replies wherever anyone on
// the LAN likes: to every host, or in a loop with another responder. These
// checks refuse what no host sends.

// answerableARP reports whether an ARP request comes from one host: its
// frame's source and its sender hardware address are an individual
// (unicast, nonzero) MAC, and its sender IP is no multicast, broadcast or
// loopback address, which Linux ignores as well (arp_process in
// net/ipv4/arp.c). The sender 0.0.0.0 of an ARP probe (RFC 5227 section
// 2.1.1) is answered, to its MAC.
func answerableARP(f *arpFrame) bool {
	return individualMAC(f.ethSrc[:]) && individualMAC(f.sha[:]) &&
		!f.spa.IsMulticast() && !f.spa.IsLoopback() && f.spa != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// individualMAC: not a group address (IEEE 802: the I/G bit, which
// broadcast has too) and not all zeros.
func individualMAC(mac net.HardwareAddr) bool {
	return len(mac) == 6 && mac[0]&1 == 0 && string(mac) != "\x00\x00\x00\x00\x00\x00"
}

// answerableNS reports whether a neighbour solicitation for target from
// src may be answered (RFC 4861 section 7.1.1): src is an IPv6 unicast
// address other than target, or the unspecified address of duplicate
// address detection, which then carries no source link-layer address
// option. A multicast source is never valid (RFC 4291 section 2.7), nor
// loopback or IPv4-mapped ones off the wire, and the owned target is
// no other host's address.
func answerableNS(ns *ndp.NeighborSolicitation, src, target netip.Addr) bool {
	switch {
	case !src.Is6() || src.Is4In6() || src.IsMulticast() || src.IsLoopback() || src.WithZone("") == target:
		return false
	case src.IsUnspecified():
		return linkLayerAddr(ns.Options, ndp.Source) == nil
	}
	return true
}
