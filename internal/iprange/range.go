// Package iprange holds inclusive address ranges and an index of disjoint
// ranges: the one place where Herald parses pool addresses, decides whether
// two ranges overlap, and finds which range (which pool) holds an address.
// The allocator, the configuration model, the webhook and the speaker all
// use it, so they cannot disagree on any of the three.
package iprange

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Range is an inclusive span of addresses of one family: First <= Last.
type Range struct {
	First, Last netip.Addr
}

// FromPrefix returns the addresses of p (masked to its network address).
func FromPrefix(p netip.Prefix) Range {
	p = p.Masked()
	return Range{First: p.Addr(), Last: lastOf(p)}
}

// Contains reports whether ip lies in r. An IPv4 address never lies in an
// IPv6 range, nor the reverse (IPv4-mapped IPv6 addresses are IPv6).
func (r Range) Contains(ip netip.Addr) bool {
	return r.First.Compare(ip) <= 0 && ip.Compare(r.Last) <= 0 && ip.Is4() == r.First.Is4()
}

// Overlaps reports whether r and o share an address. Ranges of different
// families never do.
func (r Range) Overlaps(o Range) bool {
	return r.First.Is4() == o.First.Is4() && r.First.Compare(o.Last) <= 0 && o.First.Compare(r.Last) <= 0
}

// String writes the range the way Parse reads it and a person wrote it:
// "a" for one address, a CIDR when the range is exactly one, else "a-b".
func (r Range) String() string {
	if r.First == r.Last {
		return r.First.String()
	}
	if r.Validate() == nil {
		for n := 0; n <= r.First.BitLen(); n++ {
			p := netip.PrefixFrom(r.First, n)
			if p.Masked().Addr() != r.First {
				continue // First has host bits set at this length
			}
			if lastOf(p) == r.Last {
				return p.String()
			}
		}
	}
	return r.First.String() + "-" + r.Last.String()
}

// Prefixes splits r into the fewest CIDRs that hold exactly its addresses,
// lowest first: 198.51.100.10-198.51.100.20 is 198.51.100.10/31,
// 198.51.100.12/30, 198.51.100.16/30 and 198.51.100.20/32. An invalid range
// has none.
func (r Range) Prefixes() []netip.Prefix {
	if r.Validate() != nil {
		return nil
	}
	var out []netip.Prefix
	for a := r.First; ; {
		// The widest prefix starting at a that stays within r: a shorter
		// prefix is either not aligned on a or ends after Last, and so is
		// every prefix shorter still.
		bits := a.BitLen()
		for bits > 0 {
			wider := netip.PrefixFrom(a, bits-1)
			if wider.Masked().Addr() != a || lastOf(wider).Compare(r.Last) > 0 {
				break
			}
			bits--
		}
		p := netip.PrefixFrom(a, bits)
		out = append(out, p)
		last := lastOf(p)
		if last == r.Last {
			return out
		}
		a = last.Next()
	}
}

// Without returns the addresses of r that no range of minus holds, as
// disjoint ranges in ascending order; ranges of minus of the other family
// take nothing.
func (r Range) Without(minus ...Range) []Range {
	out := []Range{r}
	for _, m := range minus {
		var next []Range
		for _, x := range out {
			if !x.Overlaps(m) {
				next = append(next, x)
				continue
			}
			if x.First.Less(m.First) {
				next = append(next, Range{First: x.First, Last: m.First.Prev()})
			}
			if m.Last.Less(x.Last) {
				next = append(next, Range{First: m.Last.Next(), Last: x.Last})
			}
		}
		out = next
	}
	return out
}

// Validate checks what a Range built by hand can get wrong.
func (r Range) Validate() error {
	switch {
	case !r.First.IsValid() || !r.Last.IsValid():
		return fmt.Errorf("range %v-%v lacks an address", r.First, r.Last)
	case r.First.Zone() != "" || r.Last.Zone() != "":
		return fmt.Errorf("range %s-%s has a zone; pool addresses cannot", r.First, r.Last)
	case r.First.Is4() != r.Last.Is4():
		return fmt.Errorf("range %s-%s mixes IPv4 and IPv6; write one range per family", r.First, r.Last)
	case r.Last.Less(r.First):
		return fmt.Errorf("range %s-%s is reversed; write the lower address first", r.First, r.Last)
	}
	return nil
}

// lastOf returns the highest address of p.
func lastOf(p netip.Prefix) netip.Addr {
	a := p.Addr()
	if a.Is4() {
		b := a.As4()
		setHostBits(b[:], p.Bits())
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	setHostBits(b[:], p.Bits())
	return netip.AddrFrom16(b)
}

// setHostBits sets every bit of b after the first n.
func setHostBits(b []byte, n int) {
	for i := range b {
		switch {
		case n >= 8*(i+1):
		case n <= 8*i:
			b[i] = 0xff
		default:
			b[i] |= 0xff >> (n - 8*i)
		}
	}
}

// Parse reads one entry of a pool's addresses: a CIDR ("203.0.113.0/24",
// written as its network address), an inclusive range of one family
// ("203.0.113.10-203.0.113.20", spaces around the dash allowed) or a single
// address. Errors quote the entry and say what is wrong with it, and come
// with the zero Range.
func Parse(s string) (Range, error) {
	t := strings.TrimSpace(s)
	switch {
	case t == "":
		return Range{}, errors.New("empty address range")
	case strings.Contains(t, "/"):
		return parseCIDR(t)
	case strings.Contains(t, "-"):
		first, last, _ := strings.Cut(t, "-")
		a, err := parseAddr(t, strings.TrimSpace(first))
		if err != nil {
			return Range{}, err
		}
		b, err := parseAddr(t, strings.TrimSpace(last))
		if err != nil {
			return Range{}, err
		}
		// The entry as written names the range: it is what the user looks
		// for in their manifest, and what the CRD's CEL rules quote.
		switch {
		case a.Is4() != b.Is4():
			return Range{}, fmt.Errorf("range %s mixes IPv4 and IPv6; write one range per family", t)
		case b.Less(a):
			return Range{}, fmt.Errorf("range %s is reversed; write the lower address first", t)
		}
		return Range{First: a, Last: b}, nil
	default:
		a, err := parseAddr(t, t)
		if err != nil {
			return Range{}, err
		}
		return Range{First: a, Last: a}, nil
	}
}

func parseAddr(entry, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		if entry == s {
			return netip.Addr{}, fmt.Errorf("%q is not an IP address, a range or a CIDR", entry)
		}
		return netip.Addr{}, fmt.Errorf("range %q: %q is not an IP address", entry, s)
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("range %q: address %s has a zone; pool addresses cannot", entry, s)
	}
	return a, nil
}

func parseCIDR(t string) (Range, error) {
	addr, length, _ := strings.Cut(t, "/")
	a, err := netip.ParseAddr(addr)
	if err != nil || a.Zone() != "" {
		return Range{}, fmt.Errorf("CIDR %q: %q is not an IP address", t, addr)
	}
	n, err := strconv.Atoi(length)
	if err != nil || n < 0 || n > a.BitLen() {
		return Range{}, fmt.Errorf("CIDR %q: prefix length %q is not a number from 0 to %d", t, length, a.BitLen())
	}
	p := netip.PrefixFrom(a, n)
	if m := p.Masked(); m != p {
		return Range{}, fmt.Errorf("CIDR %q has bits set after the prefix length; write the network address %s", t, m)
	}
	return FromPrefix(p), nil
}
