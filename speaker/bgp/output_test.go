package bgp

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/go-logr/logr/testr"
)

// These tests run the Output in the test process itself, so they never give
// it a session: GoBGP would dial from the machine's own namespace. Without a
// session GoBGP is not even started.

func TestSetRoutesRefusesAPrefixGivenTwice(t *testing.T) {
	o := New(testr.New(t), Options{})
	defer o.Close()
	err := o.SetRoutes([]Route{
		{Prefix: netip.MustParsePrefix("203.0.113.10/32"), Peers: []string{"a"}},
		{Prefix: netip.MustParsePrefix("203.0.113.10/32"), Peers: []string{"b"}},
	})
	if err == nil || !strings.Contains(err.Error(), "given twice") {
		t.Errorf("SetRoutes = %v, want an error about the prefix given twice", err)
	}
	if err := o.SetRoutes([]Route{{Peers: []string{"a"}}}); err == nil {
		t.Errorf("SetRoutes accepted a route without a prefix")
	}
}

func TestRoutesAreNormalized(t *testing.T) {
	r := Route{
		Prefix:           netip.MustParsePrefix("203.0.113.17/28"),
		Peers:            []string{"b", "a", "b"},
		Communities:      []uint32{3, 1, 3},
		LargeCommunities: []LargeCommunity{{Global: 2, Local1: 0, Local2: 0}, {Global: 1, Local1: 0, Local2: 0}, {Global: 2, Local1: 0, Local2: 0}},
	}.normalize()
	if r.Prefix != netip.MustParsePrefix("203.0.113.16/28") {
		t.Errorf("prefix %s, want it masked to 203.0.113.16/28", r.Prefix)
	}
	if strings.Join(r.Peers, ",") != "a,b" || len(r.Communities) != 2 || len(r.LargeCommunities) != 2 {
		t.Errorf("lists not sorted and deduplicated: %+v", r)
	}
	mapped := Route{Prefix: netip.PrefixFrom(netip.MustParseAddr("::ffff:203.0.113.10"), 128)}.normalize()
	if mapped.Prefix != netip.MustParsePrefix("203.0.113.10/32") {
		t.Errorf("an IPv4-mapped prefix became %s, want 203.0.113.10/32", mapped.Prefix)
	}
}

func TestBlockedSessionsShowTheirReasonAndStartNothing(t *testing.T) {
	o := New(testr.New(t), Options{})
	defer o.Close()
	s := Session{Name: "p", MyASN: 64513, PeerASN: 64512, PeerAddress: netip.MustParseAddr("198.51.100.2"),
		RouterID: netip.MustParseAddr("198.51.100.1"), Blocked: "passwordSecret: Secret \"bgp\" is missing"}
	if err := o.SetSessions([]Session{s}); err != nil {
		t.Fatal(err)
	}
	if o.srv != nil {
		t.Errorf("GoBGP started for a blocked session")
	}
	st := o.State()
	if len(st) != 1 || st[0].State != StateBlocked || st[0].Reason != s.Blocked {
		t.Errorf("State = %+v, want the session Blocked with its reason", st)
	}
}

// UpdateRoutes changes only the prefixes it names; SetRoutes replaces all.
func TestUpdateRoutesChangesOnlyTheNamedPrefixes(t *testing.T) {
	o := New(testr.New(t), Options{})
	a, b := netip.MustParsePrefix("203.0.113.10/32"), netip.MustParsePrefix("2001:db8::10/128")
	if err := o.SetRoutes([]Route{{Prefix: a, Peers: []string{"x"}}, {Prefix: b, Peers: []string{"x"}}}); err != nil {
		t.Fatal(err)
	}
	if err := o.UpdateRoutes(map[netip.Prefix]*Route{a: nil, netip.MustParsePrefix("203.0.113.17/28"): {Prefix: netip.MustParsePrefix("203.0.113.17/28"), Peers: []string{"y", "x"}}}); err != nil {
		t.Fatal(err)
	}
	want := map[netip.Prefix][]string{b: {"x"}, netip.MustParsePrefix("203.0.113.16/28"): {"x", "y"}}
	if len(o.routes) != len(want) {
		t.Fatalf("routes %v, want %v", o.routes, want)
	}
	for p, peers := range want {
		if r, ok := o.routes[p]; !ok || !slices.Equal(r.Peers, peers) {
			t.Errorf("route %s: %+v, want peers %v", p, r, peers)
		}
	}
}
