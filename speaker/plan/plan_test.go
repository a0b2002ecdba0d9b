package plan_test

import (
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"pgregory.net/rapid"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/internal/model"
	"github.com/heraldlb/herald/speaker/dataplane"
	"github.com/heraldlb/herald/speaker/election"
	"github.com/heraldlb/herald/speaker/plan"
)

var (
	lan4 = netip.MustParsePrefix("198.51.100.0/25")
	lan6 = netip.MustParsePrefix("2001:db8:1::/64")
	dmz4 = netip.MustParsePrefix("203.0.113.128/25")
)

func key(name string) types.NamespacedName { return types.NamespacedName{Namespace: "ns", Name: name} }

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

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

func dead(n *election.Node) { n.SpeakerLive = false }

// config builds the model from CRs, as the speaker does.
func config(pools map[string][]string, ads ...v1alpha1.L2Advertisement) *model.Config {
	return build(pools, model.Input{L2Advertisements: ads})
}

// build adds the pools to in and builds the model.
func build(pools map[string][]string, in model.Input) *model.Config {
	for name, addrs := range pools {
		in.Pools = append(in.Pools, v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.IPAddressPoolSpec{Addresses: addrs}})
	}
	return model.Build(in)
}

func ad(name string, spec v1alpha1.L2AdvertisementSpec) v1alpha1.L2Advertisement {
	return v1alpha1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
}

var (
	pools = map[string][]string{"lan": {"198.51.100.64/27", "2001:db8:1::1:0/112"}, "dmz": {"203.0.113.200/29"}}
	svcA  = map[string]string{"team": "a"}
	svcB  = map[string]string{"team": "b"}
)

func selector(k, v string) []metav1.LabelSelector {
	return []metav1.LabelSelector{{MatchLabels: map[string]string{k: v}}}
}

func planOf(w plan.World, svcs ...*plan.Service) *plan.Planner {
	p := plan.New()
	p.SetWorld(w)
	for _, s := range svcs {
		p.SetService(s)
	}
	p.Plan()
	return p
}

