// Package layer2 makes this node answer for the LoadBalancer addresses it
// owns on the LAN: it replies to ARP requests (IPv4, RFC 826) and IPv6
// neighbour solicitations (RFC 4861) for them, announces them unsolicited when
// it takes them over, and sees when another node announces them, so a
// hand-over loses nothing.
//
// Which addresses the node owns, and on which interfaces, is decided
// elsewhere (speaker/election); QualifyingInterfaces and LocalSubnets tell
// that decision which interfaces may carry an address at all.
//
// The Announcer opens one listener per interface and address family: a packet
// socket for ARP and an ICMPv6 socket for NDP that joins the solicited-node
// multicast group of each owned address. All its sockets live in the network
// namespace New was called in.
package layer2

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netns"
)

// ErrClosed is returned by an Announcer's methods after Close.
var ErrClosed = errors.New("layer2: announcer closed")

// announceSchedule is when an address is announced after it is taken over:
// at once and then repeated, because a neighbour may miss one frame and Linux
// ignores a neighbour update that comes within locktime (1 s) of the previous
// one (ip-sysctl: neigh/default/locktime).
func announceSchedule() []time.Duration {
	return []time.Duration{0, 200 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second}
}

// seenMemory is how long an announcement by another node is remembered, so
// WaitAnnouncedByOther called just after the new owner's first frames still
// returns at once. It outlasts the new owner's whole announceSchedule.
const seenMemory = 3 * time.Second

// Announcer answers ARP requests and IPv6 neighbour solicitations for the
// addresses this node owns.
type Announcer struct {
	log     logr.Logger
	metrics *metrics // nil: no metrics
	// ns is the network namespace New was called in; every socket is opened
	// there. Closed (not IsOpen) if it could not be read: then the calling
	// goroutine's namespace is used.
	ns netns.NsHandle

	ctx    context.Context // ends on Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the Announcer starts

	mu        sync.RWMutex
	closed    bool
	owned     map[netip.Addr]map[string]bool // address -> interfaces it is announced on
	listeners map[listenerKey]*listener
	refs      map[listenerKey]int // owned (address, interface) pairs per listener
	waiters   map[netip.Addr]map[chan struct{}]bool
	seen      map[netip.Addr]time.Time // last announcement of an owned address by another node
	owned4    int                      // IPv4 addresses in owned

	// holdUntil: unix nanoseconds until which nothing is answered nor
	// announced (Hold).
	holdUntil atomic.Int64
	// deferred: announcements a Hold kept back, sent when it ends (a.mu);
	// while it is not nil, a goroutine waits for that.
	deferred map[target]bool

	limitMu sync.Mutex // the listeners of every interface share the limiter
	limiter *replyLimiter
	epoch   time.Time // the limiter's clock counts from here (monotonic)
}

// listenerKey names a listener: one per interface and address family.
type listenerKey struct {
	ifname string
	ipv6   bool
}

func keyFor(ip netip.Addr, ifname string) listenerKey {
	return listenerKey{ifname: ifname, ipv6: ip.Is6()}
}

// New returns an Announcer that owns nothing yet, with the
// DefaultReplyLimits. Its sockets are opened in
// the network namespace of the calling OS thread (a speaker with
// hostNetwork: the node's). Metrics are registered with reg unless it is nil;
// an Announcer registered with a registry that already holds its metrics
// shares them.
func New(log logr.Logger, reg prometheus.Registerer) *Announcer {
	ctx, cancel := context.WithCancel(context.Background())
	a := &Announcer{
		log:       log,
		metrics:   newMetrics(log, reg),
		ctx:       ctx,
		cancel:    cancel,
		owned:     map[netip.Addr]map[string]bool{},
		listeners: map[listenerKey]*listener{},
		refs:      map[listenerKey]int{},
		waiters:   map[netip.Addr]map[chan struct{}]bool{},
		seen:      map[netip.Addr]time.Time{},
		limiter:   newReplyLimiter(DefaultReplyLimits(), maxRequesters),
		epoch:     time.Now(),
	}
	ns, err := netns.Get()
	if err != nil {
		log.Error(err, "reading the current network namespace; sockets open in the namespace of whichever thread opens them")
		ns = netns.None()
	}
	a.ns = ns
	a.wg.Add(1)
	go a.watchLinks()
	return a
}

