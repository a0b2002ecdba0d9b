package layer2

import (
	"net"
	"net/netip"
	"testing"

	"golang.org/x/net/bpf"
)

func TestARPFilterPassesOnlyFramesAboutOwnedAddresses(t *testing.T) {
	owned := []netip.Addr{netip.MustParseAddr("198.51.100.64"), netip.MustParseAddr("198.51.100.65")}
	vm, err := bpf.NewVM(arpFilter(owned))
	if err != nil {
		t.Fatal(err)
	}
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 9}
	other, foreign := netip.MustParseAddr("198.51.100.9"), netip.MustParseAddr("198.51.100.61")
	for _, c := range []struct {
		name     string
		spa, tpa netip.Addr
		pass     bool
	}{
		{"request for an owned address", other, owned[1], true},
		{"request for a foreign address", other, foreign, false},
		{"announcement of an owned address by another node", owned[0], owned[0], true},
		{"announcement of a foreign address", foreign, foreign, false},
	} {
		n, err := vm.Run(arpRequest(mac, c.spa, c.tpa))
		if err != nil {
			t.Fatal(err)
		}
		if (n > 0) != c.pass {
			t.Errorf("%s: filter returned %d, want pass %v", c.name, n, c.pass)
		}
	}
	many := make([]netip.Addr, maxFilteredARP+1)
	if arpFilter(many) != nil {
		t.Errorf("a filter for %d addresses, want none (pass everything)", len(many))
	}
	big := make([]netip.Addr, maxFilteredARP)
	for i := range big {
		big[i] = netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
	}
	raw, err := bpf.Assemble(arpFilter(big))
	if err != nil || len(raw) > 4096 {
		t.Errorf("filter for %d addresses: %d instructions, %v; the kernel takes 4,096", len(big), len(raw), err)
	}
}

func TestNDPFilterPassesOnlyMessagesAboutOwnedTargets(t *testing.T) {
	owned := []netip.Addr{netip.MustParseAddr("2001:db8:1::1:1f1"), netip.MustParseAddr("2001:db8:1::1:1f2")}
	vm, err := bpf.NewVM(ndpFilter(owned))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		target netip.Addr
		pass   bool
	}{
		{owned[0], true},
		{owned[1], true},
		{netip.MustParseAddr("2001:db8:9::1:1f1"), false}, // the same solicited-node group
		{netip.MustParseAddr("2001:db8:1::1:1f3"), false},
		{netip.MustParseAddr("2001:db8:1:0:1::1f1"), false},
	} {
		msg := make([]byte, 32)
		msg[0] = 135
		a := c.target.As16()
		copy(msg[8:24], a[:])
		n, err := vm.Run(msg)
		if err != nil {
			t.Fatal(err)
		}
		if (n > 0) != c.pass {
			t.Errorf("solicitation for %s: filter returned %d, want pass %v", c.target, n, c.pass)
		}
	}
	raw, err := bpf.Assemble(ndpFilter(make([]netip.Addr, maxFilteredNDP)))
	if err != nil || len(raw) > 4096 {
		t.Errorf("filter for %d addresses: %d instructions, %v; the kernel takes 4,096", maxFilteredNDP, len(raw), err)
	}
	if ndpFilter(make([]netip.Addr, maxFilteredNDP+1)) != nil {
		t.Error("a filter beyond its bound, want none")
	}
}
