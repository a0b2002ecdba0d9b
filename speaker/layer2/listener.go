package layer2

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/ndp"
)

// A listener that cannot open, or whose socket fails, retries after a delay
// that doubles from minBackoff to maxBackoff. A link coming up or changing
// wakes it at once (see watchLinks), so the cap only bounds the retries
// nothing announces.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

var (
	// errStopped is what open returns when the listener was stopped meanwhile.
	errStopped = errors.New("listener stopped")
	// errLinkDown: the interface is administratively down; the link watcher
	// wakes the listener when it comes up.
	errLinkDown = errors.New("interface is down")
)

// conn is a listener's open socket.
type conn interface {
	// serve reads and answers packets until the socket fails or is closed.
	serve() error
	// announce sends the unsolicited announcement of ip.
	announce(ip netip.Addr) error
	close() error
}

// listener answers for the owned addresses of one family on one interface,
// and reopens its socket when it fails or the link comes back.
type listener struct {
	a      *Announcer
	key    listenerKey
	ctx    context.Context // ends on stop
	cancel context.CancelFunc
	kick   chan struct{} // reopen now rather than after the backoff

	mu      sync.Mutex
	conn    conn // nil while not open
	ifindex int
	mac     net.HardwareAddr
	reason  string              // why reopen closed conn, for the log
	running bool                // the link was up and running when last seen
	local   map[netip.Addr]bool // the interface's own addresses: the kernel answers for them
	groups  map[netip.Addr]bool // solicited-node multicast groups joined on conn (IPv6)
	// refs counts, per solicited-node group, the owned addresses of this
	// listener in it (addresses ending in the same 24 bits share a group),
	// while conn is open: a group is left when its last address goes.
	refs  map[netip.Addr]int
	retry []netip.Addr // groups whose join failed, tried again at the next update
}

func newListener(a *Announcer, k listenerKey) *listener {
	ctx, cancel := context.WithCancel(a.ctx)
	return &listener{a: a, key: k, ctx: ctx, cancel: cancel, kick: make(chan struct{}, 1)}
}

func (l *listener) family() string {
	if l.key.ipv6 {
		return "ipv6"
	}
	return "ipv4"
}

// run opens the socket, announces every address the listener carries, serves
// until the socket fails, and starts over until stopped. The result of the
// first attempt to open goes to first.
func (l *listener) run(first chan<- error) {
	defer l.a.wg.Done()
	log := l.a.log.WithValues("interface", l.key.ifname, "family", l.family())
	delay, failing := minBackoff, false
	for {
		c, err := l.open()
		if err == nil {
			l.a.announce(l.targets())
		}
		if first != nil {
			first <- err
			first = nil
		}
		if l.ctx.Err() != nil {
			if c != nil {
				l.closeConn(c)
			}
			return
		}
		if err != nil {
			switch {
			case failing:
				log.V(1).Info("still cannot listen", "error", err.Error(), "retryIn", delay.String())
			case errors.Is(err, errLinkDown):
				log.Info("interface is down; listening once it is up")
			default:
				log.Error(err, "cannot listen; retrying", "retryIn", delay.String())
			}
			failing = true
			if !l.sleep(delay) {
				return
			}
			delay = min(2*delay, maxBackoff)
			continue
		}
		if failing {
			log.Info("listening again")
		} else {
			log.V(1).Info("listening")
		}
		failing = false
		opened := time.Now()
		err = c.serve()
		l.closeConn(c)
		if l.ctx.Err() != nil {
			return
		}
		if time.Since(opened) > time.Minute {
			delay = minBackoff
		}
		l.mu.Lock()
		reason := l.reason
		l.reason = ""
		l.mu.Unlock()
		if reason == "" {
			reason = err.Error()
		}
		log.Info("reopening the listener", "reason", reason)
		if !l.sleep(delay) {
			return
		}
		delay = min(2*delay, maxBackoff)
	}
}

