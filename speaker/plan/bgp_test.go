package plan_test

import (
	"cmp"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"pgregory.net/rapid"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/internal/model"
	"github.com/heraldlb/herald/speaker/election"
	"github.com/heraldlb/herald/speaker/plan"
)

var peerNames = []string{"p1", "p2", "p3"}

func bgpAd(name string, spec v1alpha1.BGPAdvertisementSpec) v1alpha1.BGPAdvertisement {
	return v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
}

func bgpConfig(ads ...v1alpha1.BGPAdvertisement) *model.Config {
	return build(pools, model.Input{BGPAdvertisements: ads})
}

func u32(v uint32) *uint32 { return &v }
func i32p(v int32) *int32  { return &v }

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func routes(rs ...plan.Route) []plan.Route { return rs }

func TestBGPRoutes(t *testing.T) {
	nodes := []election.Node{node("a"), node("b", dead), node("c", func(n *election.Node) { n.Labels["rack"] = "r2" })}
	lan := v1alpha1.BGPAdvertisementSpec{IPAddressPools: []string{"lan"}}
	peers := []string{"p1", "p2"}
	for _, tc := range []struct {
		name  string
		self  string
		peers []string
		ads   []v1alpha1.BGPAdvertisement
		svcs  []*plan.Service
		want  []plan.Route
	}{{
		name: "Cluster: the node announces every covered address to all its peers, whoever owns it over layer 2",
		self: "a", peers: peers,
		ads: []v1alpha1.BGPAdvertisement{bgpAd("lan", lan)},
		svcs: []*plan.Service{
			{Key: key("web"), IPs: []netip.Addr{ip("198.51.100.70"), ip("2001:db8:1::1:5")}},
			{Key: key("dmz"), IPs: []netip.Addr{ip("203.0.113.201")}}, // no advertisement covers dmz
		},
		want: routes(
			plan.Route{Prefix: pfx("198.51.100.70/32"), Peers: peers},
			plan.Route{Prefix: pfx("2001:db8:1::1:5/128"), Peers: peers},
		),
	}, {
		name: "a dead speaker does not stop a node announcing itself: BGP has its own liveness",
		self: "b", peers: peers,
		ads:  []v1alpha1.BGPAdvertisement{bgpAd("lan", lan)},
		svcs: []*plan.Service{{Key: key("web"), IPs: []netip.Addr{ip("198.51.100.70")}}},
		want: routes(plan.Route{Prefix: pfx("198.51.100.70/32"), Peers: peers}),
	}, {
		name: "Local: only a node with a ready endpoint announces",
		self: "a", peers: peers,
		ads: []v1alpha1.BGPAdvertisement{bgpAd("lan", lan)},
		svcs: []*plan.Service{
			{Key: key("here"), IPs: []netip.Addr{ip("198.51.100.70")}, LocalTrafficPolicy: true, ReadyNodes: []string{"a", "c"}},
			{Key: key("elsewhere"), IPs: []netip.Addr{ip("198.51.100.71")}, LocalTrafficPolicy: true, ReadyNodes: []string{"c"}},
		},
		want: routes(plan.Route{Prefix: pfx("198.51.100.70/32"), Peers: peers}),
	}, {
		name: "a shared address is announced only where every sharing Service allows it",
		self: "a", peers: peers,
		ads: []v1alpha1.BGPAdvertisement{bgpAd("lan", lan)},
		svcs: []*plan.Service{
			{Key: key("tcp"), IPs: []netip.Addr{ip("198.51.100.70")}, LocalTrafficPolicy: true, ReadyNodes: []string{"a"}},
			{Key: key("udp"), IPs: []netip.Addr{ip("198.51.100.70")}, LocalTrafficPolicy: true, ReadyNodes: []string{"c"}},
		},
	}, {
		name: "nodeSelectors: a node they do not select announces nothing",
		self: "a", peers: peers,
		ads:  []v1alpha1.BGPAdvertisement{bgpAd("r2", v1alpha1.BGPAdvertisementSpec{NodeSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"rack": "r2"}}}})},
		svcs: []*plan.Service{{Key: key("web"), IPs: []netip.Addr{ip("198.51.100.70")}}},
	}, {
		name: "nodeSelectors: the node they select announces",
		self: "c", peers: peers,
		ads:  []v1alpha1.BGPAdvertisement{bgpAd("r2", v1alpha1.BGPAdvertisementSpec{NodeSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"rack": "r2"}}}})},
		svcs: []*plan.Service{{Key: key("web"), IPs: []netip.Addr{ip("198.51.100.70")}}},
		want: routes(plan.Route{Prefix: pfx("198.51.100.70/32"), Peers: peers}),
	}, {
		name: "a node excluded from load balancers announces nothing",
		self: "x", peers: peers,
		ads:  []v1alpha1.BGPAdvertisement{bgpAd("lan", lan)},
		svcs: []*plan.Service{{Key: key("web"), IPs: []netip.Addr{ip("198.51.100.70")}}},
	}, {
		name: "serviceSelectors and peers: each advertisement's routes go to its peers only, those this node has",
		self: "a", peers: peers,
		ads: []v1alpha1.BGPAdvertisement{
			bgpAd("team-a", v1alpha1.BGPAdvertisementSpec{ServiceSelectors: selector("team", "a"), Peers: []string{"p2", "p9"}}),
			bgpAd("team-b", v1alpha1.BGPAdvertisementSpec{ServiceSelectors: selector("team", "b"), Peers: []string{"p9"}}),
		},
		svcs: []*plan.Service{
			{Key: key("a"), IPs: []netip.Addr{ip("198.51.100.70")}, Labels: svcA},
			{Key: key("b"), IPs: []netip.Addr{ip("198.51.100.71")}, Labels: svcB},
		},
		want: routes(plan.Route{Prefix: pfx("198.51.100.70/32"), Peers: []string{"p2"}}),
	}, {
		name: "aggregation: addresses in one aggregate make one route, with both advertisements' attributes merged",
		self: "a", peers: peers,
		ads: []v1alpha1.BGPAdvertisement{
			bgpAd("agg", v1alpha1.BGPAdvertisementSpec{IPAddressPools: []string{"lan"}, AggregationLength: i32p(28), AggregationLengthV6: i32p(112), Peers: []string{"p1"}, LocalPref: u32(50), Communities: []string{"64512:1"}}),
			bgpAd("agg2", v1alpha1.BGPAdvertisementSpec{IPAddressPools: []string{"lan"}, AggregationLength: i32p(28), Peers: []string{"p2"}, LocalPref: u32(200), Communities: []string{"large:64512:1:2", "64512:1"}}),
		},
		svcs: []*plan.Service{
			{Key: key("one"), IPs: []netip.Addr{ip("198.51.100.65"), ip("2001:db8:1::1:5")}},
			{Key: key("two"), IPs: []netip.Addr{ip("198.51.100.78")}},
			{Key: key("three"), IPs: []netip.Addr{ip("198.51.100.80")}},
		},
		want: routes(
			plan.Route{Prefix: pfx("198.51.100.64/28"), Peers: peers, LocalPref: u32(200), Communities: []string{"64512:1", "large:64512:1:2"}},
			plan.Route{Prefix: pfx("198.51.100.80/28"), Peers: peers, LocalPref: u32(200), Communities: []string{"64512:1", "large:64512:1:2"}},
			plan.Route{Prefix: pfx("2001:db8:1::1:0/112"), Peers: []string{"p1"}, LocalPref: u32(50), Communities: []string{"64512:1"}},
			plan.Route{Prefix: pfx("2001:db8:1::1:5/128"), Peers: []string{"p2"}, LocalPref: u32(200), Communities: []string{"64512:1", "large:64512:1:2"}},
		),
	}} {
		t.Run(tc.name, func(t *testing.T) {
			ns := append(slices.Clone(nodes), node("x", func(n *election.Node) { n.Labels[election.LabelExcludeFromLB] = "" }))
			w := plan.World{Config: bgpConfig(tc.ads...), Nodes: ns, Self: tc.self, Peers: tc.peers}
			p := planOf(w, tc.svcs...)
			if got := p.Routes(); !sameRoutes(got, tc.want) {
				t.Fatalf("routes:\n got %v\nwant %v", fmtRoutes(got), fmtRoutes(tc.want))
			}
		})
	}
}

