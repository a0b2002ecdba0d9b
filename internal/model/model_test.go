package model

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/internal/iprange"
)

func pool(name string, age int, addrs ...string) v1alpha1.IPAddressPool {
	return v1alpha1.IPAddressPool{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(time.Unix(int64(1000+age), 0))},
		Spec:       v1alpha1.IPAddressPoolSpec{Addresses: addrs},
	}
}

func TestPoolVerdicts(t *testing.T) {
	for _, tc := range []struct {
		name     string
		pools    []v1alpha1.IPAddressPool
		proposed string
		// want maps pool name to "" (accepted) or a substring of the refusal
		want map[string]string
	}{
		{"disjoint pools are accepted",
			[]v1alpha1.IPAddressPool{pool("a", 0, "198.51.100.0/28"), pool("b", 1, "198.51.100.16-198.51.100.20", "2001:db8::/64")},
			"", map[string]string{"a": "", "b": ""}},
		{"the younger of two overlapping pools is refused, naming both fields",
			[]v1alpha1.IPAddressPool{pool("young", 5, "198.51.100.10"), pool("old", 1, "198.51.100.0/28")},
			"", map[string]string{"old": "", "young": "spec.addresses[0]: 198.51.100.10 overlaps pool old's spec.addresses[0] (198.51.100.0/28)"}},
		{"a proposed change never displaces a pool in force",
			[]v1alpha1.IPAddressPool{pool("old", 1, "198.51.100.0/28"), pool("young", 5, "198.51.100.32/28")},
			"old", map[string]string{"young": "", "old": "overlaps pool young's"}},
		{"a pool overlapping itself is refused",
			[]v1alpha1.IPAddressPool{pool("a", 0, "2001:db8::/120", "2001:db8::10-2001:db8::20")},
			"", map[string]string{"a": "spec.addresses[1]: 2001:db8::10-2001:db8::20 overlaps its own spec.addresses[0]"}},
		{"a reversed range names the field",
			[]v1alpha1.IPAddressPool{pool("a", 0, "198.51.100.9-198.51.100.1")},
			"", map[string]string{"a": "spec.addresses[0]: "}},
		{"garbage names the field",
			[]v1alpha1.IPAddressPool{pool("a", 0, "198.51.100.0/24", "banana")},
			"", map[string]string{"a": "spec.addresses[1]: "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := Input{Pools: tc.pools}
			if tc.proposed != "" {
				in.Proposed = Ref{KindIPAddressPool, tc.proposed}
				// The proposed change: "old" grows into "young"'s range.
				for i := range in.Pools {
					if in.Pools[i].Name == tc.proposed {
						in.Pools[i].Spec.Addresses = []string{"198.51.100.0/26"}
					}
				}
			}
			c := Build(in)
			for name, want := range tc.want {
				v := c.Verdicts[Ref{KindIPAddressPool, name}]
				_, inConfig := c.Pools[name]
				if want == "" {
					if !v.Accepted || !inConfig {
						t.Errorf("pool %s: %+v, want accepted and in the config", name, v)
					}
					continue
				}
				if v.Accepted || inConfig || !strings.Contains(v.Message, want) {
					t.Errorf("pool %s: %+v (in config %v), want refused with %q", name, v, inConfig, want)
				}
			}
		})
	}
}