func TestL2Decisions(t *testing.T) {
	all := ad("all", v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{"lan"}})
	nodes := []election.Node{node("a"), node("b"), node("c")}
	owner := func(addr string, nodes []election.Node) string {
		o, _ := election.Owner(ip(addr), []string{nodes[0].Name, nodes[1].Name, nodes[2].Name}, nil)
		return o
	}
	for _, tc := range []struct {
		name  string
		world plan.World
		svcs  []*plan.Service
		addr  string
		want  plan.L2
	}{
		{"an advertised address goes to the highest-weight live node",
			plan.World{Config: config(pools, all), Nodes: nodes},
			[]*plan.Service{{Key: key("web"), IPs: []netip.Addr{ip("198.51.100.70")}}},
			"198.51.100.70", plan.L2{Owner: owner("198.51.100.70", nodes), Interfaces: []string{"eth0"}, Services: []types.NamespacedName{key("web")}}},
		{"an address in a pool no advertisement covers is not planned",
			plan.World{Config: config(pools, all), Nodes: nodes},
			[]*plan.Service{{Key: key("web"), IPs: []netip.Addr{ip("203.0.113.201")}}},
			"203.0.113.201", plan.L2{}},
		{"an address outside every pool is not planned",
			plan.World{Config: config(pools, all), Nodes: nodes},
			[]*plan.Service{{Key: key("web"), IPs: []netip.Addr{ip("198.51.100.1")}}},
			"198.51.100.1", plan.L2{}},
		{"a Service the advertisement's serviceSelectors miss is not planned",
			plan.World{Config: config(pools, ad("a-only", v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{"lan"}, ServiceSelectors: selector("team", "a")})), Nodes: nodes},
			[]*plan.Service{{Key: key("web"), IPs: []netip.Addr{ip("198.51.100.70")}, Labels: svcB}},
			"198.51.100.70", plan.L2{}},
		{"no live node with an interface in the subnet: planned, without an owner",
			plan.World{Config: config(pools, ad("dmz", v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{"dmz"}})), Nodes: nodes},
			[]*plan.Service{{Key: key("web"), IPs: []netip.Addr{ip("203.0.113.201")}}},
			"203.0.113.201", plan.L2{Services: []types.NamespacedName{key("web")}}},
		{"Local policy: the node with the ready endpoint",
			plan.World{Config: config(pools, all), Nodes: nodes},
			[]*plan.Service{{Key: key("web"), IPs: []netip.Addr{ip("198.51.100.70")}, LocalTrafficPolicy: true, ReadyNodes: []string{"b"}}},
			"198.51.100.70", plan.L2{Owner: "b", Interfaces: []string{"eth0"}, Services: []types.NamespacedName{key("web")}}},
		{"ipMode Proxy: the node whose speaker forwards, whatever the ranking",
			plan.World{Config: config(pools, all), Nodes: []election.Node{node("a"), node("b", func(n *election.Node) { n.Forwards = true }), node("c")}},
			[]*plan.Service{{Key: key("web"), IPs: []netip.Addr{ip("198.51.100.70")}, ProxyMode: true}},
			"198.51.100.70", plan.L2{Owner: "b", Interfaces: []string{"eth0"}, Services: []types.NamespacedName{key("web")}}},
		{"Local policy without ready endpoints: no owner",
			plan.World{Config: config(pools, all), Nodes: nodes},
			[]*plan.Service{{Key: key("web"), IPs: []netip.Addr{ip("198.51.100.70")}, LocalTrafficPolicy: true}},
			"198.51.100.70", plan.L2{Services: []types.NamespacedName{key("web")}}},
		{"a dead speaker's node owns nothing",
			plan.World{Config: config(pools, ad("pref", v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{"lan"}, PreferredNodes: []string{"b", "c"}})), Nodes: []election.Node{node("a"), node("b", dead), node("c")}},
			[]*plan.Service{{Key: key("web"), IPs: []netip.Addr{ip("198.51.100.70")}}},
			"198.51.100.70", plan.L2{Owner: "c", Interfaces: []string{"eth0"}, Services: []types.NamespacedName{key("web")}}},
		{"IPv6 addresses match IPv6 subnets",
			plan.World{Config: config(pools, all), Nodes: []election.Node{node("a", func(n *election.Node) { delete(n.Interfaces, lan6) }), node("b")}},
			[]*plan.Service{{Key: key("web"), IPs: []netip.Addr{ip("2001:db8:1::1:5")}}},
			"2001:db8:1::1:5", plan.L2{Owner: "b", Interfaces: []string{"eth0"}, Services: []types.NamespacedName{key("web")}}},
		{"sharing Services: elected over the intersection of their candidates",
			plan.World{Config: config(pools, all), Nodes: nodes},
			[]*plan.Service{
				{Key: key("x"), IPs: []netip.Addr{ip("198.51.100.70")}, LocalTrafficPolicy: true, ReadyNodes: []string{"a", "c"}},
				{Key: key("y"), IPs: []netip.Addr{ip("198.51.100.70")}, LocalTrafficPolicy: true, ReadyNodes: []string{"c"}},
			},
			"198.51.100.70", plan.L2{Owner: "c", Interfaces: []string{"eth0"}, Services: []types.NamespacedName{key("x"), key("y")}}},
		{"sharing Services with no common candidate: no owner",
			plan.World{Config: config(pools, all), Nodes: nodes},
			[]*plan.Service{
				{Key: key("x"), IPs: []netip.Addr{ip("198.51.100.70")}, LocalTrafficPolicy: true, ReadyNodes: []string{"a"}},
				{Key: key("y"), IPs: []netip.Addr{ip("198.51.100.70")}, LocalTrafficPolicy: true, ReadyNodes: []string{"c"}},
			},
			"198.51.100.70", plan.L2{Services: []types.NamespacedName{key("x"), key("y")}}},
		{"sharing Services, one not advertised: the other decides alone",
			plan.World{Config: config(pools, ad("a-only", v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{"lan"}, ServiceSelectors: selector("team", "a"), PreferredNodes: []string{"b"}})), Nodes: nodes},
			[]*plan.Service{
				{Key: key("x"), IPs: []netip.Addr{ip("198.51.100.70")}, Labels: svcA},
				{Key: key("y"), IPs: []netip.Addr{ip("198.51.100.70")}, Labels: svcB},
			},
			"198.51.100.70", plan.L2{Owner: "b", Interfaces: []string{"eth0"}, Services: []types.NamespacedName{key("x")}}},
		{"sharing Services under different advertisements: interfaces are the intersection",
			plan.World{Config: config(pools,
				ad("wide", v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{"lan"}, Interfaces: []string{"eth0", "eth1"}, ServiceSelectors: selector("team", "a")}),
				ad("narrow", v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{"lan"}, Interfaces: []string{"eth1"}, ServiceSelectors: selector("team", "b"), PreferredNodes: []string{"a"}})),
				Nodes: nodes},
			[]*plan.Service{
				{Key: key("x"), IPs: []netip.Addr{ip("198.51.100.70")}, Labels: svcA},
				{Key: key("y"), IPs: []netip.Addr{ip("198.51.100.70")}, Labels: svcB},
			},
			"198.51.100.70", plan.L2{Owner: "a", Interfaces: []string{"eth1"}, Services: []types.NamespacedName{key("x"), key("y")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := planOf(tc.world, tc.svcs...)
			if got := p.L2(ip(tc.addr)); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("L2(%s) = %+v, want %+v", tc.addr, got, tc.want)
			}
		})
	}
}

