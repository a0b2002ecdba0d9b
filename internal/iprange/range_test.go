package iprange_test

import (
	"net/netip"
	"strings"
	"testing"

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
