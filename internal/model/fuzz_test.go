package model

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/internal/iprange"
)

// gen draws the parts of an Input from fuzz bytes, from small vocabularies
// and a small address space, so that overlaps, clashes and references
// between objects are common; it reads zeros once the bytes run out.
type gen struct{ b []byte }

func (g *gen) byte() byte {
	if len(g.b) == 0 {
		return 0
	}
	c := g.b[0]
	g.b = g.b[1:]
	return c
}

func (g *gen) intn(n int) int { return int(g.byte()) % n }

func pick[T any](g *gen, from ...T) T { return from[g.intn(len(from))] }

// addr is an address near 198.51.100.0 or 2001:db8::, where pools collide.
func (g *gen) addr() string {
	if g.intn(2) == 0 {
		return fmt.Sprintf("198.51.100.%d", g.byte())
	}
	return fmt.Sprintf("2001:db8::%x", g.byte())
}

func (g *gen) entry() string {
	switch g.intn(6) {
	case 0:
		return fmt.Sprintf("198.51.100.%d/%d", g.byte()&^7, 24+g.intn(10)) // /32 and /33 among them
	case 1:
		return g.addr() + pick(g, "-", " - ", "--") + g.addr()
	case 2:
		return g.addr()
	case 3:
		return fmt.Sprintf("2001:db8::%x/%d", g.byte()&^15, 120+g.intn(10))
	case 4:
		return pick(g, "", "banana", "fe80::1%eth0", "fe80::/120", "::/0", "0.0.0.0/0", "198.51.100.9-198.51.100.1",
			"198.51.100.1-2001:db8::1", "::ffff:198.51.100.7", "198.51.100.0/24", "2001:db8::/120", "198.51.100.5/24")
	}
	return g.addr() + "-" + g.addr()
}

func (g *gen) selectors() []metav1.LabelSelector {
	var out []metav1.LabelSelector
	for range g.intn(3) {
		var s metav1.LabelSelector
		if g.intn(2) == 0 {
			s.MatchLabels = map[string]string{pick(g, "zone", "tier", "", "bad key!"): pick(g, "a", "b", "", "-x")}
		} else {
			r := metav1.LabelSelectorRequirement{Key: pick(g, "zone", "tier", ""), Operator: metav1.LabelSelectorOperator(pick(g, "In", "NotIn", "Exists", "DoesNotExist", "Sometimes"))}
			for range g.intn(3) {
				r.Values = append(r.Values, pick(g, "a", "b"))
			}
			s.MatchExpressions = []metav1.LabelSelectorRequirement{r}
		}
		out = append(out, s)
	}
	return out
}

func (g *gen) labels() map[string]string {
	if g.intn(2) == 0 {
		return nil
	}
	return map[string]string{pick(g, "zone", "tier"): pick(g, "a", "b")}
}

func (g *gen) meta(name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Labels: g.labels(), CreationTimestamp: metav1.NewTime(time.Unix(int64(1000+g.intn(4)), 0))}
}

