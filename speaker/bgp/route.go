package bgp

import (
	"net/netip"
	"slices"

	"github.com/heraldlb/herald/internal/community"
)

// Route is one prefix this node announces, with its attributes and the
// sessions (by BGPPeer name) it goes to. The next hop is not a route's: it
// is the session's (see Session.NextHopV4 and NextHopV6), because the same
// route leaves through different interfaces to different peers.
//
// One prefix has one set of attributes: when several advertisements cover
// it, the plan merges them before it reaches here.
type Route struct {
	// Prefix is an address (/32, /128) or an aggregate.
	Prefix netip.Prefix
	// Peers are the sessions the route is announced to.
	Peers []string
	// LocalPref is sent to iBGP peers only (RFC 4271 5.1.5); nil sends
	// GoBGP's default of 100 to them.
	LocalPref *uint32
	// Communities are standard communities (RFC 1997), high 16 bits the AS.
	Communities []uint32
	// LargeCommunities (RFC 8092).
	LargeCommunities []LargeCommunity
}

// LargeCommunity is global:local1:local2 (RFC 8092).
type LargeCommunity = community.Large

// ParseCommunities reads a BGPAdvertisement's communities (see package
// community). The results are sorted and without duplicates.
func ParseCommunities(in []string) ([]uint32, []LargeCommunity, error) {
	var std []uint32
	var large []LargeCommunity
	for _, s := range in {
		c, err := community.Parse(s)
		switch {
		case err != nil:
			return nil, nil, err
		case c.IsLarge:
			large = append(large, c.Large)
		default:
			std = append(std, c.Standard)
		}
	}
	slices.Sort(std)
	slices.SortFunc(large, LargeCommunity.Compare)
	return slices.Compact(std), slices.Compact(large), nil
}

// sameAttributes reports whether two routes for one prefix carry the same
// path attributes (peers aside).
func (r Route) sameAttributes(o Route) bool {
	lp := func(p *uint32) (uint32, bool) {
		if p == nil {
			return 0, false
		}
		return *p, true
	}
	a, aok := lp(r.LocalPref)
	b, bok := lp(o.LocalPref)
	return a == b && aok == bok && slices.Equal(r.Communities, o.Communities) && slices.Equal(r.LargeCommunities, o.LargeCommunities)
}

// normalize returns the route with its prefix masked and its lists sorted
// and without duplicates, so that comparisons are by value.
func (r Route) normalize() Route {
	r.Prefix = netip.PrefixFrom(r.Prefix.Addr().Unmap(), r.Prefix.Bits()-unmapBits(r.Prefix)).Masked()
	r.Peers = slices.Compact(slices.Sorted(slices.Values(r.Peers)))
	r.Communities = slices.Compact(slices.Sorted(slices.Values(r.Communities)))
	large := slices.Clone(r.LargeCommunities)
	slices.SortFunc(large, LargeCommunity.Compare)
	r.LargeCommunities = slices.Compact(large)
	return r
}

// unmapBits is how many bits an IPv4-mapped IPv6 prefix loses when unmapped.
func unmapBits(p netip.Prefix) int {
	if p.Addr().Is4In6() {
		return 96
	}
	return 0
}
