package layer2_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldlb/herald/internal/netnstest"
	"github.com/heraldlb/herald/speaker/layer2"
)

// speakerAndClient is a LAN with one speaker and one client.
func speakerAndClient(t *testing.T, tools ...string) (n *lan, speaker, client string) {
	t.Helper()
	requireTools(t, tools...)
	n = newLAN(t)
	speaker = n.addHost("s1", speakerMAC, speakerV4, speakerV6)
	client = n.addHost("c", clientMAC, clientV4, clientV6)
	return n, speaker, client
}

func TestOnlyOwnedAddressesGetARPReplies(t *testing.T) {
	t.Parallel()
	_, speaker, client := speakerAndClient(t, "arping")
	reg := prometheus.NewRegistry()
	a := announcerIn(t, speaker, reg)
	setOwned(t, a, map[netip.Addr][]string{vip4: {"eth0"}})

	if macs := arping(t, client, vip4, 2); len(macs) < 2 || !allEqual(macs, speakerMAC) {
		t.Errorf("arping %s: replies from %v, want 2 from the speaker %s", vip4, macs, speakerMAC)
	}
	if macs := arping(t, client, otherVIP4, 2); len(macs) != 0 {
		t.Errorf("arping %s (not owned): replies from %v, want none", otherVIP4, macs)
	}
	// The kernel answers for the interface's own address; the Announcer
	// must not add a second reply.
	setOwned(t, a, map[netip.Addr][]string{vip4: {"eth0"}, netip.MustParseAddr(speakerV4): {"eth0"}})
	if macs := arping(t, client, netip.MustParseAddr(speakerV4), 2); len(macs) != 2 || !allEqual(macs, speakerMAC) {
		t.Errorf("arping the speaker's own address: replies %v, want exactly the kernel's 2", macs)
	}
	if got := counter(t, reg, "herald_speaker_arp_requests_total", "interface", "eth0"); got != 4 {
		t.Errorf("herald_speaker_arp_requests_total{interface=eth0} = %v, want 4 (2 for %s, 2 for the speaker's own address)", got, vip4)
	}
	if got := counter(t, reg, "herald_speaker_arp_replies_total", "interface", "eth0"); got != 2 {
		t.Errorf("herald_speaker_arp_replies_total{interface=eth0} = %v, want 2", got)
	}

	setOwned(t, a, map[netip.Addr][]string{})
	if macs := arping(t, client, vip4, 2); len(macs) != 0 {
		t.Errorf("arping %s after SetOwned({}): replies from %v, want none", vip4, macs)
	}
}

func TestOnlyOwnedAddressesGetNDPAdvertisements(t *testing.T) {
	t.Parallel()
	_, speaker, client := speakerAndClient(t, "ndisc6")
	reg := prometheus.NewRegistry()
	a := announcerIn(t, speaker, reg)
	setOwned(t, a, map[netip.Addr][]string{vip6: {"eth0"}})

	if macs := ndisc6(t, client, vip6, 3); !allEqual(macs, speakerMAC) {
		t.Errorf("ndisc6 %s: advertisements from %v, want the speaker %s", vip6, macs, speakerMAC)
	}
	if macs := ndisc6(t, client, otherVIP6, 2); len(macs) != 0 {
		t.Errorf("ndisc6 %s (not owned): advertisements from %v, want none", otherVIP6, macs)
	}
	if got := counter(t, reg, "herald_speaker_ndp_advertisements_total", "interface", "eth0"); got < 1 {
		t.Errorf("herald_speaker_ndp_advertisements_total{interface=eth0} = %v, want at least 1", got)
	}
	if sol, adv := counter(t, reg, "herald_speaker_ndp_solicitations_total", "interface", "eth0"),
		counter(t, reg, "herald_speaker_ndp_advertisements_total", "interface", "eth0"); sol != adv {
		t.Errorf("%v solicitations for owned addresses but %v advertisements, want one each", sol, adv)
	}

	setOwned(t, a, map[netip.Addr][]string{})
	if macs := ndisc6(t, client, vip6, 2); len(macs) != 0 {
		t.Errorf("ndisc6 %s after SetOwned({}): advertisements from %v, want none", vip6, macs)
	}
}

