package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/internal/bgprouter"
)

// The routes are set before the session exists (the order a speaker
// starting up may see), and the session takes its peer's AS from its OPEN
// (dynamicASN external).
func TestBIRDLearnsRouteWithNextHopAndCommunities(t *testing.T) {
	t.Parallel() // own namespaces, routers and speaker process
	requireRouters(t)
	tp := newTopo(t)
	b := startBIRD(tp, birdConf(tp))
	sp := startSpeaker(t, tp.speaker)

	s := labSession(t, func(p *v1alpha1.BGPPeerSpec) { p.PeerASN, p.DynamicASN = 0, v1alpha1.DynamicASNExternal })
	std, large, err := ParseCommunities([]string{"64513:100", "large:64513:1:2"})
	if err != nil {
		t.Fatal(err)
	}
	sp.setRoutes(Route{Prefix: lb4, Peers: []string{s.Name}, Communities: std, LargeCommunities: large},
		Route{Prefix: lb6, Peers: []string{s.Name}})
	sp.setSessions(s)
	if st := sp.waitEstablished(s.Name, 15*time.Second); st.PeerASN != routerAS {
		t.Errorf("dynamic ASN: State PeerASN = %d, want %d", st.PeerASN, routerAS)
	}
	waitFor(t, 5*time.Second, "BIRD's session Established", func() (bool, string) {
		n := b.neighbor()
		return n.Established(), fmt.Sprint(n)
	})
	var r *bgprouter.Route
	waitFor(t, 5*time.Second, "the route in BIRD's table", func() (bool, string) {
		r = b.route(lb4)
		return r != nil, "none"
	})
	p := r.Paths[0]
	if !slices.Equal(r.NextHops(), []netip.Addr{netip.MustParseAddr(speakerV4)}) || !slices.Equal(p.Communities, []string{"64513:100"}) ||
		!slices.Equal(p.LargeCommunities, []string{"64513:1:2"}) || p.ASPath != "64513" {
		t.Errorf("BIRD's route %s: next hops %v, %+v; want next hop %s, community 64513:100, large community 64513:1:2, AS path 64513", lb4, r.NextHops(), p, speakerV4)
	}
	waitFor(t, 5*time.Second, "the IPv6 route in BIRD's table", func() (bool, string) {
		r = b.route(lb6)
		return r != nil && slices.Contains(r.NextHops(), netip.MustParseAddr(speakerV6)), fmt.Sprint(r)
	})

	start := time.Now()
	sp.setRoutes(Route{Prefix: lb6, Peers: []string{s.Name}})
	b.waitRoute(lb4, false, start)
	t.Logf("route %s gone from BIRD's table %v after SetRoutes without it", lb4, time.Since(start).Round(time.Millisecond))

	// Latency, 20 times, polling birdc (a few ms a query).
	var appears, gones []time.Duration
	for i := range 20 {
		extra := Route{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(100 + i)}), 32), Peers: []string{s.Name}}
		start = time.Now()
		sp.setRoutes(Route{Prefix: lb6, Peers: []string{s.Name}}, extra)
		appears = append(appears, b.waitRoute(extra.Prefix, true, start))
		start = time.Now()
		sp.setRoutes(Route{Prefix: lb6, Peers: []string{s.Name}})
		gones = append(gones, b.waitRoute(extra.Prefix, false, start))
	}
	slices.Sort(appears)
	slices.Sort(gones)
	pollStart := time.Now()
	b.route(lb6)
	t.Logf("20 runs: SetRoutes -> prefix in BIRD's table: median %v, max %v; SetRoutes without it -> gone: median %v, max %v (one query: %v)",
		appears[10].Round(100*time.Microsecond), appears[19].Round(100*time.Microsecond), gones[10].Round(100*time.Microsecond), gones[19].Round(100*time.Microsecond), time.Since(pollStart).Round(100*time.Microsecond))

	// Without its session, the peer loses the session and our routes.
	sp.setSessions()
	waitFor(t, 5*time.Second, "BIRD's session closed and the route gone", func() (bool, string) {
		n, r := b.neighbor(), b.route(lb6)
		return !n.Established() && r == nil, fmt.Sprint(n, r)
	})
}