// names are up to n distinct names of the vocabulary.
func (g *gen) names(n int) []string {
	var out []string
	for range g.intn(n + 1) {
		if s := pick(g, "a", "b", "c", "d", "e", "f"); !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func optional[T any](g *gen, v T) *T {
	if g.intn(2) == 0 {
		return nil
	}
	return &v
}

// input draws every kind of object, the addresses the cluster uses (with
// zones among them) and maybe a proposed object.
func (g *gen) input() Input {
	var in Input
	for _, name := range g.names(5) {
		p := v1alpha1.IPAddressPool{ObjectMeta: g.meta(name)}
		for range g.intn(4) {
			p.Spec.Addresses = append(p.Spec.Addresses, g.entry())
		}
		p.Spec.AutoAssign = optional(g, g.intn(2) == 0)
		p.Spec.AvoidBuggyIPs = g.intn(2) == 0
		if g.intn(2) == 0 {
			p.Spec.ServiceAllocation = &v1alpha1.ServiceAllocation{Priority: int32(g.intn(3)), Namespaces: g.names(2),
				NamespaceSelectors: g.selectors(), ServiceSelectors: g.selectors()}
		}
		in.Pools = append(in.Pools, p)
	}
	for _, name := range g.names(2) {
		in.BFDProfiles = append(in.BFDProfiles, v1alpha1.BFDProfile{ObjectMeta: g.meta("bfd-" + name)})
	}
	for _, name := range g.names(4) {
		p := v1alpha1.BGPPeer{ObjectMeta: g.meta("peer-" + name)}
		p.Spec.PeerAddress = pick(g, "198.51.100.1", "198.51.100.2", "2001:db8::1", "", "banana", "fe80::1%eth0", " 198.51.100.1")
		p.Spec.PeerPort = pick[int32](g, 0, 179, 1790)
		p.Spec.MyASN, p.Spec.PeerASN = pick[uint32](g, 64500, 64501), pick[uint32](g, 0, 64500, 64501)
		p.Spec.DynamicASN = pick(g, v1alpha1.DynamicASN(""), v1alpha1.DynamicASNInternal, v1alpha1.DynamicASNExternal)
		p.Spec.BFDProfile = pick(g, "", "bfd-a", "bfd-b", "missing")
		p.Spec.NodeSelectors = g.selectors()
		in.BGPPeers = append(in.BGPPeers, p)
	}
	for _, name := range g.names(3) {
		a := v1alpha1.L2Advertisement{ObjectMeta: g.meta("l2-" + name)}
		a.Spec.IPAddressPools, a.Spec.IPAddressPoolSelectors = g.names(3), g.selectors()
		a.Spec.NodeSelectors, a.Spec.ServiceSelectors = g.selectors(), g.selectors()
		in.L2Advertisements = append(in.L2Advertisements, a)
	}
	for _, name := range g.names(3) {
		a := v1alpha1.BGPAdvertisement{ObjectMeta: g.meta("bgp-" + name)}
		a.Spec.IPAddressPools, a.Spec.IPAddressPoolSelectors = g.names(3), g.selectors()
		a.Spec.NodeSelectors, a.Spec.ServiceSelectors = g.selectors(), g.selectors()
		a.Spec.AggregationLength = optional(g, int32(g.intn(40))-2)
		a.Spec.AggregationLengthV6 = optional(g, int32(g.intn(140))-2)
		a.Spec.LocalPref = optional(g, uint32(g.byte()))
		for _, p := range g.names(2) {
			a.Spec.Peers = append(a.Spec.Peers, "peer-"+p)
		}
		in.BGPAdvertisements = append(in.BGPAdvertisements, a)
	}
	for range g.intn(3) {
		a := netip.MustParseAddr(g.addr())
		if g.intn(2) == 0 && a.Is6() {
			a = a.WithZone("eth0")
		}
		in.Reserved = append(in.Reserved, Reserved{Range: iprange.Range{First: a, Last: a}, What: "node n's InternalIP"})
	}
	if g.intn(4) == 0 {
		in.Reserved = append(in.Reserved, Reserved{Range: iprange.Range{First: netip.MustParseAddr("fe80::1%eth0"), Last: netip.MustParseAddr("fe80::1%eth0")}, What: "node n's InternalIP"})
	}
	if g.intn(2) == 0 {
		in.Proposed = Ref{pick(g, KindIPAddressPool, KindBGPPeer), pick(g, "a", "b", "peer-a")}
	}
	return in
}

// refs lists every object of in.
func refs(in Input) []Ref {
	var out []Ref
	for _, p := range in.Pools {
		out = append(out, Ref{KindIPAddressPool, p.Name})
	}
	for _, p := range in.L2Advertisements {
		out = append(out, Ref{KindL2Advertisement, p.Name})
	}
	for _, p := range in.BGPPeers {
		out = append(out, Ref{KindBGPPeer, p.Name})
	}
	for _, p := range in.BGPAdvertisements {
		out = append(out, Ref{KindBGPAdvertisement, p.Name})
	}
	for _, p := range in.BFDProfiles {
		out = append(out, Ref{KindBFDProfile, p.Name})
	}
	return out
}

// checkConfig holds for any Input: every object has a verdict, a refusal
// names the field, what is in force is valid, never gives a Service an
// address the cluster uses, and refers only to what is in force.
func checkConfig(t *testing.T, in Input, c *Config) {
	t.Helper()
	for _, r := range refs(in) {
		v, ok := c.Verdicts[r]
		switch {
		case !ok:
			t.Fatalf("%s has no verdict", r)
		case v.Accepted != (v.Reason == ReasonAccepted):
			t.Fatalf("%s: accepted %v with reason %q", r, v.Accepted, v.Reason)
		case !v.Accepted && !strings.HasPrefix(v.Message, "spec."):
			t.Fatalf("%s refused (%s) with a message that names no field: %q", r, v.Reason, v.Message)
		}
	}
	var reserved []iprange.Range
	for _, x := range in.Reserved {
		reserved = append(reserved, iprange.Range{First: x.First.WithZone(""), Last: x.Last.WithZone("")})
	}
	var accepted []*Pool
	for name, p := range c.Pools {
		if p.Name != name {
			t.Fatalf("pool %q in force under the name %q", p.Name, name)
		}
		v := c.Verdicts[Ref{KindIPAddressPool, name}]
		if v.Accepted {
			accepted = append(accepted, p)
		} else if in.LastAccepted[name] == nil && len(p.ClusterAddresses) == 0 {
			t.Fatalf("pool %s is refused (%s) yet in force, neither as last accepted nor without cluster addresses", name, v.Message)
		}
		assignable := p.Assignable()
		if len(p.Ranges) == 0 || len(assignable) == 0 {
			t.Fatalf("pool %s in force with nothing to assign: %v", name, p.Ranges)
		}
		for _, r := range p.Ranges {
			if err := r.Validate(); err != nil {
				t.Fatalf("pool %s in force with %v: %v", name, r, err)
			}
			if got, ok := c.PoolOf(r.First); !ok || !slices.ContainsFunc(got.Ranges, func(x iprange.Range) bool { return x.Contains(r.First) }) || c.Pools[got.Name] != got {
				t.Fatalf("PoolOf(%s) of pool %s = %v, %v: not a pool in force holding it", r.First, name, got, ok)
			}
		}
		for _, r := range assignable {
			if err := r.Validate(); err != nil {
				t.Fatalf("pool %s assigns %v: %v", name, r, err)
			}
			if !slices.ContainsFunc(p.Ranges, func(x iprange.Range) bool { return x.Contains(r.First) && x.Contains(r.Last) }) {
				t.Fatalf("pool %s assigns %v, outside its ranges %v", name, r, p.Ranges)
			}
			for _, x := range reserved {
				if r.Overlaps(x) {
					t.Fatalf("pool %s assigns %v, which holds %v the cluster uses", name, r, x)
				}
			}
		}
	}
	for i, a := range accepted {
		for _, b := range accepted[i+1:] {
			for _, ra := range a.Ranges {
				for _, rb := range b.Ranges {
					if ra.Overlaps(rb) {
						t.Fatalf("accepted pools %s (%v) and %s (%v) overlap", a.Name, ra, b.Name, rb)
					}
				}
			}
		}
	}
	for _, ads := range [][]*Advertisement{c.L2Advertisements, c.BGPAdvertisements} {
		for _, a := range ads {
			if !slices.IsSorted(a.Pools) {
				t.Fatalf("advertisement %s: pools %v not sorted", a.Name, a.Pools)
			}
			for _, p := range a.Pools {
				if c.Pools[p] == nil {
					t.Fatalf("advertisement %s selects pool %s, which is not in force", a.Name, p)
				}
			}
		}
	}
	for name, p := range c.BGPPeers {
		if !c.Verdicts[Ref{KindBGPPeer, name}].Accepted {
			t.Fatalf("peer %s in force but refused", name)
		}
		if _, err := netip.ParseAddr(p.Spec.PeerAddress); err != nil {
			t.Fatalf("peer %s in force with address %q", name, p.Spec.PeerAddress)
		}
	}
}

// buildTwice builds in, then next with what the first build accepted as
// last accepted, as the controller and the speaker do from one change to
// the next, and checks both.
func buildTwice(t *testing.T, in, next Input) (*Config, Input) {
	first := Build(in)
	checkConfig(t, in, first)
	next.LastAccepted = first.Pools
	second := Build(next)
	checkConfig(t, next, second)
	return second, next
}

var buildSeeds = [][]byte{
	{},
	{1, 2, 0, 1, 10, 3, 1, 4, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12},
	[]byte("\x05\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a"),
	[]byte("pools overlap, then the older one grows into the younger one's addresses"),
	[]byte("\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5\xf4\xf3\xf2\xf1\xf0\xef\xee\xed\xec\xeb\xea\xe9\xe8\xe7\xe6\xe5\xe4"),
}

// Build never panics, whatever objects it is given and whatever it accepted
// before, and what it puts in force always holds checkConfig.
func FuzzBuild(f *testing.F) {
	for _, s := range buildSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		g := &gen{b}
		buildTwice(t, g.input(), g.input())
	})
}