// Two Services share an address and match different L2Advertisements with
// different preferred nodes. The owner must not depend on which Service the
// speaker happens to see first: the code this package replaced took the
// preferred nodes and interfaces of whichever Service a cache List returned
// first, so two speakers listing in different orders both answered.
func TestSharedIPNeverSplitsWhateverTheOrderOfItsServices(t *testing.T) {
	cfg := config(pools,
		ad("zz-first-pref-c", v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{"lan"}, ServiceSelectors: selector("team", "a"), PreferredNodes: []string{"c"}, Interfaces: []string{"eth0", "eth1"}}),
		ad("aa-first-pref-b", v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{"lan"}, ServiceSelectors: selector("team", "b"), PreferredNodes: []string{"b"}, Interfaces: []string{"eth1"}}))
	w := plan.World{Config: cfg, Nodes: []election.Node{node("a"), node("b"), node("c")}}
	x := &plan.Service{Key: key("x"), IPs: []netip.Addr{ip("198.51.100.70")}, Labels: svcA}
	y := &plan.Service{Key: key("y"), IPs: []netip.Addr{ip("198.51.100.70")}, Labels: svcB}
	xy, yx := planOf(w, x, y).L2(ip("198.51.100.70")), planOf(w, y, x).L2(ip("198.51.100.70"))
	if !reflect.DeepEqual(xy, yx) {
		t.Fatalf("order x,y decides %+v; order y,x decides %+v", xy, yx)
	}
	// The merge rule: preferred nodes in the order of the advertisements'
	// names (aa-... prefers b), interfaces where both advertisements allow.
	want := plan.L2{Owner: "b", Interfaces: []string{"eth1"}, Services: []types.NamespacedName{key("x"), key("y")}}
	if !reflect.DeepEqual(xy, want) {
		t.Errorf("decided %+v, want %+v", xy, want)
	}
}