func TestPoolAllowsHonoursNamespacesAndSelectors(t *testing.T) {
	p := pool("a", 0, "198.51.100.0/28")
	p.Spec.ServiceAllocation = &v1alpha1.ServiceAllocation{
		Namespaces:         []string{"team-a", "team-b"},
		NamespaceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"env": "prod"}}},
		ServiceSelectors:   []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"web", "api"}}}}},
	}
	c := Build(Input{Pools: []v1alpha1.IPAddressPool{p}})
	got := c.Pools["a"]
	if got == nil || *got.Priority != 0 {
		t.Fatalf("pool not accepted with a priority: %+v", c.Verdicts)
	}
	prod, web := map[string]string{"env": "prod"}, map[string]string{"tier": "web"}
	for _, tc := range []struct {
		ns            string
		nsLabels, svc map[string]string
		want          bool
	}{
		{"team-a", prod, web, true},
		{"team-c", prod, web, false},
		{"team-b", map[string]string{"env": "dev"}, web, false},
		{"team-b", prod, map[string]string{"tier": "db"}, false},
	} {
		if got.Allows(tc.ns, tc.nsLabels, tc.svc) != tc.want {
			t.Errorf("Allows(%s, %v, %v) = %v", tc.ns, tc.nsLabels, tc.svc, !tc.want)
		}
	}
	bad := pool("b", 0, "198.51.100.32/28")
	bad.Spec.ServiceAllocation = &v1alpha1.ServiceAllocation{ServiceSelectors: []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "x", Operator: "Sometimes"}}}}}
	if v := Build(Input{Pools: []v1alpha1.IPAddressPool{bad}}).Verdicts[Ref{KindIPAddressPool, "b"}]; v.Accepted || !strings.Contains(v.Message, "spec.serviceAllocation.serviceSelectors[0]") {
		t.Errorf("invalid selector: %+v", v)
	}
}

func TestAdvertisementsResolvePoolsAndWarnAboutUnknownOnes(t *testing.T) {
	a, b := pool("a", 0, "198.51.100.0/28"), pool("b", 1, "198.51.100.16/28")
	b.Labels = map[string]string{"lan": "yes"}
	in := Input{
		Pools: []v1alpha1.IPAddressPool{a, b},
		L2Advertisements: []v1alpha1.L2Advertisement{
			{ObjectMeta: metav1.ObjectMeta{Name: "all"}},
			{ObjectMeta: metav1.ObjectMeta{Name: "named"}, Spec: v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{"a", "ghost"}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "selected"}, Spec: v1alpha1.L2AdvertisementSpec{IPAddressPoolSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"lan": "yes"}}}}},
		},
	}
	c := Build(in)
	got := map[string]string{}
	for _, adv := range c.L2Advertisements {
		got[adv.Name] = strings.Join(adv.Pools, ",")
	}
	want := map[string]string{"all": "a,b", "named": "a", "selected": "b"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("advertisement %s covers %q, want %q", k, got[k], v)
		}
	}
	v := c.Verdicts[Ref{KindL2Advertisement, "named"}]
	if !v.Accepted || len(v.Warnings) != 1 || !strings.Contains(v.Warnings[0], `"ghost"`) {
		t.Errorf("unknown pool: want accepted with a warning naming it, got %+v", v)
	}
}

func TestDuplicatePeersAndUnknownBFDProfilesAreRefused(t *testing.T) {
	peer := func(name string, age int, addr, bfd string) v1alpha1.BGPPeer {
		return v1alpha1.BGPPeer{
			ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(time.Unix(int64(age), 0))},
			Spec:       v1alpha1.BGPPeerSpec{MyASN: 64512, PeerASN: 64513, PeerAddress: addr, BFDProfile: bfd},
		}
	}
	c := Build(Input{
		BFDProfiles: []v1alpha1.BFDProfile{{ObjectMeta: metav1.ObjectMeta{Name: "fast"}}},
		BGPPeers: []v1alpha1.BGPPeer{
			peer("r1", 1, "198.51.100.1", "fast"),
			peer("r1-again", 2, "198.51.100.1", ""),
			peer("r2", 3, "2001:db8:1::1", "slow"),
			peer("r3", 4, "198.51.100.3", ""),
		},
	})
	for name, want := range map[string]string{"r1": "", "r1-again": "already peers with 198.51.100.1", "r2": `BFDProfile "slow" does not exist`, "r3": ""} {
		v := c.Verdicts[Ref{KindBGPPeer, name}]
		if (want == "") != v.Accepted || !strings.Contains(v.Message, want) {
			t.Errorf("peer %s: %+v, want %q", name, v, want)
		}
	}
}

