package bgp

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/internal/model"
)

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, 0, len(ss))
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func dur(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }
func i32(v int32) *int32                   { return &v }

func peer(name string, spec v1alpha1.BGPPeerSpec) v1alpha1.BGPPeer {
	return v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
}

func build(t *testing.T, peers []v1alpha1.BGPPeer, profiles ...v1alpha1.BFDProfile) *model.Config {
	t.Helper()
	cfg := model.Build(model.Input{BGPPeers: peers, BFDProfiles: profiles})
	for _, p := range peers {
		if v := cfg.Verdicts[model.Ref{Kind: model.KindBGPPeer, Name: p.Name}]; !v.Accepted {
			t.Fatalf("the model refuses BGPPeer %s: %s", p.Name, v.Message)
		}
	}
	return cfg
}

var node1 = Node{
	Name:      "node-1",
	Labels:    map[string]string{"rack": "a"},
	Addresses: addrs("198.51.100.7", "203.0.113.7", "2001:db8:1::7"),
}

func TestSessionsOnlyForPeersWhoseSelectorsMatchTheNode(t *testing.T) {
	cfg := build(t, []v1alpha1.BGPPeer{
		peer("everywhere", v1alpha1.BGPPeerSpec{MyASN: 64513, PeerASN: 64512, PeerAddress: "198.51.100.1"}),
		peer("rack-a", v1alpha1.BGPPeerSpec{MyASN: 64513, PeerASN: 64512, PeerAddress: "198.51.100.2",
			NodeSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"rack": "a"}}}}),
		peer("rack-b", v1alpha1.BGPPeerSpec{MyASN: 64514, PeerASN: 64512, PeerAddress: "198.51.100.3",
			NodeSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"rack": "b"}}}}),
	})
	var names []string
	for _, s := range Sessions(node1, cfg, nil) {
		names = append(names, s.Name)
	}
	if want := []string{"everywhere", "rack-a"}; !slices.Equal(names, want) {
		t.Errorf("sessions %v, want %v", names, want)
	}
}

