package ipam_test

import (
	"strings"
	"testing"

	"github.com/heraldlb/herald/controller/ipam"
	"github.com/heraldlb/herald/internal/iprange"
)

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
			{Name: "a", Ranges: []iprange.Range{{First: ip("10.0.0.9"), Last: ip("10.0.0.1")}}},
		}, []string{`pool "a": range 10.0.0.9-10.0.0.1 is reversed`}},
		{"hand-built mixed range", []ipam.Pool{
			{Name: "a", Ranges: []iprange.Range{{First: ip("10.0.0.1"), Last: ip("2001:db8::1")}}},
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