// SetOwned replaces the set of owned addresses: each address maps to the
// names of the interfaces to answer on. Requests for an address arriving on
// any other interface are not answered. Addresses that are newly owned, or
// gain an interface, are announced at once and again after about 0.2, 0.5, 1
// and 2 s: gratuitous ARP in both the request and the reply form (RFC 5227
// section 3, RFC 5944 section 4.6) for IPv4, an unsolicited Neighbor
// Advertisement with the Override flag to ff02::1 (RFC 4861 section 7.2.6)
// for IPv6. Listeners are opened and closed as the set needs them.
//
// The new set is in force when SetOwned returns, even with an error: the
// error names the interfaces whose listener could not be opened at once;
// those keep retrying in the background and announce when they open.
func (a *Announcer) SetOwned(owned map[netip.Addr][]string) error {
	want, err := normalize(owned)
	if err != nil {
		return err
	}
	return a.apply(want, true)
}

// Update changes part of the owned set, as SetOwned does for all of it: an
// address mapped to interfaces is owned there from now on, one mapped to
// none is no longer owned, and addresses not named keep their state. Its
// cost grows with the size of the change, not of the owned set.
func (a *Announcer) Update(changes map[netip.Addr][]string) error {
	want, err := normalize(changes)
	if err != nil {
		return err
	}
	return a.apply(want, false)
}

// normalize checks the addresses and names; an address with no interface
// maps to nil.
func normalize(in map[netip.Addr][]string) (map[netip.Addr]map[string]bool, error) {
	out := make(map[netip.Addr]map[string]bool, len(in))
	for ip, ifnames := range in {
		if !ip.IsValid() {
			return nil, errors.New("layer2: owned set holds an invalid address")
		}
		ip = ip.Unmap().WithZone("")
		if !ip.IsGlobalUnicast() {
			return nil, fmt.Errorf("layer2: %s cannot be announced: not a global unicast address", ip)
		}
		var set map[string]bool
		for _, name := range ifnames {
			if name == "" || len(name) > 15 {
				return nil, fmt.Errorf("layer2: address %s: %q is not an interface name", ip, name)
			}
			if set == nil {
				set = map[string]bool{}
			}
			set[name] = true
		}
		out[ip] = set
	}
	return out, nil
}

// apply sets the addresses in changes (nil: no longer owned); with replace,
// every owned address not in changes is dropped too.
func (a *Announcer) apply(changes map[netip.Addr]map[string]bool, replace bool) error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return ErrClosed
	}
	if replace {
		for ip := range a.owned {
			if _, ok := changes[ip]; !ok {
				changes[ip] = nil
			}
		}
	}
	touched := map[listenerKey]bool{}
	gained, lost := map[listenerKey][]netip.Addr{}, map[listenerKey][]netip.Addr{}
	var added []target
	changed := map[bool]bool{} // the family (ipv6) whose owned set changed
	for ip, want := range changes {
		old := a.owned[ip]
		if (old == nil) != (len(want) == 0) {
			changed[ip.Is6()] = true
		}
		if ip.Is4() && (old == nil) != (len(want) == 0) {
			if old == nil {
				a.owned4++
			} else {
				a.owned4--
			}
		}
		for name := range old {
			if !want[name] {
				k := keyFor(ip, name)
				a.refs[k]--
				touched[k] = true
				lost[k] = append(lost[k], ip)
			}
		}
		for name := range want {
			if !old[name] {
				k := keyFor(ip, name)
				a.refs[k]++
				touched[k] = true
				gained[k] = append(gained[k], ip)
				added = append(added, target{ip: ip, key: k})
			}
		}
		if len(want) == 0 {
			delete(a.owned, ip)
			delete(a.seen, ip)
		} else {
			a.owned[ip] = want
		}
	}
	var started, stopped []*listener
	isNew := map[listenerKey]bool{}
	for k := range touched {
		switch l := a.listeners[k]; {
		case a.refs[k] > 0 && l == nil:
			l = newListener(a, k)
			a.listeners[k] = l
			started = append(started, l)
			isNew[k] = true
		case a.refs[k] <= 0:
			delete(a.refs, k)
			if l != nil {
				delete(a.listeners, k)
				stopped = append(stopped, l)
			}
		}
	}
	for k := range touched {
		if l := a.listeners[k]; l != nil && k.ipv6 && !isNew[k] { // a new one joins all as it opens
			l.updateGroups(gained[k], lost[k])
		}
	}
	for k, l := range a.listeners {
		if changed[k.ipv6] { // a listener not open yet sets its filter as it opens
			l.syncFilter()
		}
	}
	// A new listener announces everything it carries once it opens; the
	// others announce what is new to them here.
	var fresh []target
	for _, t := range added {
		if !isNew[t.key] {
			fresh = append(fresh, t)
		}
	}
	firsts := make([]chan error, len(started))
	for i, l := range started {
		firsts[i] = make(chan error, 1)
		a.wg.Add(1)
		go l.run(firsts[i])
	}
	a.mu.Unlock()

	for _, l := range stopped {
		l.stop()
	}
	var errs []error
	for i, ch := range firsts {
		if err := <-ch; err != nil && !errors.Is(err, errStopped) {
			errs = append(errs, fmt.Errorf("layer2: interface %s (%s): %w", started[i].key.ifname, started[i].family(), err))
		}
	}
	a.announce(fresh)
	return errors.Join(errs...)
}

