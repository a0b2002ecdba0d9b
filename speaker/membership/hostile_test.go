package membership

// Hostile input on the gossip port: speakers with another key or none, forged
// and replayed packets. Everything runs on loopback; forged traffic comes from
// 127.0.0.3, an address no speaker uses, so that the log can be checked for
// naming it.

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldlb/herald/speaker/election"
)

var (
	otherKey  = []byte("another key, 32 bytes long......")
	forgerIP  = net.IPv4(127, 0, 0, 3)
	nothingIn = map[string]float64{refusedDecrypt: 0, refusedUnencrypted: 0, refusedLabel: 0, refusedMalformed: 0}
)

// A speaker whose gossip key differs from the others' (a stale Secret, a
// second cluster on the same LAN) joins nobody and nobody joins it, however
// often each side retries, as the runner does every few seconds; each side's
// liveness view, the one election.Live reads, never counts the other, so the
// stranger never owns an address the others elect and never announces; and
// both sides count and log the key mismatch, naming the sender.
func TestSpeakerWithAnotherKeyIsNeverCountedByEitherSide(t *testing.T) {
	regs := make([]*prometheus.Registry, 3)
	logs := make([]*logBook, 3)
	ms := cluster(t, 3, func(i int, c *Config) {
		regs[i], logs[i] = prometheus.NewRegistry(), &logBook{}
		c.Registerer, c.Log = regs[i], logs[i].logger()
	})
	strangerReg, strangerLog := prometheus.NewRegistry(), &logBook{}
	stranger := start(t, Config{NodeName: "stranger", SecretKey: otherKey, Registerer: strangerReg, Log: strangerLog.logger()})
	all := []string{"node-0", "node-1", "node-2", "stranger"}

	// Sample every view while both sides keep trying.
	stopWatching := watchViews(map[*Membership][]string{
		ms[0]: {"node-0", "node-1", "node-2"}, ms[1]: {"node-0", "node-1", "node-2"}, ms[2]: {"node-0", "node-1", "node-2"},
		stranger: {"stranger"},
	})
	const rounds = 5
	for range rounds {
		for _, m := range ms {
			if n, err := stranger.Join([]string{m.Addr()}); n != 0 || err == nil {
				t.Errorf("the stranger joined %s: %d, %v", m.name, n, err)
			}
			if n, err := m.Join([]string{stranger.Addr()}); n != 0 || err == nil {
				t.Errorf("%s joined the stranger: %d, %v", m.name, n, err)
			}
		}
		time.Sleep(200 * time.Millisecond) // probe and gossip rounds in between
	}
	if wrong := stopWatching(); len(wrong) > 0 {
		t.Errorf("the views mixed in %d samples, first: %s", len(wrong), wrong[0])
	}

	// What election.Live makes of each view, every speaker's Lease fresh.
	peers := func(m *Membership) election.Peers {
		return election.Peers{Self: m.name, K8sLive: all, GossipHealthy: m.Healthy(), GossipAlive: m.Alive()}
	}
	for _, m := range ms {
		if live, announce := election.Live(peers(m)); !announce || !slices.Equal(live, []string{"node-0", "node-1", "node-2"}) {
			t.Errorf("%s: Live = %v, announce %v; want node-0..2 and true", m.name, live, announce)
		}
	}
	if live, announce := election.Live(peers(stranger)); announce || !slices.Equal(live, []string{"stranger"}) {
		t.Errorf("stranger: Live = %v, announce %v; want only itself and false (it hears 1 of 4)", live, announce)
	}
	// Addresses the stranger would own were it counted: the others elect
	// someone else for every one of them.
	live, _ := election.Live(peers(ms[0]))
	var wouldWin int
	for i := range 256 {
		ip := netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
		if o, _ := election.Owner(ip, all, nil); o != "stranger" {
			continue
		}
		wouldWin++
		if o, _ := election.Owner(ip, live, nil); o == "stranger" {
			t.Errorf("%v: owned by the stranger", ip)
		}
	}
	if wouldWin == 0 {
		t.Fatal("no address among 256 would go to the stranger if it counted; the check above proves nothing")
	}

	// Every join the stranger tried is one stream each speaker refused, and
	// the other way round; one log line each, naming the sender.
	for i, m := range ms {
		want := maps.Clone(nothingIn)
		want[refusedDecrypt] = rounds
		if got := refusedCounts(t, regs[i]); !maps.Equal(got, want) {
			t.Errorf("%s counts refused %v; want %v", m.name, got, want)
		}
		logs[i].wantRefusalLines(t, m.name, map[string]int{refusedDecrypt: 1}, "127.0.0.1:")
	}
	want := maps.Clone(nothingIn)
	want[refusedDecrypt] = 3 * rounds
	if got := refusedCounts(t, strangerReg); !maps.Equal(got, want) {
		t.Errorf("the stranger counts refused %v; want %v", got, want)
	}
	strangerLog.wantRefusalLines(t, "stranger", map[string]int{refusedDecrypt: 1}, "127.0.0.1:")
}