// Routes follow their Services: a Local Service's route goes when its last
// local endpoint does, an aggregate stays while one address in it is
// announced, and every change is reported once.
func TestBGPRouteChanges(t *testing.T) {
	cfg := bgpConfig(bgpAd("agg", v1alpha1.BGPAdvertisementSpec{IPAddressPools: []string{"lan"}, AggregationLength: i32p(28)}))
	p := plan.New()
	p.SetWorld(plan.World{Config: cfg, Nodes: []election.Node{node("a"), node("b")}, Self: "a", Peers: []string{"p1"}})
	web := &plan.Service{Key: key("web"), IPs: []netip.Addr{ip("198.51.100.65")}, LocalTrafficPolicy: true, ReadyNodes: []string{"a"}}
	api := &plan.Service{Key: key("api"), IPs: []netip.Addr{ip("198.51.100.66")}}
	p.SetService(web)
	p.SetService(api)
	agg := pfx("198.51.100.64/28")
	if d := p.Plan(); len(d.Routes) != 1 || d.Routes[0].Prefix != agg || d.Routes[0].Route == nil || len(d.BGP) != 2 {
		t.Fatalf("first plan: %+v", d)
	}
	// The endpoint moves away: the aggregate stays for api.
	p.SetService(&plan.Service{Key: web.Key, IPs: web.IPs, LocalTrafficPolicy: true, ReadyNodes: []string{"b"}})
	if d := p.Plan(); len(d.Routes) != 0 || len(d.BGP) != 1 || d.BGP[0].New.Announced() || !d.BGP[0].New.Planned() {
		t.Fatalf("endpoint moved: %+v", d)
	}
	p.DeleteService(api.Key)
	if d := p.Plan(); len(d.Routes) != 1 || d.Routes[0].Route != nil {
		t.Fatalf("last address of the aggregate gone: want its withdrawal, got %+v", d)
	}
	if got := p.Routes(); len(got) != 0 {
		t.Fatalf("routes left: %v", got)
	}
	// A change of attributes alone (same decisions) re-announces.
	p.SetService(api)
	p.Plan()
	p.SetWorld(plan.World{Config: bgpConfig(bgpAd("agg", v1alpha1.BGPAdvertisementSpec{IPAddressPools: []string{"lan"}, AggregationLength: i32p(28), Communities: []string{"no-export"}})),
		Nodes: []election.Node{node("a"), node("b")}, Self: "a", Peers: []string{"p1"}})
	if d := p.Plan(); len(d.Routes) != 1 || d.Routes[0].Route == nil || !slices.Equal(d.Routes[0].Route.Communities, []string{"no-export"}) {
		t.Fatalf("communities changed: %+v", d)
	}
}

