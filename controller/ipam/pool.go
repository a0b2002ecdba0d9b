package ipam

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/heraldlb/herald/internal/iprange"
)

// Pool is an address pool as the allocator sees it: the caller has already
// decided which Services may use it (Request.Eligible).
type Pool struct {
	Name   string
	Ranges []iprange.Range
	// AutoAssign lets Services that name neither this pool nor one of its
	// addresses get an address from it. The CRD defaults it to true; the zero
	// value here is false, so the caller must copy it.
	AutoAssign bool
	// AvoidBuggyIPs removes the IPv4 addresses ending in .0 and .255 from the
	// pool, because some old clients and routers drop them (as MetalLB does).
	// They are not assigned, not counted as available, refused when asked for,
	// and released like any address that left the pool. IPv6 is unaffected.
	AvoidBuggyIPs bool
	// Priority orders the pools a Service may use: pools with a priority are
	// tried lowest number first, then all pools without one (nil, the CRD's
	// pools without serviceAllocation); ties go by name.
	Priority *int32
}

// Usage counts a pool's addresses of one family.
type Usage struct {
	Assigned uint64
	// Available saturates at math.MaxUint64: an IPv6 /64 has one more address
	// than a uint64 counts.
	Available uint64
}

// ValidatePools reports every problem that makes SetPools refuse pools: a
// missing or repeated name, a malformed range, or two ranges that overlap, in
// one pool or across pools. The webhook can call it so that it and the
// allocator agree on what is valid.
func ValidatePools(pools []Pool) error {
	var errs []error
	seen := make(map[string]bool, len(pools))
	var taken iprange.Index[string]
	for i, p := range pools {
		switch {
		case p.Name == "":
			errs = append(errs, fmt.Errorf("pool %d of %d has no name", i+1, len(pools)))
		case seen[p.Name]:
			errs = append(errs, fmt.Errorf("pool %q is defined twice", p.Name))
		}
		seen[p.Name] = true
		for _, r := range p.Ranges {
			if err := r.Validate(); err != nil {
				errs = append(errs, fmt.Errorf("pool %q: %w", p.Name, err))
				continue
			}
			in, ok := taken.Add(r, p.Name)
			switch {
			case ok:
			case in.Value == p.Name:
				errs = append(errs, fmt.Errorf("pool %q: ranges %s and %s overlap", p.Name, in.Range, r))
			default:
				errs = append(errs, fmt.Errorf("pools %q and %q overlap: %s and %s", in.Value, p.Name, in.Range, r))
			}
		}
	}
	return errors.Join(errs...)
}

// pool is a validated Pool with one address space per family.
type pool struct {
	name       string
	autoAssign bool
	priority   *int32
	spaces     [2]space // IPv4, IPv6
}

func (p *pool) space(f Family) *space { return &p.spaces[f.index()] }

// rankCompare orders pools the way they are tried.
func rankCompare(a, b *pool) int {
	switch {
	case a.priority != nil && b.priority == nil:
		return -1
	case a.priority == nil && b.priority != nil:
		return 1
	case a.priority != nil && *a.priority != *b.priority:
		return cmp.Compare(*a.priority, *b.priority)
	}
	return cmp.Compare(a.name, b.name)
}

// space is one family of a pool. Addresses are kept as coordinates: the
// address itself, or, when .0 and .255 are avoided, the address's position
// among the IPv4 addresses that end in neither. The skipped addresses then do
// not exist for the interval arithmetic, so finding a free address never has to
// step over them.
type space struct {
	family    Family
	skipBuggy bool
	ranges    []span // sorted, disjoint and non-adjacent coordinates
	size      u128   // addresses in ranges, saturating
	used      usedSet
}

type span struct{ lo, hi u128 }

func (s *space) empty() bool { return len(s.ranges) == 0 }

// coord returns the coordinate of address key k; ok is false for an address
// the space skips.
func (s *space) coord(k u128) (u128, bool) {
	if !s.skipBuggy {
		return k, true
	}
	b := k.lo & 0xff
	if b == 0 || b == 0xff {
		return u128{}, false
	}
	return u128{0, k.lo>>8*254 + b - 1}, true
}

func (s *space) addr(c u128) netip.Addr {
	if s.skipBuggy {
		c = u128{0, c.lo/254<<8 | (c.lo%254 + 1)}
	}
	return addrOf(s.family, c)
}

