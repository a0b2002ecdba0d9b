package membership

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldlb/herald/speaker/election"
)

var (
	loopback = netip.MustParseAddr("127.0.0.1")
	key      = []byte("0123456789abcdef0123456789abcdef")
)

func start(t testing.TB, cfg Config) *Membership {
	t.Helper()
	if !cfg.BindAddr.IsValid() {
		cfg.BindAddr = loopback
	}
	if cfg.SecretKey == nil {
		cfg.SecretKey = key
	}
	if cfg.Log.GetSink() == nil {
		cfg.Log = logr.Discard()
	}
	m, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	return m
}

// cluster starts n speakers node-0 ... node-n-1 and joins them through node-0.
func cluster(t testing.TB, n int, cfgs ...func(i int, c *Config)) []*Membership {
	t.Helper()
	ms := make([]*Membership, n)
	for i := range ms {
		cfg := Config{NodeName: fmt.Sprintf("node-%d", i)}
		for _, f := range cfgs {
			f(i, &cfg)
		}
		ms[i] = start(t, cfg)
		if i > 0 {
			if _, err := ms[i].Join([]string{ms[0].Addr()}); err != nil {
				t.Fatal(err)
			}
		}
	}
	all := names(ms...)
	waitFor(t, 2*time.Second, "every speaker sees all of "+fmt.Sprint(all), func() bool {
		for _, m := range ms {
			if !slices.Equal(sortedKeys(m.Alive()), all) {
				return false
			}
		}
		return true
	})
	return ms
}

func names(ms ...*Membership) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.name)
	}
	slices.Sort(out)
	return out
}

func sortedKeys(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }

// waitFor polls cond every 2 ms and returns how long it took to hold.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("after %v: not yet true that %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func TestThreeSpeakersJoinAndSeeEachOther(t *testing.T) {
	ms := cluster(t, 3)
	for _, m := range ms {
		if !m.Healthy() {
			t.Errorf("%s is not healthy", m.name)
		}
		select {
		case <-m.Changes():
		default:
			t.Errorf("%s saw speakers join but Changes() was not signalled", m.name)
		}
	}
}

func TestJoiningKnownSpeakersAgainIsANoOp(t *testing.T) {
	ms := cluster(t, 3)
	n, err := ms[2].Join([]string{ms[0].Addr(), ms[1].Addr(), ms[2].Addr()})
	if n != 0 || err != nil {
		t.Errorf("Join(known speakers) = %d, %v; want 0, nil", n, err)
	}
}

func TestJoinFailsWhenNobodyAnswers(t *testing.T) {
	m := start(t, Config{NodeName: "lonely"})
	// A port nobody listens on: bind one and close it.
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	if n, err := m.Join([]string{addr}); n != 0 || err == nil {
		t.Errorf("Join(%s) = %d, %v; want 0 and an error", addr, n, err)
	}
}

func TestAbruptShutdownIsDetectedWithinASecond(t *testing.T) {
	const runs = 5
	var took []time.Duration
	for run := range runs {
		ms := cluster(t, 3)
		for _, m := range ms {
			drain(m.Changes())
		}
		victim := ms[run%3]
		var others []*Membership
		for _, m := range ms {
			if m != victim {
				others = append(others, m)
			}
		}
		if err := victim.Shutdown(); err != nil {
			t.Fatal(err)
		}
		d := waitFor(t, 2*time.Second, victim.name+" is dead to the others", func() bool {
			for _, o := range others {
				if o.Alive()[victim.name] {
					return false
				}
			}
			return true
		})
		for _, o := range others {
			select {
			case <-o.Changes():
			default:
				t.Errorf("%s saw %s die but Changes() was not signalled", o.name, victim.name)
			}
		}
		took = append(took, d)
		for _, m := range ms {
			_ = m.Shutdown()
		}
	}
	t.Logf("abrupt loss detected by both survivors after %v (median %v, max %v)", took, median(took), slices.Max(took))
}

func TestLeaveIsSeenAtOnce(t *testing.T) {
	var took []time.Duration
	for range 3 {
		ms := cluster(t, 3)
		start := time.Now()
		if err := ms[1].Leave(time.Second); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 300*time.Millisecond, "node-1 is gone for the others", func() bool {
			return !ms[0].Alive()["node-1"] && !ms[2].Alive()["node-1"]
		})
		took = append(took, time.Since(start))
		if ms[1].Healthy() {
			t.Error("node-1 is still healthy after Leave")
		}
		if got := sortedKeys(ms[1].Alive()); !slices.Equal(got, []string{"node-1"}) {
			t.Errorf("after Leave, node-1 sees %v alive; want only itself", got)
		}
		for _, m := range ms {
			_ = m.Shutdown()
		}
	}
	t.Logf("a leave is seen by both others after %v (Leave call included)", took)
}