// Two peers of one router on different nodes (a per-node ASN) are accepted,
// with a warning; on the same nodes they are refused.
func TestPeersOfOneRouterOnDifferentNodesAreAccepted(t *testing.T) {
	on := func(name string, age int, asn uint32, sel ...metav1.LabelSelector) v1alpha1.BGPPeer {
		return v1alpha1.BGPPeer{
			ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(time.Unix(int64(age), 0))},
			Spec:       v1alpha1.BGPPeerSpec{MyASN: asn, PeerASN: 64512, PeerAddress: "198.51.100.1", NodeSelectors: sel},
		}
	}
	rack := func(r string) metav1.LabelSelector {
		return metav1.LabelSelector{MatchLabels: map[string]string{"rack": r}}
	}
	c := Build(Input{BGPPeers: []v1alpha1.BGPPeer{
		on("rack1", 1, 64601, rack("1")),
		on("rack2", 2, 64602, rack("2")),
		on("rack2-again", 3, 64603, rack("2")),
		on("everyone", 4, 64604),
	}})
	for name, want := range map[string]string{"rack1": "", "rack2": "", "rack2-again": "already peers with 198.51.100.1 port 179 from the same nodes", "everyone": "BGPPeer rack1 already peers"} {
		v := c.Verdicts[Ref{KindBGPPeer, name}]
		if (want == "") != v.Accepted || !strings.Contains(v.Message, want) {
			t.Errorf("peer %s: %+v, want %q", name, v, want)
		}
	}
	if w := c.Verdicts[Ref{KindBGPPeer, "rack2"}].Warnings; len(w) != 1 || !strings.Contains(w[0], "BGPPeer rack1 also peers with 198.51.100.1") {
		t.Errorf("rack2's warnings %q: want one naming rack1", w)
	}
}

func TestARefusedPoolChangeKeepsTheLastAcceptedVersionInForce(t *testing.T) {
	a, b := pool("a", 0, "198.51.100.0/28"), pool("b", 1, "198.51.100.16/28")
	first := Build(Input{Pools: []v1alpha1.IPAddressPool{a, b}})
	// b grows into a's range: refused, but its last accepted version stays.
	b.Spec.Addresses = []string{"198.51.100.0/27"}
	second := Build(Input{Pools: []v1alpha1.IPAddressPool{a, b}, LastAccepted: first.Pools})
	if v := second.Verdicts[Ref{KindIPAddressPool, "b"}]; v.Accepted {
		t.Fatalf("overlapping change accepted: %+v", v)
	}
	if got := second.Pools["b"]; got == nil || got.Ranges[0].String() != "198.51.100.16/28" {
		t.Fatalf("pool b in force: %+v, want its last accepted 198.51.100.16/28", got)
	}
	// A third pool must not take b's last accepted addresses either.
	c := pool("c", 2, "198.51.100.20")
	third := Build(Input{Pools: []v1alpha1.IPAddressPool{a, b, c}, LastAccepted: second.Pools})
	if v := third.Verdicts[Ref{KindIPAddressPool, "c"}]; v.Accepted {
		t.Errorf("pool c took an address of b's version in force: %+v", v)
	}
	// A pool deleted is gone, whatever was accepted before.
	if fourth := Build(Input{Pools: []v1alpha1.IPAddressPool{a}, LastAccepted: third.Pools}); fourth.Pools["b"] != nil {
		t.Errorf("a deleted pool stayed in force")
	}
}

func TestPoolOfFindsThePoolInForceHoldingAnAddress(t *testing.T) {
	c := Build(Input{Pools: []v1alpha1.IPAddressPool{
		pool("a", 0, "198.51.100.0/28", "2001:db8::/120"),
		pool("b", 1, "198.51.100.16-198.51.100.20"),
		pool("refused", 2, "198.51.100.8/29"),
	}})
	for addr, want := range map[string]string{
		"198.51.100.0": "a", "198.51.100.15": "a", "198.51.100.16": "b", "198.51.100.20": "b",
		"198.51.100.21": "", "2001:db8::ff": "a", "2001:db8::100": "", "::ffff:198.51.100.1": "",
	} {
		p, ok := c.PoolOf(netip.MustParseAddr(addr))
		if ok != (want != "") || (ok && p.Name != want) {
			t.Errorf("PoolOf(%s) = %v %v, want %q", addr, p, ok, want)
		}
	}
}