// A memberlist without a key, even with Herald's label (the strongest case:
// only the key tells it apart), is refused both ways: it cannot join the
// speakers, and a speaker cannot join a cluster of such memberlists. A speaker
// itself never runs without a key (TestStartRefusesUnsafeConfig); without its
// Secret it runs without gossip, on the API server's view.
func TestMemberlistWithoutKeyIsRefusedBothWays(t *testing.T) {
	regs := make([]*prometheus.Registry, 3)
	ms := cluster(t, 3, func(i int, c *Config) {
		regs[i] = prometheus.NewRegistry()
		c.Registerer = regs[i]
	})
	plain := []*memberlist.Memberlist{plainMemberlist(t, "plain-0"), plainMemberlist(t, "plain-1")}
	if _, err := plain[1].Join([]string{plain[0].LocalNode().Address()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "the two keyless memberlists see each other", func() bool {
		return plain[0].NumMembers() == 2 && plain[1].NumMembers() == 2
	})

	const rounds = 3
	for range rounds {
		for _, m := range ms {
			if n, err := plain[0].Join([]string{m.Addr()}); n != 0 || err == nil {
				t.Errorf("a keyless memberlist joined %s: %d, %v", m.name, n, err)
			}
			if n, err := m.Join([]string{plain[1].LocalNode().Address()}); n != 0 || err == nil {
				t.Errorf("%s joined a keyless memberlist: %d, %v", m.name, n, err)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	for i, m := range ms {
		if got := sortedKeys(m.Alive()); !slices.Equal(got, []string{"node-0", "node-1", "node-2"}) {
			t.Errorf("%s sees %v alive; want node-0, node-1, node-2", m.name, got)
		}
		want := maps.Clone(nothingIn)
		want[refusedUnencrypted] = rounds
		if got := refusedCounts(t, regs[i]); !maps.Equal(got, want) {
			t.Errorf("%s counts refused %v; want %v", m.name, got, want)
		}
	}
	for _, p := range plain {
		var got []string
		for _, n := range p.Members() {
			got = append(got, n.Name)
		}
		slices.Sort(got)
		if !slices.Equal(got, []string{"plain-0", "plain-1"}) {
			t.Errorf("%s lists %v; want plain-0 and plain-1", p.LocalNode().Name, got)
		}
	}
}

// Bytes anyone can send to the gossip port, over UDP and TCP: garbage,
// truncated headers, another cluster's label, memberlist messages in clear
// claiming a new member or the death of a real one, and such claims sealed
// under another key. None changes a view or signals a change; each is counted
// under its reason; a flood logs one line per reason, naming the sender.
func TestForgedGossipPacketsChangeNoViewAndAreCounted(t *testing.T) {
	reg, logs := prometheus.NewRegistry(), &logBook{}
	ms := cluster(t, 3, func(i int, c *Config) {
		if i == 0 {
			c.Registerer, c.Log = reg, logs.logger()
		}
	})
	target := ms[0]
	for _, m := range ms {
		drain(m.Changes())
	}
	node1 := netip.MustParseAddrPort(ms[1].Addr())
	intruder := aliveClaim("intruder", netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 3}), 7947), 1)
	kill := deadClaim("node-1", 1000)
	hijack := aliveClaim("node-1", netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 3}), node1.Port()), 1000)
	garbage := make([]byte, 64)
	garbage[0] = 0x42 // neither a label header nor a message type
	rand.Read(garbage[1:])

	udp := []struct {
		name    string
		payload []byte
		times   int
		reason  string
	}{
		{"empty datagram", nil, 1, refusedMalformed},
		{"garbage", garbage, 200, refusedLabel},
		{"truncated label header", []byte{244}, 1, refusedMalformed},
		{"label header of another length", []byte{244, 20, 'h', 'e', 'r'}, 1, refusedMalformed},
		{"empty label", []byte{244, 0, 4}, 1, refusedLabel},
		{"another cluster's label", labelled("metallb", intruder), 1, refusedLabel},
		{"new member in clear, no label", intruder, 1, refusedLabel},
		{"new member in clear", labelled(label, intruder), 1, refusedDecrypt},
		{"death of a member in clear", labelled(label, kill), 1, refusedDecrypt},
		{"member moved, in clear", labelled(label, hijack), 1, refusedDecrypt},
		{"new member under another key", labelled(label, sealed(otherKey, intruder)), 1, refusedDecrypt},
		{"death of a member under another key", labelled(label, sealed(otherKey, kill)), 1, refusedDecrypt},
		{"garbage with our label", labelled(label, garbage), 1, refusedDecrypt},
		{"ciphertext too short", labelled(label, []byte{1, 2, 3, 4, 5}), 1, refusedDecrypt},
	}
	tcp := []struct {
		name    string
		payload []byte
		reason  string
	}{
		{"garbage", []byte("GET / HTTP/1.0\r\n\r\n"), refusedLabel},
		{"truncated label header", []byte{244}, refusedMalformed},
		{"empty label", []byte{244, 0, 6}, refusedLabel},
		{"another cluster's label", labelled("metallb", []byte{6, 0x80}), refusedLabel},
		{"join in clear", labelled(label, append([]byte{6}, intruder[1:]...)), refusedUnencrypted},
		{"join under another key", labelled(label, streamSealed(otherKey, append([]byte{6}, intruder[1:]...))), refusedDecrypt},
		{"state larger than memberlist accepts", labelled(label, []byte{10, 0xff, 0xff, 0xff, 0xff}), refusedMalformed},
	}
	want := maps.Clone(nothingIn)
	forger, err := net.ListenUDP("udp4", &net.UDPAddr{IP: forgerIP})
	if err != nil {
		t.Fatal(err)
	}
	defer forger.Close()
	three := []string{"node-0", "node-1", "node-2"}
	stopWatching := watchViews(map[*Membership][]string{ms[0]: three, ms[1]: three, ms[2]: three})
	to := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(target.Addr()))
	for _, p := range udp {
		for range p.times {
			if _, err := forger.WriteToUDP(p.payload, to); err != nil {
				t.Fatalf("UDP %s: %v", p.name, err)
			}
		}
		want[p.reason] += float64(p.times)
		// Counted one by one, so each case is checked under its reason.
		if !eventually(time.Second, func() bool { return maps.Equal(refusedCounts(t, reg), want) }) {
			t.Errorf("UDP %s: refused %v; want %v", p.name, refusedCounts(t, reg), want)
			want = refusedCounts(t, reg)
		}
	}
	for _, p := range tcp {
		sendStream(t, target.Addr(), p.payload)
		want[p.reason]++
		if !eventually(time.Second, func() bool { return maps.Equal(refusedCounts(t, reg), want) }) {
			t.Errorf("TCP %s: refused %v; want %v", p.name, refusedCounts(t, reg), want)
			want = refusedCounts(t, reg)
		}
	}

	time.Sleep(300 * time.Millisecond) // room for anything accepted to spread
	if wrong := stopWatching(); len(wrong) > 0 {
		t.Errorf("a view changed in %d samples, first: %s", len(wrong), wrong[0])
	}
	for _, m := range ms {
		select {
		case <-m.Changes():
			t.Errorf("%s signalled a change", m.name)
		default:
		}
	}
	if got := refusedCounts(t, reg); !maps.Equal(got, want) {
		t.Errorf("refused %v; want %v", got, want)
	}
	logs.wantRefusalLines(t, "node-0", map[string]int{refusedDecrypt: 1, refusedUnencrypted: 1, refusedLabel: 1, refusedMalformed: 1}, "127.0.0.3:")
	if errs := logs.errors(); len(errs) > 0 {
		t.Errorf("memberlist logged refusals this package does not recognise: %v", errs)
	}
}

