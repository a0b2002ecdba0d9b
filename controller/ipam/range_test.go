package ipam_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/heraldlb/herald/controller/ipam"
)

func TestParseRangeAcceptsCIDRsRangesAndSingleAddresses(t *testing.T) {
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
			r, err := ipam.ParseRange(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			want := ipam.Range{First: netip.MustParseAddr(tc.first), Last: netip.MustParseAddr(tc.last)}
			if r != want {
				t.Fatalf("got %v, want %v", r, want)
			}
			back, err := ipam.ParseRange(r.String())
			if err != nil || back != r {
				t.Fatalf("String() %q does not parse back: %v %v", r.String(), back, err)
			}
		})
	}
}

func TestParseRangeErrorsSayWhatIsWrong(t *testing.T) {
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
			_, err := ipam.ParseRange(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestValidatePoolsNamesPoolsAndRanges(t *testing.T) {
	for _, tc := range []struct {
		name  string
		pools []ipam.Pool
		want  []string // substrings; none means valid
	}{
		{"disjoint pools are valid", []ipam.Pool{
			pool("a", "10.0.0.0/24", "2001:db8::/64"), pool("b", "10.0.1.0/24", "2001:db8:1::/64"),
		}, nil},
		{"adjacent ranges do not overlap", []ipam.Pool{
			pool("a", "10.0.0.0-10.0.0.9"), pool("b", "10.0.0.10-10.0.0.20"),
		}, nil},
		{"overlap across pools", []ipam.Pool{
			pool("a", "10.0.0.0/24"), pool("b", "10.0.0.128/25"),
		}, []string{`pools "a" and "b" overlap: 10.0.0.0/24 and 10.0.0.128/25`}},
		{"one long range swallows two", []ipam.Pool{
			pool("a", "10.0.0.0/16"), pool("b", "10.0.1.0/24"), pool("c", "10.0.2.0/24"),
		}, []string{`pools "a" and "b" overlap`, `pools "a" and "c" overlap`}},
		{"overlap inside a pool", []ipam.Pool{
			pool("a", "2001:db8::/120", "2001:db8::10-2001:db8::20"),
		}, []string{`pool "a": ranges 2001:db8::/120 and 2001:db8::10-2001:db8::20 overlap`}},
		{"missing and repeated names", []ipam.Pool{
			pool("", "10.0.0.1"), pool("a", "10.0.0.2"), pool("a", "10.0.0.3"),
		}, []string{"pool 1 of 3 has no name", `pool "a" is defined twice`}},
		{"hand-built reversed range", []ipam.Pool{
			{Name: "a", Ranges: []ipam.Range{{First: ip("10.0.0.9"), Last: ip("10.0.0.1")}}},
		}, []string{`pool "a": range 10.0.0.9-10.0.0.1 is reversed`}},
		{"hand-built mixed range", []ipam.Pool{
			{Name: "a", Ranges: []ipam.Range{{First: ip("10.0.0.1"), Last: ip("2001:db8::1")}}},
		}, []string{`pool "a": range 10.0.0.1-2001:db8::1 mixes IPv4 and IPv6`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ipam.ValidatePools(tc.pools)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
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
	} {
		if got := (ipam.Range{First: ip(tc.first), Last: ip(tc.last)}).String(); got != tc.want {
			t.Errorf("%s-%s: got %q, want %q", tc.first, tc.last, got, tc.want)
		}
	}
}