func TestPoolOverlappingClusterAddressesIsRefusedNamingThem(t *testing.T) {
	in := Input{
		Pools: []v1alpha1.IPAddressPool{pool("clusterips", 0, "198.51.100.0/24"), pool("nodes", 1, "203.0.113.0/28"), pool("fine", 2, "203.0.113.64/26"),
			pool("inside", 3, "2001:db8:96::100/120")},
		Reserved: []Reserved{
			{Range: iprange.FromPrefix(netip.MustParsePrefix("198.51.100.128/25")), What: "ServiceCIDR kubernetes"},
			{Range: iprange.FromPrefix(netip.MustParsePrefix("203.0.113.5/32")), What: "node worker-1 (InternalIP)"},
			{Range: iprange.FromPrefix(netip.MustParsePrefix("2001:db8:96::/112")), What: "ServiceCIDR kubernetes"},
		},
	}
	c := Build(in)
	for name, want := range map[string]string{
		"clusterips": "spec.addresses[0]: 198.51.100.0/24 overlaps ServiceCIDR kubernetes (198.51.100.128/25)",
		"nodes":      "spec.addresses[0]: 203.0.113.0/28 overlaps node worker-1 (InternalIP) (203.0.113.5)",
		"inside":     "spec.addresses[0]: 2001:db8:96::100/120 overlaps ServiceCIDR kubernetes (2001:db8:96::/112)",
	} {
		v := c.Verdicts[Ref{KindIPAddressPool, name}]
		if v.Accepted || v.Reason != ReasonClusterAddresses || !strings.Contains(v.Message, want) {
			t.Errorf("pool %s: %+v, want refused (%s) with %q", name, v, ReasonClusterAddresses, want)
		}
	}
	if v := c.Verdicts[Ref{KindIPAddressPool, "fine"}]; !v.Accepted {
		t.Errorf("pool fine: %+v, want accepted", v)
	}
	// In force without what the cluster uses: the Services holding their
	// other addresses keep them; none is given a ClusterIP or a node's
	// address. A pool the cluster uses whole is not in force.
	for name, want := range map[string]string{
		"clusterips": "198.51.100.0/25",
		"nodes":      "203.0.113.0-203.0.113.4 203.0.113.6-203.0.113.15",
		"fine":       "203.0.113.64/26",
		"inside":     "",
	} {
		p, ok := c.Pools[name]
		if ok != (want != "") {
			t.Errorf("pool %s in force: %v, want %v", name, ok, want != "")
			continue
		}
		if got := rangesString(p); ok && got != want {
			t.Errorf("pool %s assigns %s, want %s", name, got, want)
		}
	}
	if p, ok := c.PoolOf(netip.MustParseAddr("203.0.113.5")); !ok || p.Name != "nodes" {
		t.Errorf("PoolOf(203.0.113.5) = %v, %v; want pool nodes, whose Service holding it is moved off it", p, ok)
	}
}

func TestALastAcceptedPoolNeverAssignsAddressesTheClusterCameToUse(t *testing.T) {
	a, b := pool("a", 0, "198.51.100.0/28"), pool("b", 1, "198.51.100.16/28")
	first := Build(Input{Pools: []v1alpha1.IPAddressPool{a, b}})
	// b grows into a's range, and a node joins with one of b's addresses.
	b.Spec.Addresses = []string{"198.51.100.0/27"}
	node := Reserved{Range: iprange.FromPrefix(netip.MustParsePrefix("198.51.100.17/32")), What: "node worker-2 (InternalIP)"}
	second := Build(Input{Pools: []v1alpha1.IPAddressPool{a, b}, LastAccepted: first.Pools, Reserved: []Reserved{node}})
	if v := second.Verdicts[Ref{KindIPAddressPool, "b"}]; v.Accepted || v.Reason != ReasonOverlap {
		t.Fatalf("pool b: %+v, want refused for its overlap with a", v)
	}
	p := second.Pools["b"]
	if got, want := rangesString(p), "198.51.100.16 198.51.100.18-198.51.100.31"; got != want {
		t.Errorf("pool b assigns %s, want its last accepted version without the node's address: %s", got, want)
	}
	if got := rangesString(first.Pools["b"]); got != "198.51.100.16/28" {
		t.Errorf("the last accepted version given to Build changed: %s", got)
	}
}