// dynamicASN external accepts any AS but ours: a peer in our AS is shut
// down with the reason in State.
func TestBIRDInOurASIsRefusedByDynamicExternal(t *testing.T) {
	t.Parallel() // own namespaces, router and speaker process
	requireRouters(t)
	tp := newTopo(t)
	startBIRD(tp, strings.Replace(birdConf(tp), fmt.Sprintf("local %s as %d;", routerV4, routerAS), fmt.Sprintf("local %s as %d;", routerV4, speakerAS), 1))
	sp := startSpeaker(t, tp.speaker)
	s := labSession(t, func(p *v1alpha1.BGPPeerSpec) { p.PeerASN, p.DynamicASN = 0, v1alpha1.DynamicASNExternal })
	sp.setSessions(s)
	st := sp.waitState(s.Name, 15*time.Second, "refused", func(p PeerState) bool { return strings.Contains(p.Reason, "our own AS") })
	time.Sleep(500 * time.Millisecond)
	if st = sp.state(s.Name); st.State == StateEstablished {
		t.Errorf("a dynamicASN external session with a peer in our AS stays Established: %+v", st)
	}
	t.Logf("refused: state %s, reason %q", st.State, st.Reason)
}

// A peerASN that is not the router's: the session never comes up, and its
// reason says the AS is wrong.
func TestBIRDWithAnotherASThanPeerASNIsRefusedWithTheReason(t *testing.T) {
	t.Parallel() // own namespaces, router and speaker process
	requireRouters(t)
	tp := newTopo(t)
	startBIRD(tp, birdConf(tp))
	sp := startSpeaker(t, tp.speaker)
	s := labSession(t, func(p *v1alpha1.BGPPeerSpec) { p.PeerASN = 64999 })
	sp.setSessions(s)
	st := sp.waitState(s.Name, 15*time.Second, "refused for its AS", func(p PeerState) bool { return strings.Contains(p.Reason, "bad peer AS") })
	if st.State == StateEstablished {
		t.Errorf("established with the wrong AS: %+v", st)
	}
	t.Logf("refused: state %s, reason %q", st.State, st.Reason)
}

// IPv4 routes over an IPv6 session (MP-BGP, RFC 4760) reach BIRD with the
// node's IPv4 address as their next hop.
func TestBIRDOverIPv6LearnsIPv4RoutesWithAnIPv4NextHop(t *testing.T) {
	t.Parallel() // own namespaces, router and speaker process
	requireRouters(t)
	tp := newTopo(t)
	conf := strings.Replace(birdConf(tp), fmt.Sprintf("neighbor %s as %d;", speakerV4, speakerAS), fmt.Sprintf("neighbor %s as %d;", speakerV6, speakerAS), 1)
	conf = strings.Replace(conf, fmt.Sprintf("local %s as", routerV4), fmt.Sprintf("local %s as", routerV6), 1)
	b := startBIRD(tp, conf)
	sp := startSpeaker(t, tp.speaker)
	s := labSession(t, func(p *v1alpha1.BGPPeerSpec) { p.PeerAddress = routerV6 })
	sp.setRoutes(Route{Prefix: lb4, Peers: []string{s.Name}}, Route{Prefix: lb6, Peers: []string{s.Name}})
	sp.setSessions(s)
	sp.waitEstablished(s.Name, 15*time.Second)
	var r *bgprouter.Route
	waitFor(t, 5*time.Second, "the IPv4 route in BIRD's table", func() (bool, string) {
		r = b.route(lb4)
		out, _ := b.Birdc(context.Background(), "show", "route", "all")
		return r != nil, out
	})
	if !slices.Equal(r.NextHops(), []netip.Addr{netip.MustParseAddr(speakerV4)}) {
		t.Errorf("BIRD's next hops for %s over IPv6: %v, want %s", lb4, r.NextHops(), speakerV4)
	}
}