func TestSessionsResolveEveryBGPPeerField(t *testing.T) {
	fast := v1alpha1.BFDProfile{ObjectMeta: metav1.ObjectMeta{Name: "fast"},
		Spec: v1alpha1.BFDProfileSpec{ReceiveInterval: i32(100), TransmitInterval: i32(200), DetectMultiplier: i32(5)}}
	defaults := v1alpha1.BFDProfile{ObjectMeta: metav1.ObjectMeta{Name: "defaults"}}
	echo := v1alpha1.BFDProfile{ObjectMeta: metav1.ObjectMeta{Name: "echo"}, Spec: v1alpha1.BFDProfileSpec{EchoMode: true, PassiveMode: true}}
	passwords := map[SecretKey]string{{Name: "bgp", Key: "password"}: "s3cret", {Name: "bgp", Key: "other"}: "other"}

	tests := []struct {
		name     string
		spec     v1alpha1.BGPPeerSpec
		want     Session
		warnings []string // substrings, one per warning
	}{{
		name: "defaults",
		spec: v1alpha1.BGPPeerSpec{MyASN: 64513, PeerASN: 64512, PeerAddress: "203.0.113.1"},
		want: Session{MyASN: 64513, PeerASN: 64512, PeerAddress: netip.MustParseAddr("203.0.113.1"), PeerPort: 179,
			// the node's IPv4 address on the peer's side
			RouterID: netip.MustParseAddr("203.0.113.7"),
			HoldTime: 90 * time.Second, KeepaliveTime: 30 * time.Second, ConnectTime: 120 * time.Second,
			NextHopV6: netip.MustParseAddr("2001:db8:1::7")},
	}, {
		name: "every field set",
		spec: v1alpha1.BGPPeerSpec{MyASN: 64513, PeerASN: 64512, PeerAddress: "198.51.100.1", PeerPort: 1179,
			SourceAddress: "198.51.100.7", RouterID: "192.0.2.77",
			HoldTime: dur(9 * time.Second), KeepaliveTime: dur(2 * time.Second), ConnectTime: dur(5 * time.Second),
			PasswordSecret: &v1alpha1.SecretKeyReference{Name: "bgp", Key: "other"}, BFDProfile: "fast", GracefulRestart: true},
		want: Session{MyASN: 64513, PeerASN: 64512, PeerAddress: netip.MustParseAddr("198.51.100.1"), PeerPort: 1179,
			SourceAddress: netip.MustParseAddr("198.51.100.7"), RouterID: netip.MustParseAddr("192.0.2.77"),
			HoldTime: 9 * time.Second, KeepaliveTime: 2 * time.Second, ConnectTime: 5 * time.Second,
			Password: "other", GracefulRestart: true,
			BFD:       &BFD{Profile: "fast", ReceiveInterval: 100 * time.Millisecond, TransmitInterval: 200 * time.Millisecond, DetectMultiplier: 5},
			NextHopV6: netip.MustParseAddr("2001:db8:1::7")},
	}, {
		name: "password key defaults to password; BFD defaults 300 ms x 3; multihop",
		spec: v1alpha1.BGPPeerSpec{MyASN: 64513, PeerASN: 64512, PeerAddress: "198.51.100.1", EBGPMultiHop: true,
			PasswordSecret: &v1alpha1.SecretKeyReference{Name: "bgp"}, BFDProfile: "defaults"},
		want: Session{MyASN: 64513, PeerASN: 64512, PeerAddress: netip.MustParseAddr("198.51.100.1"), PeerPort: 179,
			RouterID: netip.MustParseAddr("198.51.100.7"), EBGPMultiHop: true, Password: "s3cret",
			HoldTime: 90 * time.Second, KeepaliveTime: 30 * time.Second, ConnectTime: 120 * time.Second,
			BFD:       &BFD{Profile: "defaults", ReceiveInterval: 300 * time.Millisecond, TransmitInterval: 300 * time.Millisecond, DetectMultiplier: 3},
			NextHopV6: netip.MustParseAddr("2001:db8:1::7")},
		warnings: []string{"single-hop only"},
	}, {
		name: "dynamic external",
		spec: v1alpha1.BGPPeerSpec{MyASN: 64513, DynamicASN: v1alpha1.DynamicASNExternal, PeerAddress: "198.51.100.1"},
		want: Session{MyASN: 64513, DynamicASN: v1alpha1.DynamicASNExternal, PeerAddress: netip.MustParseAddr("198.51.100.1"), PeerPort: 179,
			RouterID: netip.MustParseAddr("198.51.100.7"),
			HoldTime: 90 * time.Second, KeepaliveTime: 30 * time.Second, ConnectTime: 120 * time.Second,
			NextHopV6: netip.MustParseAddr("2001:db8:1::7")},
	}, {
		name: "IPv6 peer: IPv4 routes need the node's IPv4 next hop",
		spec: v1alpha1.BGPPeerSpec{MyASN: 64513, PeerASN: 64512, PeerAddress: "2001:db8:1::1"},
		want: Session{MyASN: 64513, PeerASN: 64512, PeerAddress: netip.MustParseAddr("2001:db8:1::1"), PeerPort: 179,
			RouterID: netip.MustParseAddr("198.51.100.7"),
			HoldTime: 90 * time.Second, KeepaliveTime: 30 * time.Second, ConnectTime: 120 * time.Second,
			NextHopV4: netip.MustParseAddr("198.51.100.7")},
	}, {
		name: "missing Secret key blocks the session",
		spec: v1alpha1.BGPPeerSpec{MyASN: 64513, PeerASN: 64512, PeerAddress: "198.51.100.1",
			PasswordSecret: &v1alpha1.SecretKeyReference{Name: "absent", Key: "password"}},
		want: Session{MyASN: 64513, PeerASN: 64512, PeerAddress: netip.MustParseAddr("198.51.100.1"), PeerPort: 179,
			RouterID: netip.MustParseAddr("198.51.100.7"),
			HoldTime: 90 * time.Second, KeepaliveTime: 30 * time.Second, ConnectTime: 120 * time.Second,
			Blocked: `passwordSecret: Secret "absent" has no key "password" (or does not exist) in Herald's namespace`},
	}, {
		name: "hold time 0 and BFD echo/passive are not supported: warned",
		spec: v1alpha1.BGPPeerSpec{MyASN: 64513, PeerASN: 64512, PeerAddress: "198.51.100.1", HoldTime: dur(0), KeepaliveTime: dur(0), BFDProfile: "echo"},
		want: Session{MyASN: 64513, PeerASN: 64512, PeerAddress: netip.MustParseAddr("198.51.100.1"), PeerPort: 179,
			RouterID: netip.MustParseAddr("198.51.100.7"),
			HoldTime: 90 * time.Second, KeepaliveTime: 30 * time.Second, ConnectTime: 120 * time.Second,
			BFD:       &BFD{Profile: "echo", ReceiveInterval: 300 * time.Millisecond, TransmitInterval: 300 * time.Millisecond, DetectMultiplier: 3},
			NextHopV6: netip.MustParseAddr("2001:db8:1::7")},
		warnings: []string{"holdTime 0", "echoMode", "passiveMode"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := build(t, []v1alpha1.BGPPeer{peer("p", tc.spec)}, fast, defaults, echo)
			got := Sessions(node1, cfg, passwords)
			if len(got) != 1 {
				t.Fatalf("%d sessions, want 1", len(got))
			}
			g := got[0]
			if len(g.Warnings) != len(tc.warnings) {
				t.Errorf("warnings %q, want one each about %q", g.Warnings, tc.warnings)
			}
			for i, w := range tc.warnings {
				if i < len(g.Warnings) && !strings.Contains(g.Warnings[i], w) {
					t.Errorf("warning %d = %q, want it about %q", i, g.Warnings[i], w)
				}
			}
			g.Warnings = nil
			tc.want.Name = "p"
			if !reflect.DeepEqual(g, tc.want) {
				t.Errorf("session\n got %+v\nwant %+v", g, tc.want)
			}
		})
	}
}