func TestPlanReportsOnlyWhatChanged(t *testing.T) {
	all := ad("all", v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{"lan"}})
	p := plan.New()
	p.SetWorld(plan.World{Config: config(pools, all), Nodes: []election.Node{node("a"), node("b")}})
	web := &plan.Service{Key: key("web"), IPs: []netip.Addr{ip("198.51.100.70")}}
	db := &plan.Service{Key: key("db"), IPs: []netip.Addr{ip("198.51.100.71")}}
	p.SetService(web)
	p.SetService(db)
	if got := p.Plan().L2; len(got) != 2 {
		t.Fatalf("first plan: %d changes, want 2", len(got))
	}
	if got := p.Plan().L2; len(got) != 0 {
		t.Errorf("nothing changed, yet %d changes", len(got))
	}
	// The same Service set again is no change.
	p.SetService(&plan.Service{Key: key("web"), IPs: []netip.Addr{ip("198.51.100.70")}})
	if got := p.Plan().L2; len(got) != 0 {
		t.Errorf("an identical Service: %d changes", len(got))
	}
	// A new address: the old one is dropped, the new one planned.
	p.SetService(&plan.Service{Key: key("web"), IPs: []netip.Addr{ip("198.51.100.72")}})
	got := p.Plan().L2
	if len(got) != 2 || got[0].IP != ip("198.51.100.70") || got[0].New.Planned() || got[1].IP != ip("198.51.100.72") || !got[1].New.Planned() {
		t.Errorf("address moved: changes %+v", got)
	}
	p.DeleteService(key("db"))
	if got := p.Plan().L2; len(got) != 1 || got[0].IP != ip("198.51.100.71") || got[0].New.Planned() {
		t.Errorf("Service deleted: changes %+v", got)
	}
}

// A node's death moves only the addresses it owned (rendezvous hashing),
// through the cached rankings.
func TestNodeLossMovesOnlyItsAddresses(t *testing.T) {
	all := ad("all", v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{"lan"}})
	cfg := config(pools, all)
	p := plan.New()
	p.SetWorld(plan.World{Config: cfg, Nodes: []election.Node{node("a"), node("b"), node("c")}})
	for i := range 32 {
		p.SetService(&plan.Service{Key: key(fmt.Sprint("s", i)), IPs: []netip.Addr{netip.AddrFrom4([4]byte{198, 51, 100, byte(64 + i)})}})
	}
	p.Plan()
	before := maps.Collect(p.Addresses())
	owned := map[string]int{}
	for _, d := range before {
		owned[d.Owner]++
	}
	if len(owned) != 3 {
		t.Fatalf("32 addresses over 3 nodes landed on %v", owned)
	}
	p.SetWorld(plan.World{Config: cfg, Nodes: []election.Node{node("a"), node("b", dead), node("c")}})
	changes := p.Plan().L2
	if len(changes) != owned["b"] {
		t.Errorf("b owned %d addresses, but %d moved", owned["b"], len(changes))
	}
	for _, c := range changes {
		if c.Old.Owner != "b" || c.New.Owner == "b" || c.New.Owner == "" {
			t.Errorf("%s moved from %q to %q", c.IP, c.Old.Owner, c.New.Owner)
		}
	}
}

// --- properties ---

type scenario struct {
	nodes []election.Node
	cfg   *model.Config
	svcs  []*plan.Service
	self  string
	peers []string
}

func (sc scenario) world() plan.World {
	return plan.World{Config: sc.cfg, Nodes: sc.nodes, Self: sc.self, Peers: sc.peers}
}

var (
	nodeNames = []string{"a", "b", "c", "d", "e"}
	addrs     = []netip.Addr{ip("198.51.100.64"), ip("198.51.100.65"), ip("198.51.100.66"), ip("2001:db8:1::1:1"), ip("203.0.113.201"), ip("203.0.113.202")}
)

func nodeGen() *rapid.Generator[election.Node] {
	return rapid.Custom(func(t *rapid.T) election.Node {
		name := rapid.SampledFrom(nodeNames).Draw(t, "name")
		n := election.Node{
			Name:        name,
			Labels:      map[string]string{"zone": rapid.SampledFrom([]string{"x", "y"}).Draw(t, "zone")},
			SpeakerLive: rapid.Float64Range(0, 1).Draw(t, "live") < 0.8,
			Interfaces:  map[netip.Prefix][]string{},
		}
		n.NetworkUnavailable = rapid.Float64Range(0, 1).Draw(t, "nu") < 0.1
		n.Forwards = rapid.Float64Range(0, 1).Draw(t, "forwards") < 0.7
		for _, pfx := range []netip.Prefix{lan4, lan6, dmz4} {
			if rapid.Bool().Draw(t, "has "+pfx.String()) {
				n.Interfaces[pfx] = []string{rapid.SampledFrom([]string{"eth0", "eth1"}).Draw(t, "iface")}
			}
		}
		n.InterfaceNames = rapid.SliceOfDistinct(rapid.SampledFrom([]string{"eth0", "eth1", "eth2"}), func(s string) string { return s }).Draw(t, "ifnames")
		slices.Sort(n.InterfaceNames)
		return n
	})
}