// open opens the socket in the Announcer's network namespace and joins the
// solicited-node groups of the owned addresses.
func (l *listener) open() (conn, error) {
	var (
		c     conn
		ifi   *net.Interface
		local = map[netip.Addr]bool{}
	)
	err := l.a.inNetns(func() error {
		var err error
		if ifi, err = net.InterfaceByName(l.key.ifname); err != nil {
			return err
		}
		if ifi.Flags&net.FlagUp == 0 {
			return errLinkDown
		}
		if len(ifi.HardwareAddr) != 6 {
			return fmt.Errorf("interface has no Ethernet address (%q)", ifi.HardwareAddr)
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if p, ok := prefixOf(a); ok {
				local[p.Addr()] = true
			}
		}
		if l.key.ipv6 {
			c, err = openNDP(l, ifi)
		} else {
			c, err = openARP(l, ifi)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	if l.ctx.Err() != nil {
		l.mu.Unlock()
		_ = c.close()
		return nil, errStopped
	}
	l.conn, l.ifindex, l.mac, l.local, l.groups = c, ifi.Index, ifi.HardwareAddr, local, map[netip.Addr]bool{}
	l.running = ifi.Flags&net.FlagRunning != 0
	l.mu.Unlock()
	l.a.mu.RLock()
	if l.key.ipv6 {
		l.syncGroups(l.a.addrsOnLocked(l.key))
	}
	l.syncFilter()
	l.a.mu.RUnlock()
	return c, nil
}

// closeConn closes c, and forgets it if it is still the listener's socket.
func (l *listener) closeConn(c conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	_ = c.close()
	if l.conn == c {
		l.conn, l.groups, l.refs, l.retry = nil, nil, nil, nil
	}
}

// stop closes the socket for good; run returns soon after.
func (l *listener) stop() {
	l.cancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		_ = l.conn.close()
		l.conn, l.groups, l.refs, l.retry = nil, nil, nil, nil
	}
}

// reopen closes the socket, if open, and wakes run to open it again at once.
func (l *listener) reopen(reason string) {
	l.mu.Lock()
	if l.conn != nil {
		_ = l.conn.close()
		l.conn, l.groups, l.refs, l.retry, l.reason = nil, nil, nil, nil, reason
	}
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// sleep waits d, or less if kicked; false if the listener was stopped.
func (l *listener) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-l.ctx.Done():
		return false
	case <-t.C:
	case <-l.kick:
	}
	return true
}

// targets lists the owned addresses this listener carries.
func (l *listener) targets() []target {
	l.a.mu.RLock()
	defer l.a.mu.RUnlock()
	var out []target
	for _, ip := range l.a.addrsOnLocked(l.key) {
		out = append(out, target{ip: ip, key: l.key})
	}
	return out
}

// announce sends the announcement of ip if the socket is open and ip is not
// one of the interface's own addresses.
func (l *listener) announce(ip netip.Addr) {
	l.mu.Lock()
	c, local := l.conn, l.local[ip]
	l.mu.Unlock()
	if c == nil || local {
		return
	}
	if err := c.announce(ip); err != nil {
		l.a.log.V(1).Info("announcement not sent", "ip", ip.String(), "interface", l.key.ifname, "error", err.Error())
		return
	}
	l.a.metrics.announced(l.family())
}

// isLocal reports whether ip is one of the interface's own addresses.
func (l *listener) isLocal(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.local[ip]
}

// hasMAC reports whether mac is this listener's interface's.
func (l *listener) hasMAC(mac net.HardwareAddr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mac != nil && bytes.Equal(l.mac, mac)
}

// syncFilter gives the socket the kernel filter of every owned address of
// its family (on any interface: an announcement by another node is heeded
// on every interface, see WaitAnnouncedByOther). l.a.mu held.
func (l *listener) syncFilter() {
	l.mu.Lock()
	defer l.mu.Unlock()
	var err error
	switch c := l.conn.(type) {
	case *arpConn:
		all := l.a.owned4 > maxFilteredARP
		var owned []netip.Addr
		if !all {
			owned = l.a.ownedOfFamilyLocked(false)
		}
		err = c.setFilter(owned, all)
	case *ndpConn:
		all := len(l.a.owned)-l.a.owned4 > maxFilteredNDP
		var owned []netip.Addr
		if !all {
			owned = l.a.ownedOfFamilyLocked(true)
		}
		err = c.setFilter(owned, all)
	}
	if err != nil {
		l.a.log.Error(err, "setting the socket's kernel filter", "interface", l.key.ifname, "family", l.family())
	}
}

// syncGroups makes the socket, just opened and member of no group yet, a
// member of the solicited-node multicast groups of addrs (RFC 4861 section
// 7.2.1): without them, the interface drops the solicitations for those
// addresses. updateGroups keeps the memberships after that.
func (l *listener) syncGroups(addrs []netip.Addr) {
	refs := map[netip.Addr]int{}
	for _, ip := range addrs {
		if g, err := ndp.SolicitedNodeMulticast(ip); err == nil {
			refs[g]++
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.conn.(*ndpConn)
	if !ok {
		return
	}
	l.refs, l.retry = refs, nil
	for g := range refs {
		l.syncGroupLocked(c, g)
	}
}

// updateGroups follows the addresses this listener gained and lost: a
// change of a few addresses costs a few memberships, however many
// addresses the node owns. Joins that failed before are retried.
func (l *listener) updateGroups(gained, lost []netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.conn.(*ndpConn)
	if !ok || l.refs == nil {
		return // opening the socket joins them all
	}
	touched := l.retry
	l.retry = nil
	for _, ip := range gained {
		if g, err := ndp.SolicitedNodeMulticast(ip); err == nil {
			l.refs[g]++
			touched = append(touched, g)
		}
	}
	for _, ip := range lost {
		if g, err := ndp.SolicitedNodeMulticast(ip); err == nil {
			if l.refs[g]--; l.refs[g] <= 0 {
				delete(l.refs, g)
			}
			touched = append(touched, g)
		}
	}
	for _, g := range touched {
		l.syncGroupLocked(c, g)
	}
}

// syncGroupLocked joins g when an owned address is in it, and leaves it
// when none is.
func (l *listener) syncGroupLocked(c *ndpConn, g netip.Addr) {
	switch want := l.refs[g] > 0; {
	case want && !l.groups[g]:
		if err := c.joinGroup(g); err != nil {
			l.a.log.Error(err, "joining a solicited-node multicast group", "group", g.String(), "interface", l.key.ifname)
			l.retry = append(l.retry, g)
			return
		}
		l.groups[g] = true
	case !want && l.groups[g]:
		if err := c.leaveGroup(g); err != nil {
			l.a.log.Error(err, "leaving a solicited-node multicast group", "group", g.String(), "interface", l.key.ifname)
		}
		delete(l.groups, g)
	}
}

// prefixOf converts an interface address as net returns it.
func prefixOf(a net.Addr) (netip.Prefix, bool) {
	n, ok := a.(*net.IPNet)
	if !ok {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap()
	ones, bits := n.Mask.Size()
	if ip.Is4() && bits == 128 {
		ones -= 96
	}
	p := netip.PrefixFrom(ip, ones)
	return p, bits != 0 && p.IsValid()
}
