package iprange_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/heraldlb/herald/internal/iprange"
)

// probeAddr reads an address from fuzz bytes: 4 bytes are IPv4, 16 IPv6;
// other lengths give none.
func probeAddr(b []byte) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(b)
	return a, ok
}

// inBounds is Contains by its definition: the same family, between the bounds.
func inBounds(r iprange.Range, a netip.Addr) bool {
	return a.Is4() == r.First.Is4() && a.Is6() == r.First.Is6() && !a.Less(r.First) && !r.Last.Less(a)
}

// Whatever a user writes in spec.addresses, Parse either refuses it, naming
// the entry and returning no range, or returns a valid range that holds its
// own bounds, agrees with them on any address, and writes itself back as a
// string that parses to the same range.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"203.0.113.0/24", "203.0.113.10-203.0.113.20", " 203.0.113.10 - 203.0.113.20 ", "203.0.113.7",
		"0.0.0.0/0", "::/0", "2001:db8::/64", "2001:db8::1-2001:db8::5", "2001:db8::1/128",
		"10.0.0.9-10.0.0.1", "10.0.0.1-2001:db8::1", "10.0.0.5/24", "10.0.0.0/33", "10.0.0.0/-0",
		"10.0.0.0/+8", "fe80::1%eth0", "fe80::1%eth0-fe80::2", "fe80::/64%eth0", "::ffff:10.0.0.1/120",
		"::ffff:10.0.0.1-10.0.0.2", "10.0.0.1--10.0.0.2", "-", "/", "", "\x00", "2001:DB8::9-2001:DB8::1",
	} {
		f.Add(s, []byte{203, 0, 113, 9})
		f.Add(s, []byte{0x20, 0x01, 0x0d, 0xb8, 15: 3})
	}
	f.Fuzz(func(t *testing.T, s string, probe []byte) {
		r, err := iprange.Parse(s)
		if err != nil {
			if r != (iprange.Range{}) {
				t.Fatalf("Parse(%q) returned %v with the error %v", s, r, err)
			}
			entry := strings.TrimSpace(s)
			if msg := err.Error(); !strings.Contains(msg, entry) && !strings.Contains(msg, fmt.Sprintf("%q", entry)) {
				t.Fatalf("Parse(%q): error %q does not name the entry", s, msg)
			}
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("Parse(%q) = %v, invalid: %v", s, r, err)
		}
		if !r.Contains(r.First) || !r.Contains(r.Last) {
			t.Fatalf("Parse(%q) = %v does not hold its own bounds", s, r)
		}
		back, err := iprange.Parse(r.String())
		if err != nil || back != r {
			t.Fatalf("Parse(%q) = %v writes %q, which parses to %v, %v", s, r, r.String(), back, err)
		}
		probes := []netip.Addr{r.First.Prev(), r.Last.Next(), r.First.Next(), r.Last.Prev()}
		if a, ok := probeAddr(probe); ok {
			probes = append(probes, a, a.WithZone("eth0"))
		}
		for _, a := range probes {
			if a.IsValid() && a.Zone() == "" && r.Contains(a) != inBounds(r, a) {
				t.Fatalf("%v.Contains(%s) = %v, but its bounds say %v", r, a, r.Contains(a), inBounds(r, a))
			}
		}
		// The CIDRs of a range cover exactly it, in order, without gaps.
		ps := r.Prefixes()
		if len(ps) == 0 || ps[0].Addr() != r.First || iprange.FromPrefix(ps[len(ps)-1]).Last != r.Last {
			t.Fatalf("%v.Prefixes() = %v do not span it", r, ps)
		}
		for i := 1; i < len(ps); i++ {
			if iprange.FromPrefix(ps[i-1]).Last.Next() != ps[i].Addr() {
				t.Fatalf("%v.Prefixes() = %v leave a gap or overlap after %s", r, ps, ps[i-1])
			}
		}
	})
}

