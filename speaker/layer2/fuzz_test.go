package layer2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv6"
)

// The responders are fed frames through fake sockets: the real serve loops
// read one frame, decide, and write what they would put on the wire.

var (
	owned4      = netip.MustParseAddr("192.0.2.10")
	elsewhere4  = netip.MustParseAddr("192.0.2.11") // owned on eth1
	ownAddr4    = netip.MustParseAddr("192.0.2.12") // eth0's own: the kernel answers
	client4     = netip.MustParseAddr("192.0.2.99")
	elsewhere6  = netip.MustParseAddr("2001:db8:9::211")
	ownAddr6    = netip.MustParseAddr("2001:db8:9::1")
	ourLL       = netip.MustParseAddr("fe80::1")
	errFakeDone = errors.New("no more frames")
)

// responderFixture is an Announcer owning owned4 and owned on eth0 and the
// elsewhere addresses on eth1, with the listener of eth0.
func responderFixture(ipv6 bool) *listener {
	a := &Announcer{
		log: logr.Discard(),
		owned: map[netip.Addr]map[string]bool{
			owned4: {"eth0": true}, owned: {"eth0": true}, ownAddr4: {"eth0": true}, ownAddr6: {"eth0": true},
			elsewhere4: {"eth1": true}, elsewhere6: {"eth1": true},
		},
		listeners: map[listenerKey]*listener{},
		waiters:   map[netip.Addr]map[chan struct{}]bool{},
		seen:      map[netip.Addr]time.Time{},
		limiter:   newReplyLimiter(DefaultReplyLimits(), maxRequesters),
		epoch:     time.Now(),
	}
	l := &listener{a: a, key: listenerKey{ifname: "eth0", ipv6: ipv6}, mac: ourMAC,
		local: map[netip.Addr]bool{ownAddr4: true, ownAddr6: true, ourLL: true}}
	a.listeners[l.key] = l
	return l
}

// fakeFrames is a packet socket that reads the frames given, then fails,
// and keeps what is written.
type fakeFrames struct {
	in      [][]byte
	written [][]byte
	to      []net.Addr
}

func (f *fakeFrames) ReadFrom(b []byte) (int, net.Addr, error) {
	if len(f.in) == 0 {
		return 0, nil, errFakeDone
	}
	n := copy(b, f.in[0])
	f.in = f.in[1:]
	return n, &packet.Addr{HardwareAddr: theirMAC}, nil
}

func (f *fakeFrames) WriteTo(b []byte, addr net.Addr) (int, error) {
	f.written, f.to = append(f.written, bytes.Clone(b)), append(f.to, addr)
	return len(b), nil
}

func (f *fakeFrames) Close() error                      { return nil }
func (f *fakeFrames) SetBPF([]bpf.RawInstruction) error { return nil }

// icmpIn is one ICMPv6 message as the kernel hands it to the socket.
type icmpIn struct {
	msg      []byte
	src      net.IP
	hopLimit int
}

// fakeICMP is an ICMPv6 socket that reads the messages given, then fails,
// and keeps what is written.
type fakeICMP struct {
	in      []icmpIn
	written [][]byte
	cms     []*ipv6.ControlMessage
	to      []net.Addr
}

func (f *fakeICMP) ReadFrom(b []byte) (int, *ipv6.ControlMessage, net.Addr, error) {
	if len(f.in) == 0 {
		return 0, nil, nil, errFakeDone
	}
	m := f.in[0]
	f.in = f.in[1:]
	return copy(b, m.msg), &ipv6.ControlMessage{HopLimit: m.hopLimit}, &net.IPAddr{IP: m.src}, nil
}

func (f *fakeICMP) WriteTo(b []byte, cm *ipv6.ControlMessage, dst net.Addr) (int, error) {
	f.written, f.cms, f.to = append(f.written, bytes.Clone(b)), append(f.cms, cm), append(f.to, dst)
	return len(b), nil
}

