package membership

import (
	"errors"
	"fmt"
	"log"
	"math"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
)

// Tuning; the package doc justifies each value and gives its cost.
const (
	probeInterval = 100 * time.Millisecond
	probeTimeout  = 50 * time.Millisecond
	// suspicionMult 4 makes the suspicion timeout 4 × max(1, log10 N) probe
	// intervals: 400 ms up to 9 nodes, 800 ms at 100, 1.2 s at 1,000.
	suspicionMult           = 4
	suspicionMaxTimeoutMult = 3
	gossipInterval          = 50 * time.Millisecond
	gossipNodes             = 3
	retransmitMult          = 4
	indirectChecks          = 3
	pushPullInterval        = 15 * time.Second
	tcpTimeout              = time.Second
	// watchInterval: how often the isolation watchdog looks (see
	// isolationTimeout).
	watchInterval = probeInterval / 2
	// joinParallelism bounds the concurrent push/pull dials of one Join.
	joinParallelism = 16
	// label keeps Herald's gossip apart from other memberlist users (MetalLB
	// uses the same library) that might share a port by mistake.
	label = "herald"
)

// Config says where and how a speaker gossips.
type Config struct {
	// NodeName is the name of the node; it is the member's name.
	NodeName string
	// BindAddr is the node's LAN address. The unspecified address is refused:
	// a speaker gossips on the LAN it announces on and advertises that address.
	BindAddr netip.Addr
	// Port for UDP (probes, gossip) and TCP (state sync, joins); 0 picks a free
	// port, which Addr reports.
	Port int
	// SecretKey encrypts and authenticates every message with AES-GCM: 16, 24
	// or 32 bytes (AES-128, -192, -256), from a Kubernetes Secret. Members with
	// another key cannot join or be heard.
	SecretKey []byte
	Log       logr.Logger
	// Registerer gets herald_speaker_gossip_refused_packets_total and
	// herald_speaker_gossip_refutations_total; nil exports nothing.
	Registerer prometheus.Registerer

	// wrapTransport lets tests cut a member off the network.
	wrapTransport func(memberlist.Transport) memberlist.Transport
}

// Membership is this speaker's view of which speakers are alive.
type Membership struct {
	ml      *memberlist.Memberlist
	name    string
	addr    string
	log     logr.Logger
	changes chan struct{}
	refused *refusals

	mu      sync.Mutex
	members map[string]string    // name -> "ip:port" of the members alive or suspect, self included
	byAddr  map[string]string    // the reverse
	apiDown map[string]bool      // members whose metadata says they cannot reach the API server
	heard   map[string]time.Time // when a packet last came from each member

	selfAPIDown    atomic.Bool  // what this speaker publishes in its metadata
	declaredDead   atomic.Int64 // unix nanoseconds of when the peers last declared this speaker dead
	suspectedAt    atomic.Int64 // unix nanoseconds of when this speaker last refuted a suspicion
	suspectedUntil atomic.Int64 // and until when that suspicion may still end in a dead declaration

	lastContact atomic.Int64 // unix nanoseconds of the last message from a peer
	isolated    atomic.Bool
	stopped     atomic.Bool // left or shut down
	life        sync.Mutex  // serialises Leave and Shutdown
	done        chan struct{}
	watcher     sync.WaitGroup
}

