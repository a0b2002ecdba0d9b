package layer2

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Neighbour unreachability detection (RFC 4861 section 7.3) probes a cached
// neighbour with a solicitation sent to its own address and MAC. For an
// owned address the kernel delivers that packet to no socket, since the
// address is not assigned to this node: unanswered, the client drops its
// entry and loses traffic until it solicits by multicast again. A packet
// socket catches these probes; the ICMPv6 socket answers them.

// unicastNSFilter passes the frames sent to mac that carry an ICMPv6
// Neighbor Solicitation without extension headers: Ethernet destination
// (bytes 0-5), IPv6 next header (byte 20), ICMPv6 type (byte 54).
func unicastNSFilter(mac net.HardwareAddr) []bpf.Instruction {
	const reject, accept = 9, 8
	return []bpf.Instruction{
		bpf.LoadAbsolute{Off: 0, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: binary.BigEndian.Uint32(mac[0:4]), SkipTrue: reject - 2},
		bpf.LoadAbsolute{Off: 4, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(binary.BigEndian.Uint16(mac[4:6])), SkipTrue: reject - 4},
		bpf.LoadAbsolute{Off: 20, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.IPPROTO_ICMPV6, SkipTrue: reject - 6},
		bpf.LoadAbsolute{Off: 54, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(ndpTypeNS), SkipTrue: reject - accept},
		bpf.RetConstant{Val: 1500},
		bpf.RetConstant{Val: 0},
	}
}

const ndpTypeNS = 135

func listenUnicastNS(ifi *net.Interface) (*packet.Conn, error) {
	prog, err := bpf.Assemble(unicastNSFilter(ifi.HardwareAddr))
	if err != nil {
		return nil, err
	}
	return packet.Listen(ifi, packet.Raw, unix.ETH_P_IPV6, &packet.Config{Filter: prog})
}

// parseUnicastNS reads an Ethernet frame holding an IPv6 packet and returns
// the neighbour solicitation in it, with the packet's source and destination,
// if it is one a node accepts (RFC 4861 section 7.1.1): hop limit 255, ICMP
// code 0, a valid checksum, a unicast destination, and a source that is not
// the unspecified address (duplicate address detection goes to a
// solicited-node multicast address, never to a unicast one).
func parseUnicastNS(frame []byte) (ns *ndp.NeighborSolicitation, src, dst netip.Addr, ok bool) {
	const eth, ip6, nsLen = 14, 40, 24 // nsLen: a solicitation without options
	if len(frame) < eth+ip6+nsLen || binary.BigEndian.Uint16(frame[12:14]) != unix.ETH_P_IPV6 {
		return nil, src, dst, false
	}
	h := frame[eth : eth+ip6]
	// The payload length comes off the wire: shorter than a solicitation, it
	// would leave nothing to read the message type from.
	plen := int(binary.BigEndian.Uint16(h[4:6]))
	if h[0]>>4 != 6 || h[6] != unix.IPPROTO_ICMPV6 || h[7] != ndp.HopLimit || plen < nsLen || len(frame) < eth+ip6+plen {
		return nil, src, dst, false
	}
	src, dst = netip.AddrFrom16([16]byte(h[8:24])), netip.AddrFrom16([16]byte(h[24:40]))
	msg := frame[eth+ip6 : eth+ip6+plen]
	unicast := dst.IsGlobalUnicast() || dst.IsLinkLocalUnicast()
	if msg[0] != ndpTypeNS || msg[1] != 0 || !unicast || src.IsUnspecified() || icmp6Checksum(src, dst, msg) != 0 {
		return nil, src, dst, false
	}
	m, err := ndp.ParseMessage(msg)
	if err != nil {
		return nil, src, dst, false
	}
	ns, ok = m.(*ndp.NeighborSolicitation)
	return ns, src, dst, ok
}

// icmp6Checksum is the Internet checksum (RFC 1071) of an ICMPv6 message
// with its pseudo-header (RFC 8200 section 8.1); 0 for a valid message.
func icmp6Checksum(src, dst netip.Addr, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	s, d := src.As16(), dst.As16()
	add(s[:])
	add(d[:])
	var tail [8]byte
	binary.BigEndian.PutUint32(tail[0:4], uint32(len(msg)))
	tail[7] = unix.IPPROTO_ICMPV6
	add(tail[:])
	add(msg)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