func (*fakeICMP) SetICMPFilter(*ipv6.ICMPFilter) error            { return nil }
func (*fakeICMP) SetHopLimit(int) error                           { return nil }
func (*fakeICMP) SetMulticastHopLimit(int) error                  { return nil }
func (*fakeICMP) SetMulticastLoopback(bool) error                 { return nil }
func (*fakeICMP) SetControlMessage(ipv6.ControlFlags, bool) error { return nil }
func (*fakeICMP) Close() error                                    { return nil }
func (*fakeICMP) SetBPF([]bpf.RawInstruction) error               { return nil }

// buildARPFrame builds an ARP frame from src to dst.
func buildARPFrame(op arp.Operation, src, dst, senderMAC net.HardwareAddr, senderIP netip.Addr, targetMAC net.HardwareAddr, targetIP netip.Addr) []byte {
	p, err := arp.NewPacket(op, senderMAC, senderIP, targetMAC, targetIP)
	if err != nil {
		panic(err)
	}
	payload, err := p.MarshalBinary()
	if err != nil {
		panic(err)
	}
	b, err := (&ethernet.Frame{Destination: dst, Source: src, EtherType: ethernet.EtherTypeARP, Payload: payload}).MarshalBinary()
	if err != nil {
		panic(err)
	}
	return b
}

// serveARP runs eth0's ARP responder over frame and returns what it wrote.
func serveARP(frame []byte) *fakeFrames {
	fc := &fakeFrames{in: [][]byte{frame}}
	c := &arpConn{l: responderFixture(false), pc: fc, mac: ourMAC, mac6: [6]byte(ourMAC)}
	if err := c.serve(); err != errFakeDone {
		panic(err)
	}
	return fc
}

// checkARPReply holds what any reply must: it answers a valid request from
// one host, for an address owned on this interface and not its own, and goes
// back to the asker with the target as sender.
func checkARPReply(t *testing.T, in []byte, fc *fakeFrames) {
	t.Helper()
	if len(fc.written) == 0 {
		return
	}
	if len(fc.written) > 1 {
		t.Fatalf("%d replies to one frame", len(fc.written))
	}
	var inF, outF ethernet.Frame
	var req, rep arp.Packet
	if err := inF.UnmarshalBinary(in); err != nil || inF.EtherType != ethernet.EtherTypeARP || req.UnmarshalBinary(inF.Payload) != nil {
		t.Fatalf("a reply to a frame that is not ARP (%x)", in)
	}
	if err := outF.UnmarshalBinary(fc.written[0]); err != nil || rep.UnmarshalBinary(outF.Payload) != nil {
		t.Fatalf("the reply does not parse: %x", fc.written[0])
	}
	switch {
	case req.Operation != arp.OperationRequest || req.SenderIP == req.TargetIP:
		t.Fatalf("replied to a %v from %s for %s, not a request", req.Operation, req.SenderIP, req.TargetIP)
	case req.TargetIP != owned4:
		t.Fatalf("replied for %s, which is not owned on eth0 or is eth0's own", req.TargetIP)
	case !validSenderMAC(req.SenderHardwareAddr) || !validSenderMAC(inF.Source):
		t.Fatalf("replied to the sender MAC %s (frame from %s)", req.SenderHardwareAddr, inF.Source)
	case req.SenderIP.IsMulticast() || req.SenderIP == netip.AddrFrom4([4]byte{255, 255, 255, 255}) || req.SenderIP.IsLoopback():
		t.Fatalf("replied to the forged sender %s", req.SenderIP)
	case rep.Operation != arp.OperationReply || rep.SenderIP != req.TargetIP || !bytes.Equal(rep.SenderHardwareAddr, ourMAC):
		t.Fatalf("reply %+v does not give %s at %s", rep, req.TargetIP, ourMAC)
	case rep.TargetIP != req.SenderIP || !bytes.Equal(rep.TargetHardwareAddr, req.SenderHardwareAddr) || !bytes.Equal(outF.Destination, req.SenderHardwareAddr):
		t.Fatalf("reply %+v to %s does not go back to the asker %s at %s", rep, outF.Destination, req.SenderIP, req.SenderHardwareAddr)
	}
}

