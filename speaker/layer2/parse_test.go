package layer2

import (
	"net"
	"net/netip"
	"testing"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
)

func TestParseARPFrameReadsWhatMdlayherWrites(t *testing.T) {
	sha := net.HardwareAddr{2, 0, 0, 0, 0, 9}
	p, err := arp.NewPacket(arp.OperationRequest, sha, netip.MustParseAddr("198.51.100.9"), make(net.HardwareAddr, 6), netip.MustParseAddr("198.51.100.64"))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := p.MarshalBinary()
	frame, _ := (&ethernet.Frame{Destination: ethernet.Broadcast, Source: sha, EtherType: ethernet.EtherTypeARP, Payload: payload}).MarshalBinary()
	f, ok := parseARPFrame(frame)
	if !ok {
		t.Fatal("a valid ARP request not parsed")
	}
	want := arpFrame{ethSrc: [6]byte(sha), op: arp.OperationRequest, sha: [6]byte(sha),
		spa: netip.MustParseAddr("198.51.100.9"), tpa: netip.MustParseAddr("198.51.100.64")}
	if f != want {
		t.Errorf("parsed %+v, want %+v", f, want)
	}
	for name, mutate := range map[string]func([]byte){
		"short":             func(b []byte) {},
		"not ARP":           func(b []byte) { b[12], b[13] = 0x08, 0x00 },
		"hardware type 6":   func(b []byte) { b[15] = 6 },
		"protocol not IPv4": func(b []byte) { b[16], b[17] = 0x86, 0xdd },
		"plen 16":           func(b []byte) { b[19] = 16 },
	} {
		b := append([]byte(nil), frame...)
		if name == "short" {
			b = b[:41]
		}
		mutate(b)
		if _, ok := parseARPFrame(b); ok {
			t.Errorf("%s: parsed, want refused", name)
		}
	}
}

func TestNDPTargetReadsTheTargetOfSolicitationsAndAdvertisementsOnly(t *testing.T) {
	target := netip.MustParseAddr("2001:db8:1::1:1")
	ns, _ := ndp.MarshalMessage(&ndp.NeighborSolicitation{TargetAddress: target})
	na, _ := ndp.MarshalMessage(&ndp.NeighborAdvertisement{TargetAddress: target})
	rs, _ := ndp.MarshalMessage(&ndp.RouterSolicitation{})
	for name, c := range map[string]struct {
		msg []byte
		ok  bool
	}{"NS": {ns, true}, "NA": {na, true}, "RS": {rs, false}, "short NS": {ns[:23], false}} {
		got, ok := ndpTarget(c.msg)
		if ok != c.ok || (ok && got != target) {
			t.Errorf("%s: %v %v, want %v", name, got, ok, c.ok)
		}
	}
}
