package plan

import (
	"iter"
	"net/netip"
	"slices"
	"strings"

	"github.com/heraldlb/herald/internal/model"
	"github.com/heraldlb/herald/speaker/election"
)

// decide makes the layer-2 decision for one address, and Self's BGP
// decision (see decideBGP).
//
// Services sharing an address are decided together, whatever order they come
// in: each Service advertised over layer 2 gets its candidates from the
// advertisements that select it (election.Candidates); the address may be
// announced only where all of them may, so the candidates are the
// intersection of theirs, and a candidate's interfaces the intersection of
// its interfaces under each (a node left with none is no candidate). The
// preferred nodes are those of every advertisement involved, merged in the
// order of the advertisements' names (election.PreferredNodes). Services that
// no L2Advertisement selects do not constrain the address.
func (p *Planner) decide(ip netip.Addr) (L2, BGP) {
	keys := p.byIP[ip]
	cfg := p.world.Config
	if len(keys) == 0 || cfg == nil {
		return L2{}, BGP{}
	}
	pool, ok := cfg.PoolOf(ip)
	if !ok {
		return L2{}, BGP{}
	}
	return p.decideL2(ip, pool.Name), p.decideBGP(ip, pool.Name)
}

func (p *Planner) decideL2(ip netip.Addr, pool string) L2 {
	keys := p.byIP[ip]
	var (
		out    L2
		cands  []string
		ifaces map[string][]string
		owned  bool // cands and ifaces are copies this call may change
		ads    []string
		pref   []string
	)
	mask := p.subnetMask(ip)
	for _, k := range keys {
		svc := p.services[k]
		names := p.advertisementsFor(pool, svc.Labels)
		if len(names) == 0 {
			continue
		}
		c := p.class(ip, svc, names, mask)
		out.Services = append(out.Services, k)
		for _, n := range names {
			if !slices.Contains(ads, n) {
				ads = append(ads, n)
			}
		}
		if len(out.Services) == 1 {
			cands, ifaces, pref = c.cands, c.ifaces, c.preferred
			continue
		}
		if !owned {
			cands, ifaces, owned = slices.Clone(cands), cloneIfaces(ifaces), true
		}
		cands = slices.DeleteFunc(cands, func(n string) bool {
			both := intersectSorted(ifaces[n], c.ifaces[n])
			if len(both) == 0 {
				delete(ifaces, n)
				return true
			}
			ifaces[n] = both
			return false
		})
	}
	if !out.Planned() {
		return L2{}
	}
	if len(out.Services) > 1 {
		eads := make([]election.Advertisement, len(ads))
		for i, n := range ads {
			eads[i] = p.ads[n]
		}
		pref = election.PreferredNodes(eads)
	}
	isCandidate := func(n string) bool { _, ok := slices.BinarySearch(cands, n); return ok }
	if owner, ok := election.OwnerByRanking(p.ranking(ip), isCandidate, pref); ok {
		out.Owner, out.Interfaces = owner, ifaces[owner]
	}
	return out
}

// class is the candidates shared by every Service with the same classKey.
type class struct {
	cands     []string            // sorted
	ifaces    map[string][]string // per candidate, sorted
	preferred []string            // election.PreferredNodes of the advertisements
}

// classKey names the inputs of election.Candidates that vary between
// addresses and Services: which advertisements select the Service, which
// node subnets contain the address and, under Local, the nodes with a ready
// endpoint. Most Services of a cluster share a handful of classes, so a full
// re-plan computes candidates a handful of times, not once per address.
type classKey struct {
	ads, subnets, ready string
	proxy               bool
}

func (p *Planner) class(ip netip.Addr, svc *Service, adNames []string, mask string) *class {
	key := classKey{ads: strings.Join(adNames, ","), subnets: mask, proxy: svc.ProxyMode}
	if svc.LocalTrafficPolicy {
		key.ready = "local:" + strings.Join(svc.ReadyNodes, ",")
	}
	if c := p.classes[key]; c != nil {
		return c
	}
	info := election.ServiceInfo{IP: ip, LocalTrafficPolicy: svc.LocalTrafficPolicy, NeedsForwarding: svc.ProxyMode}
	if svc.LocalTrafficPolicy {
		info.NodesWithReadyEndpoints = map[string]bool{}
		for _, n := range svc.ReadyNodes {
			info.NodesWithReadyEndpoints[n] = true
		}
	}
	ads := make([]election.Advertisement, len(adNames))
	for i, n := range adNames {
		ads[i] = p.ads[n]
	}
	cands, preferred, ifaces := election.Candidates(info, ads, p.world.Nodes)
	c := &class{cands: cands, ifaces: ifaces, preferred: preferred}
	p.classes[key] = c
	return c
}

// subnetMask says which of the node subnets contain ip: all that
// election.Candidates reads of the address.
func (p *Planner) subnetMask(ip netip.Addr) string {
	ip = ip.Unmap().WithZone("")
	b := make([]byte, len(p.prefixes))
	for i, pfx := range p.prefixes {
		b[i] = '0'
		if pfx.Contains(ip) {
			b[i] = '1'
		}
	}
	return string(b)
}

// advertisementsFor names, sorted, the L2Advertisements covering pool that
// select a Service with these labels.
func (p *Planner) advertisementsFor(pool string, svcLabels map[string]string) []string {
	var out []string
	for _, a := range p.world.Config.L2Advertisements {
		if slices.Contains(a.Pools, pool) && model.AnyMatches(a.ServiceSelectors, svcLabels) {
			out = append(out, a.Name)
		}
	}
	slices.Sort(out)
	return out
}

// ranking is election.Ranking of ip over every node of the world, cached.
func (p *Planner) ranking(ip netip.Addr) iter.Seq[string] {
	idx, ok := p.rankings[ip]
	if !ok {
		ranked := election.Ranking(ip, p.rankNames)
		idx = make([]uint16, len(ranked))
		for i, n := range ranked {
			j, _ := slices.BinarySearch(p.rankNames, n)
			idx[i] = uint16(j)
		}
		p.rankings[ip] = idx
	}
	return func(yield func(string) bool) {
		for _, j := range idx {
			if !yield(p.rankNames[j]) {
				return
			}
		}
	}
}

func intersectSorted(a, b []string) []string {
	var out []string
	for _, s := range a {
		if _, ok := slices.BinarySearch(b, s); ok {
			out = append(out, s)
		}
	}
	return out
}

func cloneIfaces(m map[string][]string) map[string][]string {
	out := make(map[string][]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