// Start binds cfg.BindAddr:cfg.Port and starts gossiping, alone until Join.
func Start(cfg Config) (*Membership, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("membership: node name is empty")
	}
	if !cfg.BindAddr.IsValid() || cfg.BindAddr.IsUnspecified() {
		return nil, fmt.Errorf("membership: bind address %v: want the node's LAN address", cfg.BindAddr)
	}
	switch len(cfg.SecretKey) {
	case 16, 24, 32:
	default:
		return nil, fmt.Errorf("membership: secret key is %d bytes; want 16, 24 or 32", len(cfg.SecretKey))
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("membership: port %d out of range", cfg.Port)
	}
	m := &Membership{
		name:    cfg.NodeName,
		log:     cfg.Log.WithValues("memberlist", cfg.BindAddr.String()),
		changes: make(chan struct{}, 1),
		done:    make(chan struct{}),
		members: map[string]string{},
		byAddr:  map[string]string{},
		apiDown: map[string]bool{},
		heard:   map[string]time.Time{},
	}
	m.refused = newRefusals(m.log, cfg.Registerer)
	refutations := registerCounters(cfg.Registerer, m.log, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_speaker_gossip_refutations_total",
		Help: "Times this speaker refuted a peer's word that it had failed, by kind: suspect (its layer 2 then answers nothing until the suspicion could have turned into a dead declaration, 1.3 s up to 10 speakers) or dead (it then announces nothing until each peer has heard from it). Steady growth means a lossy or overloaded LAN between the speakers.",
	}, []string{"kind"}), "herald_speaker_gossip_refutations_total", "suspect", "dead")
	logger := log.New(logWriter{log: m.log, refused: m.refused, suspected: func() {
		refutations.WithLabelValues("suspect").Inc()
		now := time.Now()
		m.suspectedUntil.Store(now.Add(longestSuspicion(m.numMembers())).UnixNano())
		m.suspectedAt.Store(now.UnixNano())
		m.signal()
	}, declaredDead: func() {
		refutations.WithLabelValues("dead").Inc()
		m.declaredDead.Store(time.Now().UnixNano())
		m.signal()
	}}, "", 0)

	addr := cfg.BindAddr.Unmap().WithZone("")
	bind := addr.String()
	nt, err := listenTransport(addr, cfg.Port, logger)
	if err != nil {
		return nil, fmt.Errorf("membership: listen on %s port %d: %w", bind, cfg.Port, err)
	}
	port := nt.port()
	var transport memberlist.Transport = nt
	if cfg.wrapTransport != nil {
		transport = cfg.wrapTransport(nt)
	}
	transport = newContactTransport(transport, m)

	c := memberlist.DefaultLANConfig()
	c.Name = cfg.NodeName
	c.Transport = transport
	c.BindAddr, c.BindPort = bind, port
	c.AdvertiseAddr, c.AdvertisePort = bind, port
	c.Label = label
	c.SecretKey = slices.Clone(cfg.SecretKey)
	c.GossipVerifyIncoming, c.GossipVerifyOutgoing = true, true
	c.ProbeInterval, c.ProbeTimeout = probeInterval, probeTimeout
	c.SuspicionMult, c.SuspicionMaxTimeoutMult = suspicionMult, suspicionMaxTimeoutMult
	c.GossipInterval, c.GossipNodes = gossipInterval, gossipNodes
	c.RetransmitMult, c.IndirectChecks = retransmitMult, indirectChecks
	c.PushPullInterval, c.TCPTimeout = pushPullInterval, tcpTimeout
	// Liveness is UDP only, the path the isolation watchdog sees: a TCP
	// fallback could keep a peer "alive" that our probes never reach.
	c.DisableTcpPings = true
	// Messages are a few hundred bytes: compressing them saves nothing on the
	// wire, and memberlist builds a fresh LZW writer (tens of KB) for every
	// one, most of the speaker's garbage at rest. Peers still read the
	// compressed messages of a speaker of an older version.
	c.EnableCompression = false
	// A restarted speaker may come back on another address under its name.
	c.DeadNodeReclaimTime = time.Second
	c.Events = events{m}
	c.Delegate = metadata{m}
	c.Logger = logger

	ml, err := memberlist.Create(c)
	if err != nil {
		_ = transport.Shutdown()
		return nil, fmt.Errorf("membership: start memberlist on %s port %d: %w", bind, port, err)
	}
	m.ml = ml
	m.addr = net.JoinHostPort(bind, strconv.Itoa(port))
	m.contact()
	m.watcher.Add(1)
	go m.watch()
	return m, nil
}

// Addr is the "ip:port" other speakers join this one at.
func (m *Membership) Addr() string { return m.addr }