func TestSpeakerWithAnotherKeyCannotJoin(t *testing.T) {
	ms := cluster(t, 2)
	stranger := start(t, Config{NodeName: "stranger", SecretKey: []byte("another key, 32 bytes long......")})
	if n, err := stranger.Join([]string{ms[0].Addr()}); n != 0 || err == nil {
		t.Errorf("stranger.Join = %d, %v; want 0 and an error", n, err)
	}
	if n, err := ms[1].Join([]string{stranger.Addr()}); n != 0 || err == nil {
		t.Errorf("Join(stranger) = %d, %v; want 0 and an error", n, err)
	}

	// Nor can a plain, unencrypted memberlist, even with our label.
	c := memberlist.DefaultLANConfig()
	c.Name, c.BindAddr, c.BindPort, c.Label = "plain", "127.0.0.1", 0, label
	c.LogOutput = discard{}
	plain, err := memberlist.Create(c)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Shutdown()
	if n, err := plain.Join([]string{ms[0].Addr()}); n != 0 || err == nil {
		t.Errorf("unencrypted Join = %d, %v; want 0 and an error", n, err)
	}

	time.Sleep(300 * time.Millisecond) // room for any gossip to leak
	for _, m := range ms {
		if got := sortedKeys(m.Alive()); !slices.Equal(got, []string{"node-0", "node-1"}) {
			t.Errorf("%s sees %v alive; want only node-0 and node-1", m.name, got)
		}
	}
	if got := sortedKeys(stranger.Alive()); !slices.Equal(got, []string{"stranger"}) {
		t.Errorf("the stranger sees %v alive; want only itself", got)
	}
}

// A speaker whose gossip is cut while it stays on the LAN must stand down
// before its peers take its addresses over, and come back after a Join once
// the network heals. The peers never think themselves cut off.
func TestIsolatedSpeakerStandsDownBeforeItsPeersTakeOver(t *testing.T) {
	wires := make([]*cuttable, 3)
	reg := prometheus.NewRegistry() // node-2's
	ms := cluster(t, 3, func(i int, c *Config) {
		if i == 2 {
			c.Registerer = reg
		}
		c.wrapTransport = func(inner memberlist.Transport) memberlist.Transport {
			wires[i] = newCuttable(inner)
			return wires[i]
		}
	})
	a, b, c := ms[0], ms[1], ms[2]
	k8sLive := names(ms...)
	peers := func(m *Membership) election.Peers {
		return election.Peers{Self: m.name, K8sLive: k8sLive, GossipHealthy: m.Healthy(), GossipAlive: m.Alive()}
	}
	var peerIsolated atomic.Bool
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				if a.isolated.Load() || b.isolated.Load() {
					peerIsolated.Store(true)
				}
			}
		}
	}()

	cut := time.Now()
	wires[2].cut.Store(true)
	var standsDown, takenOver time.Duration
	waitFor(t, 3*time.Second, "the peers drop node-2", func() bool {
		if _, announce := election.Live(peers(c)); !announce && standsDown == 0 {
			standsDown = time.Since(cut)
		}
		if !a.Alive()["node-2"] && !b.Alive()["node-2"] {
			takenOver = time.Since(cut)
			return true
		}
		return false
	})
	t.Logf("cut off node-2 stopped announcing after %v; its peers dropped it after %v", standsDown, takenOver)
	if standsDown == 0 || standsDown >= takenOver {
		t.Fatalf("node-2 stood down after %v, not before its peers took over (%v)", standsDown, takenOver)
	}
	for _, m := range []*Membership{a, b} {
		if live, announce := election.Live(peers(m)); !announce || !slices.Equal(live, []string{"node-0", "node-1"}) {
			t.Errorf("%s: Live = %v, announce %v; want [node-0 node-1], announce", m.name, live, announce)
		}
	}
	if live, announce := election.Live(peers(c)); announce || !slices.Equal(live, []string{"node-2"}) {
		t.Errorf("node-2: Live = %v, announce %v; want [node-2], announce nothing", live, announce)
	}

	wires[2].cut.Store(false)
	if _, err := c.Join([]string{a.Addr()}); err != nil {
		t.Fatal(err)
	}
	// Not a timing goal: a loaded machine (the unit tests run in parallel
	// under -race) has taken more than 2 s to gossip the heal.
	waitFor(t, 10*time.Second, "all three alive again after the heal", func() bool {
		for _, m := range ms {
			if !slices.Equal(sortedKeys(m.Alive()), k8sLive) {
				return false
			}
		}
		return true
	})
	if _, announce := election.Live(peers(c)); !announce {
		t.Error("node-2 healed but still does not announce")
	}
	// Back, it learnt from the peers' state that they had dropped it
	// (memberlist merges a dead record as a suspicion) and refuted that:
	// it says so.
	if got := counts(t, reg, "herald_speaker_gossip_refutations_total", "kind"); got["suspect"]+got["dead"] < 1 {
		t.Errorf("node-2 healed: refutations %v; want one at least", got)
	}
	if peerIsolated.Load() {
		t.Error("node-0 or node-1 thought itself cut off while only node-2 was")
	}
}