func adGen(i int) *rapid.Generator[v1alpha1.L2Advertisement] {
	return rapid.Custom(func(t *rapid.T) v1alpha1.L2Advertisement {
		spec := v1alpha1.L2AdvertisementSpec{IPAddressPools: rapid.SliceOfNDistinct(rapid.SampledFrom([]string{"lan", "dmz"}), 1, 2, func(s string) string { return s }).Draw(t, "pools")}
		if rapid.Bool().Draw(t, "svcsel") {
			spec.ServiceSelectors = selector("team", rapid.SampledFrom([]string{"a", "b"}).Draw(t, "team"))
		}
		if rapid.Bool().Draw(t, "nodesel") {
			spec.NodeSelectors = selector("zone", rapid.SampledFrom([]string{"x", "y"}).Draw(t, "zone"))
		}
		if rapid.Bool().Draw(t, "ifaces") {
			spec.Interfaces = rapid.SliceOfNDistinct(rapid.SampledFrom([]string{"eth0", "eth1", "eth2"}), 1, 2, func(s string) string { return s }).Draw(t, "ifs")
		}
		spec.PreferredNodes = rapid.SliceOfNDistinct(rapid.SampledFrom(nodeNames), 0, 2, func(s string) string { return s }).Draw(t, "pref")
		return ad(fmt.Sprintf("ad%d", i), spec)
	})
}

func serviceGen(i int) *rapid.Generator[*plan.Service] {
	return rapid.Custom(func(t *rapid.T) *plan.Service {
		s := &plan.Service{
			Key:                key(fmt.Sprint("s", i)),
			IPs:                rapid.SliceOfNDistinct(rapid.SampledFrom(addrs), 0, 2, netip.Addr.String).Draw(t, "ips"),
			Labels:             map[string]string{"team": rapid.SampledFrom([]string{"a", "b"}).Draw(t, "team")},
			LocalTrafficPolicy: rapid.Bool().Draw(t, "local"),
			ProxyMode:          rapid.Float64Range(0, 1).Draw(t, "proxy") < 0.3,
		}
		s.ReadyNodes = rapid.SliceOfNDistinct(rapid.SampledFrom(nodeNames), 0, 3, func(s string) string { return s }).Draw(t, "ready")
		slices.Sort(s.ReadyNodes)
		s.Ports = []dataplane.Port{{Name: "http", Protocol: dataplane.TCP, Port: uint16(rapid.IntRange(80, 81).Draw(t, "port"))}}
		return s
	})
}

func scenarioGen() *rapid.Generator[scenario] {
	return rapid.Custom(func(t *rapid.T) scenario {
		var sc scenario
		sc.nodes = rapid.SliceOfNDistinct(nodeGen(), 1, 5, func(n election.Node) string { return n.Name }).Draw(t, "nodes")
		var in model.Input
		for i := range rapid.IntRange(0, 3).Draw(t, "nads") {
			in.L2Advertisements = append(in.L2Advertisements, adGen(i).Draw(t, "ad"))
		}
		for i := range rapid.IntRange(0, 3).Draw(t, "nbgpads") {
			in.BGPAdvertisements = append(in.BGPAdvertisements, bgpAdGen(i).Draw(t, "bgp ad"))
		}
		sc.cfg = build(pools, in)
		sc.self = rapid.SampledFrom(nodeNames).Draw(t, "self")
		sc.peers = rapid.SliceOfNDistinct(rapid.SampledFrom(peerNames), 0, 3, func(s string) string { return s }).Draw(t, "peers")
		slices.Sort(sc.peers)
		for i := range rapid.IntRange(0, 6).Draw(t, "nsvcs") {
			sc.svcs = append(sc.svcs, serviceGen(i).Draw(t, "svc"))
		}
		return sc
	})
}

