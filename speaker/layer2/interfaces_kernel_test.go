package layer2_test

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/heraldlb/herald/internal/netnstest"
	"github.com/heraldlb/herald/speaker/layer2"
)

// In a real namespace: the macvlan eth0 qualifies for an address in its
// subnet; loopback, a veth and a bridge with addresses in the same subnet do
// not, unless named.
func TestQualifyingInterfacesInANamespace(t *testing.T) {
	t.Parallel()
	requireTools(t)
	n := newLAN(t)
	ns := n.addHost("q", "02:00:00:00:02:04", "198.51.100.204", "2001:db8:9::204")
	netnstest.IPBatch(t, ns,
		"addr add 198.51.100.250/24 dev lo",
		"addr add 2001:db8:9::250/64 dev lo",
		"link add veth0 type veth peer name veth1",
		"link set veth0 up",
		"link set veth1 up",
		"addr add 198.51.100.5/24 dev veth0",
		"addr add 2001:db8:9::5/64 dev veth0",
		"link add br0 type bridge",
		"link set br0 up",
		"addr add 198.51.100.6/24 dev br0",
		"link add veth2 type veth peer name veth3", // veth2 stays down
		"addr add 198.51.100.7/24 dev veth2",
	)
	type call struct {
		ip      netip.Addr
		allowed []string
	}
	want := map[*call][]string{
		{vip4, nil}: {"eth0"},
		{vip6, nil}: {"eth0"},
		{netip.MustParseAddr("198.51.100.20"), nil}: nil, // in the /24s of lo, veth0 and br0 only
		{vip4, []string{"veth0"}}:                   {"veth0"},
		{vip4, []string{"lo", "eth9"}}:              {"lo"},
		{vip4, []string{"veth2", "eth0"}}:           {"eth0"}, // veth2 is down
	}
	got := map[*call][]string{}
	var subnets map[netip.Prefix][]string
	var names []string
	inNetns(t, ns, func() {
		for c := range want {
			ifs, err := layer2.QualifyingInterfaces(c.ip, c.allowed)
			if err != nil {
				t.Errorf("QualifyingInterfaces(%s, %q): %v", c.ip, c.allowed, err)
			}
			got[c] = ifs
		}
		var err error
		if subnets, names, err = layer2.LocalSubnets(); err != nil {
			t.Errorf("LocalSubnets: %v", err)
		}
	})
	for c, w := range want {
		if !slices.Equal(got[c], w) {
			t.Errorf("QualifyingInterfaces(%s, %q) = %q, want %q", c.ip, c.allowed, got[c], w)
		}
	}
	wantSubnets := map[netip.Prefix][]string{
		netip.MustParsePrefix("198.51.100.128/25"): {"eth0"},
		netip.MustParsePrefix("2001:db8:9::/64"):   {"eth0"},
	}
	if len(subnets) != len(wantSubnets) {
		t.Errorf("LocalSubnets subnets = %v, want %v", subnets, wantSubnets)
	}
	for p, ifs := range wantSubnets {
		if !slices.Equal(subnets[p], ifs) {
			t.Errorf("LocalSubnets subnets = %v, want %v", subnets, wantSubnets)
		}
	}
	if w := []string{"br0", "eth0", "lo", "veth0", "veth1"}; !slices.Equal(names, w) {
		t.Errorf("LocalSubnets names = %q, want %q (the up interfaces)", names, w)
	}
}
