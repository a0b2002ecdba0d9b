package iprange_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/heraldlb/herald/internal/iprange"
)

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func rng(s string) iprange.Range {
	r, err := iprange.Parse(s)
	if err != nil {
		panic(err)
	}
	return r
}

func TestParseAcceptsCIDRsRangesAndSingleAddresses(t *testing.T) {
	for _, tc := range []struct {
		in          string
		first, last string
	}{
		{"203.0.113.0/24", "203.0.113.0", "203.0.113.255"},
		{"203.0.113.10-203.0.113.20", "203.0.113.10", "203.0.113.20"},
		{" 203.0.113.10 - 203.0.113.20 ", "203.0.113.10", "203.0.113.20"},
		{"203.0.113.7", "203.0.113.7", "203.0.113.7"},
		{"203.0.113.7/32", "203.0.113.7", "203.0.113.7"},
		{"0.0.0.0/0", "0.0.0.0", "255.255.255.255"},
		{"2001:db8::/64", "2001:db8::", "2001:db8::ffff:ffff:ffff:ffff"},
		{"2001:db8::/48", "2001:db8::", "2001:db8:0:ffff:ffff:ffff:ffff:ffff"},
		{"2001:db8::1-2001:db8::5", "2001:db8::1", "2001:db8::5"},
		{"2001:db8::1/128", "2001:db8::1", "2001:db8::1"},
		{"::/0", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			r, err := iprange.Parse(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			want := iprange.Range{First: ip(tc.first), Last: ip(tc.last)}
			if r != want {
				t.Fatalf("got %v, want %v", r, want)
			}
			back, err := iprange.Parse(r.String())
			if err != nil || back != r {
				t.Fatalf("String() %q does not parse back: %v %v", r.String(), back, err)
			}
		})
	}
}

func TestParseErrorsSayWhatIsWrong(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"10.0.0.9-10.0.0.1", "range 10.0.0.9-10.0.0.1 is reversed"},
		{"2001:db8::9-2001:db8::1", "range 2001:db8::9-2001:db8::1 is reversed"},
		{"10.0.0.1-2001:db8::1", "range 10.0.0.1-2001:db8::1 mixes IPv4 and IPv6"},
		{"10.0.0.5/24", "write the network address 10.0.0.0/24"},
		{"2001:db8::1/64", "write the network address 2001:db8::/64"},
		{"10.0.0.0/33", `prefix length "33" is not a number from 0 to 32`},
		{"10.0.0.0/x", `prefix length "x"`},
		{"10.0.0.x", `"10.0.0.x" is not an IP address`},
		{"10.0.0.1-10.0.0.x", `range "10.0.0.1-10.0.0.x": "10.0.0.x" is not an IP address`},
		{"10.0.0.1-", `range "10.0.0.1-": "" is not an IP address`},
		{"10.0.0.1-10.0.0.2-10.0.0.3", `"10.0.0.2-10.0.0.3" is not an IP address`},
		{"fe80::1%eth0", "has a zone"},
		{"", "empty address range"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			_, err := iprange.Parse(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestRangeStringWritesCIDRsWhereTheyFit(t *testing.T) {
	for _, tc := range []struct{ first, last, want string }{
		{"10.0.0.0", "10.0.0.255", "10.0.0.0/24"},
		{"10.0.0.0", "10.0.0.1", "10.0.0.0/31"},
		{"10.0.0.1", "10.0.0.4", "10.0.0.1-10.0.0.4"},
		{"10.0.0.0", "10.0.0.254", "10.0.0.0-10.0.0.254"},
		{"10.0.0.7", "10.0.0.7", "10.0.0.7"},
		{"0.0.0.0", "255.255.255.255", "0.0.0.0/0"},
		{"::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::/0"},
		{"2001:db8::", "2001:db8::ffff:ffff:ffff:ffff", "2001:db8::/64"},
		{"2001:db8::1", "2001:db8::ffff:ffff:ffff:ffff", "2001:db8::1-2001:db8::ffff:ffff:ffff:ffff"},
		{"10.0.0.9", "10.0.0.1", "10.0.0.9-10.0.0.1"},
	} {
		if got := (iprange.Range{First: ip(tc.first), Last: ip(tc.last)}).String(); got != tc.want {
			t.Errorf("%s-%s: got %q, want %q", tc.first, tc.last, got, tc.want)
		}
	}
}

func TestPrefixesSplitARangeIntoTheFewestCIDRs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"198.51.100.64/27", []string{"198.51.100.64/27"}},
		{"198.51.100.7", []string{"198.51.100.7/32"}},
		{"198.51.100.10-198.51.100.20", []string{"198.51.100.10/31", "198.51.100.12/30", "198.51.100.16/30", "198.51.100.20/32"}},
		{"198.51.100.0-198.51.100.254", []string{"198.51.100.0/25", "198.51.100.128/26", "198.51.100.192/27", "198.51.100.224/28", "198.51.100.240/29", "198.51.100.248/30", "198.51.100.252/31", "198.51.100.254/32"}},
		{"198.51.100.255-198.51.101.0", []string{"198.51.100.255/32", "198.51.101.0/32"}},
		{"0.0.0.0/0", []string{"0.0.0.0/0"}},
		{"255.255.255.254-255.255.255.255", []string{"255.255.255.254/31"}},
		{"2001:db8::1-2001:db8::10", []string{"2001:db8::1/128", "2001:db8::2/127", "2001:db8::4/126", "2001:db8::8/125", "2001:db8::10/128"}},
		{"::/0", []string{"::/0"}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			var got []string
			for _, p := range rng(tc.in).Prefixes() {
				got = append(got, p.String())
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	if got := (iprange.Range{First: ip("10.0.0.9"), Last: ip("10.0.0.1")}).Prefixes(); got != nil {
		t.Errorf("a reversed range has prefixes %v", got)
	}
}

// The prefixes of a range follow each other without gap from First to Last,
// and each is maximal: its parent prefix reaches outside the range. Maximal
// prefixes inside a range never nest, so this is the fewest CIDRs.
func TestPropertyPrefixesAreContiguousAndMaximal(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		base := rapid.SampledFrom([]string{"198.51.100.0", "2001:db8::", "255.255.255.0", "::"}).Draw(t, "base")
		// add steps n addresses up, stopping at the family's last address.
		add := func(a netip.Addr, n int) netip.Addr {
			for ; n > 0 && a.Next().IsValid(); n-- {
				a = a.Next()
			}
			return a
		}
		a := add(ip(base), rapid.IntRange(0, 300).Draw(t, "lo"))
		b := add(a, rapid.IntRange(0, 300).Draw(t, "len"))
		r := iprange.Range{First: a, Last: b}
		ps := r.Prefixes()
		if len(ps) == 0 {
			t.Fatalf("%s: no prefixes", r)
		}
		next := r.First
		for i, p := range ps {
			pr := iprange.FromPrefix(p)
			if p.Addr() != next || pr.First != p.Addr() {
				t.Fatalf("%s: prefix %d %s does not start at %s", r, i, p, next)
			}
			if !r.Contains(pr.Last) {
				t.Fatalf("%s: prefix %s reaches outside", r, p)
			}
			if p.Bits() > 0 {
				parent := iprange.FromPrefix(netip.PrefixFrom(p.Addr(), p.Bits()-1))
				if r.Contains(parent.First) && r.Contains(parent.Last) {
					t.Fatalf("%s: prefix %s is not maximal: %s fits", r, p, parent)
				}
			}
			next = pr.Last.Next()
		}
		if last := iprange.FromPrefix(ps[len(ps)-1]).Last; last != r.Last {
			t.Fatalf("%s: prefixes end at %s", r, last)
		}
	})
}