// Join contacts the speakers at addrs ("ip:port") and merges their view of the
// members. Addresses of members already alive, and this speaker's own, are
// skipped, so calling it again and again with every speaker's address (from
// the API server) is cheap and heals partitions: after a split each side holds
// the other dead and no longer talks to it, so the speaker should call Join
// every few seconds with the addresses of speakers whose Lease is fresh. It
// returns how many speakers were contacted, and an error when addrs had
// addresses to try and none answered. It dials in parallel; an unreachable
// address costs at most one second.
func (m *Membership) Join(addrs []string) (int, error) {
	if m.stopped.Load() {
		return 0, errors.New("membership: join after leave or shutdown")
	}
	known := map[string]bool{m.addr: true}
	m.mu.Lock()
	for a := range m.byAddr {
		known[a] = true
	}
	m.mu.Unlock()
	var todo []string
	for _, a := range addrs {
		if !known[a] {
			known[a] = true
			todo = append(todo, a)
		}
	}
	if len(todo) == 0 {
		return 0, nil
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		joined int
		errs   []error
		sem    = make(chan struct{}, joinParallelism)
	)
	for _, a := range todo {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			n, err := m.ml.Join([]string{a})
			mu.Lock()
			defer mu.Unlock()
			joined += n
			if err != nil {
				errs = append(errs, err)
			}
		}()
	}
	wg.Wait()
	if joined > 0 {
		m.contact()
		return joined, nil
	}
	return 0, fmt.Errorf("membership: join %v: %w", todo, errors.Join(errs...))
}

// Alive is the set of speakers memberlist holds alive (suspects included: they
// may still refute), this one included. A speaker that has peers but has
// heard from none of them for a while (300 ms up to 9 speakers; see
// isolationTimeout) is cut off: Alive is then only itself, so that
// election.Live makes it stand down before its peers declare it dead. After
// Leave or Shutdown it is only itself too.
func (m *Membership) Alive() map[string]bool {
	out := map[string]bool{m.name: true}
	if m.stopped.Load() || m.isolated.Load() {
		return out
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for n := range m.members {
		out[n] = true
	}
	return out
}

// Healthy is true while memberlist runs: started, neither left nor shut
// down. An isolated speaker is healthy; its isolation shows in Alive.
func (m *Membership) Healthy() bool { return m.ml != nil && !m.stopped.Load() }

// Changes is signalled, without blocking and coalesced, when a member joins,
// leaves or is declared dead, and when this speaker becomes cut off from its
// peers or reaches them again. Read Alive after a signal.
func (m *Membership) Changes() <-chan struct{} { return m.changes }

// Leave tells the other speakers that this one is going, then stops: they
// drop it at once instead of probing it to death. It waits up to timeout for
// the message to go out. Use it on SIGTERM, before handing over.
func (m *Membership) Leave(timeout time.Duration) error {
	m.life.Lock()
	defer m.life.Unlock()
	if m.stopped.Load() {
		return nil
	}
	err := m.ml.Leave(timeout)
	if serr := m.shutdown(); err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("membership: leave: %w", err)
	}
	return nil
}

// Shutdown stops gossiping without a word: the others notice as they would a
// dead node. It is safe to call more than once.
func (m *Membership) Shutdown() error {
	m.life.Lock()
	defer m.life.Unlock()
	return m.shutdown()
}

func (m *Membership) shutdown() error {
	if m.stopped.Swap(true) {
		return nil
	}
	close(m.done)
	m.watcher.Wait()
	err := m.ml.Shutdown()
	m.signal()
	return err
}

func (m *Membership) signal() {
	select {
	case m.changes <- struct{}{}:
	default:
	}
}

func (m *Membership) contact() { m.lastContact.Store(time.Now().UnixNano()) }

// isolationTimeout: a speaker with peers that has heard from none of them for
// this long reports itself alone. Its peers cannot declare it dead sooner than
// one probe interval (the probe that fails) plus the suspicion timeout,
// suspicionMult × max(1, log10 N) probe intervals, after its link is cut; the
// watchdog stops it two probe intervals before that, less one watchInterval
// of lateness: 300 ms up to 9 members (their 500 ms), 700 ms at 100, 1.1 s at
// 1,000. N is what this speaker counts, never more than what its peers count,
// so the margin only grows. The larger the cluster, the longer the window, and
// the less likely a healthy speaker goes that long without an ack or a ping.
func isolationTimeout(members int) time.Duration {
	scale := max(1, math.Log10(float64(members)))
	return time.Duration(suspicionMult*scale*float64(probeInterval)) - probeInterval
}