// For any two ranges, Overlaps, containment, Without and the index agree
// with what the parsed bounds say.
func FuzzRangePair(f *testing.F) {
	for _, p := range [][2]string{
		{"203.0.113.0/24", "203.0.113.128/25"}, {"203.0.113.0/25", "203.0.113.128/25"},
		{"203.0.113.10-203.0.113.20", "203.0.113.20-203.0.113.30"}, {"203.0.113.10-203.0.113.20", "203.0.113.21"},
		{"0.0.0.0/0", "::/0"}, {"::ffff:0.0.0.0/96", "0.0.0.0/0"}, {"::/0", "2001:db8::1"},
		{"255.255.255.255", "255.255.255.0/24"}, {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::/0"},
		{"2001:db8::1-2001:db8::5", "2001:db8::3-2001:db8::4"},
	} {
		f.Add(p[0], p[1], []byte{203, 0, 113, 20})
	}
	f.Fuzz(func(t *testing.T, as, bs string, probe []byte) {
		a, errA := iprange.Parse(as)
		b, errB := iprange.Parse(bs)
		if errA != nil || errB != nil {
			return
		}
		if a.Overlaps(b) != b.Overlaps(a) {
			t.Fatalf("%v.Overlaps(%v) = %v, but the reverse says %v", a, b, a.Overlaps(b), b.Overlaps(a))
		}
		// Two ranges share an address exactly when the higher start lies in both.
		hi := a.First
		if hi.Less(b.First) {
			hi = b.First
		}
		shared := inBounds(a, hi) && inBounds(b, hi)
		if a.Overlaps(b) != shared {
			t.Fatalf("%v.Overlaps(%v) = %v, but %s in both is %v", a, b, a.Overlaps(b), hi, shared)
		}
		contains := a.Contains(b.First) && a.Contains(b.Last)
		if contains && !a.Overlaps(b) {
			t.Fatalf("%v holds %v's bounds but does not overlap it", a, b)
		}
		rest := a.Without(b)
		if contains && b == a && len(rest) != 0 {
			t.Fatalf("%v without itself left %v", a, rest)
		}
		if !a.Overlaps(b) && (len(rest) != 1 || rest[0] != a) {
			t.Fatalf("%v without the disjoint %v is %v", a, b, rest)
		}
		for i, r := range rest {
			if err := r.Validate(); err != nil || !a.Contains(r.First) || !a.Contains(r.Last) || r.Overlaps(b) {
				t.Fatalf("%v without %v: piece %v is invalid (%v), outside %v or overlaps %v", a, b, r, err, a, b)
			}
			if i > 0 && !rest[i-1].Last.Less(r.First) {
				t.Fatalf("%v without %v: pieces %v out of order", a, b, rest)
			}
		}
		var x iprange.Index[string]
		x.Add(a, "a")
		if _, ok := x.Add(b, "b"); ok == a.Overlaps(b) {
			t.Fatalf("index of %v took %v: %v; they overlap: %v", a, b, ok, a.Overlaps(b))
		}
		probes := []netip.Addr{a.First, a.Last, b.First, b.Last, a.First.Prev(), a.Last.Next(), b.First.Prev(), b.Last.Next()}
		if p, ok := probeAddr(probe); ok {
			probes = append(probes, p)
		}
		for _, p := range probes {
			if !p.IsValid() {
				continue
			}
			inRest := false
			for _, r := range rest {
				inRest = inRest || r.Contains(p)
			}
			if want := a.Contains(p) && !b.Contains(p); inRest != want {
				t.Fatalf("%s in %v without %v: %v, want %v (pieces %v)", p, a, b, inRest, want, rest)
			}
			e, ok := x.Lookup(p)
			switch {
			case a.Contains(p) && (!ok || e.Value != "a"):
				t.Fatalf("index lookup of %s = %v %v, want a (%v)", p, e, ok, a)
			case !a.Contains(p) && !a.Overlaps(b) && b.Contains(p) && (!ok || e.Value != "b"):
				t.Fatalf("index lookup of %s = %v %v, want b (%v)", p, e, ok, b)
			case !a.Contains(p) && !b.Contains(p) && ok:
				t.Fatalf("index lookup of %s = %v, want none", p, e)
			}
		}
	})
}