// judgedFirst orders pool names as Build judges them: oldest first, then by
// name, the proposed pool last.
func judgedFirst(in Input) []string {
	ps := slices.Clone(in.Pools)
	slices.SortStableFunc(ps, func(a, b v1alpha1.IPAddressPool) int {
		pa, pb := in.Proposed == Ref{KindIPAddressPool, a.Name}, in.Proposed == Ref{KindIPAddressPool, b.Name}
		if pa != pb {
			if pa {
				return 1
			}
			return -1
		}
		return cmp.Or(a.CreationTimestamp.Compare(b.CreationTimestamp.Time), cmp.Compare(a.Name, b.Name))
	})
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

// PoolOf answers as a scan of the pools in force in the order Build judged
// them does: the first that holds the address. With the ranges of a last
// accepted version clashing with a pool judged before it, an index built in
// any other order (it was by name) gave the addresses to the other pool.
func FuzzIndex(f *testing.F) {
	for _, s := range buildSeeds {
		f.Add(s, []byte{198, 51, 100, 7})
	}
	f.Fuzz(func(t *testing.T, b, probe []byte) {
		g := &gen{b}
		c, in := buildTwice(t, g.input(), g.input())
		probes := []netip.Addr{netip.MustParseAddr("198.51.100.0"), netip.MustParseAddr("2001:db8::")}
		if a, ok := netip.AddrFromSlice(probe); ok {
			probes = append(probes, a)
		}
		for _, p := range c.Pools {
			for _, r := range p.Ranges {
				probes = append(probes, r.First, r.Last, r.First.Prev(), r.Last.Next())
			}
		}
		order := judgedFirst(in)
		for _, ip := range probes {
			var want *Pool
			for _, name := range order {
				if p := c.Pools[name]; want == nil && p != nil && slices.ContainsFunc(p.Ranges, func(r iprange.Range) bool { return r.Contains(ip) }) {
					want = p
				}
			}
			if got, ok := c.PoolOf(ip); got != want || ok != (want != nil) {
				t.Fatalf("PoolOf(%s) = %v, %v; the pools in force in the order judged (%v) give %v", ip, got, ok, order, want)
			}
		}
	})
}

// Arbitrary strings in the fields Build reads never crash it, and a
// refused address is named with its field and its value.
func FuzzBuildFields(f *testing.F) {
	f.Add("198.51.100.0/28", "198.51.100.16-198.51.100.20", "web", "zone", "a", "In", "198.51.100.1", "a", int32(28), int32(124), uint32(100))
	f.Add("banana", "fe80::1%eth0", "", "", "", "Sometimes", "fe80::1%eth0", "missing", int32(-1), int32(129), uint32(0))
	f.Add("2001:db8::/120", "2001:db8::7", "kube-system", "bad key!", "-x", "Exists", "::ffff:198.51.100.1", "", int32(33), int32(0), uint32(1))
	f.Add("198.51.100.9-198.51.100.1", "198.51.100.5/24", "", "tier", "", "NotIn", "", "a", int32(32), int32(128), uint32(0))
	f.Fuzz(func(t *testing.T, addr1, addr2, ns, key, value, op, peerAddr, poolRef string, agg, agg6 int32, localPref uint32) {
		sel := []metav1.LabelSelector{{MatchLabels: map[string]string{key: value}},
			{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: metav1.LabelSelectorOperator(op), Values: []string{value}}}}}
		in := Input{
			Pools: []v1alpha1.IPAddressPool{
				{ObjectMeta: metav1.ObjectMeta{Name: "a", Labels: map[string]string{key: value}}, Spec: v1alpha1.IPAddressPoolSpec{Addresses: []string{addr1, addr2},
					ServiceAllocation: &v1alpha1.ServiceAllocation{Namespaces: []string{ns}, NamespaceSelectors: sel, ServiceSelectors: sel}}},
				{ObjectMeta: metav1.ObjectMeta{Name: "b", CreationTimestamp: metav1.NewTime(time.Unix(1, 0))}, Spec: v1alpha1.IPAddressPoolSpec{Addresses: []string{addr2}}},
			},
			BFDProfiles:      []v1alpha1.BFDProfile{{ObjectMeta: metav1.ObjectMeta{Name: value}}},
			BGPPeers:         []v1alpha1.BGPPeer{{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: v1alpha1.BGPPeerSpec{PeerAddress: peerAddr, MyASN: 64500, PeerASN: localPref, BFDProfile: key, NodeSelectors: sel}}},
			L2Advertisements: []v1alpha1.L2Advertisement{{ObjectMeta: metav1.ObjectMeta{Name: "l"}, Spec: v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{poolRef}, IPAddressPoolSelectors: sel, Interfaces: []string{value}, NodeSelectors: sel}}},
			BGPAdvertisements: []v1alpha1.BGPAdvertisement{{ObjectMeta: metav1.ObjectMeta{Name: "g"}, Spec: v1alpha1.BGPAdvertisementSpec{IPAddressPools: []string{poolRef},
				AggregationLength: &agg, AggregationLengthV6: &agg6, LocalPref: &localPref, Peers: []string{"p", poolRef}, ServiceSelectors: sel}}},
		}
		if ip, err := netip.ParseAddr(peerAddr); err == nil {
			in.Reserved = []Reserved{{Range: iprange.Range{First: ip, Last: ip}, What: "node n's InternalIP"}}
		}
		// The second time, the pools swap their addresses.
		next := in
		next.Pools = slices.Clone(in.Pools)
		next.Pools[0].Spec.Addresses, next.Pools[1].Spec.Addresses = []string{addr2}, []string{addr1, addr2}
		c, _ := buildTwice(t, in, next)
		for i, a := range next.Pools[1].Spec.Addresses {
			if _, err := iprange.Parse(a); err != nil {
				v := c.Verdicts[Ref{KindIPAddressPool, "b"}]
				field := fmt.Sprintf("spec.addresses[%d]: ", i)
				if v.Accepted || !strings.HasPrefix(v.Message, field) || !strings.Contains(v.Message, strings.TrimSpace(a)) && !strings.Contains(v.Message, fmt.Sprintf("%q", strings.TrimSpace(a))) {
					t.Fatalf("pool b with %q: %+v; want refused naming %s and the value", a, v, field)
				}
				break
			}
		}
	})
}
