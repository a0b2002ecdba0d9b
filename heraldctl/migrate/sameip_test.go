package migrate

import (
	"maps"
	"net/netip"
	"slices"
	"testing"

	"github.com/heraldlb/herald/controller/ipam"
	"github.com/heraldlb/herald/internal/model"
)

// service is a Service as far as allocation cares, with the address MetalLB
// gives it.
type service struct {
	ns, name string
	labels   map[string]string
	v6       bool
	pool     string // asked for by name (metallb.universe.tf/address-pool)
	ip       string // asked for (spec.loadBalancerIP)
	metallb  string // the address MetalLB gives it, and why
}

// namespaceLabels are the labels of the namespaces the Services live in,
// with the kubernetes.io/metadata.name label the API server puts on every
// namespace.
func namespaceLabels(ns string) map[string]string {
	l := map[string]string{"kubernetes.io/metadata.name": ns}
	if ns == "prod" {
		l["env"] = "prod"
	}
	return l
}

// The translated pools hand each Service, created one after the other, the
// address MetalLB would have given it. The expected addresses are MetalLB's
// documented allocation, written out by hand: pools whose serviceAllocation
// selects the Service first (lower priority first, no priority last), then
// the automatic pools without serviceAllocation; in a pool, the first free
// address in the order the addresses are listed (CIDRs from their first
// address, .0 and .255 skipped with avoidBuggyIPs); a Service naming a pool
// or an address gets it, also from a pool without autoAssign.
func TestTranslatedPoolsHandEachServiceTheAddressMetalLBWould(t *testing.T) {
	for _, tc := range []struct {
		file     string
		services []service
	}{
		{"testdata/corpus/configmap-l2-tutorial.yaml", []service{
			{ns: "default", name: "nginx", metallb: "192.168.1.240"}, // the range's first address
			{ns: "default", name: "web", metallb: "192.168.1.241"},
			{ns: "demo", name: "api", metallb: "192.168.1.242"},
			{ns: "default", name: "pinned", ip: "192.168.1.245", metallb: "192.168.1.245"},
			{ns: "default", name: "db", metallb: "192.168.1.243"},
			{ns: "default", name: "cache", metallb: "192.168.1.244"},
			{ns: "default", name: "queue", metallb: "192.168.1.246"}, // .245 is taken
		}},
		{"testdata/corpus/crds-allocation.yaml", []service{
			// default: the only automatic IPv4 pool; .0 avoided.
			{ns: "default", name: "web", metallb: "203.0.113.1"},
			{ns: "default", name: "api", metallb: "203.0.113.2"},
			// team-a: tenant-a (priority 10); gold needs tier=gold.
			{ns: "team-a", name: "app", metallb: "198.51.100.64"},
			// gold (priority 5) before tenant-a (10).
			{ns: "team-a", name: "gold-svc", labels: map[string]string{"tier": "gold"}, metallb: "198.51.100.80"},
			// prod is not listed in gold's namespaces but its label is
			// selected: MetalLB allows a namespace listed or selected.
			{ns: "prod", name: "gold-prod", labels: map[string]string{"tier": "gold"}, metallb: "198.51.100.81"},
			// other is neither listed nor selected: back to default.
			{ns: "other", name: "gold-other", labels: map[string]string{"tier": "gold"}, metallb: "203.0.113.3"},
			{ns: "team-a", name: "app2", metallb: "198.51.100.65"},
			// tenant-a (a /31) is full: tenant-a-fallback, which has no
			// priority and so comes after the pools with one.
			{ns: "team-a", name: "app3", metallb: "198.51.100.72"},
			// expensive has no autoAssign but serves who names it.
			{ns: "default", name: "premium", pool: "expensive", metallb: "198.51.100.8"},
			// v6: the only automatic IPv6 pool, from the prefix's first address.
			{ns: "default", name: "web6", v6: true, metallb: "2001:db8:1::"},
			{ns: "default", name: "fixed", ip: "203.0.113.77", metallb: "203.0.113.77"},
			{ns: "default", name: "after-fixed", metallb: "203.0.113.4"},
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			res := translateFile(t, tc.file)
			cfg := model.Build(model.Input{Pools: res.Pools})
			var pools []ipam.Pool
			for _, name := range slices.Sorted(maps.Keys(cfg.Pools)) {
				p := cfg.Pools[name]
				pools = append(pools, ipam.Pool{Name: p.Name, Ranges: p.Ranges, AutoAssign: p.AutoAssign, AvoidBuggyIPs: p.AvoidBuggyIPs, Priority: p.Priority})
			}
			if len(pools) != len(res.Pools) {
				t.Fatalf("%d of %d translated pools are in force", len(pools), len(res.Pools))
			}
			var a ipam.Allocator
			if _, err := a.SetPools(pools); err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.services {
				req := ipam.Request{Key: ipam.Key{Namespace: s.ns, Name: s.name}, Pool: s.pool, Families: []ipam.Family{ipam.IPv4}}
				if s.v6 {
					req.Families = []ipam.Family{ipam.IPv6}
				}
				if s.ip != "" {
					req.IPs = []netip.Addr{netip.MustParseAddr(s.ip)}
				}
				req.Eligible = func(pool string) bool {
					p := cfg.Pools[pool]
					return p != nil && p.Allows(s.ns, namespaceLabels(s.ns), s.labels)
				}
				got, err := a.Assign(req)
				if err != nil {
					t.Errorf("%s/%s: %v, MetalLB gives it %s", s.ns, s.name, err, s.metallb)
					continue
				}
				if len(got.IPs) != 1 || got.IPs[0].String() != s.metallb {
					t.Errorf("%s/%s: Herald gives %v from pool %s, MetalLB gives %s", s.ns, s.name, got.IPs, got.Pool, s.metallb)
				}
			}
		})
	}
}

// The tutorial's ConfigMap, the one the issue names, translates without a
// finding of any kind.
func TestTheLayer2TutorialTranslatesCompletely(t *testing.T) {
	res := translateFile(t, "testdata/corpus/configmap-l2-tutorial.yaml")
	if len(res.Findings) != 0 || !res.Complete() {
		t.Errorf("findings: %v", res.Findings)
	}
	if len(res.Pools) != 1 || res.Pools[0].Name != "default" || !slices.Equal(res.Pools[0].Spec.Addresses, []string{"192.168.1.240-192.168.1.250"}) {
		t.Errorf("pools: %+v", res.Pools)
	}
	if len(res.L2Advertisements) != 1 || !slices.Equal(res.L2Advertisements[0].Spec.IPAddressPools, []string{"default"}) {
		t.Errorf("L2Advertisements: %+v", res.L2Advertisements)
	}
}