// SetReplyLimits replaces the limits on the replies sent in answer to
// requests (see ReplyLimits), forgetting what each requester has had.
func (a *Announcer) SetReplyLimits(l ReplyLimits) error {
	if err := l.Validate(); err != nil {
		return fmt.Errorf("layer2: reply limits: %w", err)
	}
	a.limitMu.Lock()
	defer a.limitMu.Unlock()
	a.limiter = newReplyLimiter(l, maxRequesters)
	return nil
}

// mayReply charges a reply to who against the limits, and counts it if it
// is refused.
func (a *Announcer) mayReply(family string, who requester) bool {
	a.limitMu.Lock()
	ok, reason := a.limiter.allow(who, time.Since(a.epoch))
	a.limitMu.Unlock()
	if !ok {
		a.metrics.limitedReply(family, reason)
	}
	return ok
}

// WaitAnnouncedByOther blocks until another node announces ip, or ctx ends.
// An announcement is a gratuitous ARP request or any ARP reply whose sender is
// ip, or a Neighbor Advertisement for ip, from a MAC address that is not one
// of this Announcer's interfaces, seen on any interface it listens on. An
// announcement seen in the last few seconds counts, so the new owner's first
// frames are not missed by a call that comes a little late.
//
// It serves a hand-over without loss: the old owner keeps answering for ip
// until the new owner has announced it, then stops. ip must be owned when
// WaitAnnouncedByOther is called, since only then does the Announcer listen
// for its family on the interfaces the new owner will announce on.
func (a *Announcer) WaitAnnouncedByOther(ctx context.Context, ip netip.Addr) error {
	ip = ip.Unmap().WithZone("")
	ch := make(chan struct{})
	a.mu.Lock()
	switch {
	case a.closed:
		a.mu.Unlock()
		return ErrClosed
	case a.owned[ip] == nil:
		a.mu.Unlock()
		return fmt.Errorf("layer2: %s is not owned, so no listener watches for its announcements", ip)
	case time.Since(a.seen[ip]) < seenMemory:
		a.mu.Unlock()
		return nil
	}
	if a.waiters[ip] == nil {
		a.waiters[ip] = map[chan struct{}]bool{}
	}
	a.waiters[ip][ch] = true
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.waiters[ip], ch)
		if len(a.waiters[ip]) == 0 {
			delete(a.waiters, ip)
		}
		a.mu.Unlock()
	}()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-a.ctx.Done():
		return ErrClosed
	}
}

// Close stops answering, closes every socket (which leaves the multicast
// groups) and waits for the Announcer's goroutines to end. It is idempotent.
func (a *Announcer) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	ls := slices.Collect(maps.Values(a.listeners))
	a.listeners = map[listenerKey]*listener{}
	a.refs = map[listenerKey]int{}
	a.owned = map[netip.Addr]map[string]bool{}
	a.mu.Unlock()
	a.cancel()
	for _, l := range ls {
		l.stop()
	}
	a.wg.Wait()
	if a.ns.IsOpen() {
		return a.ns.Close()
	}
	return nil
}

// Hold keeps the announcer from answering or announcing anything until
// until, without changing what it owns: for a speaker that may be declared
// dead any moment (a peer suspects it) and must not answer beside its
// successor meanwhile, while the clients' neighbour entries keep its
// traffic coming. A later Hold replaces an earlier one. Announcements due
// during a hold are sent once it ends, for the addresses still owned then:
// a takeover made during a hold still reaches the clients.
func (a *Announcer) Hold(until time.Time) {
	a.holdUntil.Store(until.UnixNano())
}

