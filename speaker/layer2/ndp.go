package layer2

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// ndpConn answers IPv6 neighbour solicitations (RFC 4861) on one interface
// through an ICMPv6 socket bound to the interface's link-local address; the
// listener makes it join the solicited-node group of each owned address.
// Messages are parsed and built by package ndp. The socket is opened here
// rather than by ndp.Listen so that it can send from the owned address
// itself (IPV6_FREEBIND): that is what a host does for an address assigned
// to it, and what tools such as ndisc6 expect (they drop an advertisement
// for a global target that comes from a link-local source).
type ndpConn struct {
	l      *listener
	pc     icmpConn
	probes frameConn // unicast solicitations, see ndp_unicast.go
	ifi    *net.Interface
	mac    net.HardwareAddr
	ll     netip.Addr
	fromLL atomic.Bool // the kernel refused the owned address as source; use the link-local one
	// groups holds the solicited-node memberships (see groupHolders).
	groups groupHolders
	// unfiltered: the kernel filter passes every message. Guarded by the
	// listener's mu.
	unfiltered bool
}

func openNDP(l *listener, ifi *net.Interface) (*ndpConn, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, err
	}
	var ll netip.Addr
	for _, a := range addrs {
		if p, ok := prefixOf(a); ok && p.Addr().Is6() && p.Addr().IsLinkLocalUnicast() {
			ll = p.Addr()
			break
		}
	}
	if !ll.IsValid() {
		return nil, errors.New("no IPv6 link-local address (yet)")
	}
	// Zones by index: the net package caches zone names process-wide, and
	// a name may stand for another link in another namespace, or for a link
	// since deleted and made again.
	ic, err := net.ListenIP("ip6:ipv6-icmp", &net.IPAddr{IP: ll.AsSlice(), Zone: strconv.Itoa(ifi.Index)})
	if err != nil {
		return nil, err
	}
	c := &ndpConn{l: l, pc: ipv6.NewPacketConn(ic), ifi: ifi, mac: slices.Clone(ifi.HardwareAddr), ll: ll}
	if err := c.setup(ic); err != nil {
		_ = ic.Close()
		return nil, err
	}
	if c.probes, err = listenUnicastNS(ifi); err != nil {
		_ = ic.Close()
		return nil, err
	}
	return c, nil
}

func (c *ndpConn) setup(ic *net.IPConn) error {
	rc, err := ic.SyscallConn()
	if err != nil {
		return err
	}
	var sockErr error
	var allErr error
	if err := rc.Control(func(fd uintptr) {
		sockErr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1)
		// Hear the groups the holder sockets joined (see groupHolders).
		allErr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_ALL, 1)
	}); err != nil {
		return err
	}
	if allErr != nil {
		return fmt.Errorf("IPV6_MULTICAST_ALL: %w", allErr)
	}
	if sockErr != nil {
		c.fromLL.Store(true)
	}
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeNeighborSolicitation)
	f.Accept(ipv6.ICMPTypeNeighborAdvertisement)
	// RFC 4861 section 7.1: hop limit 255, so a receiver knows the sender
	// is on the link, and must check it on what it receives.
	for _, err := range []error{
		c.pc.SetICMPFilter(&f),
		c.pc.SetHopLimit(ndp.HopLimit),
		c.pc.SetMulticastHopLimit(ndp.HopLimit),
		c.pc.SetMulticastLoopback(false),
		c.pc.SetControlMessage(ipv6.FlagHopLimit, true),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

// setFilter makes the kernel pass only the messages about owned (see
// ndpFilter), or every one when all is set or owned are too many to name.
func (c *ndpConn) setFilter(owned []netip.Addr, all bool) error {
	return setFilter(c.pc, ndpFilter(owned), all, &c.unfiltered)
}

func (c *ndpConn) close() error {
	return errors.Join(c.pc.Close(), c.probes.Close(), c.groups.close())
}

func (c *ndpConn) joinGroup(g netip.Addr) error {
	return c.groups.join(g, c.ifi.Index, c.l.a.inNetns)
}

func (c *ndpConn) leaveGroup(g netip.Addr) error { return c.groups.leave(g, c.ifi.Index) }

// groupHolders spreads multicast memberships over sockets that exist only to
// hold them. The kernel charges a socket's memberships to its option memory
// (net.core.optmem_max, 20 KiB to 128 KiB), so one socket holds a few
// hundred to a few thousand groups, and a node owning more IPv6 addresses
// than that could not answer for the rest (setsockopt: cannot allocate
// memory). The interface accepts a group's packets once any socket joined
// it, and a raw socket receives multicast for groups it did not join itself
// while IPV6_MULTICAST_ALL is on (the default; see inet6_mc_check in
// net/ipv6/mcast.c), so the NDP socket hears them all.
type groupHolders struct {
	mu    sync.Mutex // close comes from serve as well as from the listener
	socks []*groupHolder
	at    map[netip.Addr]*groupHolder
}

type groupHolder struct {
	fd   int
	n    int
	full bool
}

// groupsPerHolder stays well inside the smallest default option memory.
const groupsPerHolder = 128

func (h *groupHolders) join(g netip.Addr, ifindex int, inNetns func(func() error) error) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.at == nil {
		h.at = map[netip.Addr]*groupHolder{}
	}
	if h.at[g] != nil {
		return nil
	}
	mreq := &unix.IPv6Mreq{Multiaddr: g.As16(), Interface: uint32(ifindex)}
	for {
		var s *groupHolder
		for _, c := range h.socks {
			if !c.full && c.n < groupsPerHolder {
				s = c
				break
			}
		}
		if s == nil {
			s = &groupHolder{fd: -1}
			if err := inNetns(func() error {
				fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
				s.fd = fd
				return err
			}); err != nil {
				return fmt.Errorf("a socket to hold multicast memberships: %w", err)
			}
			h.socks = append(h.socks, s)
		}
		err := unix.SetsockoptIPv6Mreq(s.fd, unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP, mreq)
		if errors.Is(err, unix.ENOMEM) && s.n > 0 {
			s.full = true // a smaller option memory than planned for: take another socket
			continue
		}
		if err != nil {
			return err
		}
		s.n++
		h.at[g] = s
		return nil
	}
}