// A Hold silences the announcer, ARP and NDP alike, without changing what
// it owns; when it ends, the same addresses are answered again.
func TestHoldAnswersNothingUntilItEnds(t *testing.T) {
	t.Parallel()
	_, speaker, client := speakerAndClient(t, "arping", "ndisc6")
	a := announcerIn(t, speaker, nil)
	setOwned(t, a, map[netip.Addr][]string{vip4: {"eth0"}, vip6: {"eth0"}})
	if macs := arping(t, client, vip4, 1); len(macs) != 1 {
		t.Fatalf("arping %s before the hold: replies from %v, want 1", vip4, macs)
	}
	a.Hold(time.Now().Add(time.Hour))
	if macs := arping(t, client, vip4, 2); len(macs) != 0 {
		t.Errorf("arping %s during a hold: replies from %v, want none", vip4, macs)
	}
	if macs := ndisc6(t, client, vip6, 2); len(macs) != 0 {
		t.Errorf("ndisc6 %s during a hold: advertisements from %v, want none", vip6, macs)
	}
	a.Hold(time.Now()) // a later hold replaces the earlier one: over now
	if macs := arping(t, client, vip4, 2); len(macs) < 2 || !allEqual(macs, speakerMAC) {
		t.Errorf("arping %s after the hold: replies from %v, want 2 from the speaker %s", vip4, macs, speakerMAC)
	}
	if macs := ndisc6(t, client, vip6, 2); len(macs) == 0 || !allEqual(macs, speakerMAC) {
		t.Errorf("ndisc6 %s after the hold: advertisements from %v, want the speaker %s", vip6, macs, speakerMAC)
	}
}

// A takeover made during a Hold is announced once the hold ends: a client
// with an old MAC learns the new one unasked, though every announcement of
// the takeover's schedule fell inside the hold.
func TestHoldDefersTheAnnouncementsOfATakeoverToItsEnd(t *testing.T) {
	t.Parallel()
	_, speaker, client := speakerAndClient(t)
	a := announcerIn(t, speaker, nil)
	h := handleIn(t, client)
	netnstest.Run(t, "ip", "-n", client, "neigh", "replace", vip4.String(), "lladdr", fakeMAC, "nud", "stale", "dev", "eth0")
	// Longer than the whole schedule of announcements (the last at 2 s).
	const hold = 3 * time.Second
	end := time.Now().Add(hold)
	a.Hold(end)
	setOwned(t, a, map[netip.Addr][]string{vip4: {"eth0"}})
	time.Sleep(time.Until(end) - 300*time.Millisecond)
	if got := neighbourMAC(t, h, vip4); got != fakeMAC {
		t.Fatalf("client's neighbour entry for %s is %q during the hold, want still the old %s", vip4, got, fakeMAC)
	}
	if _, ok := waitFor(time.Until(end)+time.Second, func() bool { return neighbourMAC(t, h, vip4) == speakerMAC }); !ok {
		t.Fatalf("client's neighbour entry for %s is %q 1 s after the hold ended, want the speaker's %s", vip4, neighbourMAC(t, h, vip4), speakerMAC)
	}
	t.Logf("the client learned the speaker's MAC %v after the hold ended", time.Since(end).Round(time.Millisecond))
}