func decisions(p *plan.Planner) map[netip.Addr]plan.L2 { return maps.Collect(p.Addresses()) }

// The decisions do not depend on the order Services arrive in, and whoever
// plans (every speaker plans the whole cluster) gets the same owners.
func TestPropertyDecisionsIgnoreServiceOrder(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		sc := scenarioGen().Draw(t, "scenario")
		w := plan.World{Config: sc.cfg, Nodes: sc.nodes}
		want := decisions(planOf(w, sc.svcs...))
		perm := rapid.Permutation(sc.svcs).Draw(t, "order")
		nodes := rapid.Permutation(sc.nodes).Draw(t, "node order")
		if got := decisions(planOf(plan.World{Config: sc.cfg, Nodes: nodes}, perm...)); !reflect.DeepEqual(got, want) {
			t.Fatalf("another order decides differently:\n got %v\nwant %v", got, want)
		}
	})
}

// The owner of an address is a candidate of every Service sharing it, on
// interfaces every one of them allows.
func TestPropertyOwnerIsACandidateOfEverySharingService(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		sc := scenarioGen().Draw(t, "scenario")
		p := planOf(plan.World{Config: sc.cfg, Nodes: sc.nodes}, sc.svcs...)
		for addr, d := range p.Addresses() {
			var inter []string
			var prefAds []election.Advertisement
			for i, k := range d.Services {
				svc := p.Service(k)
				ads := electionAds(sc.cfg, addr, svc)
				prefAds = append(prefAds, ads...)
				ready := map[string]bool{}
				for _, n := range svc.ReadyNodes {
					ready[n] = true
				}
				cands, _, ifaces := election.Candidates(election.ServiceInfo{IP: addr, LocalTrafficPolicy: svc.LocalTrafficPolicy, NodesWithReadyEndpoints: ready, NeedsForwarding: svc.ProxyMode}, ads, sc.nodes)
				if d.Owner != "" {
					for _, i := range d.Interfaces {
						if !slices.Contains(ifaces[d.Owner], i) {
							t.Fatalf("%s: owner %s answers on %s, which %s's advertisements do not allow (%v)", addr, d.Owner, i, k, ifaces[d.Owner])
						}
					}
				}
				var withIfaces []string
				for _, c := range cands {
					if d.Owner == "" || len(ifaces[c]) > 0 {
						withIfaces = append(withIfaces, c)
					}
				}
				if i == 0 {
					inter = withIfaces
				} else {
					inter = slices.DeleteFunc(inter, func(n string) bool { return !slices.Contains(withIfaces, n) })
				}
			}
			if d.Owner == "" {
				continue
			}
			if !slices.Contains(inter, d.Owner) {
				t.Fatalf("%s: owner %s is not a candidate of every sharing Service (%v)", addr, d.Owner, inter)
			}
			if len(d.Interfaces) == 0 {
				t.Fatalf("%s: owner %s with no interface", addr, d.Owner)
			}
		}
	})
}

func electionAds(cfg *model.Config, addr netip.Addr, svc *plan.Service) []election.Advertisement {
	var pool string
	if p, ok := cfg.PoolOf(addr); ok {
		pool = p.Name
	}
	var out []election.Advertisement
	for _, a := range cfg.L2Advertisements {
		if slices.Contains(a.Pools, pool) && model.AnyMatches(a.ServiceSelectors, svc.Labels) {
			out = append(out, election.Advertisement{Name: a.Name, NodeSelectors: a.NodeSelectors, Interfaces: a.L2.Interfaces, PreferredNodes: a.L2.PreferredNodes})
		}
	}
	return out
}