func (h *groupHolders) leave(g netip.Addr, ifindex int) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.at[g]
	if s == nil {
		return nil
	}
	delete(h.at, g)
	s.n--
	s.full = false
	return unix.SetsockoptIPv6Mreq(s.fd, unix.IPPROTO_IPV6, unix.IPV6_LEAVE_GROUP, &unix.IPv6Mreq{Multiaddr: g.As16(), Interface: uint32(ifindex)})
}

func (h *groupHolders) close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var errs []error
	for _, s := range h.socks {
		if s.fd >= 0 {
			errs = append(errs, unix.Close(s.fd))
		}
	}
	h.socks, h.at = nil, nil
	return errors.Join(errs...)
}

// serve reads both sockets until one fails, then closes both.
func (c *ndpConn) serve() error {
	errc := make(chan error, 2)
	go func() { errc <- c.serveMulticast() }()
	go func() { errc <- c.serveUnicast() }()
	err := <-errc
	_ = c.close()
	<-errc
	return err
}

func (c *ndpConn) serveUnicast() error {
	buf := make([]byte, 1500)
	for {
		n, _, err := c.probes.ReadFrom(buf)
		if err != nil {
			return err
		}
		// Whom it solicits first: under a flood for other addresses,
		// that is all the work done.
		const headers = 14 + 40 // Ethernet, IPv6 (the filter passes no extension headers)
		if n < headers {
			continue
		}
		if t, ok := ndpTarget(buf[headers:n]); !ok || !c.l.a.owns(t) {
			continue
		}
		// A solicitation to the link-local address reaches the ICMPv6
		// socket, which is bound to it.
		if ns, src, dst, ok := parseUnicastNS(buf[:n]); ok && dst != c.ll {
			c.solicited(ns, src)
		}
	}
}

func (c *ndpConn) serveMulticast() error {
	buf := make([]byte, max(c.ifi.MTU, 1280))
	for {
		n, cm, src, err := c.pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		if cm != nil && cm.HopLimit != ndp.HopLimit {
			continue
		}
		if t, ok := ndpTarget(buf[:n]); !ok || !c.l.a.owns(t) {
			continue
		}
		m, err := ndp.ParseMessage(buf[:n])
		if err != nil {
			continue
		}
		switch m := m.(type) {
		case *ndp.NeighborSolicitation:
			if from, ok := src.(*net.IPAddr); ok {
				if ip, ok := netip.AddrFromSlice(from.IP); ok {
					c.solicited(m, ip)
				}
			}
		case *ndp.NeighborAdvertisement:
			if lla := linkLayerAddr(m.Options, ndp.Target); lla != nil && !bytes.Equal(lla, c.mac) {
				c.l.a.sawAnnouncement(m.TargetAddress.WithZone(""), lla)
			}
		}
	}
}