func TestOneRouterIDPerNode(t *testing.T) {
	t.Run("the first explicit routerID wins, others are warned", func(t *testing.T) {
		cfg := build(t, []v1alpha1.BGPPeer{
			peer("a", v1alpha1.BGPPeerSpec{MyASN: 64513, PeerASN: 64512, PeerAddress: "198.51.100.1", RouterID: "192.0.2.10"}),
			peer("b", v1alpha1.BGPPeerSpec{MyASN: 64513, PeerASN: 64512, PeerAddress: "203.0.113.1", RouterID: "192.0.2.11"}),
			peer("c", v1alpha1.BGPPeerSpec{MyASN: 64513, PeerASN: 64512, PeerAddress: "203.0.113.2"}),
		})
		ss := Sessions(node1, cfg, nil)
		for _, s := range ss {
			if s.RouterID != netip.MustParseAddr("192.0.2.10") {
				t.Errorf("session %s router ID %s, want 192.0.2.10", s.Name, s.RouterID)
			}
		}
		if len(ss[1].Warnings) != 1 || !strings.Contains(ss[1].Warnings[0], "192.0.2.11 is not used") || len(ss[0].Warnings)+len(ss[2].Warnings) != 0 {
			t.Errorf("warnings: a %q, b %q, c %q; want one on b only", ss[0].Warnings, ss[1].Warnings, ss[2].Warnings)
		}
	})
	t.Run("a node with only IPv6 addresses", func(t *testing.T) {
		cfg := build(t, []v1alpha1.BGPPeer{peer("a", v1alpha1.BGPPeerSpec{MyASN: 64513, PeerASN: 64512, PeerAddress: "2001:db8:1::1"})})
		n := Node{Name: "v6", Addresses: addrs("2001:db8:1::c633:6407")}
		if got := Sessions(n, cfg, nil)[0].RouterID; got != netip.MustParseAddr("198.51.100.7") {
			t.Errorf("router ID %s, want the low 32 bits of the node's IPv6 address, 198.51.100.7", got)
		}
	})
}

func TestOneSessionPerPeerAddress(t *testing.T) {
	cfg := build(t, []v1alpha1.BGPPeer{
		peer("a", v1alpha1.BGPPeerSpec{MyASN: 64513, PeerASN: 64512, PeerAddress: "198.51.100.1"}),
		peer("b", v1alpha1.BGPPeerSpec{MyASN: 64513, PeerASN: 64512, PeerAddress: "198.51.100.1", PeerPort: 1179}),
	})
	ss := Sessions(node1, cfg, nil)
	if ss[0].Blocked != "" || !strings.Contains(ss[1].Blocked, "BGPPeer a already peers with 198.51.100.1") {
		t.Errorf("blocked: a %q, b %q; want b blocked for a's address", ss[0].Blocked, ss[1].Blocked)
	}
}

