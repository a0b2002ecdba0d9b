package election_test

import (
	"fmt"
	"net/netip"
	"reflect"
	"testing"

	"pgregory.net/rapid"

	"github.com/heraldlb/herald/speaker/election"
)

func alive(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

func TestLive(t *testing.T) {
	three := []string{"c", "a", "b"}
	for _, tc := range []struct {
		name         string
		peers        election.Peers
		wantLive     []string
		wantAnnounce bool
	}{
		{"all speakers alive in both views",
			election.Peers{Self: "a", K8sLive: three, GossipHealthy: true, GossipAlive: alive("a", "b", "c")},
			[]string{"a", "b", "c"}, true},
		{"node death: the majority drops the dead node before its Lease expires",
			election.Peers{Self: "a", K8sLive: three, GossipHealthy: true, GossipAlive: alive("a", "b")},
			[]string{"a", "b"}, true},
		{"self counts as alive even if gossip does not list it",
			election.Peers{Self: "a", K8sLive: three, GossipHealthy: true, GossipAlive: alive("b")},
			[]string{"a", "b"}, true},
		{"gossip alone does not make a speaker live: its Lease must be fresh",
			election.Peers{Self: "a", K8sLive: []string{"a", "b"}, GossipHealthy: true, GossipAlive: alive("a", "b", "c")},
			[]string{"a", "b"}, true},
		{"isolated speaker still on the LAN: alone among three, it announces nothing",
			election.Peers{Self: "c", K8sLive: three, GossipHealthy: true, GossipAlive: alive("c")},
			[]string{"c"}, false},
		{"isolated among five with one peer: still a minority",
			election.Peers{Self: "d", K8sLive: []string{"a", "b", "c", "d", "e"}, GossipHealthy: true, GossipAlive: alive("d", "e")},
			[]string{"d", "e"}, false},
		{"even split, the half with the smallest name announces",
			election.Peers{Self: "b", K8sLive: []string{"a", "b", "c", "d"}, GossipHealthy: true, GossipAlive: alive("a", "b")},
			[]string{"a", "b"}, true},
		{"even split, the other half announces nothing",
			election.Peers{Self: "c", K8sLive: []string{"a", "b", "c", "d"}, GossipHealthy: true, GossipAlive: alive("c", "d")},
			[]string{"c", "d"}, false},
		{"two nodes, peer lost: the smaller name carries on",
			election.Peers{Self: "a", K8sLive: []string{"a", "b"}, GossipHealthy: true, GossipAlive: alive("a")},
			[]string{"a"}, true},
		{"two nodes, peer lost: the larger name waits for the peer's Lease to expire",
			election.Peers{Self: "b", K8sLive: []string{"a", "b"}, GossipHealthy: true, GossipAlive: alive("b")},
			[]string{"b"}, false},
		{"two nodes, the peer's Lease expired: the larger name takes over",
			election.Peers{Self: "b", K8sLive: []string{"b"}, GossipHealthy: true, GossipAlive: alive("b")},
			[]string{"b"}, true},
		{"single node",
			election.Peers{Self: "a", K8sLive: []string{"a"}, GossipHealthy: true, GossipAlive: alive("a")},
			[]string{"a"}, true},
		{"own Lease not fresh: owns nothing, announces nothing",
			election.Peers{Self: "a", K8sLive: []string{"b", "c"}, GossipHealthy: true, GossipAlive: alive("a", "b", "c")},
			[]string{"b", "c"}, false},
		{"gossip down here, not yet published: Kubernetes view, announce nothing",
			election.Peers{Self: "a", K8sLive: three, GossipHealthy: false, GossipAlive: alive("a", "b", "c")},
			[]string{"a", "b", "c"}, false},
		{"gossip down here, published: Kubernetes view, announce",
			election.Peers{Self: "a", K8sLive: three, WithoutGossip: []string{"a"}, GossipHealthy: false},
			[]string{"a", "b", "c"}, true},
		{"gossip back but still published as down: stay on the Kubernetes view",
			election.Peers{Self: "a", K8sLive: three, WithoutGossip: []string{"a"}, GossipHealthy: true, GossipAlive: alive("a")},
			[]string{"a", "b", "c"}, true},
		{"gossip down everywhere: everyone uses the Kubernetes view",
			election.Peers{Self: "b", K8sLive: three, WithoutGossip: three, GossipHealthy: false},
			[]string{"a", "b", "c"}, true},
		{"a peer without gossip stays live and has no say in the quorum",
			election.Peers{Self: "a", K8sLive: three, WithoutGossip: []string{"c"}, GossipHealthy: true, GossipAlive: alive("a", "b")},
			[]string{"a", "b", "c"}, true},
		{"a peer without gossip does not save an isolated speaker",
			election.Peers{Self: "b", K8sLive: []string{"a", "b", "c", "d"}, WithoutGossip: []string{"d"}, GossipHealthy: true, GossipAlive: alive("b")},
			[]string{"b", "d"}, false},
		{"duplicates in the Kubernetes view count once",
			election.Peers{Self: "a", K8sLive: []string{"a", "a", "a", "b", "c"}, GossipHealthy: true, GossipAlive: alive("a")},
			[]string{"a"}, false},
		{"no live speaker at all",
			election.Peers{Self: "a", GossipHealthy: true, GossipAlive: alive("a")},
			nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			live, announce := election.Live(tc.peers)
			if !reflect.DeepEqual(live, tc.wantLive) || announce != tc.wantAnnounce {
				t.Errorf("Live = %v, announce %v; want %v, announce %v", live, announce, tc.wantLive, tc.wantAnnounce)
			}
		})
	}
}

