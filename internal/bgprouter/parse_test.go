package bgprouter

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// The testdata files are what FRR 8.4.4, BIRD 2.0.12 and iproute2 printed
// in TestFRRAndBIRDReadBackEachOthersRoutes.

func testdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func u32(v uint32) *uint32 { return &v }

func TestParseFRRRoute(t *testing.T) {
	p := netip.MustParsePrefix("203.0.113.200/32")
	r, err := parseFRRRoute(p, testdata(t, "frr-route.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := &Route{Prefix: p, Paths: []Path{{
		From: netip.MustParseAddr("198.51.100.2"), NextHops: addrs("198.51.100.2"), Best: true,
		Communities: []string{"64513:100", "65535:65281"}, LargeCommunities: []string{"64513:3:4"}, ASPath: "64513",
	}}}
	if !reflect.DeepEqual(r, want) {
		t.Errorf("got %+v\nwant %+v", r, want)
	}
	// An answer about another prefix than the one asked, or FRR's empty
	// answer: no route.
	for _, out := range []string{testdata(t, "frr-route.json"), "{}"} {
		if r, err := parseFRRRoute(netip.MustParsePrefix("203.0.113.0/24"), out); r != nil || err != nil {
			t.Errorf("another prefix: %+v, %v; want nil", r, err)
		}
	}
	p6 := netip.MustParsePrefix("2001:db8:4::200/128")
	r, err = parseFRRRoute(p6, testdata(t, "frr-route6.json"))
	if err != nil || len(r.Paths) != 1 || !reflect.DeepEqual(r.NextHops(), addrs("2001:db8:1::2")) {
		t.Errorf("IPv6: %+v, %v", r, err)
	}
}

func TestParseFRRNeighbors(t *testing.T) {
	ns, err := parseFRRNeighbors(testdata(t, "frr-neighbors.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Neighbor{{Name: "198.51.100.2", Address: netip.MustParseAddr("198.51.100.2"), RemoteAS: 64513, State: "Established"}}
	if !reflect.DeepEqual(ns, want) {
		t.Errorf("got %+v\nwant %+v", ns, want)
	}
}

func TestParseBIRDRoute(t *testing.T) {
	p := netip.MustParsePrefix("203.0.113.201/32")
	r, protos, err := parseBIRDRoute(p, testdata(t, "bird-route.txt"))
	if err != nil {
		t.Fatal(err)
	}
	want := &Route{Prefix: p, Paths: []Path{{
		NextHops: addrs("198.51.100.1"), Best: true, LocalPref: u32(100),
		Communities: []string{"64512:7", "64512:8"}, LargeCommunities: []string{"64512:1:2"}, ASPath: "64512",
	}}}
	if !reflect.DeepEqual(r, want) || !reflect.DeepEqual(protos, []string{"frr"}) {
		t.Errorf("got %+v from %v\nwant %+v from [frr]", r, protos, want)
	}
	if r, _, err := parseBIRDRoute(netip.MustParsePrefix("203.0.113.0/24"), testdata(t, "bird-route.txt")); r != nil || err != nil {
		t.Errorf("another prefix: %+v, %v; want nil", r, err)
	}
	if r, _, err := parseBIRDRoute(p, "BIRD 2.0.12 ready.\nNetwork not found\n"); r != nil || err != nil {
		t.Errorf("not found: %+v, %v; want nil", r, err)
	}
}

func TestParseBIRDProtocolsAndNeighbors(t *testing.T) {
	now := time.Date(2026, 11, 30, 20, 8, 0, 0, time.Local)
	ps, err := parseBIRDProtocols(testdata(t, "bird-protocols.txt"), now)
	if err != nil {
		t.Fatal(err)
	}
	since := time.Date(2026, 11, 30, 20, 7, 35, 539e6, time.Local)
	if len(ps) != 5 || ps[4] != (Protocol{Name: "frr", Proto: "BGP", Table: "---", State: "up", Since: since, Info: "Established"}) {
		t.Errorf("protocols: %+v", ps)
	}
	ns, err := parseBIRDNeighbors(testdata(t, "bird-protocols-all.txt"), now)
	if err != nil {
		t.Fatal(err)
	}
	want := []Neighbor{{Name: "frr", Address: netip.MustParseAddr("198.51.100.1"), RemoteAS: 64512, State: "Established", Uptime: now.Sub(since)}}
	if !reflect.DeepEqual(ns, want) {
		t.Errorf("neighbours: got %+v\nwant %+v", ns, want)
	}
	// Just after midnight, a time of day ahead of now is yesterday's.
	ps, _ = parseBIRDProtocols(testdata(t, "bird-protocols.txt"), time.Date(2026, 12, 1, 0, 5, 0, 0, time.Local))
	if !ps[4].Since.Equal(since) {
		t.Errorf("after midnight: since %v, want %v", ps[4].Since, since)
	}
}

func TestParseKernelRoute(t *testing.T) {
	p := netip.MustParsePrefix("203.0.113.200/32")
	r, err := parseKernelRoute(p, testdata(t, "ip-route.json"))
	if err != nil {
		t.Fatal(err)
	}
	if want := (&KernelRoute{Prefix: p, Protocol: "bgp", NextHops: addrs("198.51.100.2"), Devices: []string{"eth0"}}); !reflect.DeepEqual(r, want) {
		t.Errorf("got %+v, want %+v", r, want)
	}
	ecmp := `[{"dst":"203.0.113.200","protocol":"bgp","metric":20,"flags":[],"nexthops":[{"gateway":"198.51.100.12","dev":"eth0","weight":1,"flags":[]},{"gateway":"198.51.100.11","dev":"eth0","weight":1,"flags":[]}]}]`
	r, err = parseKernelRoute(p, ecmp)
	if err != nil || !reflect.DeepEqual(r.NextHops, addrs("198.51.100.11", "198.51.100.12")) {
		t.Errorf("ECMP: %+v, %v", r, err)
	}
	if r, err := parseKernelRoute(p, "[]"); r != nil || err != nil {
		t.Errorf("none: %+v, %v", r, err)
	}
}
