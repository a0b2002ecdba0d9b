package layer2

import (
	"encoding/binary"
	"net"
	"net/netip"
	"slices"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
)

// arpConn answers ARP (RFC 826) on one interface through a packet socket
// bound to the ARP EtherType. It does not use arp.Client, which refuses
// interfaces without an IPv4 address of their own: an interface named in an
// L2Advertisement may carry none, and replies need only its MAC.
type arpConn struct {
	l    *listener
	pc   frameConn
	mac  net.HardwareAddr
	mac6 [6]byte
	// unfiltered: the kernel filter passes every ARP frame. Guarded by
	// the listener's mu.
	unfiltered bool
}

func openARP(l *listener, ifi *net.Interface) (*arpConn, error) {
	pc, err := packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
	if err != nil {
		return nil, err
	}
	return &arpConn{l: l, pc: pc, mac: slices.Clone(ifi.HardwareAddr), mac6: [6]byte(ifi.HardwareAddr)}, nil
}

func (c *arpConn) close() error { return c.pc.Close() }

// setFilter makes the kernel pass only the ARP frames about owned (see
// arpFilter), or every ARP frame when all is set or owned are too many to
// name.
func (c *arpConn) setFilter(owned []netip.Addr, all bool) error {
	return setFilter(c.pc, arpFilter(owned), all, &c.unfiltered)
}

func (c *arpConn) serve() error {
	buf := make([]byte, 128) // an ARP frame is 42 bytes, 64 with padding and a VLAN tag
	for {
		n, _, err := c.pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		if f, ok := parseARPFrame(buf[:n]); ok {
			c.handle(&f)
		}
	}
}

// arpFrame is what an ARP frame for Ethernet and IPv4 says, read in place
// so that a frame about an address this node does not own costs no
// allocation: on a busy LAN, or under a flood, most frames are such.
type arpFrame struct {
	ethSrc   [6]byte
	op       arp.Operation
	sha      [6]byte
	spa, tpa netip.Addr
}

// parseARPFrame reads an Ethernet frame holding an ARP packet for Ethernet
// and IPv4 addresses (RFC 826: hardware type 1, protocol type 0x0800,
// lengths 6 and 4).
func parseARPFrame(b []byte) (f arpFrame, ok bool) {
	const eth, arpLen = 14, 28
	if len(b) < eth+arpLen || binary.BigEndian.Uint16(b[12:14]) != uint16(ethernet.EtherTypeARP) {
		return f, false
	}
	p := b[eth : eth+arpLen]
	if binary.BigEndian.Uint16(p[0:2]) != 1 || binary.BigEndian.Uint16(p[2:4]) != uint16(ethernet.EtherTypeIPv4) || p[4] != 6 || p[5] != 4 {
		return f, false
	}
	f.ethSrc = [6]byte(b[6:12])
	f.op = arp.Operation(binary.BigEndian.Uint16(p[6:8]))
	f.sha = [6]byte(p[8:14])
	f.spa = netip.AddrFrom4([4]byte(p[14:18]))
	f.tpa = netip.AddrFrom4([4]byte(p[24:28]))
	return f, true
}

func (c *arpConn) handle(f *arpFrame) {
	// A packet socket also sees the frames this host sends.
	if f.ethSrc == c.mac6 || f.sha == c.mac6 {
		return
	}
	a, ifname := c.l.a, c.l.key.ifname
	announcement := f.spa == f.tpa // RFC 5227 section 3: an ARP announcement
	if f.op == arp.OperationReply || (f.op == arp.OperationRequest && announcement) {
		sha := f.sha // a copy, so that only this rarer path allocates
		a.sawAnnouncement(f.spa, sha[:])
	}
	if f.op != arp.OperationRequest || announcement {
		return
	}
	anywhere, here := a.ownership(f.tpa, ifname)
	if !anywhere {
		return
	}
	a.metrics.arpRequest(ifname)
	if !here || c.l.isLocal(f.tpa) || !answerableARP(f) || !a.mayReply("ipv4", requester{mac: f.sha}) {
		return
	}
	sha := net.HardwareAddr(slices.Clone(f.sha[:]))
	reply, err := arp.NewPacket(arp.OperationReply, c.mac, f.tpa, sha, f.spa)
	if err != nil {
		return
	}
	if err := c.write(reply, sha); err != nil {
		a.log.V(1).Info("ARP reply not sent", "ip", f.tpa.String(), "interface", ifname, "error", err.Error())
		return
	}
	a.metrics.arpReply(ifname)
}

// announce broadcasts a gratuitous ARP in both forms, since neighbours differ
// in which they heed: a request with sender and target ip (RFC 5227 section
// 3), and a reply whose target hardware address is also this interface's
// (RFC 5944 section 4.6; Linux takes a reply as gratuitous only then).
func (c *arpConn) announce(ip netip.Addr) error {
	req, err := arp.NewPacket(arp.OperationRequest, c.mac, ip, make(net.HardwareAddr, 6), ip)
	if err != nil {
		return err
	}
	if err := c.write(req, ethernet.Broadcast); err != nil {
		return err
	}
	rep, err := arp.NewPacket(arp.OperationReply, c.mac, ip, c.mac, ip)
	if err != nil {
		return err
	}
	return c.write(rep, ethernet.Broadcast)
}

func (c *arpConn) write(p *arp.Packet, dst net.HardwareAddr) error {
	payload, err := p.MarshalBinary()
	if err != nil {
		return err
	}
	f := ethernet.Frame{Destination: dst, Source: c.mac, EtherType: ethernet.EtherTypeARP, Payload: payload}
	b, err := f.MarshalBinary()
	if err != nil {
		return err
	}
	_, err = c.pc.WriteTo(b, &packet.Addr{HardwareAddr: dst})
	return err
}
