package election_test

import (
	"net/netip"
	"reflect"
	"testing"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/heraldlb/herald/speaker/election"
)

var (
	lan4 = netip.MustParsePrefix("203.0.113.0/24")
	lan6 = netip.MustParsePrefix("2001:db8:1::/64")
	dmz4 = netip.MustParsePrefix("198.51.100.0/24")
)

// node is a live, schedulable node with eth0 on the IPv4 and IPv6 LAN.
func node(name string, edits ...func(*election.Node)) election.Node {
	n := election.Node{
		Name:           name,
		Labels:         map[string]string{"kubernetes.io/hostname": name},
		SpeakerLive:    true,
		Interfaces:     map[netip.Prefix][]string{lan4: {"eth0"}, lan6: {"eth0"}},
		InterfaceNames: []string{"eth0", "eth1"},
	}
	for _, e := range edits {
		e(&n)
	}
	return n
}

func label(k, v string) func(*election.Node) {
	return func(n *election.Node) { n.Labels[k] = v }
}

func sel(t *testing.T, s string) labels.Selector {
	t.Helper()
	out, err := labels.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCandidates(t *testing.T) {
	svc4 := election.ServiceInfo{IP: netip.MustParseAddr("203.0.113.10")}
	all := []election.Advertisement{{Name: "all"}}
	type want struct {
		cands     []string
		preferred []string
		ifaces    map[string][]string
	}
	for _, tc := range []struct {
		name  string
		svc   election.ServiceInfo
		ads   []election.Advertisement
		nodes []election.Node
		want  want
	}{
		{"every live node with an interface in the IP's subnet",
			svc4, all, []election.Node{node("b"), node("a")},
			want{[]string{"a", "b"}, nil, map[string][]string{"a": {"eth0"}, "b": {"eth0"}}}},
		{"a node without a live speaker is not a candidate",
			svc4, all, []election.Node{node("a"), node("b", func(n *election.Node) { n.SpeakerLive = false })},
			want{[]string{"a"}, nil, map[string][]string{"a": {"eth0"}}}},
		{"a node excluded from load balancers is not a candidate",
			svc4, all, []election.Node{node("a"), node("b", func(n *election.Node) { n.ExcludedFromLB = true })},
			want{[]string{"a"}, nil, map[string][]string{"a": {"eth0"}}}},
		{"the exclusion label excludes whatever its value",
			svc4, all, []election.Node{node("a"), node("b", label(election.LabelExcludeFromLB, ""))},
			want{[]string{"a"}, nil, map[string][]string{"a": {"eth0"}}}},
		{"a node whose network is unavailable is not a candidate",
			svc4, all, []election.Node{node("a"), node("b", func(n *election.Node) { n.NetworkUnavailable = true })},
			want{[]string{"a"}, nil, map[string][]string{"a": {"eth0"}}}},
		{"node selectors pick the nodes",
			svc4, []election.Advertisement{{Name: "edge", NodeSelectors: []labels.Selector{sel(t, "role=edge")}}},
			[]election.Node{node("a"), node("b", label("role", "edge"))},
			want{[]string{"b"}, nil, map[string][]string{"b": {"eth0"}}}},
		{"a node matching any selector of any advertisement qualifies",
			svc4, []election.Advertisement{
				{Name: "x", NodeSelectors: []labels.Selector{sel(t, "zone=x"), sel(t, "role=edge")}},
				{Name: "y", NodeSelectors: []labels.Selector{sel(t, "zone=y")}},
			},
			[]election.Node{node("a", label("zone", "x")), node("b", label("role", "edge")), node("c", label("zone", "y")), node("d", label("zone", "z"))},
			want{[]string{"a", "b", "c"}, nil, map[string][]string{"a": {"eth0"}, "b": {"eth0"}, "c": {"eth0"}}}},
		{"no advertisement: no candidates",
			svc4, nil, []election.Node{node("a")},
			want{nil, nil, map[string][]string{}}},
		{"a node without an interface in the IP's subnet is not a candidate",
			election.ServiceInfo{IP: netip.MustParseAddr("198.51.100.7")}, all,
			[]election.Node{node("a"), node("b", func(n *election.Node) { n.Interfaces[dmz4] = []string{"eth1", "bond0.7"} })},
			want{[]string{"b"}, nil, map[string][]string{"b": {"bond0.7", "eth1"}}}},
		{"IPv6 addresses are matched against IPv6 subnets",
			election.ServiceInfo{IP: netip.MustParseAddr("2001:db8:1::10")}, all,
			[]election.Node{node("a"), node("b", func(n *election.Node) { delete(n.Interfaces, lan6) })},
			want{[]string{"a"}, nil, map[string][]string{"a": {"eth0"}}}},
		{"the advertisement's interfaces override the subnet rule",
			svc4, []election.Advertisement{{Name: "eth1", Interfaces: []string{"eth1", "eth9"}}},
			[]election.Node{node("a"), node("b", func(n *election.Node) { n.InterfaceNames = []string{"eth0"} })},
			want{[]string{"a"}, nil, map[string][]string{"a": {"eth1"}}}},
		{"interfaces are the union over the advertisements that select the node",
			svc4, []election.Advertisement{{Name: "subnet"}, {Name: "eth1", Interfaces: []string{"eth1"}, NodeSelectors: []labels.Selector{sel(t, "role=edge")}}},
			[]election.Node{node("a"), node("b", label("role", "edge"))},
			want{[]string{"a", "b"}, nil, map[string][]string{"a": {"eth0"}, "b": {"eth0", "eth1"}}}},
		{"Local traffic policy: only nodes with a ready endpoint",
			election.ServiceInfo{IP: svc4.IP, LocalTrafficPolicy: true, NodesWithReadyEndpoints: map[string]bool{"b": true, "z": true}},
			all, []election.Node{node("a"), node("b")},
			want{[]string{"b"}, nil, map[string][]string{"b": {"eth0"}}}},
		{"Local traffic policy without ready endpoints: no candidates",
			election.ServiceInfo{IP: svc4.IP, LocalTrafficPolicy: true}, all, []election.Node{node("a"), node("b")},
			want{nil, nil, map[string][]string{}}},
		{"ipMode Proxy: only nodes whose speaker forwards (while the dataplane is switched over)",
			election.ServiceInfo{IP: svc4.IP, NeedsForwarding: true}, all,
			[]election.Node{node("a"), node("b", func(n *election.Node) { n.Forwards = true })},
			want{[]string{"b"}, nil, map[string][]string{"b": {"eth0"}}}},
		{"ipMode VIP: kube-proxy forwards on every node, forwarding speaker or not",
			svc4, all, []election.Node{node("a"), node("b", func(n *election.Node) { n.Forwards = true })},
			want{[]string{"a", "b"}, nil, map[string][]string{"a": {"eth0"}, "b": {"eth0"}}}},
		{"Cluster traffic policy ignores endpoints",
			election.ServiceInfo{IP: svc4.IP, NodesWithReadyEndpoints: map[string]bool{"b": true}},
			all, []election.Node{node("a"), node("b")},
			want{[]string{"a", "b"}, nil, map[string][]string{"a": {"eth0"}, "b": {"eth0"}}}},
		{"preferred nodes are merged in the order of the advertisements' names",
			svc4, []election.Advertisement{{Name: "zz", PreferredNodes: []string{"c", "a"}}, {Name: "aa", PreferredNodes: []string{"b", "c"}}},
			[]election.Node{node("a"), node("b"), node("c")},
			want{[]string{"a", "b", "c"}, []string{"b", "c", "a"}, map[string][]string{"a": {"eth0"}, "b": {"eth0"}, "c": {"eth0"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cands, preferred, ifaces := election.Candidates(tc.svc, tc.ads, tc.nodes)
			got := want{cands, preferred, ifaces}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Candidates =\n  %+v\nwant\n  %+v", got, tc.want)
			}
		})
	}
}

func TestPreferredNodeOwnsTheAddressWhileItIsACandidate(t *testing.T) {
	svc := election.ServiceInfo{IP: netip.MustParseAddr("203.0.113.10")}
	ads := []election.Advertisement{{Name: "l2", PreferredNodes: []string{"b", "c"}}}
	nodes := []election.Node{node("a"), node("b"), node("c")}
	owner := func() string {
		cands, preferred, _ := election.Candidates(svc, ads, nodes)
		o, _ := election.Owner(svc.IP, cands, preferred)
		return o
	}
	if o := owner(); o != "b" {
		t.Fatalf("owner = %q; want the first preferred node b", o)
	}
	nodes[1].SpeakerLive = false
	if o := owner(); o != "c" {
		t.Fatalf("with b down, owner = %q; want the next preferred node c", o)
	}
}