// watch flags the speaker isolated when it has peers it has not heard from
// for isolationTimeout. Contact is any packet from a member's address (probes,
// acks, nacks, indirect probe requests, gossip), or a successful join.
func (m *Membership) watch() {
	defer m.watcher.Done()
	t := time.NewTicker(watchInterval)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-m.done:
			return
		case <-t.C:
			now := time.Now()
			stalled := now.Sub(last) > 2*watchInterval
			last = now
			if stalled {
				// This process did not run for a while (GC, CPU starvation,
				// a suspended VM): the silence is ours, not the network's,
				// and the packets that came meanwhile are still queued. Look
				// again once they are read.
				continue
			}
			members := m.ml.NumMembers()
			alone := members <= 1
			if alone {
				// Nobody to be cut off from; start the clock afresh for when
				// someone joins.
				m.contact()
			}
			silent := now.Sub(time.Unix(0, m.lastContact.Load()))
			isolated := !alone && silent > isolationTimeout(members)
			if m.isolated.Swap(isolated) != isolated {
				switch {
				case isolated:
					m.log.Info("Cut off from every peer; reporting this speaker alone", "silentFor", silent.Round(time.Millisecond))
				case !alone:
					m.log.Info("In contact with peers again")
				}
				m.signal()
			}
		}
	}
}

// events keeps the member list and turns memberlist's events into Changes
// signals. memberlist calls it holding its node lock, the only time a Node may
// be read without racing with its updates.
type events struct{ m *Membership }

func (e events) NotifyJoin(n *memberlist.Node) {
	e.m.log.V(1).Info("Speaker joined", "node", n.Name, "addr", n.Address())
	e.m.setMember(n.Name, n.Address())
	e.m.setAPIDown(n.Name, n.Meta)
	e.m.signal()
}

func (e events) NotifyLeave(n *memberlist.Node) {
	e.m.log.V(1).Info("Speaker left or died", "node", n.Name, "addr", n.Address())
	e.m.mu.Lock()
	defer e.m.mu.Unlock()
	if a, ok := e.m.members[n.Name]; ok {
		delete(e.m.members, n.Name)
		delete(e.m.apiDown, n.Name)
		delete(e.m.heard, n.Name)
		if e.m.byAddr[a] == n.Name {
			delete(e.m.byAddr, a)
		}
	}
	e.m.signal()
}

func (e events) NotifyUpdate(n *memberlist.Node) {
	e.m.setMember(n.Name, n.Address())
	if e.m.setAPIDown(n.Name, n.Meta) {
		e.m.signal()
	}
}

// metaAPIDown is the flag bit of a member's metadata that says it cannot
// reach the API server (SetAPIReachable).
const metaAPIDown = 1

// setAPIDown records a member's metadata and reports whether its flag
// changed.
func (m *Membership) setAPIDown(name string, meta []byte) bool {
	down := len(meta) > 0 && meta[0]&metaAPIDown != 0
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.apiDown[name] == down {
		return false
	}
	if down {
		m.apiDown[name] = true
	} else {
		delete(m.apiDown, name)
	}
	return true
}

// SetAPIReachable publishes whether this speaker reaches the API server
// (renews its Lease), so the speakers can tell an API server down for all
// of them, when they keep what they announce, from one speaker cut off
// from it, which must stand down. The update goes out with memberlist's
// gossip; peers see it as a Changes signal.
func (m *Membership) SetAPIReachable(ok bool) {
	if m.selfAPIDown.Swap(!ok) == !ok || m.stopped.Load() {
		return
	}
	go func() {
		if err := m.ml.UpdateNode(time.Second); err != nil && !m.stopped.Load() {
			m.log.Error(err, "publishing whether this speaker reaches the API server")
		}
	}()
}