// Planning incrementally (Services added, changed and removed one at a time,
// the world changing in between) ends with the same decisions as planning the
// final state from scratch, and the changes reported along the way replay to
// the same decisions.
func TestPropertyIncrementalEqualsFromScratch(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		sc := scenarioGen().Draw(t, "scenario")
		p := plan.New()
		w := sc.world()
		p.SetWorld(w)
		current := map[types.NamespacedName]*plan.Service{}
		replayed := map[netip.Addr]plan.L2{}
		replayedRoutes := map[netip.Prefix]plan.Route{}
		replayedForwarding := map[types.NamespacedName]dataplane.Service{}
		replay := func() {
			diff := p.Plan()
			for _, k := range diff.Dataplane {
				if f, ok := p.Forwarding(k); ok {
					replayedForwarding[k] = f
				} else {
					delete(replayedForwarding, k)
				}
			}
			for _, c := range diff.Routes {
				if c.Route == nil {
					delete(replayedRoutes, c.Prefix)
				} else {
					replayedRoutes[c.Prefix] = *c.Route
				}
			}
			for _, c := range diff.L2 {
				if !reflect.DeepEqual(replayed[c.IP], c.Old) {
					t.Fatalf("%s: change says old %+v, but the last reported was %+v", c.IP, c.Old, replayed[c.IP])
				}
				if c.New.Planned() {
					replayed[c.IP] = c.New
				} else {
					delete(replayed, c.IP)
				}
			}
		}
		for range rapid.IntRange(1, 25).Draw(t, "steps") {
			switch rapid.IntRange(0, 9).Draw(t, "op") {
			case 0, 1, 2, 3, 4:
				s := serviceGen(rapid.IntRange(0, 7).Draw(t, "which")).Draw(t, "svc")
				current[s.Key] = s
				p.SetService(s)
			case 5, 6:
				k := key(fmt.Sprint("s", rapid.IntRange(0, 7).Draw(t, "which")))
				delete(current, k)
				p.DeleteService(k)
			case 7:
				// A node dies or comes back.
				i := rapid.IntRange(0, len(w.Nodes)-1).Draw(t, "node")
				w.Nodes = slices.Clone(w.Nodes)
				w.Nodes[i].SpeakerLive = !w.Nodes[i].SpeakerLive
				p.SetWorld(w)
			case 8:
				next := scenarioGen().Draw(t, "new config")
				w.Config, w.Peers = next.cfg, next.peers
				p.SetWorld(w)
			case 9:
				replay()
			}
		}
		replay()
		fresh := plan.New()
		fresh.SetWorld(w)
		for _, s := range current {
			fresh.SetService(s)
		}
		fresh.Plan()
		if got, want := decisions(p), decisions(fresh); !reflect.DeepEqual(got, want) {
			t.Fatalf("incremental:\n %v\nfrom scratch:\n %v", got, want)
		}
		if !reflect.DeepEqual(replayed, decisions(fresh)) {
			t.Fatalf("replayed changes:\n %v\nfrom scratch:\n %v", replayed, decisions(fresh))
		}
		if got, want := p.Routes(), fresh.Routes(); !reflect.DeepEqual(got, want) {
			t.Fatalf("incremental routes:\n %v\nfrom scratch:\n %v", got, want)
		}
		if got, want := slices.Collect(maps.Values(replayedRoutes)), fresh.Routes(); !sameRoutes(got, want) {
			t.Fatalf("replayed route changes:\n %v\nfrom scratch:\n %v", got, want)
		}
		// The Services the diffs named, read again, are what Self forwards.
		wantForwarding := map[types.NamespacedName]dataplane.Service{}
		for k := range current {
			if f, ok := fresh.Forwarding(k); ok {
				wantForwarding[k] = f
			}
		}
		if !reflect.DeepEqual(replayedForwarding, wantForwarding) {
			t.Fatalf("replayed forwarding:\n %v\nfrom scratch:\n %v", replayedForwarding, wantForwarding)
		}
	})
}