// validSenderMAC: one host's address, not a group's, not zero.
func validSenderMAC(mac net.HardwareAddr) bool {
	return len(mac) == 6 && mac[0]&1 == 0 && !bytes.Equal(mac, make(net.HardwareAddr, 6))
}

func arpSeeds() [][]byte {
	bcast, zero := ethernet.Broadcast, make(net.HardwareAddr, 6)
	req := func(src, sender net.HardwareAddr, senderIP, target netip.Addr) []byte {
		return buildARPFrame(arp.OperationRequest, src, bcast, sender, senderIP, zero, target)
	}
	good := req(theirMAC, theirMAC, client4, owned4)
	return [][]byte{
		good,
		req(theirMAC, theirMAC, client4, elsewhere4),
		req(theirMAC, theirMAC, client4, ownAddr4),
		req(theirMAC, theirMAC, netip.IPv4Unspecified(), owned4), // an RFC 5227 probe: answered
		req(theirMAC, theirMAC, owned4, owned4),                  // an announcement: not answered
		req(theirMAC, bcast, client4, owned4),
		req(bcast, theirMAC, client4, owned4),
		req(theirMAC, net.HardwareAddr{0x01, 0x00, 0x5e, 0, 0, 1}, client4, owned4),
		req(theirMAC, zero, client4, owned4),
		req(theirMAC, theirMAC, netip.MustParseAddr("224.0.0.1"), owned4),
		req(theirMAC, theirMAC, netip.MustParseAddr("255.255.255.255"), owned4),
		req(theirMAC, theirMAC, netip.MustParseAddr("127.0.0.1"), owned4),
		req(ourMAC, ourMAC, owned4, owned4),
		buildARPFrame(arp.OperationReply, theirMAC, ourMAC, theirMAC, client4, ourMAC, owned4),
		good[:14], good[:20], good[:41], append(bytes.Clone(good), make([]byte, 30)...),
	}
}

// No ARP frame, however malformed or truncated, crashes the responder, and
// a reply goes only to a valid request from one host for an address owned
// on this interface, back to the asker.
func FuzzARPFrame(f *testing.F) {
	for _, s := range arpSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		checkARPReply(t, frame, serveARP(frame))
	})
}

// serveNDP runs eth0's NDP responder over one ICMPv6 message from src with
// the given hop limit, and returns what it sent.
func serveNDP(msg []byte, src netip.Addr, hopLimit int) *fakeICMP {
	fi := &fakeICMP{in: []icmpIn{{msg: msg, src: src.AsSlice(), hopLimit: hopLimit}}}
	c := &ndpConn{l: responderFixture(true), pc: fi, ifi: &net.Interface{Index: 2, MTU: 1500, Name: "eth0", HardwareAddr: ourMAC}, mac: ourMAC, ll: ourLL}
	if err := c.serveMulticast(); err != errFakeDone {
		panic(err)
	}
	return fi
}

