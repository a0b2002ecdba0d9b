package layer2

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/bpf"
)

var (
	ourMAC   = net.HardwareAddr{0x02, 0, 0, 0, 0x02, 0x01}
	theirMAC = net.HardwareAddr{0x02, 0, 0, 0, 0x02, 0x02}
	client   = netip.MustParseAddr("2001:db8:9::202")
	owned    = netip.MustParseAddr("2001:db8:9::210")
)

// frame builds an Ethernet frame to dstMAC with an IPv6 packet holding m.
func frame(t testing.TB, dstMAC net.HardwareAddr, src, dst netip.Addr, hopLimit uint8, m ndp.Message) []byte {
	t.Helper()
	msg, err := ndp.MarshalMessageChecksum(m, src, dst)
	if err != nil {
		t.Fatal(err)
	}
	b := append([]byte{}, dstMAC...)
	b = append(b, theirMAC...)
	b = binary.BigEndian.AppendUint16(b, 0x86dd)
	h := make([]byte, 40)
	h[0] = 6 << 4
	binary.BigEndian.PutUint16(h[4:6], uint16(len(msg)))
	h[6], h[7] = 58, hopLimit
	s, d := src.As16(), dst.As16()
	copy(h[8:24], s[:])
	copy(h[24:40], d[:])
	return append(append(b, h...), msg...)
}

func probe() *ndp.NeighborSolicitation {
	return &ndp.NeighborSolicitation{TargetAddress: owned, Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: theirMAC}}}
}

func TestUnicastNSFilterPassesOnlySolicitationsToOurMAC(t *testing.T) {
	vm, err := bpf.NewVM(unicastNSFilter(ourMAC))
	if err != nil {
		t.Fatal(err)
	}
	na := &ndp.NeighborAdvertisement{TargetAddress: owned}
	for _, tc := range []struct {
		name  string
		frame []byte
		pass  bool
	}{
		{"a solicitation to our MAC", frame(t, ourMAC, client, owned, 255, probe()), true},
		{"a solicitation to another MAC", frame(t, theirMAC, client, owned, 255, probe()), false},
		{"a solicitation to the solicited-node multicast MAC", frame(t, net.HardwareAddr{0x33, 0x33, 0xff, 0, 0x02, 0x10}, client, owned, 255, probe()), false},
		{"an advertisement to our MAC", frame(t, ourMAC, client, owned, 255, na), false},
	} {
		n, err := vm.Run(tc.frame)
		if err != nil {
			t.Fatal(err)
		}
		if got := n > 0; got != tc.pass {
			t.Errorf("%s: passed %v, want %v", tc.name, got, tc.pass)
		}
	}
}

func TestParseUnicastNSAcceptsOnlyValidSolicitations(t *testing.T) {
	good := frame(t, ourMAC, client, owned, 255, probe())
	ns, src, dst, ok := parseUnicastNS(good)
	if !ok || ns.TargetAddress != owned || src != client || dst != owned {
		t.Fatalf("parseUnicastNS(probe) = %v, %s, %s, %v; want the probe for %s from %s", ns, src, dst, ok, owned, client)
	}
	corrupt := append([]byte{}, good...)
	corrupt[len(corrupt)-1] ^= 0xff
	for name, f := range map[string][]byte{
		"hop limit below 255 (from off the link)": frame(t, ourMAC, client, owned, 254, probe()),
		"bad checksum":          corrupt,
		"multicast destination": frame(t, ourMAC, client, netip.MustParseAddr("ff02::1:ff00:210"), 255, probe()),
		"an advertisement":      frame(t, ourMAC, client, owned, 255, &ndp.NeighborAdvertisement{TargetAddress: owned}),
		"truncated":             good[:60],
	} {
		if _, _, _, ok := parseUnicastNS(f); ok {
			t.Errorf("%s: accepted", name)
		}
	}
}
