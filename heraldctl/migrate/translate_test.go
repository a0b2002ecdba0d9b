package migrate

import "testing"

// Pool entries are read as MetalLB reads them and written as Herald's CRD
// takes them: CIDRs as their network address, ranges without spaces.
func TestPoolAddressesAreWrittenAsHeraldTakesThem(t *testing.T) {
	for _, tc := range []struct {
		in, out string
		masked  bool
		fails   bool
	}{
		{in: "192.0.2.0/24", out: "192.0.2.0/24"},
		{in: "192.0.2.5/24", out: "192.0.2.0/24", masked: true},
		{in: " 2001:DB8::/32 ", out: "2001:db8::/32"},
		{in: "192.0.2.1 - 192.0.2.9", out: "192.0.2.1-192.0.2.9"},
		{in: "2001:db8::1-2001:db8::ff", out: "2001:db8::1-2001:db8::ff"},
		{in: "198.51.100.7", out: "198.51.100.7"},
		{in: "192.0.2.9-192.0.2.1", fails: true},
		{in: "192.0.2.1-2001:db8::1", fails: true},
		{in: "192.0.2.0/33", fails: true},
		{in: "nonsense", fails: true},
		{in: "", fails: true},
	} {
		out, _, masked, err := poolAddress(tc.in)
		if (err != nil) != tc.fails || out != tc.out || masked != tc.masked {
			t.Errorf("%q: %q masked=%v err=%v; want %q masked=%v fails=%v", tc.in, out, masked, err, tc.out, tc.masked, tc.fails)
		}
	}
}