// A partition of three speakers into {a, b} and {c}: whatever c owned, only
// one side announces it at any time.
func TestPartitionNeverGivesAnAddressTwoOwners(t *testing.T) {
	k8s := []string{"a", "b", "c"}
	sides := map[string]map[string]bool{"a": alive("a", "b"), "b": alive("a", "b"), "c": alive("c")}
	for ip := netip.MustParseAddr("203.0.113.0"); ip.As4()[3] < 255; ip = ip.Next() {
		var announcers []string
		for self, seen := range sides {
			live, announce := election.Live(election.Peers{Self: self, K8sLive: k8s, GossipHealthy: true, GossipAlive: seen})
			if owner, ok := election.Owner(ip, live, nil); ok && announce && owner == self {
				announcers = append(announcers, self)
			}
		}
		if len(announcers) != 1 {
			t.Fatalf("%s is announced by %v; want exactly one node", ip, announcers)
		}
	}
}

// One speaker without gossip, published in its Lease: it uses the Kubernetes
// view, the others a gossip view in which a third node d is dead. Every
// address still has exactly one announcer.
func TestSpeakerWithoutGossipNeverDoublesAnOwner(t *testing.T) {
	k8s := []string{"a", "b", "c", "d"}
	views := map[string]election.Peers{
		"a": {Self: "a", K8sLive: k8s, WithoutGossip: []string{"a"}},
		"b": {Self: "b", K8sLive: k8s, WithoutGossip: []string{"a"}, GossipHealthy: true, GossipAlive: alive("b", "c")},
		"c": {Self: "c", K8sLive: k8s, WithoutGossip: []string{"a"}, GossipHealthy: true, GossipAlive: alive("b", "c")},
	}
	for ip := netip.MustParseAddr("203.0.113.0"); ip.As4()[3] < 255; ip = ip.Next() {
		var announcers []string
		for self, p := range views {
			live, announce := election.Live(p)
			if owner, ok := election.Owner(ip, live, nil); ok && announce && owner == self {
				announcers = append(announcers, self)
			}
		}
		if len(announcers) > 1 {
			t.Fatalf("%s is announced by %v", ip, announcers)
		}
	}
}

// Whatever the partition of the gossip network into groups, whichever
// speakers run without gossip (published in their Lease or not yet) and
// whichever nodes are dead (their Leases still fresh), no address is announced
// by two speakers.
func TestNoPartitionGivesAnAddressTwoOwners(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 7).Draw(t, "nodes")
		var k8s []string
		group := map[string]int{}
		without := map[string]bool{}     // gossip down, published
		unpublished := map[string]bool{} // gossip down, not yet published
		dead := map[string]bool{}
		for i := range n {
			name := fmt.Sprintf("node-%d", i)
			k8s = append(k8s, name)
			group[name] = rapid.IntRange(0, 2).Draw(t, "group of "+name)
			switch rapid.IntRange(0, 5).Draw(t, "gossip of "+name) {
			case 0:
				without[name] = true
			case 1:
				unpublished[name] = true
			}
			dead[name] = rapid.IntRange(0, 4).Draw(t, "dead "+name) == 0
		}
		var withoutList []string
		for _, name := range k8s {
			if without[name] {
				withoutList = append(withoutList, name)
			}
		}
		views := map[string]election.Peers{}
		for _, self := range k8s {
			if dead[self] {
				continue
			}
			p := election.Peers{Self: self, K8sLive: k8s, WithoutGossip: withoutList, GossipHealthy: !without[self] && !unpublished[self]}
			if p.GossipHealthy {
				p.GossipAlive = map[string]bool{}
				for _, other := range k8s {
					if !dead[other] && !without[other] && !unpublished[other] && group[other] == group[self] {
						p.GossipAlive[other] = true
					}
				}
			}
			views[self] = p
		}
		ip := ipGen.Draw(t, "first ip")
		for range 64 {
			var announcers []string
			for self, p := range views {
				live, announce := election.Live(p)
				if owner, ok := election.Owner(ip, live, nil); ok && announce && owner == self {
					announcers = append(announcers, self)
				}
			}
			if len(announcers) > 1 {
				t.Fatalf("%s is announced by %v (groups %v, without gossip %v, unpublished %v, dead %v)", ip, announcers, group, without, unpublished, dead)
			}
			ip = ip.Next()
			if !ip.IsValid() {
				return
			}
		}
	})
}