// Every route goes only to sessions this node has, and only addresses whose
// every BGP-covered Service allows this node are in one.
func TestPropertyRoutesReachOnlyOwnSessionsForAllowedAddresses(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		sc := scenarioGen().Draw(t, "scenario")
		p := planOf(sc.world(), sc.svcs...)
		for _, r := range p.Routes() {
			for _, peer := range r.Peers {
				if !slices.Contains(sc.peers, peer) {
					t.Fatalf("route %s goes to %s, not a session of this node (%v)", r.Prefix, peer, sc.peers)
				}
			}
			found := false
			for _, s := range sc.svcs {
				for _, a := range s.IPs {
					d := p.BGP(a)
					if !r.Prefix.Contains(a) || !d.Announced() {
						continue
					}
					found = true
					for _, k := range d.Services {
						svc := p.Service(k)
						if svc.LocalTrafficPolicy && !slices.Contains(svc.ReadyNodes, sc.self) {
							t.Fatalf("%s announced though %s is Local with no endpoint on %s", a, k, sc.self)
						}
						i := slices.IndexFunc(sc.nodes, func(n election.Node) bool { return n.Name == sc.self })
						if svc.ProxyMode && (i < 0 || !sc.nodes[i].Forwards) {
							t.Fatalf("%s announced though %s has ipMode Proxy and %s does not forward", a, k, sc.self)
						}
					}
				}
			}
			if !found {
				t.Fatalf("route %s holds no announced address", r.Prefix)
			}
		}
	})
}