// memberlist says it refutes a dead message only through its log: a peer
// declared this speaker dead at its current incarnation (the suspicion
// never reached it, so it never refuted it) and took its addresses over.
// The log bridge must tell; a refuted suspicion is not that.
func TestRefutingADeadMessageIsReported(t *testing.T) {
	var suspected, dead int
	w := logWriter{log: logr.Discard(), suspected: func() { suspected++ }, declaredDead: func() { dead++ }}
	fmt.Fprintln(w, "[DEBUG] memberlist: Failed UDP ping: node-1 (timeout reached)")
	if suspected+dead != 0 {
		t.Fatalf("told of %d suspicions and %d dead declarations for a failed ping", suspected, dead)
	}
	fmt.Fprintln(w, "[WARN] memberlist: Refuting a suspect message (from: node-1)") // memberlist v0.7's wording
	if suspected != 1 || dead != 0 {
		t.Fatalf("told of %d suspicions and %d dead declarations for one refuted suspicion", suspected, dead)
	}
	fmt.Fprintln(w, "[WARN] memberlist: Refuting a dead message (from: node-3)")
	if suspected != 1 || dead != 1 {
		t.Errorf("told of %d suspicions and %d dead declarations for a refuted suspicion, then a refuted dead message", suspected, dead)
	}
}

// The stand-down after a suspicion covers memberlist's longest suspicion
// at this package's tuning: 1.2 s (3 × 4 probe intervals) up to 10 members,
// growing with log10 of the members, plus two gossip rounds.
func TestLongestSuspicion(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{
		{0, 1300 * time.Millisecond},
		{3, 1300 * time.Millisecond},
		{10, 1300 * time.Millisecond},
		{100, 2500 * time.Millisecond},
		{1000, 3700 * time.Millisecond},
	} {
		if got := longestSuspicion(tc.n); got != tc.want {
			t.Errorf("%d members: %s; want %s", tc.n, got, tc.want)
		}
	}
}

// A speaker that cannot reach the API server says so in its gossip
// metadata; every peer sees the flag within a few gossip rounds, is told by
// a Changes signal, and sees it cleared the same way.
func TestAPIServerReachabilitySpreadsThroughGossip(t *testing.T) {
	ms := cluster(t, 3)
	for _, m := range ms {
		drain(m.Changes())
	}
	ms[1].SetAPIReachable(false)
	want := []string{"node-1"}
	took := waitFor(t, 3*time.Second, "every speaker to see node-1 cut off from the API server", func() bool {
		for _, m := range ms {
			if !slices.Equal(sortedKeys(m.APIUnreachable()), want) {
				return false
			}
		}
		return true
	})
	t.Logf("flag seen by every speaker after %s", took)
	select {
	case <-ms[0].Changes():
	default:
		t.Error("the flag changed without a Changes signal")
	}
	ms[1].SetAPIReachable(true)
	waitFor(t, 3*time.Second, "the flag to clear everywhere", func() bool {
		for _, m := range ms {
			if len(m.APIUnreachable()) != 0 {
				return false
			}
		}
		return true
	})
}

func TestRestartedSpeakerRejoinsUnderItsName(t *testing.T) {
	ms := cluster(t, 3)
	_, port, _ := net.SplitHostPort(ms[2].Addr())
	var p int
	fmt.Sscan(port, &p)
	if err := ms[2].Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "node-2 is dead to node-0", func() bool { return !ms[0].Alive()["node-2"] })
	again := start(t, Config{NodeName: "node-2", Port: p})
	if _, err := again.Join([]string{ms[0].Addr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "node-2 is alive again for everyone", func() bool {
		return ms[0].Alive()["node-2"] && ms[1].Alive()["node-2"] && len(again.Alive()) == 3
	})
}

func TestStartRefusesUnsafeConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no name", Config{BindAddr: loopback, SecretKey: key}},
		{"unspecified IPv4 address", Config{NodeName: "n", BindAddr: netip.IPv4Unspecified(), SecretKey: key}},
		{"unspecified IPv6 address", Config{NodeName: "n", BindAddr: netip.IPv6Unspecified(), SecretKey: key}},
		{"no address", Config{NodeName: "n", SecretKey: key}},
		{"no key", Config{NodeName: "n", BindAddr: loopback}},
		{"key of the wrong size", Config{NodeName: "n", BindAddr: loopback, SecretKey: []byte("short")}},
		{"port out of range", Config{NodeName: "n", BindAddr: loopback, SecretKey: key, Port: 70000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if m, err := Start(tc.cfg); err == nil {
				_ = m.Shutdown()
				t.Fatal("Start succeeded")
			}
		})
	}
}

func drain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// cuttable is a transport whose wire can be cut: while cut, nothing goes out
// and nothing comes in, as when a switch port or a firewall drops the
// speaker's gossip.
type cuttable struct {
	memberlist.Transport
	cut     atomic.Bool
	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{}
}

func newCuttable(inner memberlist.Transport) *cuttable {
	c := &cuttable{
		Transport: inner,
		packets:   make(chan *memberlist.Packet),
		streams:   make(chan net.Conn),
		done:      make(chan struct{}),
	}
	go func() {
		for {
			select {
			case <-c.done:
				return
			case p := <-inner.PacketCh():
				if c.cut.Load() {
					continue
				}
				select {
				case c.packets <- p:
				case <-c.done:
					return
				}
			}
		}
	}()
	go func() {
		for {
			select {
			case <-c.done:
				return
			case conn := <-inner.StreamCh():
				if c.cut.Load() {
					conn.Close()
					continue
				}
				select {
				case c.streams <- conn:
				case <-c.done:
					conn.Close()
					return
				}
			}
		}
	}()
	return c
}

func (c *cuttable) WriteTo(b []byte, addr string) (time.Time, error) {
	if c.cut.Load() {
		return time.Now(), nil
	}
	return c.Transport.WriteTo(b, addr)
}

func (c *cuttable) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if c.cut.Load() {
		return nil, errors.New("wire cut")
	}
	return c.Transport.DialTimeout(addr, timeout)
}

func (c *cuttable) PacketCh() <-chan *memberlist.Packet { return c.packets }
func (c *cuttable) StreamCh() <-chan net.Conn           { return c.streams }

// Shutdown stops the inner transport before the relays, as contactTransport
// does: memberlist reads packets until its transport is down, and a relay
// gone first would leave the inner listener blocked on a packet forever.
func (c *cuttable) Shutdown() error {
	err := c.Transport.Shutdown()
	close(c.done)
	return err
}

// The watchdog must fire before the earliest moment peers can declare a
// cut-off speaker dead (one failed probe interval plus memberlist's minimum
// suspicion timeout), with room for its own lateness, at any cluster size.
func TestIsolationIsReportedBeforePeersCanDeclareDeath(t *testing.T) {
	for _, tc := range []struct {
		members int
		want    time.Duration
	}{{2, 300 * time.Millisecond}, {9, 300 * time.Millisecond}, {100, 700 * time.Millisecond}, {1000, 1100 * time.Millisecond}} {
		if got := isolationTimeout(tc.members); got != tc.want {
			t.Errorf("isolationTimeout(%d) = %v; want %v", tc.members, got, tc.want)
		}
	}
	for n := 2; n <= 10000; n++ {
		minSuspicion := time.Duration(suspicionMult * max(1, math.Log10(float64(n))) * float64(probeInterval))
		earliestDeath := probeInterval + minSuspicion
		if margin := earliestDeath - (isolationTimeout(n) + watchInterval); margin < 100*time.Millisecond {
			t.Fatalf("%d members: watchdog fires %v before the earliest death; want at least 100ms", n, margin)
		}
	}
}

func TestSpeakersGossipOverIPv6(t *testing.T) {
	if l, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		l.Close()
	}
	ms := cluster(t, 2, func(_ int, c *Config) { c.BindAddr = netip.IPv6Loopback() })
	if a := ms[0].Addr(); a[0] != '[' {
		t.Errorf("Addr() = %q; want a bracketed IPv6 address", a)
	}
}