// An address is answered for only on the interfaces it is owned on: a request
// that arrives on another interface is counted but not answered.
func TestAddressOwnedOnAnotherInterfaceIsNotAnswered(t *testing.T) {
	t.Parallel()
	_, speaker, client := speakerAndClient(t, "arping", "ndisc6")
	netnstest.IPBatch(t, speaker,
		"link add veth0 type veth peer name veth1",
		"link set veth0 up",
		"link set veth1 up",
	)
	reg := prometheus.NewRegistry()
	a := announcerIn(t, speaker, reg)
	setOwned(t, a, map[netip.Addr][]string{vip4: {"veth0"}, vip6: {"veth0"}})

	if macs := arping(t, client, vip4, 2); len(macs) != 0 {
		t.Errorf("arping %s on eth0, owned on veth0 only: replies from %v, want none", vip4, macs)
	}
	if macs := ndisc6(t, client, vip6, 2); len(macs) != 0 {
		t.Errorf("ndisc6 %s on eth0, owned on veth0 only: advertisements from %v, want none", vip6, macs)
	}
	if got := counter(t, reg, "herald_speaker_arp_replies_total", "interface", "eth0"); got != 0 {
		t.Errorf("ARP replies on eth0 = %v, want 0", got)
	}
	// Owning it on eth0 as well makes eth0 answer.
	setOwned(t, a, map[netip.Addr][]string{vip4: {"veth0", "eth0"}})
	if macs := arping(t, client, vip4, 1); !allEqual(macs, speakerMAC) {
		t.Errorf("arping %s once owned on eth0 too: replies from %v, want the speaker", vip4, macs)
	}
}

// On takeover the new owner announces at once, so a client that still has
// an old MAC for the address learns the new one without asking.
func TestTakeoverUpdatesTheClientsNeighbourTableUnasked(t *testing.T) {
	t.Parallel()
	for _, vip := range []netip.Addr{vip4, vip6} {
		t.Run(vip.String(), func(t *testing.T) {
			t.Parallel()
			_, speaker, client := speakerAndClient(t)
			reg := prometheus.NewRegistry()
			a := announcerIn(t, speaker, reg)
			h := handleIn(t, client)
			netnstest.Run(t, "ip", "-n", client, "neigh", "replace", vip.String(), "lladdr", fakeMAC, "nud", "stale", "dev", "eth0")
			if got := neighbourMAC(t, h, vip); got != fakeMAC {
				t.Fatalf("client's neighbour entry for %s is %q before the takeover, want the fake %s", vip, got, fakeMAC)
			}

			start := time.Now()
			setOwned(t, a, map[netip.Addr][]string{vip: {"eth0"}})
			returned := time.Since(start)
			_, ok := waitFor(1500*time.Millisecond-returned, func() bool { return neighbourMAC(t, h, vip) == speakerMAC })
			took := time.Since(start)
			if !ok {
				t.Fatalf("client's neighbour entry for %s is %q 1.5 s after SetOwned, want the speaker's %s", vip, neighbourMAC(t, h, vip), speakerMAC)
			}
			t.Logf("client's neighbour table had the speaker's MAC for %s %v after SetOwned was called (SetOwned returned after %v)",
				vip, took.Round(100*time.Microsecond), returned.Round(100*time.Microsecond))

			// The announcement is repeated: 5 in all over 2 s.
			family := "ipv4"
			if vip.Is6() {
				family = "ipv6"
			}
			time.Sleep(2300*time.Millisecond - time.Since(start))
			if got := counter(t, reg, "herald_speaker_gratuitous_announcements_total", "family", family); got != 5 {
				t.Errorf("herald_speaker_gratuitous_announcements_total{family=%s} = %v 2.3 s after SetOwned, want 5", family, got)
			}
		})
	}
}