// The forged claims above are real memberlist messages: sealed under the
// speakers' key, or in clear to a memberlist that (unlike a speaker) lets
// unverified packets through, they add a member. Without this, the test above
// could pass on bytes memberlist would drop anyway.
func TestForgedClaimsChangeAViewWhenNotRefused(t *testing.T) {
	forger, err := net.ListenUDP("udp4", &net.UDPAddr{IP: forgerIP})
	if err != nil {
		t.Fatal(err)
	}
	defer forger.Close()
	intruder := aliveClaim("intruder", netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 3}), 7947), 1)

	t.Run("sealed under the speakers' key", func(t *testing.T) {
		victim := start(t, Config{NodeName: "victim"})
		to := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(victim.Addr()))
		if _, err := forger.WriteToUDP(labelled(label, sealed(key, intruder)), to); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Second, "the victim counts the intruder alive", func() bool { return victim.Alive()["intruder"] })
	})
	t.Run("in clear, to a memberlist with a key that does not verify incoming packets", func(t *testing.T) {
		c := memberlist.DefaultLANConfig()
		c.Name, c.BindAddr, c.BindPort, c.Label = "lax", "127.0.0.1", 0, label
		c.SecretKey, c.GossipVerifyIncoming = key, false
		c.LogOutput = discard{}
		lax, err := memberlist.Create(c)
		if err != nil {
			t.Fatal(err)
		}
		defer lax.Shutdown()
		to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(lax.LocalNode().Port)}
		if _, err := forger.WriteToUDP(labelled(label, intruder), to); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Second, "the lax memberlist lists the intruder", func() bool { return lax.NumMembers() == 2 })
	})
}