// checkNA holds what any advertisement must: it answers a solicitation from
// a valid source for an address owned on this interface, advertises exactly
// that address at this interface's MAC, and goes back to the source, or to
// all nodes for duplicate address detection (RFC 4861 section 7.2.4).
func checkNA(t *testing.T, ns *ndp.NeighborSolicitation, src netip.Addr, written [][]byte, to []net.Addr) {
	t.Helper()
	if len(written) == 0 {
		return
	}
	if len(written) > 1 {
		t.Fatalf("%d advertisements for one solicitation", len(written))
	}
	if ns == nil {
		t.Fatalf("an advertisement for a message that is no solicitation")
	}
	m, err := ndp.ParseMessage(written[0])
	na, ok := m.(*ndp.NeighborAdvertisement)
	if err != nil || !ok {
		t.Fatalf("the reply is no advertisement: %v %v", m, err)
	}
	dst := to[0].(*net.IPAddr)
	dstIP, _ := netip.AddrFromSlice(dst.IP)
	switch {
	case ns.TargetAddress != owned:
		t.Fatalf("advertised %s, which is not owned on eth0 or is eth0's own", ns.TargetAddress)
	case na.TargetAddress != ns.TargetAddress || !na.Override || !bytes.Equal(linkLayerAddr(na.Options, ndp.Target), ourMAC):
		t.Fatalf("advertisement %+v does not give %s at %s", na, ns.TargetAddress, ourMAC)
	case src.IsMulticast() || src.IsLoopback() || src.Is4In6() || src == ns.TargetAddress || !src.Is6():
		t.Fatalf("answered the forged source %s", src)
	case src.IsUnspecified() && linkLayerAddr(ns.Options, ndp.Source) != nil:
		t.Fatalf("answered a solicitation from :: with a source link-layer address (RFC 4861 7.1.1)")
	case src.IsUnspecified() && (dstIP != netip.IPv6LinkLocalAllNodes() || na.Solicited):
		t.Fatalf("answered duplicate address detection to %s, solicited %v; want all nodes, unsolicited (RFC 4861 7.2.4)", dstIP, na.Solicited)
	case !src.IsUnspecified() && (dstIP != src || !na.Solicited):
		t.Fatalf("answered %s to %s, solicited %v", src, dstIP, na.Solicited)
	}
}

func parseNS(msg []byte) *ndp.NeighborSolicitation {
	m, err := ndp.ParseMessage(msg)
	if err != nil {
		return nil
	}
	ns, _ := m.(*ndp.NeighborSolicitation)
	return ns
}

func nsBytes(target netip.Addr, opts ...ndp.Option) []byte {
	b, err := ndp.MarshalMessage(&ndp.NeighborSolicitation{TargetAddress: target, Options: opts})
	if err != nil {
		panic(err)
	}
	return b
}

// No ICMPv6 message crashes the NDP responder, and it answers only as
// checkNA says.
func FuzzNDPMessage(f *testing.F) {
	sll := &ndp.LinkLayerAddress{Direction: ndp.Source, Addr: theirMAC}
	for _, s := range []struct {
		msg []byte
		src netip.Addr
	}{
		{nsBytes(owned, sll), client},
		{nsBytes(owned), netip.IPv6Unspecified()},
		{nsBytes(owned, sll), netip.IPv6Unspecified()},
		{nsBytes(owned, sll), netip.MustParseAddr("ff02::1")},
		{nsBytes(owned, sll), netip.MustParseAddr("::1")},
		{nsBytes(owned, sll), netip.MustParseAddr("::ffff:192.0.2.99")},
		{nsBytes(owned, sll), owned},
		{nsBytes(elsewhere6, sll), client},
		{nsBytes(ownAddr6, sll), client},
		{nsBytes(owned, &ndp.LinkLayerAddress{Direction: ndp.Source, Addr: ourMAC}), client},
		{nsBytes(owned, sll)[:20], client},
		{[]byte{136, 0, 0, 0}, client},
	} {
		f.Add(s.msg, s.src.AsSlice(), uint8(255))
	}
	f.Fuzz(func(t *testing.T, msg, srcBytes []byte, hopLimit uint8) {
		src, ok := netip.AddrFromSlice(srcBytes)
		if !ok || !src.Is6() {
			return // the ICMPv6 socket hands over IPv6 sources only
		}
		fi := serveNDP(msg, src, int(hopLimit))
		if len(fi.written) > 0 && hopLimit != ndp.HopLimit {
			t.Fatalf("answered a solicitation with hop limit %d (RFC 4861 7.1.1: 255)", hopLimit)
		}
		checkNA(t, parseNS(msg), src, fi.written, fi.to)
	})
}

