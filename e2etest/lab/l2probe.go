package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/packet"
)

// L2Answer is one layer-2 answer for an address, seen on the wire: an ARP
// reply or gratuitous ARP, or an NDP neighbour advertisement.
type L2Answer struct {
	IP  netip.Addr
	MAC string // the Ethernet source, lower case: who really answered
	At  time.Time
	// Unsolicited: a gratuitous ARP or an unsolicited NA (a takeover
	// announcement), not an answer to a probe.
	Unsolicited bool
}

// L2Prober asks, from a lab namespace's eth0, who answers for addresses
// (ARP requests for IPv4, neighbour solicitations to the solicited-node
// group for IPv6, as a host resolving a neighbour sends) and reports every
// answer it sees, with the Ethernet source of the frame, so a test can count
// how many nodes answer one address. It sees unsolicited announcements
// (gratuitous ARP, unsolicited NA) too.
type L2Prober struct {
	ifi      *net.Interface
	arp      *arp.Client
	nd       *packet.Conn
	src4     netip.Addr
	src6     netip.Addr
	onAnswer func(L2Answer)
	wg       sync.WaitGroup
}

const (
	ethIPv6 = 0x86dd
	ethARP  = 0x0806
)

// bigReadBuffer gives a packet socket a 16 MiB receive buffer (root may
// exceed rmem_max).
func bigReadBuffer(c *packet.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 16<<20)
	}); err != nil {
		return err
	}
	return serr
}

// NewL2Prober opens the probe's sockets on eth0 of namespace ns (the client,
// usually: ClientNetns). onAnswer is called from the prober's goroutines for
// every answer until Close.
func NewL2Prober(ns string, onAnswer func(L2Answer)) (*L2Prober, error) {
	p := &L2Prober{onAnswer: onAnswer}
	err := inNetns(ns, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		p.ifi = ifi
		addrs, err := ifi.Addrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				ip, _ := netip.AddrFromSlice(ipn.IP)
				switch {
				case ip.Unmap().Is4():
					p.src4 = ip.Unmap()
				case ip.Is6() && !ip.IsLinkLocalUnicast():
					p.src6 = ip
				}
			}
		}
		ac, err := packet.Listen(ifi, packet.Raw, ethARP, nil)
		if err != nil {
			return fmt.Errorf("ARP packet socket: %w", err)
		}
		if p.arp, err = arp.New(ifi, ac); err != nil {
			ac.Close()
			return fmt.Errorf("ARP client: %w", err)
		}
		if p.nd, err = packet.Listen(ifi, packet.Raw, ethIPv6, nil); err != nil {
			p.arp.Close()
			return fmt.Errorf("IPv6 packet socket: %w", err)
		}
		// A takeover of thousands of addresses is a burst of thousands of
		// announcements: room for them, or the count comes up short.
		for _, c := range []*packet.Conn{ac, p.nd} {
			if err := bigReadBuffer(c); err != nil {
				p.Close()
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("prober in %s: %w", ns, err)
	}
	p.wg.Add(2)
	go p.readARP()
	go p.readND()
	return p, nil
}

// Probe sends one request for ip: an ARP request or a neighbour solicitation.
func (p *L2Prober) Probe(ip netip.Addr) error {
	if ip.Is4() {
		return p.arp.Request(ip)
	}
	return p.solicit(ip)
}

// Close stops the prober.
func (p *L2Prober) Close() {
	p.arp.Close()
	p.nd.Close()
	p.wg.Wait()
}

func (p *L2Prober) readARP() {
	defer p.wg.Done()
	for {
		pkt, frame, err := p.arp.Read()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "closed") {
				return
			}
			continue // not ARP for Ethernet and IPv4: skip
		}
		if frame.Source.String() == p.ifi.HardwareAddr.String() {
			continue
		}
		gratuitous := pkt.SenderIP == pkt.TargetIP
		if pkt.Operation != arp.OperationReply && !gratuitous {
			continue // someone else's request
		}
		p.onAnswer(L2Answer{IP: pkt.SenderIP, MAC: frame.Source.String(), At: time.Now(), Unsolicited: gratuitous || pkt.TargetIP != p.src4})
	}
}