// Packets captured from a speaker (sealed under the right key) and replayed
// from elsewhere after it left do not bring it back: memberlist keeps a left
// speaker's incarnation and ignores the older news.
func TestReplayedPacketsOfALeftSpeakerDoNotBringItBack(t *testing.T) {
	rec := &recorder{}
	ms := cluster(t, 3, func(i int, c *Config) {
		if i == 2 {
			c.wrapTransport = func(inner memberlist.Transport) memberlist.Transport {
				rec.Transport = inner
				return rec
			}
		}
	})
	time.Sleep(500 * time.Millisecond) // probes, acks and gossip to capture
	if err := ms[2].Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "node-2 is dropped", func() bool {
		return !ms[0].Alive()["node-2"] && !ms[1].Alive()["node-2"]
	})
	for _, m := range ms[:2] {
		drain(m.Changes())
	}
	captured := rec.captured()
	if len(captured) < 5 {
		t.Fatalf("captured %d packets; want a few to replay", len(captured))
	}
	forger, err := net.ListenUDP("udp4", &net.UDPAddr{IP: forgerIP})
	if err != nil {
		t.Fatal(err)
	}
	defer forger.Close()
	for range 3 {
		for _, b := range captured {
			for _, m := range ms[:2] {
				if _, err := forger.WriteToUDP(b, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(m.Addr()))); err != nil {
					t.Fatal(err)
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	for _, m := range ms[:2] {
		if got := sortedKeys(m.Alive()); !slices.Equal(got, []string{"node-0", "node-1"}) {
			t.Errorf("%s sees %v alive after %d replayed packets; want node-0, node-1", m.name, got, 3*len(captured))
		}
		select {
		case <-m.Changes():
			t.Errorf("%s signalled a change", m.name)
		default:
		}
	}
}

// A flood logs one line per reason per interval, and the next line tells how
// many came meanwhile and from whom (at most refusedSendersLogged of them);
// the counter has every one.
func TestRefusalLogIsRateLimitedPerReason(t *testing.T) {
	reg, logs := prometheus.NewRegistry(), &logBook{}
	r := newRefusals(logs.logger(), reg)
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }
	for i := range 1000 {
		r.refuse(refusedLabel, fmt.Sprintf("192.0.2.%d:7947", i%20), "discarding packet with unacceptable label \"\"")
		r.refuse(refusedDecrypt, "192.0.2.99:7947", "Decrypt packet failed")
		now = now.Add(10 * time.Millisecond) // 10 s in all
	}
	logs.wantRefusalLines(t, "after 10 s", map[string]int{refusedLabel: 1, refusedDecrypt: 1}, "192.0.2.")
	now = now.Add(refusedLogEvery)
	r.refuse(refusedLabel, "198.51.100.1:7947", "discarding packet with unacceptable label \"\"")
	lines := logs.refusalLines(refusedLabel)
	if len(lines) != 2 {
		t.Fatalf("%d lines for reason label after the interval; want 2", len(lines))
	}
	if got := lines[1]["refused"]; got != float64(1000) {
		t.Errorf("the second line says %v refused; want 1000 (999 held back, and this one)", got)
	}
	if got := lines[1]["from"].([]any); len(got) != refusedSendersLogged || got[0] != "192.0.2.1:7947" {
		t.Errorf("the second line names %v; want the first %d distinct senders held back", got, refusedSendersLogged)
	}
	want := maps.Clone(nothingIn)
	want[refusedLabel], want[refusedDecrypt] = 1001, 1000
	if got := refusedCounts(t, reg); !maps.Equal(got, want) {
		t.Errorf("refused %v; want %v", got, want)
	}
}

func TestRefusedSenderIsSplitOffMemberlistsMessage(t *testing.T) {
	for _, tc := range []struct{ msg, rest, from string }{
		{"Decrypt packet failed: no installed keys could decrypt the message from=10.0.0.5:7947", "Decrypt packet failed: no installed keys could decrypt the message", "10.0.0.5:7947"},
		{`discarding packet with unacceptable label "": from=[2001:db8::1]:7947`, `discarding packet with unacceptable label ""`, "[2001:db8::1]:7947"},
		{"UDP packet too short (65536 bytes) from=<unknown address>", "UDP packet too short (65536 bytes)", ""},
		{"Got invalid checksum for UDP packet: 1, 2", "Got invalid checksum for UDP packet: 1, 2", ""},
	} {
		if rest, from := sender(tc.msg); rest != tc.rest || from != tc.from {
			t.Errorf("sender(%q) = %q, %q; want %q, %q", tc.msg, rest, from, tc.rest, tc.from)
		}
	}
}

// watchViews samples each speaker's Alive every 5 ms until stopped, and
// returns the samples that differed from what it wants.
func watchViews(want map[*Membership][]string) (stop func() []string) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	var wrong []string
	wg.Go(func() {
		for {
			for m, w := range want {
				if got := sortedKeys(m.Alive()); !slices.Equal(got, w) {
					wrong = append(wrong, fmt.Sprintf("%s saw %v alive, want %v", m.name, got, w))
				}
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	})
	return func() []string {
		close(done)
		wg.Wait()
		return wrong
	}
}

// eventually polls cond every 2 ms for up to timeout.
func eventually(timeout time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// plainMemberlist is a memberlist without a key but with Herald's label, on
// loopback.
func plainMemberlist(t *testing.T, name string) *memberlist.Memberlist {
	t.Helper()
	c := memberlist.DefaultLANConfig()
	c.Name, c.BindAddr, c.BindPort, c.Label = name, "127.0.0.1", 0, label
	c.LogOutput = discard{}
	m, err := memberlist.Create(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	return m
}

// refusedCounts reads herald_speaker_gossip_refused_packets_total from reg,
// by reason, as a scrape would.
func refusedCounts(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	return counts(t, reg, "herald_speaker_gossip_refused_packets_total", "reason")
}

// counts reads counter vector name from reg, by the value of its label, as
// a scrape would.
func counts(t *testing.T, reg *prometheus.Registry, name, label string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label {
					out[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

// logBook keeps the log lines of a logger, decoded from funcr's JSON.
type logBook struct {
	mu    sync.Mutex
	lines []map[string]any
}

func (b *logBook) logger() logr.Logger {
	return funcr.NewJSON(func(obj string) {
		var line map[string]any
		if err := json.Unmarshal([]byte(obj), &line); err != nil {
			panic(fmt.Sprintf("log line %s: %v", obj, err))
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		b.lines = append(b.lines, line)
	}, funcr.Options{})
}

func (b *logBook) refusalLines(reason string) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range b.lines {
		if strings.HasPrefix(fmt.Sprint(l["msg"]), "Refused gossip") && l["reason"] == reason {
			out = append(out, l)
		}
	}
	return out
}

// errors are the lines logged as errors: memberlist's ERR lines this package
// does not recognise as refusals.
func (b *logBook) errors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range b.lines {
		if _, ok := l["error"]; ok {
			out = append(out, fmt.Sprint(l["msg"]))
		}
	}
	return out
}

// wantRefusalLines checks how many refusal lines each reason logged, and that
// each names senders starting with from.
func (b *logBook) wantRefusalLines(t *testing.T, who string, want map[string]int, from string) {
	t.Helper()
	for _, reason := range []string{refusedDecrypt, refusedUnencrypted, refusedLabel, refusedMalformed} {
		lines := b.refusalLines(reason)
		if len(lines) != want[reason] {
			t.Errorf("%s logged %d lines for reason %s; want %d", who, len(lines), reason, want[reason])
		}
		for _, l := range lines {
			senders, _ := l["from"].([]any)
			if len(senders) == 0 {
				t.Errorf("%s: a refusal line names no sender: %v", who, l)
			}
			for _, s := range senders {
				if !strings.HasPrefix(fmt.Sprint(s), from) {
					t.Errorf("%s: a refusal line names %v; want senders at %s", who, s, from)
				}
			}
		}
	}
}

// recorder is a transport that keeps a copy of every packet it sends.
type recorder struct {
	memberlist.Transport
	mu      sync.Mutex
	packets [][]byte
}

func (r *recorder) WriteTo(b []byte, addr string) (time.Time, error) {
	r.mu.Lock()
	r.packets = append(r.packets, slices.Clone(b))
	r.mu.Unlock()
	return r.Transport.WriteTo(b, addr)
}

func (r *recorder) captured() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.packets)
}

// sendStream sends payload over TCP from the forger's address, then waits
// until memberlist has hung up: it has read and judged it by then.
func sendStream(t *testing.T, to string, payload []byte) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: forgerIP}, Timeout: time.Second}
	conn, err := d.Dial("tcp", to)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(payload); err != nil {
		t.Fatal(err)
	}
	_ = conn.(*net.TCPConn).CloseWrite()
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 512)
	for {
		if _, err := conn.Read(buf); err != nil {
			return
		}
	}
}