// APIUnreachable is the set of speakers Alive holds, this one included,
// that say they cannot reach the API server.
func (m *Membership) APIUnreachable() map[string]bool {
	out := map[string]bool{}
	if m.selfAPIDown.Load() {
		out[m.name] = true
	}
	if m.stopped.Load() || m.isolated.Load() {
		return out
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for n := range m.apiDown {
		if _, alive := m.members[n]; alive && n != m.name {
			out[n] = true
		}
	}
	return out
}

// metadata is memberlist's delegate: this speaker's metadata is one byte
// of flags (metaAPIDown); it sends no messages of its own.
type metadata struct{ m *Membership }

func (d metadata) NodeMeta(limit int) []byte {
	if d.m.selfAPIDown.Load() {
		return []byte{metaAPIDown}
	}
	return []byte{0}
}
func (metadata) NotifyMsg([]byte)                           {}
func (metadata) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (metadata) LocalState(join bool) []byte                { return nil }
func (metadata) MergeRemoteState(buf []byte, join bool)     {}

func (m *Membership) setMember(name, addr string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.members[name]; ok && m.byAddr[old] == name {
		delete(m.byAddr, old)
	}
	m.members[name] = addr
	m.byAddr[addr] = name
}

// fromPeer tells whether addr is the address of another member, and
// records that it was heard from.
func (m *Membership) fromPeer(addr string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	name, ok := m.byAddr[addr]
	if !ok || name == m.name {
		return false
	}
	m.heard[name] = time.Now()
	return true
}

// DeclaredDead is when the peers last declared this speaker dead (zero:
// never): memberlist refutes it at once and they count it alive again, but
// meanwhile they took its addresses over.
func (m *Membership) DeclaredDead() time.Time {
	if n := m.declaredDead.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Suspicion is when this speaker last refuted a peer's suspicion of it
// (at) and until when that peer may still declare it dead (zeros: never
// suspected). memberlist refutes a suspicion at once, but the refutation
// can be lost on its way to the suspector (a lossy LAN): then the
// suspector declares this speaker dead when its suspicion times out and
// takes its addresses over, while this speaker learns of it only a gossip
// round later, or later still. Until then the two would answer for the
// same addresses. The bound is the suspicion's longest timeout, counted
// from when the suspicion reached this speaker (the suspector's timer
// started earlier), plus two gossip rounds for the dead declaration to
// arrive.
func (m *Membership) Suspicion() (at, until time.Time) {
	a, u := m.suspectedAt.Load(), m.suspectedUntil.Load()
	if a == 0 {
		return time.Time{}, time.Time{}
	}
	return time.Unix(0, a), time.Unix(0, u)
}

// longestSuspicion is how long memberlist's suspicion of a member can last
// in a cluster of n members, before its dead declaration reaches the
// suspect: SuspicionMaxTimeoutMult × SuspicionMult × max(1, log10 n) probe
// intervals, when no other member confirms it, plus two gossip rounds.
func longestSuspicion(n int) time.Duration {
	scale := math.Max(1, math.Log10(float64(max(n, 1))))
	return time.Duration(float64(suspicionMaxTimeoutMult*suspicionMult*probeInterval)*scale) + 2*gossipInterval
}

// numMembers is how many members memberlist knows, alive or suspect, this
// speaker included.
func (m *Membership) numMembers() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.members)
}

// HeardFrom is the set of other members a packet came from after since. A
// member only sends to the members it holds alive: one heard from since
// this speaker (re)joined knows it is back.
func (m *Membership) HeardFrom(since time.Time) map[string]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]bool{}
	for n, at := range m.heard {
		if _, alive := m.members[n]; alive && at.After(since) {
			out[n] = true
		}
	}
	return out
}

// contactTransport records, for the isolation watchdog, when a packet last
// came from a member. memberlist reads packets from PacketCh; this relays
// them. It looks at the source address only: the packet is decrypted later,
// and a forged source would take a host on the LAN that can already answer
// ARP for anything.
type contactTransport struct {
	memberlist.Transport
	m       *Membership
	packets chan *memberlist.Packet
	done    chan struct{}
	once    sync.Once
}

func newContactTransport(inner memberlist.Transport, m *Membership) *contactTransport {
	t := &contactTransport{Transport: inner, m: m, packets: make(chan *memberlist.Packet), done: make(chan struct{})}
	go t.relay()
	return t
}

func (t *contactTransport) relay() {
	in := t.Transport.PacketCh()
	for {
		select {
		case <-t.done:
			return
		case p, ok := <-in:
			if !ok {
				return
			}
			if t.m.fromPeer(p.From.String()) {
				t.m.contact()
			}
			select {
			case t.packets <- p:
			case <-t.done:
				return
			}
		}
	}
}

func (t *contactTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

func (t *contactTransport) Shutdown() error {
	err := t.Transport.Shutdown()
	t.once.Do(func() { close(t.done) })
	return err
}