func TestResetReasons(t *testing.T) {
	base := Session{Name: "p", MyASN: 64513, PeerASN: 64512, PeerAddress: netip.MustParseAddr("198.51.100.1"), PeerPort: 179,
		RouterID: netip.MustParseAddr("198.51.100.7"), HoldTime: 90 * time.Second, KeepaliveTime: 30 * time.Second, ConnectTime: 120 * time.Second,
		BFD: &BFD{Profile: "x", ReceiveInterval: 300 * time.Millisecond, TransmitInterval: 300 * time.Millisecond, DetectMultiplier: 3}}
	tests := []struct {
		name   string
		change func(*Session)
		reset  string // the field named in the reason; "" for in place
	}{
		{"nothing", func(*Session) {}, ""},
		{"hold and keepalive", func(s *Session) { s.HoldTime, s.KeepaliveTime = 9*time.Second, 3*time.Second }, ""},
		{"connect", func(s *Session) { s.ConnectTime = time.Second }, ""},
		{"next hops", func(s *Session) { s.NextHopV6 = netip.MustParseAddr("2001:db8::7") }, ""},
		{"warnings", func(s *Session) { s.Warnings = []string{"x"} }, ""},
		{"peer address", func(s *Session) { s.PeerAddress = netip.MustParseAddr("198.51.100.2") }, "peerAddress"},
		{"peer port", func(s *Session) { s.PeerPort = 1179 }, "peerPort"},
		{"source address", func(s *Session) { s.SourceAddress = netip.MustParseAddr("198.51.100.7") }, "sourceAddress"},
		{"my ASN", func(s *Session) { s.MyASN = 64514 }, "myASN"},
		{"peer ASN", func(s *Session) { s.PeerASN = 64515 }, "peerASN"},
		{"dynamic ASN", func(s *Session) { s.PeerASN, s.DynamicASN = 0, v1alpha1.DynamicASNExternal }, "peerASN"},
		{"router ID", func(s *Session) { s.RouterID = netip.MustParseAddr("198.51.100.8") }, "routerID"},
		{"password", func(s *Session) { s.Password = "new" }, "password"},
		{"multihop", func(s *Session) { s.EBGPMultiHop = true }, "ebgpMultiHop"},
		{"graceful restart", func(s *Session) { s.GracefulRestart = true }, "gracefulRestart"},
		{"BFD timers", func(s *Session) { b := *s.BFD; b.ReceiveInterval = time.Second; s.BFD = &b }, "bfdProfile"},
		{"BFD off", func(s *Session) { s.BFD = nil }, "bfdProfile"},
		{"blocked", func(s *Session) { s.Blocked = "no Secret" }, "blocked"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := base
			tc.change(&n)
			got := ResetReasons(base, n)
			switch {
			case tc.reset == "" && len(got) != 0:
				t.Errorf("reset for an in-place change: %q", got)
			case tc.reset != "" && (len(got) != 1 || !strings.HasPrefix(got[0], tc.reset+" changed: ")):
				t.Errorf("reasons %q, want one about %s", got, tc.reset)
			}
			// What Output changes in place must be what GoBGP changes in
			// place: only its timers differ between the two GoBGP peers
			// (GoBGP resets a peer whose other settings change).
			if tc.reset == "" {
				a, b := peerFor(base, true), peerFor(n, true)
				a.Timers, b.Timers = nil, nil
				if !proto.Equal(a, b) {
					t.Errorf("an in-place change alters GoBGP's peer beyond its timers:\n%v\n%v", a, b)
				}
			}
		})
	}
}

func TestExportPolicyPerFamily(t *testing.T) {
	s := Session{Name: "p", PeerAddress: netip.MustParseAddr("198.51.100.1")}
	if got := len(exportPolicy(s).Statements); got != 1 {
		t.Errorf("IPv4 session without an IPv6 next hop: %d statements, want 1 (IPv6 routes rejected)", got)
	}
	s.NextHopV6 = netip.MustParseAddr("2001:db8:1::7")
	p := exportPolicy(s)
	if len(p.Statements) != 2 {
		t.Fatalf("%d statements, want 2", len(p.Statements))
	}
	if nh := p.Statements[0].Actions.Nexthop; nh != nil {
		t.Errorf("IPv4 routes over an IPv4 session get next hop %v, want the session's own address", nh)
	}
	if nh := p.Statements[1].Actions.Nexthop; nh == nil || nh.Address != "2001:db8:1::7" {
		t.Errorf("IPv6 routes get next hop %v, want 2001:db8:1::7", nh)
	}
	for _, st := range p.Statements {
		if st.Conditions.NeighborSet.Name != neighborSetName("p") {
			t.Errorf("statement %s does not match the session's neighbour", st.Name)
		}
	}
}

func TestParseCommunities(t *testing.T) {
	std, large, err := ParseCommunities([]string{"65535:65281", "no-export", "64512:7", "large:4294967295:0:1", "blackhole", "large:1:2:3"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint32{64512<<16 | 7, 0xFFFF029A, 0xFFFFFF01}; !slices.Equal(std, want) {
		t.Errorf("standard %x, want %x (sorted, no-export once)", std, want)
	}
	if want := []LargeCommunity{{Global: 1, Local1: 2, Local2: 3}, {Global: 4294967295, Local1: 0, Local2: 1}}; !slices.Equal(large, want) {
		t.Errorf("large %v, want %v", large, want)
	}
	for _, bad := range []string{"65536:1", "1:2:3", "large:1:2", "large:1:2:4294967296", "nope", ""} {
		if _, _, err := ParseCommunities([]string{bad}); err == nil {
			t.Errorf("ParseCommunities(%q) accepted it", bad)
		}
	}
}