// Memberlist's messages, by hand: a message type byte, then the message as a
// msgpack map keyed by field name, []byte as raw strings (how memberlist
// encodes them). Types and fields from memberlist v0.7 net.go.
const (
	aliveMsg = 4
	deadMsg  = 5
)

func aliveClaim(node string, at netip.AddrPort, incarnation uint32) []byte {
	ip := at.Addr().As4()
	b := []byte{aliveMsg, 0x80 | 6}
	b = mpStr(b, "Incarnation")
	b = mpUint32(b, incarnation)
	b = mpStr(b, "Node")
	b = mpStr(b, node)
	b = mpStr(b, "Addr")
	b = mpStr(b, string(ip[:]))
	b = mpStr(b, "Port")
	b = mpUint32(b, uint32(at.Port()))
	b = mpStr(b, "Meta")
	b = mpStr(b, "")
	b = mpStr(b, "Vsn")
	return mpStr(b, string([]byte{memberlist.ProtocolVersionMin, memberlist.ProtocolVersionMax, memberlist.ProtocolVersion2Compatible, 0, 0, 0}))
}

func deadClaim(node string, incarnation uint32) []byte {
	b := []byte{deadMsg, 0x80 | 3}
	b = mpStr(b, "Incarnation")
	b = mpUint32(b, incarnation)
	b = mpStr(b, "Node")
	b = mpStr(b, node)
	b = mpStr(b, "From")
	return mpStr(b, "node-2")
}