// contains reports whether coordinate c lies in the space's ranges.
func (s *space) contains(c u128) bool {
	i, _ := slices.BinarySearchFunc(s.ranges, c, func(r span, c u128) int {
		switch {
		case r.hi.less(c):
			return -1
		case c.less(r.lo):
			return 1
		}
		return 0
	})
	return i < len(s.ranges) && !c.less(s.ranges[i].lo) && !s.ranges[i].hi.less(c)
}

// lowestFree returns the lowest coordinate in the ranges that is not used:
// one interval lookup per range at most.
func (s *space) lowestFree() (u128, bool) {
	for _, r := range s.ranges {
		if c, ok := s.used.nextFree(r.lo); ok && !r.hi.less(c) {
			return c, true
		}
	}
	return u128{}, false
}

func (s *space) usage() Usage {
	return Usage{Assigned: s.used.n.uint64Sat(), Available: s.size.sub(s.used.n).uint64Sat()}
}

// config is a validated set of pools with everything derived from it.
type config struct {
	pools  map[string]*pool
	ranked []*pool
	index  iprange.Index[*pool] // which pool holds an address
}

func newConfig(pools []Pool) (*config, error) {
	if err := ValidatePools(pools); err != nil {
		return nil, err
	}
	c := &config{pools: make(map[string]*pool, len(pools))}
	for _, in := range pools {
		p := &pool{name: in.Name, autoAssign: in.AutoAssign}
		if in.Priority != nil {
			prio := *in.Priority
			p.priority = &prio
		}
		for _, f := range []Family{IPv4, IPv6} {
			s := p.space(f)
			s.family = f
			s.skipBuggy = f == IPv4 && in.AvoidBuggyIPs
			for _, r := range in.Ranges {
				if familyOf(r.First) != f {
					continue
				}
				c.index.Add(r, p) // ValidatePools refused overlaps
				raw := span{keyOf(r.First), keyOf(r.Last)}
				if s.skipBuggy {
					var ok bool
					if raw, ok = buggyFree(raw); !ok {
						continue
					}
				}
				s.ranges = append(s.ranges, raw)
			}
			s.ranges = mergeSpans(s.ranges)
			for _, r := range s.ranges {
				s.size = s.size.addSat(r.hi.sub(r.lo).addSat(u128{0, 1}))
			}
		}
		c.pools[p.name] = p
		c.ranked = append(c.ranked, p)
	}
	slices.SortFunc(c.ranked, rankCompare)
	return c, nil
}

// buggyFree turns an IPv4 range into coordinates without .0 and .255.
func buggyFree(r span) (span, bool) {
	first, last := int64(r.lo.lo), int64(r.hi.lo)
	switch first & 0xff {
	case 0:
		first++
	case 0xff:
		first += 2
	}
	switch last & 0xff {
	case 0xff:
		last--
	case 0:
		last -= 2
	}
	if first > last {
		return span{}, false
	}
	s := &space{skipBuggy: true}
	lo, _ := s.coord(u128{0, uint64(first)})
	hi, _ := s.coord(u128{0, uint64(last)})
	return span{lo, hi}, true
}

// mergeSpans sorts spans and joins those that overlap or touch.
func mergeSpans(in []span) []span {
	slices.SortFunc(in, func(a, b span) int { return compareU128(a.lo, b.lo) })
	out := in[:0]
	for _, r := range in {
		if n := len(out); n > 0 {
			after, ok := out[n-1].hi.inc()
			if !ok || !after.less(r.lo) {
				if out[n-1].hi.less(r.hi) {
					out[n-1].hi = r.hi
				}
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

func compareU128(a, b u128) int {
	switch {
	case a.less(b):
		return -1
	case b.less(a):
		return 1
	}
	return 0
}

// poolOf returns the pool whose ranges hold ip, and whether the pool may
// assign it (false for an address avoidBuggyIPs removes). Pools never overlap,
// so there is at most one.
func (c *config) poolOf(ip netip.Addr) (p *pool, usable bool) {
	if c == nil || !ip.IsValid() || ip.Zone() != "" {
		return nil, false
	}
	e, ok := c.index.Lookup(ip)
	if !ok {
		return nil, false
	}
	p = e.Value
	f, k := familyOf(ip), keyOf(ip)
	s := p.space(f)
	cd, ok := s.coord(k)
	return p, ok && s.contains(cd)
}
