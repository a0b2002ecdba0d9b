package layer2

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// watchLinks follows link and address changes in the Announcer's network
// namespace, so a link flap costs no more than the flap itself: a link that
// comes back, or is replaced, has its listeners reopened or its addresses
// announced again at once, rather than after a read error and a backoff (a
// link that goes admin down fails a packet socket, but leaves an ICMPv6
// socket silently deaf if it is deleted and made again).
func (a *Announcer) watchLinks() {
	defer a.wg.Done()
	delay := minBackoff
	for {
		start := time.Now()
		err := a.watchOnce()
		if a.ctx.Err() != nil {
			return
		}
		if time.Since(start) > time.Minute {
			delay = minBackoff
		}
		a.log.Error(err, "watching links; subscribing again", "retryIn", delay.String())
		select {
		case <-a.ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, maxBackoff)
	}
}

// watchOnce subscribes to link and address changes and handles them until
// the subscription fails or the Announcer closes.
func (a *Announcer) watchOnce() error {
	var (
		mu       sync.Mutex
		firstErr error
	)
	onErr := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if firstErr == nil {
			firstErr = err
		}
	}
	failed := func() error {
		mu.Lock()
		defer mu.Unlock()
		return fmt.Errorf("subscription ended: %v", firstErr)
	}
	done := make(chan struct{})
	links := make(chan netlink.LinkUpdate, 64)
	addrs := make(chan netlink.AddrUpdate, 64)
	var subscribed []func()
	// Subscribe from a thread in the Announcer's namespace rather than
	// through the options' Namespace, which always calls setns(2): that
	// needs CAP_SYS_ADMIN, which a speaker (NET_ADMIN, NET_RAW) lacks.
	err := a.inNetns(func() error {
		if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{ErrorCallback: onErr}); err != nil {
			return fmt.Errorf("subscribe to link changes: %w", err)
		}
		subscribed = append(subscribed, func() {
			for range links {
			}
		})
		if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{ErrorCallback: onErr}); err != nil {
			return fmt.Errorf("subscribe to address changes: %w", err)
		}
		subscribed = append(subscribed, func() {
			for range addrs {
			}
		})
		return nil
	})
	// The subscriptions end when done closes; drain until they have.
	defer func() {
		close(done)
		for _, drain := range subscribed {
			drain()
		}
	}()
	if err != nil {
		return err
	}
	// Whatever changed while not subscribed: let closed listeners try now.
	for _, l := range a.allListeners() {
		if !l.isOpen() {
			l.reopen("")
		}
	}
	for {
		select {
		case <-a.ctx.Done():
			return nil
		case u, ok := <-links:
			if !ok {
				return failed()
			}
			attrs := u.Attrs()
			gone := u.Header.Type == unix.RTM_DELLINK
			running := attrs.Flags&net.FlagUp != 0 && attrs.Flags&net.FlagRunning != 0
			for _, l := range a.allListeners() {
				l.linkChanged(attrs.Index, attrs.Name, attrs.HardwareAddr, running, gone)
			}
		case u, ok := <-addrs:
			if !ok {
				return failed()
			}
			ip, ok := netip.AddrFromSlice(u.LinkAddress.IP)
			if !ok {
				continue
			}
			usable := u.NewAddr && u.Flags&unix.IFA_F_TENTATIVE == 0
			for _, l := range a.allListeners() {
				l.addrChanged(u.LinkIndex, ip.Unmap(), u.NewAddr, usable)
			}
		}
	}
}

func (a *Announcer) allListeners() []*listener {
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := make([]*listener, 0, len(a.listeners))
	for _, l := range a.listeners {
		out = append(out, l)
	}
	return out
}

func (l *listener) isOpen() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conn != nil
}

// linkChanged reacts to a change of the link with the given index, which now
// has the given name and MAC, and is or is not up and running (or is gone).
func (l *listener) linkChanged(index int, name string, mac net.HardwareAddr, running, gone bool) {
	l.mu.Lock()
	open := l.conn != nil
	mine := open && l.ifindex == index // the link the socket is bound to
	same := mine && name == l.key.ifname && bytes.Equal(l.mac, mac)
	wasRunning := l.running
	if same {
		l.running = running && !gone
	}
	l.mu.Unlock()
	switch {
	case mine && (gone || !same):
		// Deleted, renamed or given a new MAC: open again by name.
		l.reopen("the interface was deleted, renamed or given a new MAC address")
	case name != l.key.ifname || gone || !running:
	case !mine:
		// This interface, up, and the socket is not bound to it.
		l.reopen("the interface is up")
	case !wasRunning:
		// Back up (carrier or admin): neighbours may have moved on meanwhile.
		l.a.announce(l.targets())
	}
}

// addrChanged keeps the interface's own addresses current (the kernel
// answers for those, so the listener does not), and wakes a closed listener
// when an address becomes usable: an NDP socket binds to the link-local
// address, which is tentative for a while after the link comes up.
func (l *listener) addrChanged(index int, ip netip.Addr, added, usable bool) {
	l.mu.Lock()
	open := l.conn != nil
	if open && l.ifindex == index {
		if added {
			l.local[ip] = true
		} else {
			delete(l.local, ip)
		}
	}
	l.mu.Unlock()
	if !open && usable {
		l.reopen("")
	}
}