// held reports whether a Hold is in force.
func (a *Announcer) held() bool {
	return time.Now().UnixNano() < a.holdUntil.Load()
}

// ownership says whether ip is owned at all, and whether on ifname and
// answerable there now (no Hold).
func (a *Announcer) ownership(ip netip.Addr, ifname string) (anywhere, here bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	ifnames := a.owned[ip]
	return ifnames != nil, ifnames[ifname] && !a.held()
}

// owns reports whether ip is owned on any interface: the first check of
// every request, so a flood for addresses of other hosts costs little.
func (a *Announcer) owns(ip netip.Addr) bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.owned[ip] != nil
}

// ownedOfFamilyLocked lists every owned address of one family. a.mu held.
func (a *Announcer) ownedOfFamilyLocked(ipv6 bool) []netip.Addr {
	var out []netip.Addr
	for ip := range a.owned {
		if ip.Is6() == ipv6 {
			out = append(out, ip)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// addrsOnLocked lists the owned addresses carried by listener k. a.mu held.
func (a *Announcer) addrsOnLocked(k listenerKey) []netip.Addr {
	var out []netip.Addr
	for ip, ifnames := range a.owned {
		if ifnames[k.ifname] && ip.Is6() == k.ipv6 {
			out = append(out, ip)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// sawAnnouncement records that mac announced ip, and wakes the waiters for ip
// unless mac is one of ours.
func (a *Announcer) sawAnnouncement(ip netip.Addr, mac net.HardwareAddr) {
	a.mu.RLock()
	owned := a.owned[ip] != nil
	a.mu.RUnlock()
	if !owned {
		return // the common case, on a busy LAN
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.owned[ip] == nil {
		return
	}
	for _, l := range a.listeners {
		if l.hasMAC(mac) {
			return
		}
	}
	a.log.V(1).Info("another node announced an owned address", "ip", ip.String(), "mac", mac.String())
	a.seen[ip] = time.Now()
	for ch := range a.waiters[ip] {
		close(ch)
	}
	delete(a.waiters, ip)
}

// target is one address announced through one listener.
type target struct {
	ip  netip.Addr
	key listenerKey
}

// announce sends the announcements of targets now and schedules their
// repeats. A repeat is skipped for a target that is no longer owned there.
func (a *Announcer) announce(targets []target) {
	if len(targets) == 0 {
		return
	}
	schedule, start := announceSchedule(), time.Now()
	a.sendAnnouncements(targets)
	a.spawn(func() {
		for _, at := range schedule[1:] {
			select {
			case <-a.ctx.Done():
				return
			case <-time.After(time.Until(start.Add(at))):
			}
			a.sendAnnouncements(targets)
		}
	})
}

func (a *Announcer) sendAnnouncements(targets []target) {
	if a.held() {
		a.deferAnnouncements(targets)
		return
	}
	for _, t := range targets {
		a.mu.RLock()
		l := a.listeners[t.key]
		owned := a.owned[t.ip][t.key.ifname]
		a.mu.RUnlock()
		if l == nil || !owned {
			continue
		}
		l.announce(t.ip)
	}
}

// deferAnnouncements keeps targets for the end of the Hold in force, and
// makes sure a goroutine waits for it.
func (a *Announcer) deferAnnouncements(targets []target) {
	a.mu.Lock()
	start := a.deferred == nil
	if start {
		a.deferred = map[target]bool{}
	}
	for _, t := range targets {
		a.deferred[t] = true
	}
	a.mu.Unlock()
	if start {
		a.spawn(a.flushDeferred)
	}
}

// flushDeferred waits out the Hold, extended or not, then sends what it
// kept back (sendAnnouncements skips what is no longer owned, and keeps
// it all back again if a new Hold began meanwhile).
func (a *Announcer) flushDeferred() {
	for {
		wait := time.Until(time.Unix(0, a.holdUntil.Load()))
		if wait <= 0 {
			break
		}
		select {
		case <-a.ctx.Done():
			return
		case <-time.After(wait):
		}
	}
	a.mu.Lock()
	targets := make([]target, 0, len(a.deferred))
	for t := range a.deferred {
		targets = append(targets, t)
	}
	a.deferred = nil
	a.mu.Unlock()
	a.sendAnnouncements(targets)
}

// spawn runs fn in a goroutine that Close waits for, unless the Announcer is
// closed already.
func (a *Announcer) spawn(fn func()) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.closed {
		return
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		fn()
	}()
}