// A hand-over without loss: the old owner waits until the new owner has
// announced before it stops answering.
func TestWaitAnnouncedByOtherReturnsOnceTheNewOwnerAnnounces(t *testing.T) {
	t.Parallel()
	requireTools(t)
	n := newLAN(t)
	s1 := n.addHost("s1", speakerMAC, speakerV4, speakerV6)
	s2 := n.addHost("s2", speaker2MAC, speaker2V4, speaker2V6)
	old := announcerIn(t, s1, nil)
	next := announcerIn(t, s2, nil)
	for _, vip := range []netip.Addr{vip4, vip6} {
		setOwned(t, old, map[netip.Addr][]string{vip: {"eth0"}})

		// Its own announcements (sent just now, repeated for 2 s) do not count.
		ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
		err := old.WaitAnnouncedByOther(ctx, vip)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WaitAnnouncedByOther(%s) with no other owner: %v, want the deadline", vip, err)
		}

		done := make(chan error, 1)
		go func() { done <- old.WaitAnnouncedByOther(withTimeout(t, 5*time.Second), vip) }()
		time.Sleep(100 * time.Millisecond) // let it start waiting
		start := time.Now()
		setOwned(t, next, map[netip.Addr][]string{vip: {"eth0"}})
		if err := <-done; err != nil {
			t.Fatalf("WaitAnnouncedByOther(%s) after the new owner announced: %v", vip, err)
		}
		t.Logf("WaitAnnouncedByOther(%s) returned %v after the new owner's SetOwned", vip, time.Since(start).Round(time.Microsecond))

		// Called late, it still sees the announcement it just missed.
		if err := old.WaitAnnouncedByOther(withTimeout(t, 10*time.Millisecond), vip); err != nil {
			t.Errorf("WaitAnnouncedByOther(%s) called just after the announcement: %v, want nil at once", vip, err)
		}
		setOwned(t, old, nil)
		setOwned(t, next, nil)
	}
	if err := old.WaitAnnouncedByOther(context.Background(), vip4); err == nil {
		t.Error("WaitAnnouncedByOther for an address not owned: nil, want an error")
	}
}

// A link that goes down and up, or is deleted and made again, costs answers
// only while it is away; listeners reopen by themselves.
func TestAnsweringResumesAfterTheLinkFlapsOrIsReplaced(t *testing.T) {
	t.Parallel()
	n, speaker, client := speakerAndClient(t, "arping", "ndisc6")
	a := announcerIn(t, speaker, nil)
	h := handleIn(t, client)
	setOwned(t, a, map[netip.Addr][]string{vip4: {"eth0"}, vip6: {"eth0"}})
	answers := func(step string) {
		t.Helper()
		var m4, m6 []string
		took, ok := waitFor(5*time.Second, func() bool {
			m4, m6 = arping(t, client, vip4, 1), ndisc6(t, client, vip6, 1)
			return allEqual(m4, speakerMAC) && allEqual(m6, speakerMAC)
		})
		if !ok {
			t.Fatalf("%s: arping %v, ndisc6 %v, want the speaker %s for both", step, m4, m6, speakerMAC)
		}
		t.Logf("%s: arping and ndisc6 got the speaker's MAC within %v", step, took.Round(time.Millisecond))
	}
	// The client forgets: only a new announcement can teach it again.
	clientForgets := func() {
		t.Helper()
		for _, vip := range []netip.Addr{vip4, vip6} {
			netnstest.Run(t, "ip", "-n", client, "neigh", "replace", vip.String(), "lladdr", fakeMAC, "nud", "stale", "dev", "eth0")
		}
	}
	answers("before")

	netnstest.IPBatch(t, speaker, "link set eth0 down")
	time.Sleep(300 * time.Millisecond)
	clientForgets()
	netnstest.IPBatch(t, speaker, "link set eth0 up")
	for _, vip := range []netip.Addr{vip4, vip6} {
		took, ok := waitFor(3*time.Second, func() bool { return neighbourMAC(t, h, vip) == speakerMAC })
		if !ok {
			t.Errorf("after eth0 came back up the client's entry for %s is %q, want the speaker's (announced again)", vip, neighbourMAC(t, h, vip))
		} else {
			t.Logf("after eth0 came back up, the client learned %s again unasked in %v", vip, took.Round(10*time.Microsecond))
		}
	}
	answers("after down/up")

	n.replaceEth0(speaker, "s1", speakerMAC, speakerV4, speakerV6)
	answers("after eth0 was replaced")
}