// rangesString lists what the pool may assign.
func rangesString(p *Pool) string {
	if p == nil {
		return "<nil>"
	}
	var s []string
	for _, r := range p.Assignable() {
		s = append(s, r.String())
	}
	return strings.Join(s, " ")
}

func bgpPeer(name, addr string, myASN, peerASN uint32, dynamic v1alpha1.DynamicASN) v1alpha1.BGPPeer {
	return v1alpha1.BGPPeer{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       v1alpha1.BGPPeerSpec{MyASN: myASN, PeerASN: peerASN, DynamicASN: dynamic, PeerAddress: addr},
	}
}

func i32(v int32) *int32   { return &v }
func u32(v uint32) *uint32 { return &v }

func TestBGPAdvertisementAggregationLengthAndLocalPref(t *testing.T) {
	lan, tiny, odd, v6 := pool("lan", 0, "198.51.100.64/27"), pool("tiny", 1, "198.51.100.128/30"),
		pool("odd", 2, "198.51.100.10-198.51.100.20"), pool("v6", 3, "2001:db8::/120")
	tiny.Labels = map[string]string{"tier": "edge"}
	peers := []v1alpha1.BGPPeer{
		bgpPeer("ext", "192.0.2.1", 64512, 64513, ""),
		bgpPeer("ext-dynamic", "192.0.2.2", 64512, 0, v1alpha1.DynamicASNExternal),
		bgpPeer("int", "192.0.2.3", 64512, 64512, ""),
		bgpPeer("int-dynamic", "192.0.2.4", 64512, 0, v1alpha1.DynamicASNInternal),
	}
	ibgpOnly := []v1alpha1.BGPPeer{peers[2], peers[3]}
	for _, tc := range []struct {
		name  string
		pools []v1alpha1.IPAddressPool
		peers []v1alpha1.BGPPeer
		spec  v1alpha1.BGPAdvertisementSpec
		// refused: reason and a substring of the message; "" for accepted
		reason, refused string
		warnings        []string // substrings, each in one warning
	}{
		{name: "an aggregate wider than a named pool's CIDR is refused, naming the field, the pool and the CIDR",
			pools:   []v1alpha1.IPAddressPool{lan},
			spec:    v1alpha1.BGPAdvertisementSpec{IPAddressPools: []string{"lan"}, AggregationLength: i32(24)},
			reason:  ReasonInvalidAggregationLength,
			refused: `spec.aggregationLength 24 is shorter than pool "lan"'s 198.51.100.64/27: the aggregate would announce addresses outside the pool; use at least 27`},
		{name: "an aggregate as long as the pool's CIDR is accepted",
			pools: []v1alpha1.IPAddressPool{lan},
			spec:  v1alpha1.BGPAdvertisementSpec{IPAddressPools: []string{"lan"}, AggregationLength: i32(27)}},
		{name: "a range is split into CIDRs and its most specific one sets the bound",
			pools:  []v1alpha1.IPAddressPool{odd},
			spec:   v1alpha1.BGPAdvertisementSpec{IPAddressPools: []string{"odd"}, AggregationLength: i32(31)},
			reason: ReasonInvalidAggregationLength, refused: `pool "odd"'s 198.51.100.20/32: the aggregate would announce addresses outside the pool; use at least 32`},
		{name: "with several pools the message asks for a length enough for all of them",
			pools:  []v1alpha1.IPAddressPool{lan, tiny},
			spec:   v1alpha1.BGPAdvertisementSpec{AggregationLength: i32(28)},
			reason: ReasonInvalidAggregationLength, refused: `spec.aggregationLength 28 is shorter than pool "tiny"'s 198.51.100.128/30: the aggregate would announce addresses outside the pool; use at least 30`},
		{name: "a pool chosen by a selector counts",
			pools:  []v1alpha1.IPAddressPool{lan, tiny},
			spec:   v1alpha1.BGPAdvertisementSpec{IPAddressPoolSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"tier": "edge"}}}, AggregationLength: i32(29)},
			reason: ReasonInvalidAggregationLength, refused: `pool "tiny"'s 198.51.100.128/30`},
		{name: "a pool the advertisement does not select does not count",
			pools: []v1alpha1.IPAddressPool{lan, tiny},
			spec:  v1alpha1.BGPAdvertisementSpec{IPAddressPools: []string{"lan"}, AggregationLength: i32(28)}},
		{name: "IPv6 ranges are held to aggregationLengthV6, not aggregationLength",
			pools:  []v1alpha1.IPAddressPool{v6},
			spec:   v1alpha1.BGPAdvertisementSpec{AggregationLength: i32(8), AggregationLengthV6: i32(64)},
			reason: ReasonInvalidAggregationLength, refused: `spec.aggregationLengthV6 64 is shorter than pool "v6"'s 2001:db8::/120`},
		{name: "without aggregation lengths every address is its own route",
			pools: []v1alpha1.IPAddressPool{odd, v6},
			spec:  v1alpha1.BGPAdvertisementSpec{}},
		{name: "localPref naming an eBGP peer is refused, naming the field and the peer",
			peers:  peers,
			spec:   v1alpha1.BGPAdvertisementSpec{Peers: []string{"int", "ext"}, LocalPref: u32(200)},
			reason: ReasonInvalidLocalPref, refused: `spec.localPref: spec.peers names BGPPeer "ext", an eBGP peer (AS 64512 to AS 64513)`},
		{name: "localPref naming a dynamicASN external peer is refused",
			peers:  peers,
			spec:   v1alpha1.BGPAdvertisementSpec{Peers: []string{"ext-dynamic"}, LocalPref: u32(200)},
			reason: ReasonInvalidLocalPref, refused: `BGPPeer "ext-dynamic", an eBGP peer (AS 64512 to any other AS, dynamicASN external)`},
		{name: "localPref naming only iBGP peers is accepted",
			peers: peers,
			spec:  v1alpha1.BGPAdvertisementSpec{Peers: []string{"int", "int-dynamic"}, LocalPref: u32(200)}},
		{name: "localPref for every peer, some eBGP, is accepted with a warning naming them",
			peers:    peers,
			spec:     v1alpha1.BGPAdvertisementSpec{LocalPref: u32(200)},
			warnings: []string{`spec.localPref: eBGP peers do not get LOCAL_PREF`, `BGPPeer "ext", "ext-dynamic"`}},
		{name: "localPref for every peer, all iBGP, is accepted without warnings",
			peers: ibgpOnly,
			spec:  v1alpha1.BGPAdvertisementSpec{LocalPref: u32(200)}},
		{name: "an eBGP peer without localPref is accepted",
			peers: peers,
			spec:  v1alpha1.BGPAdvertisementSpec{Peers: []string{"ext"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Build(Input{Pools: tc.pools, BGPPeers: tc.peers,
				BGPAdvertisements: []v1alpha1.BGPAdvertisement{{ObjectMeta: metav1.ObjectMeta{Name: "adv"}, Spec: tc.spec}}})
			v := c.Verdicts[Ref{KindBGPAdvertisement, "adv"}]
			inForce := len(c.BGPAdvertisements) == 1
			if tc.refused == "" {
				if !v.Accepted || !inForce {
					t.Fatalf("%+v (in force %v), want accepted", v, inForce)
				}
			} else if v.Accepted || inForce || v.Reason != tc.reason || !strings.Contains(v.Message, tc.refused) {
				t.Fatalf("%+v (in force %v), want refused (%s) with %q", v, inForce, tc.reason, tc.refused)
			}
			joined := strings.Join(v.Warnings, "\n")
			if len(tc.warnings) == 0 && len(v.Warnings) > 0 {
				t.Errorf("unexpected warnings %q", v.Warnings)
			}
			for _, w := range tc.warnings {
				if !strings.Contains(joined, w) {
					t.Errorf("warnings %q lack %q", v.Warnings, w)
				}
			}
		})
	}
}

