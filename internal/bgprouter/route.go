package bgprouter

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Route is what a router's BGP table holds for one prefix: one Path per
// neighbour that sent it.
type Route struct {
	Prefix netip.Prefix
	Paths  []Path
}

// Path is one BGP path of a prefix, as the router shows it.
type Path struct {
	// From is the neighbour that sent the path.
	From netip.Addr
	// NextHops are the path's BGP next hops: one, or for IPv6 a global and
	// a link-local address.
	NextHops []netip.Addr
	// Best: the router selected this path; Multipath: FRR uses it for ECMP
	// next to the best one (BIRD merges equal paths only towards the kernel
	// and does not say so here).
	Best, Multipath bool
	// Stale: kept through a peer's graceful restart (RFC 4724). FRR only.
	Stale bool
	// Communities are the standard communities (RFC 1997) as "ASN:VALUE",
	// well-known ones too (no-export is "65535:65281"), in the order the
	// router prints them.
	Communities []string
	// LargeCommunities (RFC 8092) as "GLOBAL:LOCAL1:LOCAL2".
	LargeCommunities []string
	// LocalPref is LOCAL_PREF when the router shows one: FRR shows it for
	// iBGP paths only; BIRD for every path (100 unless set).
	LocalPref *uint32
	// ASPath as the router prints it, e.g. "64514" or "64514 64515".
	ASPath string
}

// NextHops returns the route's next hops over all its paths, sorted, each
// once. For FRR, with ECMP, that is every path FRR selected or uses as
// multipath: what the router forwards to.
func (r *Route) NextHops() []netip.Addr {
	if r == nil {
		return nil
	}
	var out []netip.Addr
	for _, p := range r.Paths {
		for _, nh := range p.NextHops {
			if !nh.IsLinkLocalUnicast() {
				out = append(out, nh)
			}
		}
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return slices.Compact(out)
}

// Neighbor is a BGP session as the router shows it.
type Neighbor struct {
	// Name is BIRD's protocol name; for FRR the neighbour's address.
	Name    string
	Address netip.Addr
	// RemoteAS is the neighbour's AS (0 before the session told it, for a
	// dynamic or "external" neighbour).
	RemoteAS uint32
	// State is the BGP FSM state in the router's words: "Established",
	// "Active", "Connect", "Idle", ... BIRD's "Passive" (waiting for the
	// neighbour to dial) is reported as "Active".
	State string
	// Uptime is how long the session has been Established (0 when it is not).
	Uptime time.Duration
	// BFD is the BFD session's state ("Up", "Down", ...) when the router
	// runs BFD for this neighbour; FRR only, empty otherwise.
	BFD string
}

// Established reports whether the session is up.
func (n Neighbor) Established() bool { return n.State == "Established" }

// Lookup returns the neighbour with address addr among ns.
func Lookup(ns []Neighbor, addr netip.Addr) (Neighbor, bool) {
	for _, n := range ns {
		if n.Address == addr {
			return n, true
		}
	}
	return Neighbor{}, false
}

func sortNeighbors(ns []Neighbor) {
	slices.SortFunc(ns, func(a, b Neighbor) int {
		if c := a.Address.Compare(b.Address); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
}

// familyWord is "ipv4" or "ipv6" for the prefix's family.
func familyWord(p netip.Prefix) string {
	if p.Addr().Is4() {
		return "ipv4"
	}
	return "ipv6"
}

// wellKnown are the RFC 1997 and later well-known communities as FRR names
// them, and their values.
var wellKnown = map[string]string{
	"graceful-shutdown":  "65535:0",
	"accept-own":         "65535:1",
	"llgr-stale":         "65535:6",
	"no-llgr":            "65535:7",
	"accept-own-nexthop": "65535:8",
	"blackhole":          "65535:666",
	"no-export":          "65535:65281",
	"no-advertise":       "65535:65282",
	"local-AS":           "65535:65283",
	"no-peer":            "65535:65284",
}

// numericCommunity turns FRR's name of a well-known community into its
// numbers; anything else is returned as given.
func numericCommunity(c string) string {
	if v, ok := wellKnown[c]; ok {
		return v
	}
	return c
}

func parseUint32(s string) (uint32, error) {
	v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("not a 32-bit number: %q", s)
	}
	return uint32(v), nil
}
