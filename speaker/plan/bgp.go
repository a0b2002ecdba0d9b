package plan

import (
	"cmp"
	"net/netip"
	"reflect"
	"slices"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/internal/model"
)

// BGP is the BGP decision for one address, made for World.Self alone: over
// BGP every eligible node announces itself (the router sees one next hop per
// node), so no node decides for another.
type BGP struct {
	// Services holding the address that a BGPAdvertisement covers, sorted.
	Services []types.NamespacedName
	// Advertisements are the BGPAdvertisements under which Self announces
	// the address, sorted; none when Self may not announce it.
	Advertisements []string
}

// Planned reports whether a BGPAdvertisement covers the address.
func (d BGP) Planned() bool { return len(d.Services) > 0 }

// Announced reports whether Self announces the address.
func (d BGP) Announced() bool { return len(d.Advertisements) > 0 }

func (d BGP) equal(o BGP) bool {
	return slices.Equal(d.Services, o.Services) && slices.Equal(d.Advertisements, o.Advertisements)
}

// Route is one prefix Self announces: an address, or the aggregate an
// advertisement's aggregationLength makes of it, with the attributes of
// every advertisement that announces it merged (see routeOf).
type Route struct {
	Prefix netip.Prefix
	// Peers are BGPPeer names, sorted.
	Peers []string
	// LocalPref is the highest localPref of the advertisements; nil: none set.
	LocalPref *uint32
	// Communities as the advertisements write them, sorted, without repeats.
	Communities []string
}

func (r *Route) equal(o *Route) bool {
	if r == nil || o == nil {
		return r == o
	}
	lp := func(p *uint32) int64 {
		if p == nil {
			return -1
		}
		return int64(*p)
	}
	return r.Prefix == o.Prefix && slices.Equal(r.Peers, o.Peers) && lp(r.LocalPref) == lp(o.LocalPref) &&
		slices.Equal(r.Communities, o.Communities)
}

// RouteChange is one prefix whose route changed in a Plan call; Route is nil
// when the prefix is withdrawn.
type RouteChange struct {
	Prefix netip.Prefix
	Route  *Route
}

// bgpAd is an accepted BGPAdvertisement as Self applies it.
type bgpAd struct {
	pools        []string
	svcSelectors []labels.Selector
	selectsSelf  bool
	aggV4, aggV6 int
	peers        []string // Self's sessions it reaches, sorted
	localPref    *uint32
	communities  []string
}

// setBGPWorld caches, for a new World, what the BGP decisions read of it.
func (p *Planner) setBGPWorld(w World) {
	prev := p.bgpAds
	defer func() {
		// Attributes or aggregation may change with no decision changing:
		// then every prefix and route is derived again at the next Plan.
		p.bgpStale = p.bgpStale || !reflect.DeepEqual(prev, p.bgpAds)
	}()
	p.bgpAds = map[string]*bgpAd{}
	p.bgpAdNames = nil
	p.self = nil
	for i := range w.Nodes {
		if w.Nodes[i].Name == w.Self {
			p.self = &w.Nodes[i]
		}
	}
	if w.Config == nil {
		return
	}
	for _, a := range w.Config.BGPAdvertisements {
		spec := a.BGP
		ad := &bgpAd{pools: a.Pools, svcSelectors: a.ServiceSelectors, aggV4: 32, aggV6: 128, localPref: spec.LocalPref}
		ad.selectsSelf = p.self != nil && model.AnyMatches(a.NodeSelectors, p.self.Labels)
		if spec.AggregationLength != nil {
			ad.aggV4 = int(*spec.AggregationLength)
		}
		if spec.AggregationLengthV6 != nil {
			ad.aggV6 = int(*spec.AggregationLengthV6)
		}
		ad.peers = w.Peers
		if len(spec.Peers) > 0 {
			ad.peers = nil
			for _, peer := range w.Peers {
				if slices.Contains(spec.Peers, peer) {
					ad.peers = append(ad.peers, peer)
				}
			}
		}
		ad.communities = slices.Compact(slices.Sorted(slices.Values(spec.Communities)))
		p.bgpAds[a.Name] = ad
		p.bgpAdNames = append(p.bgpAdNames, a.Name)
	}
	slices.Sort(p.bgpAdNames)
}

// decideBGP makes Self's BGP decision for one address. Like decide for
// layer 2, Services sharing the address are decided together: Self announces
// it only if it may for every Service a BGPAdvertisement covers (an
// advertisement selecting the Service selects Self too and, under
// externalTrafficPolicy Local, Self runs a ready endpoint of it), under the
// union of those advertisements.
func (p *Planner) decideBGP(ip netip.Addr, pool string) BGP {
	var out BGP
	var ads []string
	blocked := p.self == nil || p.self.Excluded()
	for _, k := range p.byIP[ip] {
		svc := p.services[k]
		covered, mine := false, false
		for _, name := range p.bgpAdNames {
			ad := p.bgpAds[name]
			if !slices.Contains(ad.pools, pool) || !model.AnyMatches(ad.svcSelectors, svc.Labels) {
				continue
			}
			covered = true
			if ad.selectsSelf {
				mine = true
				if !slices.Contains(ads, name) {
					ads = append(ads, name)
				}
			}
		}
		if !covered {
			continue
		}
		out.Services = append(out.Services, k)
		if !mine || (svc.LocalTrafficPolicy && !p.selfReady(svc)) || (svc.ProxyMode && (p.self == nil || !p.self.Forwards)) {
			blocked = true
		}
	}
	if out.Planned() && !blocked {
		slices.Sort(ads)
		out.Advertisements = ads
	}
	return out
}