// A pool or peer change that is fine on its own but takes a BGPAdvertisement
// out of force is accepted, and the one applying it is told.
func TestAChangeThatRefusesAnAdvertisementWarnsWhoMakesIt(t *testing.T) {
	adv := v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "to-core"},
		Spec: v1alpha1.BGPAdvertisementSpec{AggregationLength: i32(27), Peers: []string{"core"}, LocalPref: u32(200)}}
	for _, tc := range []struct {
		name     string
		proposed Ref
		pools    []v1alpha1.IPAddressPool
		peer     v1alpha1.BGPPeer
		want     string
	}{
		{"a pool narrowed below the aggregation length", Ref{KindIPAddressPool, "lan"},
			[]v1alpha1.IPAddressPool{pool("lan", 0, "198.51.100.64/28")}, bgpPeer("core", "192.0.2.1", 64512, 64512, ""),
			`BGPAdvertisement to-core is refused with this IPAddressPool: spec.aggregationLength 27 is shorter than pool "lan"'s 198.51.100.64/28`},
		{"an iBGP peer turned eBGP", Ref{KindBGPPeer, "core"},
			[]v1alpha1.IPAddressPool{pool("lan", 0, "198.51.100.64/27")}, bgpPeer("core", "192.0.2.1", 64512, 64513, ""),
			`BGPAdvertisement to-core is refused with this BGPPeer: spec.localPref: spec.peers names BGPPeer "core"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Build(Input{Pools: tc.pools, BGPPeers: []v1alpha1.BGPPeer{tc.peer}, BGPAdvertisements: []v1alpha1.BGPAdvertisement{adv}, Proposed: tc.proposed})
			v := c.Verdicts[tc.proposed]
			if !v.Accepted || len(v.Warnings) != 1 || !strings.Contains(v.Warnings[0], tc.want) {
				t.Errorf("%s: %+v, want accepted with a warning %q", tc.proposed, v, tc.want)
			}
			if a := c.Verdicts[Ref{KindBGPAdvertisement, "to-core"}]; a.Accepted {
				t.Errorf("advertisement accepted: %+v", a)
			}
			// Without a proposal (the controller's status) nobody is warned.
			c = Build(Input{Pools: tc.pools, BGPPeers: []v1alpha1.BGPPeer{tc.peer}, BGPAdvertisements: []v1alpha1.BGPAdvertisement{adv}})
			if v := c.Verdicts[tc.proposed]; len(v.Warnings) != 0 {
				t.Errorf("warned without a proposal: %+v", v)
			}
		})
	}
}

// Without the webhook, an older pool can be changed to take a younger
// pool's addresses: it is judged first and accepted, and the younger one,
// refused, stays in force as last accepted. PoolOf gives the clashing
// addresses to the pool judged first, as Build's overlap checks do, not to
// whichever name sorts first.
func TestPoolOfGivesClashingAddressesToThePoolJudgedFirst(t *testing.T) {
	older, younger := pool("z", 0, "198.51.100.16/28"), pool("a", 1, "198.51.100.0/28")
	first := Build(Input{Pools: []v1alpha1.IPAddressPool{older, younger}})
	older.Spec.Addresses = []string{"198.51.100.0/27"}
	second := Build(Input{Pools: []v1alpha1.IPAddressPool{older, younger}, LastAccepted: first.Pools})
	if v := second.Verdicts[Ref{KindIPAddressPool, "a"}]; v.Accepted || second.Pools["a"] == nil {
		t.Fatalf("pool a: %+v, in force %v; want refused and in force as last accepted", v, second.Pools["a"] != nil)
	}
	if p, ok := second.PoolOf(netip.MustParseAddr("198.51.100.1")); !ok || p.Name != "z" {
		t.Errorf("PoolOf(198.51.100.1) = %v, %v; want z, judged first", p, ok)
	}
}

// A node may list a link-local address with its zone. The pool holding it
// gives out the addresses around it, without the zone: a range cut by a
// zoned address carried the zone into every address the allocator handed out.
func TestANodeAddressWithAZoneIsReservedWithoutIt(t *testing.T) {
	node := netip.MustParseAddr("fe80::1%eth0")
	c := Build(Input{Pools: []v1alpha1.IPAddressPool{pool("ll", 0, "fe80::/126")},
		Reserved: []Reserved{{Range: iprange.Range{First: node, Last: node}, What: "node n's InternalIP"}}})
	if got, want := rangesString(c.Pools["ll"]), "fe80:: fe80::2/127"; got != want {
		t.Errorf("pool ll assigns %s, want %s", got, want)
	}
}
