package iprange_test

import (
	"net/netip"
	"testing"

	"pgregory.net/rapid"

	"github.com/heraldlb/herald/internal/iprange"
)

func TestIndexRefusesAnOverlapNamingTheRangeInTheWay(t *testing.T) {
	var x iprange.Index[string]
	for _, tc := range []struct {
		r, value  string
		conflicts string // the value of the range in the way; "" when added
	}{
		{"10.0.0.0/24", "a", ""},
		{"10.0.2.0/24", "b", ""},
		{"2001:db8::/64", "v6", ""},
		{"10.0.0.255-10.0.1.5", "c", "a"},
		{"10.0.1.0-10.0.2.0", "d", "b"},
		{"10.0.1.0/24", "e", ""},
		{"0.0.0.0/0", "all", "a"},
		{"::ffff:10.0.0.0/120", "mapped", ""},
		{"2001:db8::ffff", "f", "v6"},
	} {
		got, ok := x.Add(rng(tc.r), tc.value)
		if ok != (tc.conflicts == "") || got.Value != tc.conflicts {
			t.Errorf("Add(%s): conflict %q ok %v, want conflict %q", tc.r, got.Value, ok, tc.conflicts)
		}
	}
	if x.Len() != 5 {
		t.Fatalf("index holds %d ranges, want 5", x.Len())
	}
	for addr, want := range map[string]string{
		"10.0.0.0": "a", "10.0.0.255": "a", "10.0.1.7": "e", "10.0.2.255": "b", "10.0.3.0": "",
		"9.255.255.255": "", "2001:db8::": "v6", "2001:db8:0:1::": "", "::ffff:10.0.0.1": "mapped",
		"255.255.255.255": "", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff": "",
	} {
		e, ok := x.Lookup(ip(addr))
		if ok != (want != "") || e.Value != want {
			t.Errorf("Lookup(%s) = %q %v, want %q", addr, e.Value, ok, want)
		}
	}
}

// TestIndexAgreesWithALinearScan checks Add, FirstOverlap and Lookup against
// the obvious quadratic definitions, near both ends of both families, where
// "the next address" wraps.
func TestIndexAgreesWithALinearScan(t *testing.T) {
	bases := []netip.Addr{ip("0.0.0.0"), ip("255.255.255.200"), ip("::"), ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00")}
	rapid.Check(t, func(t *rapid.T) {
		at := func(base netip.Addr, off int) netip.Addr {
			for range off {
				if n := base.Next(); n.IsValid() {
					base = n // stays on the family's last address
				}
			}
			return base
		}
		drawRange := func(label string) iprange.Range {
			base := rapid.SampledFrom(bases).Draw(t, label+" base")
			lo := rapid.IntRange(0, 50).Draw(t, label+" lo")
			n := rapid.IntRange(0, 10).Draw(t, label+" len")
			return iprange.Range{First: at(base, lo), Last: at(base, lo+n)}
		}
		var x iprange.Index[int]
		var held []iprange.Range
		for i := range rapid.IntRange(1, 30).Draw(t, "ranges") {
			r := drawRange("range")
			var want int = -1
			for j, h := range held {
				if h.Overlaps(r) && (want < 0 || h.First.Less(held[want].First)) {
					want = j
				}
			}
			got, ok := x.Add(r, len(held))
			if ok != (want < 0) || (!ok && got.Value != want) {
				t.Fatalf("Add #%d %s: got %v %v, want conflict with %d", i, r, got, ok, want)
			}
			if ok {
				held = append(held, r)
			}
		}
		for range 50 {
			a := at(rapid.SampledFrom(bases).Draw(t, "probe base"), rapid.IntRange(0, 60).Draw(t, "probe"))
			want := -1
			for j, h := range held {
				if h.Contains(a) {
					want = j
				}
			}
			e, ok := x.Lookup(a)
			if ok != (want >= 0) || (ok && e.Value != want) {
				t.Fatalf("Lookup(%s) = %v %v, want %d", a, e, ok, want)
			}
		}
	})
}