func (p *Planner) selfReady(svc *Service) bool {
	_, ok := slices.BinarySearch(svc.ReadyNodes, p.self.Name)
	return ok
}

// prefixOf is the prefix ad announces ip as.
func (ad *bgpAd) prefixOf(ip netip.Addr) netip.Prefix {
	bits := ad.aggV4
	if ip.Is6() {
		bits = ad.aggV6
	}
	pfx, _ := ip.Prefix(bits)
	return pfx
}

// prefixesOf are the prefixes a decision announces ip as.
func (p *Planner) prefixesOf(ip netip.Addr, d BGP) []netip.Prefix {
	var out []netip.Prefix
	for _, name := range d.Advertisements {
		if pfx := p.bgpAds[name].prefixOf(ip); !slices.Contains(out, pfx) {
			out = append(out, pfx)
		}
	}
	return out
}

// routeOf merges what every address announced as pfx brings to it: the
// peers of each advertisement involved, their communities, and the highest
// localPref. An advertisement reaching none of Self's sessions adds nothing;
// a prefix that reaches no peer is not announced.
func (p *Planner) routeOf(pfx netip.Prefix) *Route {
	r := &Route{Prefix: pfx}
	for _, ip := range p.prefixIPs[pfx] {
		for _, name := range p.bgp[ip].Advertisements {
			ad := p.bgpAds[name]
			if ad.prefixOf(ip) != pfx || len(ad.peers) == 0 {
				continue
			}
			r.Peers = append(r.Peers, ad.peers...)
			r.Communities = append(r.Communities, ad.communities...)
			if ad.localPref != nil && (r.LocalPref == nil || *ad.localPref > *r.LocalPref) {
				r.LocalPref = ad.localPref
			}
		}
	}
	if len(r.Peers) == 0 {
		return nil
	}
	r.Peers = slices.Compact(slices.Sorted(slices.Values(r.Peers)))
	r.Communities = slices.Compact(slices.Sorted(slices.Values(r.Communities)))
	return r
}

// setBGP records the decision for ip and the prefixes it announces ip as,
// and marks the prefixes it joins or leaves.
func (p *Planner) setBGP(ip netip.Addr, d BGP, touched map[netip.Prefix]bool) {
	old, now := p.ipPrefixes[ip], p.prefixesOf(ip, d)
	if d.Planned() {
		p.bgp[ip] = d
	} else {
		delete(p.bgp, ip)
	}
	if len(now) > 0 {
		p.ipPrefixes[ip] = now
	} else {
		delete(p.ipPrefixes, ip)
	}
	for _, pfx := range old {
		touched[pfx] = true
		if slices.Contains(now, pfx) {
			continue
		}
		ips := p.prefixIPs[pfx]
		if i, ok := slices.BinarySearchFunc(ips, ip, netip.Addr.Compare); ok {
			ips = slices.Delete(ips, i, i+1)
		}
		if len(ips) == 0 {
			delete(p.prefixIPs, pfx)
		} else {
			p.prefixIPs[pfx] = ips
		}
	}
	for _, pfx := range now {
		touched[pfx] = true
		ips := p.prefixIPs[pfx]
		if i, ok := slices.BinarySearchFunc(ips, ip, netip.Addr.Compare); !ok {
			p.prefixIPs[pfx] = slices.Insert(ips, i, ip)
		}
	}
}

// planRoutes re-derives the routes of the touched prefixes (every prefix
// when all is set) and returns those that changed, sorted.
func (p *Planner) planRoutes(touched map[netip.Prefix]bool, all bool) []RouteChange {
	if all {
		for pfx := range p.prefixIPs {
			touched[pfx] = true
		}
		for pfx := range p.routes {
			touched[pfx] = true
		}
	}
	var out []RouteChange
	for pfx := range touched {
		r := p.routeOf(pfx)
		if r.equal(p.routes[pfx]) {
			continue
		}
		if r == nil {
			delete(p.routes, pfx)
		} else {
			p.routes[pfx] = r
		}
		out = append(out, RouteChange{Prefix: pfx, Route: r})
	}
	slices.SortFunc(out, func(a, b RouteChange) int {
		return comparePrefixes(a.Prefix, b.Prefix)
	})
	return out
}

// BGP is Self's current BGP decision for ip (the zero BGP when no
// BGPAdvertisement covers it).
func (p *Planner) BGP(ip netip.Addr) BGP { return p.bgp[ip] }

// Routes returns every route Self announces, sorted by prefix.
func (p *Planner) Routes() []Route {
	out := make([]Route, 0, len(p.routes))
	for _, r := range p.routes {
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b Route) int {
		return comparePrefixes(a.Prefix, b.Prefix)
	})
	return out
}

// PeersOf names the peers Self announces ip to, through any of its routes.
func (p *Planner) PeersOf(ip netip.Addr) []string {
	var out []string
	for _, pfx := range p.ipPrefixes[ip] {
		if r := p.routes[pfx]; r != nil {
			out = append(out, r.Peers...)
		}
	}
	return slices.Compact(slices.Sorted(slices.Values(out)))
}

// IPsOf are the announced addresses Self routes as pfx.
func (p *Planner) IPsOf(pfx netip.Prefix) []netip.Addr { return p.prefixIPs[pfx] }

func comparePrefixes(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}