func TestCloseStopsAnsweringAndEndsEveryGoroutine(t *testing.T) {
	_, speaker, client := speakerAndClient(t, "arping")
	var a *layer2.Announcer
	inNetns(t, speaker, func() { a = layer2.New(testrLogger(t), nil) })
	setOwned(t, a, map[netip.Addr][]string{vip4: {"eth0"}, vip6: {"eth0"}})
	if macs := arping(t, client, vip4, 1); !allEqual(macs, speakerMAC) {
		t.Fatalf("arping %s before Close: %v", vip4, macs)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := a.SetOwned(map[netip.Addr][]string{vip4: {"eth0"}}); !errors.Is(err, layer2.ErrClosed) {
		t.Errorf("SetOwned after Close: %v, want ErrClosed", err)
	}
	if left := goroutinesIn("speaker/layer2.", "vishvananda/netlink", "mdlayher/"); left != "" {
		t.Errorf("goroutines left after Close:\n%s", left)
	}
	if macs := arping(t, client, vip4, 2); len(macs) != 0 {
		t.Errorf("arping %s after Close: replies from %v, want none", vip4, macs)
	}
}

func TestSetOwnedRefusesInvalidInput(t *testing.T) {
	a := layer2.New(testrLogger(t), nil)
	defer a.Close()
	for name, owned := range map[string]map[netip.Addr][]string{
		"invalid address":          {{}: {"eth0"}},
		"multicast address":        {netip.MustParseAddr("ff02::1"): {"eth0"}},
		"unspecified address":      {netip.IPv4Unspecified(): {"eth0"}},
		"empty interface":          {vip4: {""}},
		"name too long for a link": {vip4: {"a-very-long-interface-name"}},
	} {
		if err := a.SetOwned(owned); err == nil {
			t.Errorf("%s: SetOwned accepted %v", name, owned)
		}
	}
}

// A client re-checks a cached neighbour now and then with a solicitation (or
// ARP request) sent straight to the cached MAC and address (RFC 4861 section
// 7.3). The owner must answer it too, or the client drops its entry.
func TestUnicastNeighbourProbesAreAnswered(t *testing.T) {
	t.Parallel()
	for _, vip := range []netip.Addr{vip4, vip6} {
		t.Run(vip.String(), func(t *testing.T) {
			t.Parallel()
			_, speaker, client := speakerAndClient(t)
			reg := prometheus.NewRegistry()
			a := announcerIn(t, speaker, reg)
			setOwned(t, a, map[netip.Addr][]string{vip: {"eth0"}})
			family, replies := "ipv4", "herald_speaker_arp_replies_total"
			if vip.Is6() {
				family, replies = "ipv6", "herald_speaker_ndp_advertisements_total"
			}
			time.Sleep(2100 * time.Millisecond) // past the announcements, which make entries STALE
			// Probe 1 s after use rather than the default 5 s.
			netnstest.Run(t, "ip", "netns", "exec", client, "sysctl", "-qw", "net."+family+".neigh.eth0.delay_first_probe_time=1")
			h := handleIn(t, client)
			netnstest.Run(t, "ip", "-n", client, "neigh", "replace", vip.String(), "lladdr", speakerMAC, "nud", "stale", "dev", "eth0")
			sendUDP(t, client, vip)
			var seen []string
			took, ok := waitFor(6*time.Second, func() bool {
				st := neighbourState(t, h, vip)
				if len(seen) == 0 || seen[len(seen)-1] != st {
					seen = append(seen, st)
				}
				return st == "REACHABLE" || st == "FAILED"
			})
			// Only an answer to the probe makes a DELAY entry REACHABLE: a
			// datagram confirms nothing, and announcements only make it STALE.
			if !ok || !slices.Contains(seen, "DELAY") || seen[len(seen)-1] != "REACHABLE" {
				t.Fatalf("client's entry for %s went %v, want DELAY, (PROBE,) REACHABLE", vip, seen)
			}
			if got := counter(t, reg, replies, "interface", "eth0"); got != 1 {
				t.Errorf("%s{interface=eth0} = %v, want 1: the answer to the probe", replies, got)
			}
			t.Logf("client's entry for %s went %v in %v", vip, seen, took.Round(time.Millisecond))
		})
	}
}

// Update changes only the addresses it names: the others keep being
// answered, a removed one stops, and the last one gone closes the listener.
func TestUpdateChangesOnlyTheNamedAddresses(t *testing.T) {
	t.Parallel()
	_, speaker, client := speakerAndClient(t, "arping")
	a := announcerIn(t, speaker, prometheus.NewRegistry())
	if err := a.Update(map[netip.Addr][]string{vip4: {"eth0"}}); err != nil {
		t.Fatal(err)
	}
	if err := a.Update(map[netip.Addr][]string{otherVIP4: {"eth0"}}); err != nil {
		t.Fatal(err)
	}
	for _, ip := range []netip.Addr{vip4, otherVIP4} {
		if macs := arping(t, client, ip, 1); len(macs) != 1 || macs[0] != speakerMAC {
			t.Errorf("arping %s after two Updates: replies %v, want the speaker's", ip, macs)
		}
	}
	if err := a.Update(map[netip.Addr][]string{vip4: nil}); err != nil {
		t.Fatal(err)
	}
	if macs := arping(t, client, vip4, 1); len(macs) != 0 {
		t.Errorf("arping %s after its removal: replies %v, want none", vip4, macs)
	}
	if macs := arping(t, client, otherVIP4, 1); len(macs) != 1 {
		t.Errorf("arping %s, which the removal did not name: replies %v, want one", otherVIP4, macs)
	}
	if err := a.Update(map[netip.Addr][]string{otherVIP4: {}}); err != nil {
		t.Fatal(err)
	}
	if macs := arping(t, client, otherVIP4, 1); len(macs) != 0 {
		t.Errorf("arping %s after the last removal: replies %v, want none", otherVIP4, macs)
	}
}

// A node owning thousands of IPv6 addresses answers for every one: one
// socket's multicast memberships are capped by its option memory
// (net.core.optmem_max), so the solicited-node groups are spread over as
// many sockets as they need. 3,000 groups is past the cap of a single socket
// at every default optmem_max.
func TestThousandsOfIPv6AddressesAreAllAnswered(t *testing.T) {
	t.Parallel()
	_, speaker, client := speakerAndClient(t, "ndisc6")
	a := announcerIn(t, speaker, prometheus.NewRegistry())
	owned := map[netip.Addr][]string{}
	var addrs []netip.Addr
	for i := range 3000 {
		ip := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3, byte(i >> 8), byte(i)})
		owned[ip] = []string{"eth0"}
		addrs = append(addrs, ip)
	}
	setOwned(t, a, owned)
	// Past the unsolicited advertisements of a takeover (2 s), so only an
	// answer to the solicitation counts.
	time.Sleep(2500 * time.Millisecond)
	for _, ip := range []netip.Addr{addrs[0], addrs[1500], addrs[2999]} {
		if macs := ndisc6(t, client, ip, 1); len(macs) == 0 || !allEqual(macs, speakerMAC) {
			t.Errorf("ndisc6 %s (of 3,000 owned): advertisements %v, want the speaker's", ip, macs)
		}
	}
}