func mpStr(b []byte, s string) []byte {
	if len(s) > 31 {
		panic("mpStr: fixstr only")
	}
	return append(append(b, 0xa0|byte(len(s))), s...)
}

func mpUint32(b []byte, v uint32) []byte {
	return append(b, 0xce, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// sealed encrypts a packet as memberlist does (encryption version 1: AES-GCM,
// a 12-byte nonce, the label as additional data).
func sealed(k, msg []byte) []byte {
	return seal(k, msg, []byte(label))
}

// streamSealed encrypts a stream message as memberlist does: the encryptMsg
// type byte and the length authenticated with the label.
func streamSealed(k, msg []byte) []byte {
	const encryptMsg, overhead = 10, 1 + 12 + 16
	n := len(msg) + overhead
	head := []byte{encryptMsg, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	return append(head, seal(k, msg, append(slices.Clone(head), label...))...)
}

func seal(k, msg, data []byte) []byte {
	block, err := aes.NewCipher(k)
	if err != nil {
		panic(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	nonce := make([]byte, gcm.NonceSize())
	rand.Read(nonce)
	return gcm.Seal(append([]byte{1}, nonce...), nonce, msg, data)
}

func labelled(l string, b []byte) []byte {
	out, err := memberlist.AddLabelHeaderToPacket(slices.Clone(b), l)
	if err != nil {
		panic(err)
	}
	return out
}
