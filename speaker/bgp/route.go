package bgp

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
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
type LargeCommunity struct{ Global, Local1, Local2 uint32 }

func (c LargeCommunity) String() string {
	return fmt.Sprintf("%d:%d:%d", c.Global, c.Local1, c.Local2)
}

// wellKnown are the named communities a BGPAdvertisement may use (RFC 1997,
// 7999, 8326, 8642, 9494 and the LLGR draft), as its CRD documents them.
var wellKnown = map[string]uint32{
	"no-export":           0xFFFFFF01,
	"no-advertise":        0xFFFFFF02,
	"no-export-subconfed": 0xFFFFFF03,
	"no-peer":             0xFFFFFF04,
	"blackhole":           0xFFFF029A,
	"graceful-shutdown":   0xFFFF0000,
	"accept-own":          0xFFFF0001,
	"llgr-stale":          0xFFFF0006,
	"no-llgr":             0xFFFF0007,
}

// ParseCommunities reads a BGPAdvertisement's communities: "ASN:value",
// "large:global:local1:local2" or a well-known name. The results are sorted
// and without duplicates.
func ParseCommunities(in []string) ([]uint32, []LargeCommunity, error) {
	var std []uint32
	var large []LargeCommunity
	for _, s := range in {
		if v, ok := wellKnown[s]; ok {
			std = append(std, v)
			continue
		}
		if rest, ok := strings.CutPrefix(s, "large:"); ok {
			parts := strings.Split(rest, ":")
			if len(parts) != 3 {
				return nil, nil, fmt.Errorf("community %q: a large community is large:global:local1:local2", s)
			}
			var v [3]uint32
			for i, p := range parts {
				n, err := strconv.ParseUint(p, 10, 32)
				if err != nil {
					return nil, nil, fmt.Errorf("community %q: part %q is not a number from 0 to 4294967295", s, p)
				}
				v[i] = uint32(n)
			}
			large = append(large, LargeCommunity{v[0], v[1], v[2]})
			continue
		}
		hi, lo, ok := strings.Cut(s, ":")
		a, errA := strconv.ParseUint(hi, 10, 16)
		b, errB := strconv.ParseUint(lo, 10, 16)
		if !ok || errA != nil || errB != nil {
			return nil, nil, fmt.Errorf("community %q: write ASN:value with both parts from 0 to 65535, large:global:local1:local2, or a well-known name", s)
		}
		std = append(std, uint32(a)<<16|uint32(b))
	}
	slices.Sort(std)
	slices.SortFunc(large, func(x, y LargeCommunity) int {
		return cmpLarge(x, y)
	})
	return slices.Compact(std), slices.Compact(large), nil
}

func cmpLarge(x, y LargeCommunity) int {
	for _, d := range [][2]uint32{{x.Global, y.Global}, {x.Local1, y.Local1}, {x.Local2, y.Local2}} {
		if d[0] != d[1] {
			if d[0] < d[1] {
				return -1
			}
			return 1
		}
	}
	return 0
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
	slices.SortFunc(large, cmpLarge)
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