// readND reads neighbour advertisements (ICMPv6 type 136) off the wire.
func (p *L2Prober) readND() {
	defer p.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, _, err := p.nd.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "closed") {
				return
			}
			continue
		}
		f := buf[:n]
		// Ethernet (14) + IPv6 (40) + NA header (24), next header ICMPv6, type NA.
		if n < 14+40+24 || f[14+6] != 58 || f[14+40] != 136 {
			continue
		}
		src := net.HardwareAddr(f[6:12]).String()
		if src == p.ifi.HardwareAddr.String() {
			continue
		}
		target, _ := netip.AddrFromSlice(f[14+40+8 : 14+40+24])
		solicited := f[14+40+4]&0x40 != 0
		p.onAnswer(L2Answer{IP: target, MAC: src, At: time.Now(), Unsolicited: !solicited})
	}
}

// solicit sends a neighbour solicitation for target to its solicited-node
// group (RFC 4861 section 7.2.2), with the source link-layer option.
func (p *L2Prober) solicit(target netip.Addr) error {
	t := target.As16()
	dst := netip.AddrFrom16([16]byte{0xff, 0x02, 10: 0, 11: 1, 12: 0xff, 13: t[13], 14: t[14], 15: t[15]})
	dstMAC := net.HardwareAddr{0x33, 0x33, 0xff, t[13], t[14], t[15]}
	icmp := make([]byte, 24+8)
	icmp[0] = 135 // neighbour solicitation
	copy(icmp[8:24], t[:])
	icmp[24], icmp[25] = 1, 1 // source link-layer address, 8 bytes
	copy(icmp[26:32], p.ifi.HardwareAddr)
	src := p.src6.As16()
	d := dst.As16()
	binary.BigEndian.PutUint16(icmp[2:4], icmpv6Checksum(src, d, icmp))
	frame := make([]byte, 14+40+len(icmp))
	copy(frame[0:6], dstMAC)
	copy(frame[6:12], p.ifi.HardwareAddr)
	binary.BigEndian.PutUint16(frame[12:14], ethIPv6)
	ip := frame[14:54]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:6], uint16(len(icmp)))
	ip[6], ip[7] = 58, 255 // ICMPv6, hop limit 255 as NDP requires
	copy(ip[8:24], src[:])
	copy(ip[24:40], d[:])
	copy(frame[54:], icmp)
	_, err := p.nd.WriteTo(frame, &packet.Addr{HardwareAddr: dstMAC})
	return err
}

func icmpv6Checksum(src, dst [16]byte, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src[:])
	add(dst[:])
	var l [8]byte
	binary.BigEndian.PutUint32(l[0:4], uint32(len(msg)))
	l[7] = 58
	add(l[:])
	add(msg)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// NeighbourMAC returns the MAC that namespace ns's neighbour table holds for
// ip ("" when none), and the entry's state (REACHABLE, STALE, ...).
func NeighbourMAC(ns string, ip netip.Addr) (mac, state string) {
	out, _ := exec.Command("ip", "-n", ns, "neigh", "show", ip.String(), "dev", "eth0").Output()
	f := strings.Fields(string(out))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "lladdr" {
			mac = strings.ToLower(f[i+1])
		}
	}
	if len(f) > 0 {
		state = f[len(f)-1]
	}
	return mac, state
}

// FlushNeighbours removes ns's neighbour entries for the addresses in to (an
// address or a prefix), so the next packet to one of them must resolve it
// again (ARP or NDP) as a fresh client would.
func FlushNeighbours(ns, to string) error {
	out, err := exec.Command("ip", "-n", ns, "neigh", "flush", "to", to, "dev", "eth0").CombinedOutput()
	if err != nil {
		return fmt.Errorf("flush neighbours %s in %s: %w: %s", to, ns, err, out)
	}
	return nil
}