func TestOverlapsAndContainsKeepFamiliesApart(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"10.0.0.0/24", "10.0.0.255", true},
		{"10.0.0.0-10.0.0.9", "10.0.0.10-10.0.0.20", false},
		{"10.0.0.0/16", "10.0.7.0/24", true},
		{"10.0.0.0/8", "::ffff:10.0.0.0/120", false},
		{"0.0.0.0/0", "::/0", false},
		{"2001:db8::/64", "2001:db8::ffff:ffff:ffff:ffff-2001:db8:0:1::", true},
	} {
		a, b := rng(tc.a), rng(tc.b)
		if a.Overlaps(b) != tc.want || b.Overlaps(a) != tc.want {
			t.Errorf("%s overlaps %s: want %v", tc.a, tc.b, tc.want)
		}
	}
	if rng("::/0").Contains(ip("10.0.0.1")) || rng("0.0.0.0/0").Contains(ip("::ffff:10.0.0.1")) {
		t.Error("a range holds an address of the other family")
	}
}

func TestWithoutCutsOutExactlyTheOtherRanges(t *testing.T) {
	for _, tc := range []struct {
		r     string
		minus []string
		want  []string
	}{
		{"198.51.100.0/24", []string{"198.51.100.128/25"}, []string{"198.51.100.0/25"}},
		{"203.0.113.0/28", []string{"203.0.113.5"}, []string{"203.0.113.0-203.0.113.4", "203.0.113.6-203.0.113.15"}},
		{"10.0.0.0/30", []string{"10.0.0.0/8"}, nil},
		{"10.0.0.0/30", []string{"::/0", "10.0.1.0/24"}, []string{"10.0.0.0/30"}},
		{"2001:db8::/126", []string{"2001:db8::1", "2001:db8::3"}, []string{"2001:db8::", "2001:db8::2"}},
		{"0.0.0.0/0", []string{"0.0.0.0", "255.255.255.255"}, []string{"0.0.0.1-255.255.255.254"}},
	} {
		var minus []iprange.Range
		for _, m := range tc.minus {
			minus = append(minus, rng(m))
		}
		var got []string
		for _, r := range rng(tc.r).Without(minus...) {
			got = append(got, r.String())
		}
		if strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("%s without %v = %v, want %v", tc.r, tc.minus, got, tc.want)
		}
	}
}

// TestPropertyWithoutAgreesWithAnAddressByAddressCheck on a small IPv4 space.
func TestPropertyWithoutAgreesWithAnAddressByAddressCheck(t *testing.T) {
	addr := func(n int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, 0, byte(n)}) }
	span := func(t *rapid.T, label string) iprange.Range {
		a, b := rapid.IntRange(0, 63).Draw(t, label+".a"), rapid.IntRange(0, 63).Draw(t, label+".b")
		return iprange.Range{First: addr(min(a, b)), Last: addr(max(a, b))}
	}
	rapid.Check(t, func(t *rapid.T) {
		r := span(t, "r")
		var minus []iprange.Range
		for i := range rapid.IntRange(0, 4).Draw(t, "n") {
			minus = append(minus, span(t, fmt.Sprint("minus", i)))
		}
		got := r.Without(minus...)
		for i, x := range got {
			if x.Validate() != nil || (i > 0 && !got[i-1].Last.Less(x.First)) {
				t.Fatalf("%v without %v = %v: not valid ascending disjoint ranges", r, minus, got)
			}
		}
		for n := range 64 {
			a := addr(n)
			want := r.Contains(a)
			for _, m := range minus {
				want = want && !m.Contains(a)
			}
			held := false
			for _, x := range got {
				held = held || x.Contains(a)
			}
			if held != want {
				t.Fatalf("%v without %v = %v: holds %s is %v, want %v", r, minus, got, a, held, want)
			}
		}
	})
}