// Addresses ending in the same 24 bits share a solicited-node group
// (ff02::1:ff01:5 here): the memberships follow each change one address at
// a time, and the group stays joined while either address is owned.
func TestAnAddressIsStillAnsweredWhenTheOtherOfItsSolicitedNodeGroupGoes(t *testing.T) {
	t.Parallel()
	_, speaker, client := speakerAndClient(t, "ndisc6")
	a := announcerIn(t, speaker, prometheus.NewRegistry())
	one, two := netip.MustParseAddr("2001:db8:1::4:1:5"), netip.MustParseAddr("2001:db8:1::5:1:5")
	setOwned(t, a, map[netip.Addr][]string{one: {"eth0"}})
	if err := a.Update(map[netip.Addr][]string{two: {"eth0"}}); err != nil {
		t.Fatal(err)
	}
	if err := a.Update(map[netip.Addr][]string{one: {}}); err != nil {
		t.Fatal(err)
	}
	// Past the unsolicited advertisements, so only an answer counts.
	time.Sleep(2500 * time.Millisecond)
	if macs := ndisc6(t, client, two, 2); len(macs) == 0 || !allEqual(macs, speakerMAC) {
		t.Errorf("ndisc6 %s after %s, of the same group, went: advertisements %v, want the speaker's", two, one, macs)
	}
	if err := a.Update(map[netip.Addr][]string{one: {"eth0"}, two: {}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond)
	if macs := ndisc6(t, client, one, 2); len(macs) == 0 || !allEqual(macs, speakerMAC) {
		t.Errorf("ndisc6 %s, owned again as %s went: advertisements %v, want the speaker's", one, two, macs)
	}
}

func TestRepliesToOneRequesterStopAtItsLimitAndAreCounted(t *testing.T) {
	t.Parallel()
	_, speaker, client := speakerAndClient(t, "arping")
	reg := prometheus.NewRegistry()
	a := announcerIn(t, speaker, reg)
	// A burst of 2, then one reply per 10 s: of 4 requests a second apart,
	// the last 2 go unanswered.
	if err := a.SetReplyLimits(layer2.ReplyLimits{Rate: 0.1, Burst: 2}); err != nil {
		t.Fatal(err)
	}
	setOwned(t, a, map[netip.Addr][]string{vip4: {"eth0"}})
	if macs := arping(t, client, vip4, 4); len(macs) != 2 {
		t.Errorf("arping %s 4 times: %d replies %v, want the burst of 2", vip4, len(macs), macs)
	}
	if got := counter(t, reg, "herald_speaker_layer2_replies_limited_total", "reason", "requester"); got != 2 {
		t.Errorf("herald_speaker_layer2_replies_limited_total{reason=requester} = %v, want 2", got)
	}
	if err := a.SetReplyLimits(layer2.ReplyLimits{Rate: 1, Burst: 0}); err == nil || !strings.Contains(err.Error(), "burst 0") {
		t.Errorf("SetReplyLimits with burst 0: %v, want an error naming the burst", err)
	}
}

// The ARP socket's kernel filter names up to 512 owned addresses; with more
// it passes every frame. Either way an owned address is answered, and one
// no longer owned is not.
func TestARPIsAnsweredWithTheKernelFilterAndWithoutIt(t *testing.T) {
	t.Parallel()
	_, speaker, client := speakerAndClient(t, "arping")
	a := announcerIn(t, speaker, nil)
	// 600 owned addresses outside the LAN's /25 besides vip4: no filter.
	owned := map[netip.Addr][]string{vip4: {"eth0"}}
	for i := range 600 {
		owned[netip.AddrFrom4([4]byte{203, 0, 113 + byte(i/250), byte(i%250) + 1})] = []string{"eth0"}
	}
	setOwned(t, a, owned)
	if macs := arping(t, client, vip4, 1); len(macs) != 1 {
		t.Errorf("arping %s with 601 owned addresses: %v, want one reply", vip4, macs)
	}
	setOwned(t, a, map[netip.Addr][]string{vip4: {"eth0"}})
	if macs := arping(t, client, vip4, 1); len(macs) != 1 {
		t.Errorf("arping %s with the filter back: %v, want one reply", vip4, macs)
	}
	if err := a.Update(map[netip.Addr][]string{vip4: nil, otherVIP4: {"eth0"}}); err != nil {
		t.Fatal(err)
	}
	if macs := arping(t, client, otherVIP4, 1); len(macs) != 1 {
		t.Errorf("arping %s owned by Update: %v, want one reply", otherVIP4, macs)
	}
	if macs := arping(t, client, vip4, 1); len(macs) != 0 {
		t.Errorf("arping %s no longer owned: %v, want none", vip4, macs)
	}
}