// serveUnicastNDP runs eth0's responder to unicast probes over frame.
func serveUnicastNDP(frame []byte) *fakeICMP {
	fi := &fakeICMP{}
	c := &ndpConn{l: responderFixture(true), pc: fi, probes: &fakeFrames{in: [][]byte{frame}},
		ifi: &net.Interface{Index: 2, MTU: 1500, Name: "eth0", HardwareAddr: ourMAC}, mac: ourMAC, ll: ourLL}
	if err := c.serveUnicast(); err != errFakeDone {
		panic(err)
	}
	return fi
}

func unicastSeeds(t testing.TB) [][]byte {
	good := frame(t, ourMAC, client, owned, 255, probe())
	dad := frame(t, ourMAC, netip.IPv6Unspecified(), owned, 255, &ndp.NeighborSolicitation{TargetAddress: owned})
	short := bytes.Clone(good)
	binary.BigEndian.PutUint16(short[18:20], 0) // payload length 0
	return [][]byte{
		good, dad, short, good[:60], good[:78], good[:54],
		frame(t, ourMAC, netip.MustParseAddr("ff02::1"), owned, 255, probe()),
		frame(t, ourMAC, netip.MustParseAddr("::1"), owned, 255, probe()),
		frame(t, ourMAC, owned, owned, 255, probe()),
		frame(t, ourMAC, client, ourLL, 255, probe()),
		frame(t, ourMAC, client, elsewhere6, 255, &ndp.NeighborSolicitation{TargetAddress: elsewhere6}),
		frame(t, ourMAC, client, owned, 254, probe()),
	}
}

// No frame the unicast-probe socket catches crashes its parser, a
// solicitation it accepts is one RFC 4861 7.1.1 lets a node accept, and the
// responder answers only as checkNA says: never duplicate address detection,
// which goes to a solicited-node multicast address, never to a unicast one.
func FuzzNDPUnicastFrame(f *testing.F) {
	for _, s := range unicastSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ns, src, dst, ok := parseUnicastNS(b)
		if ok {
			switch {
			case ns == nil:
				t.Fatal("accepted without a solicitation")
			case len(b) < 14+40+24 || b[14+7] != ndp.HopLimit:
				t.Fatalf("accepted a frame of %d bytes with hop limit %d", len(b), b[14+7])
			case !dst.IsGlobalUnicast() && !dst.IsLinkLocalUnicast():
				t.Fatalf("accepted a solicitation to %s", dst)
			case src.IsUnspecified():
				t.Fatal("accepted duplicate address detection sent to a unicast address")
			}
		}
		fi := serveUnicastNDP(b)
		if len(fi.written) > 0 && !ok {
			t.Fatal("answered a frame parseUnicastNS refuses")
		}
		checkNA(t, ns, src, fi.written, fi.to)
	})
}

// FuzzHandlerNeverPanics gives arbitrary bytes to every entry point that
// takes a packet off the wire: the ARP responder, the NDP responder and the
// unicast-probe responder. Whatever they send answers for an owned address
// of this interface only.
func FuzzHandlerNeverPanics(f *testing.F) {
	for _, s := range arpSeeds() {
		f.Add(uint8(0), s)
	}
	for _, s := range unicastSeeds(f) {
		f.Add(uint8(1), s)
		f.Add(uint8(2), s[14:])
	}
	f.Fuzz(func(t *testing.T, entry uint8, b []byte) {
		switch entry % 3 {
		case 0:
			checkARPReply(t, b, serveARP(b))
		case 1:
			ns, src, _, _ := parseUnicastNS(b)
			fi := serveUnicastNDP(b)
			checkNA(t, ns, src, fi.written, fi.to)
		case 2:
			// An IPv6 packet as the kernel would split it: the source from
			// the header, the hop limit, the ICMPv6 message after it.
			if len(b) < 40 {
				serveNDP(b, client, 255)
				return
			}
			src := netip.AddrFrom16([16]byte(b[8:24]))
			fi := serveNDP(b[40:], src, int(b[7]))
			checkNA(t, parseNS(b[40:]), src, fi.written, fi.to)
		}
	})
}
