package layer2

import (
	"bytes"
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
	l   *listener
	pc  frameConn
	mac net.HardwareAddr
}

func openARP(l *listener, ifi *net.Interface) (*arpConn, error) {
	pc, err := packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
	if err != nil {
		return nil, err
	}
	return &arpConn{l: l, pc: pc, mac: slices.Clone(ifi.HardwareAddr)}, nil
}

func (c *arpConn) close() error { return c.pc.Close() }

func (c *arpConn) serve() error {
	buf := make([]byte, 128) // an ARP frame is 42 bytes, 64 with padding and a VLAN tag
	for {
		n, _, err := c.pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		var f ethernet.Frame
		if err := f.UnmarshalBinary(buf[:n]); err != nil || f.EtherType != ethernet.EtherTypeARP {
			continue
		}
		var p arp.Packet
		if err := p.UnmarshalBinary(f.Payload); err != nil {
			continue
		}
		c.handle(&f, &p)
	}
}

func (c *arpConn) handle(f *ethernet.Frame, p *arp.Packet) {
	// A packet socket also sees the frames this host sends.
	if bytes.Equal(f.Source, c.mac) || bytes.Equal(p.SenderHardwareAddr, c.mac) {
		return
	}
	if p.HardwareType != 1 || !p.SenderIP.Is4() || !p.TargetIP.Is4() || len(p.SenderHardwareAddr) != 6 {
		return
	}
	a, ifname := c.l.a, c.l.key.ifname
	announcement := p.SenderIP == p.TargetIP // RFC 5227 section 3: an ARP announcement
	if p.Operation == arp.OperationReply || (p.Operation == arp.OperationRequest && announcement) {
		a.sawAnnouncement(p.SenderIP, p.SenderHardwareAddr)
	}
	if p.Operation != arp.OperationRequest || announcement {
		return
	}
	anywhere, here := a.ownership(p.TargetIP, ifname)
	if !anywhere {
		return
	}
	a.metrics.arpRequest(ifname)
	if !here || c.l.isLocal(p.TargetIP) || !answerableARP(f, p) {
		return
	}
	reply, err := arp.NewPacket(arp.OperationReply, c.mac, p.TargetIP, p.SenderHardwareAddr, p.SenderIP)
	if err != nil {
		return
	}
	if err := c.write(reply, p.SenderHardwareAddr); err != nil {
		a.log.V(1).Info("ARP reply not sent", "ip", p.TargetIP.String(), "interface", ifname, "error", err.Error())
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