// ndpTarget reads the target address of a neighbour solicitation or
// advertisement (RFC 4861 sections 4.3 and 4.4: type, code, checksum, 4
// bytes, then the target), before anything else is parsed or checked.
func ndpTarget(msg []byte) (netip.Addr, bool) {
	if len(msg) < 24 || (msg[0] != byte(ipv6.ICMPTypeNeighborSolicitation) && msg[0] != byte(ipv6.ICMPTypeNeighborAdvertisement)) {
		return netip.Addr{}, false
	}
	return netip.AddrFrom16([16]byte(msg[8:24])), true
}

func (c *ndpConn) solicited(ns *ndp.NeighborSolicitation, src netip.Addr) {
	sll := linkLayerAddr(ns.Options, ndp.Source)
	if sll != nil && bytes.Equal(sll, c.mac) {
		return // this host's own solicitation
	}
	a, ifname, target := c.l.a, c.l.key.ifname, ns.TargetAddress.WithZone("")
	anywhere, here := a.ownership(target, ifname)
	if !anywhere {
		return
	}
	a.metrics.ndpSolicitation(ifname)
	if !here || c.l.isLocal(target) || !answerableNS(ns, src, target) || !a.mayReply("ipv6", requesterOf(sll, src)) {
		return
	}
	na := &ndp.NeighborAdvertisement{
		Solicited:     true,
		Override:      true,
		TargetAddress: target,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: c.mac}},
	}
	dst := src
	if src.IsUnspecified() {
		// RFC 4861 section 7.2.4: a solicitation from the unspecified
		// address (duplicate address detection) is answered to all nodes.
		dst, na.Solicited = netip.IPv6LinkLocalAllNodes(), false
	}
	if err := c.send(na, target, dst); err != nil {
		a.log.V(1).Info("neighbour advertisement not sent", "ip", target.String(), "interface", ifname, "error", err.Error())
		return
	}
	a.metrics.ndpAdvertisement(ifname)
}

// announce sends an unsolicited Neighbor Advertisement with the Override flag
// to all nodes (RFC 4861 section 7.2.6), so neighbours replace the link-layer
// address they have for ip.
func (c *ndpConn) announce(ip netip.Addr) error {
	na := &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: ip,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: c.mac}},
	}
	return c.send(na, ip, netip.IPv6LinkLocalAllNodes())
}

// send sends m to dst from the owned address ip, or from the link-local
// address if the kernel will not send from an address it does not have.
func (c *ndpConn) send(m ndp.Message, ip, dst netip.Addr) error {
	b, err := ndp.MarshalMessage(m)
	if err != nil {
		return err
	}
	// No zone: the control message's IfIndex names the interface. x/net
	// resolves a zone through its cache of interface names, and one it does
	// not find there (an index) made it list every interface again at each
	// packet (at a takeover of 3,000 IPv6 addresses, 0.7 s of CPU and 160 MB
	// of garbage), while a name can be stale for a minute after the
	// interface is replaced (then the kernel refuses the packet: EINVAL).
	to := &net.IPAddr{IP: dst.AsSlice()}
	if !c.fromLL.Load() {
		cm := &ipv6.ControlMessage{HopLimit: ndp.HopLimit, Src: ip.AsSlice(), IfIndex: c.ifi.Index}
		if _, err = c.pc.WriteTo(b, cm, to); err == nil || !errors.Is(err, unix.EINVAL) {
			return err
		}
		c.fromLL.Store(true)
		c.l.a.log.Info("the kernel refuses to send from an owned IPv6 address; sending from the link-local address", "interface", c.ifi.Name, "error", err.Error())
	}
	cm := &ipv6.ControlMessage{HopLimit: ndp.HopLimit, Src: c.ll.AsSlice(), IfIndex: c.ifi.Index}
	if _, err := c.pc.WriteTo(b, cm, to); err != nil {
		return fmt.Errorf("from %s: %w", c.ll, err)
	}
	return nil
}

func linkLayerAddr(opts []ndp.Option, d ndp.Direction) net.HardwareAddr {
	for _, o := range opts {
		if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == d {
			return lla.Addr
		}
	}
	return nil
}