func bgpAdGen(i int) *rapid.Generator[v1alpha1.BGPAdvertisement] {
	return rapid.Custom(func(t *rapid.T) v1alpha1.BGPAdvertisement {
		var spec v1alpha1.BGPAdvertisementSpec
		if rapid.Bool().Draw(t, "some pools") {
			spec.IPAddressPools = rapid.SliceOfNDistinct(rapid.SampledFrom([]string{"lan", "dmz"}), 1, 2, func(s string) string { return s }).Draw(t, "pools")
		}
		if rapid.Bool().Draw(t, "svcsel") {
			spec.ServiceSelectors = selector("team", rapid.SampledFrom([]string{"a", "b"}).Draw(t, "team"))
		}
		if rapid.Bool().Draw(t, "nodesel") {
			spec.NodeSelectors = selector("zone", rapid.SampledFrom([]string{"x", "y"}).Draw(t, "zone"))
		}
		if rapid.Bool().Draw(t, "agg") {
			spec.AggregationLength = i32p(rapid.SampledFrom([]int32{29, 30, 32}).Draw(t, "len"))
			spec.AggregationLengthV6 = i32p(rapid.SampledFrom([]int32{112, 128}).Draw(t, "len6"))
		}
		spec.Peers = rapid.SliceOfNDistinct(rapid.SampledFrom(peerNames), 0, 2, func(s string) string { return s }).Draw(t, "peers")
		if rapid.Bool().Draw(t, "localpref") {
			spec.LocalPref = u32(rapid.Uint32Range(0, 300).Draw(t, "lp"))
		}
		spec.Communities = rapid.SliceOfNDistinct(rapid.SampledFrom([]string{"64512:1", "no-export", "large:1:2:3"}), 0, 2, func(s string) string { return s }).Draw(t, "communities")
		return bgpAd(fmt.Sprintf("bgp%d", i), spec)
	})
}

func sameRoutes(a, b []plan.Route) bool {
	sort := func(rs []plan.Route) []plan.Route {
		return slices.SortedFunc(slices.Values(rs), func(x, y plan.Route) int {
			return cmp.Or(x.Prefix.Addr().Compare(y.Prefix.Addr()), cmp.Compare(x.Prefix.Bits(), y.Prefix.Bits()))
		})
	}
	a, b = sort(a), sort(b)
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.LocalPref != nil && y.LocalPref != nil && *x.LocalPref == *y.LocalPref {
			x.LocalPref, y.LocalPref = nil, nil
		}
		if !reflect.DeepEqual(x, y) {
			return false
		}
	}
	return true
}

func fmtRoutes(rs []plan.Route) string {
	var s string
	for _, r := range rs {
		lp := "-"
		if r.LocalPref != nil {
			lp = fmt.Sprint(*r.LocalPref)
		}
		s += fmt.Sprintf("\n  %s peers=%v lp=%s comm=%v", r.Prefix, r.Peers, lp, r.Communities)
	}
	return s
}
