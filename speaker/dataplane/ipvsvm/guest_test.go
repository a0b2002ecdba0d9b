package ipvsvm

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudflare/ipvs"
	"github.com/cloudflare/ipvs/netmask"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/heraldlb/herald/speaker/dataplane"
)

// The guest's network. The VM's own namespace is the node: IPVS, the
// dummy link and the nftables table are all there, as on a real node. The
// client and each backend have a namespace of their own and a veth pair to
// the node; the node routes between them.
var (
	nodeClient4 = netip.MustParseAddr("198.51.100.1")
	client4     = netip.MustParseAddr("198.51.100.2")
	client4b    = netip.MustParseAddr("198.51.100.3") // a second client address, for sh
	nodeClient6 = netip.MustParseAddr("2001:db8:c::1")
	client6     = netip.MustParseAddr("2001:db8:c::2")

	vip4 = netip.MustParseAddr("203.0.113.100")
	vip6 = netip.MustParseAddr("2001:db8:f::100")

	// foreignVIP stands for kube-proxy's: an IPVS service for an address on
	// another link, which the backend must never touch.
	foreignVIP = netip.MustParseAddr("10.96.0.1")
)

const backendPort = 8080

// backend is one backend namespace: b1, b2, b3.
type backend struct {
	name       string
	ns         netns.NsHandle
	addr4      netip.Addr // its own address
	node4      netip.Addr // the node's address on its link
	addr6      netip.Addr
	node6      netip.Addr
	httpServer *http.Server
}

type guest struct {
	client   netns.NsHandle
	backends []*backend
}

// TestGuestIPVSBackend is the whole case, in the order a node lives it:
// programmed from nothing, served, changed, adopted by a new process,
// cleaned up.
func TestGuestIPVSBackend(t *testing.T) {
	if os.Getenv(guestEnv) == "" {
		t.Skip("runs only inside the VM (TestIPVSBackendInVM boots it)")
	}
	g := setUp(t)
	ctx := context.Background()

	kube := addForeignService(t)

	b, err := dataplane.NewIPVS(dataplane.IPVSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rs := ruleSet(g.backends)
	start := time.Now()
	st, err := b.Sync(ctx, rs)
	if err != nil {
		t.Fatalf("first Sync: %v", err)
	}
	t.Logf("guest: first Sync %+v in %s", st, time.Since(start).Round(time.Microsecond))
	if !st.Full || st.Services != len(rs.Services) {
		t.Errorf("first Sync stats %+v: want full, %d services", st, len(rs.Services))
	}
	checkKernel(t, rs)

	t.Run("rr alternates across the backends", func(t *testing.T) {
		got := g.names(t, client4, vip4, 80, 6)
		for i := 1; i < len(got); i++ {
			if got[i] == got[i-1] {
				t.Errorf("rr: %v: the same backend twice in a row", got)
			}
		}
		for _, b := range []string{"b1", "b2", "b3"} {
			if n := count(got, b); n != 2 {
				t.Errorf("rr: %v: %s answered %d of 6, want 2", got, b, n)
			}
		}
	})
	t.Run("sh sticks per source address", func(t *testing.T) {
		for _, src := range []netip.Addr{client4, client4b} {
			got := g.names(t, src, vip4, 81, 4)
			if count(got, got[0]) != len(got) {
				t.Errorf("sh from %s: %v, want one backend", src, got)
			}
		}
	})
	t.Run("lc prefers the idle backend", func(t *testing.T) {
		held, busy := g.hold(t, client4, vip4, 82)
		defer held.Close()
		for _, name := range g.names(t, client4, vip4, 82, 3) {
			if name == busy {
				t.Errorf("lc sent a new connection to %s, which holds an open one, not to the idle backend", busy)
			}
		}
	})
	t.Run("wrr dh sed nq serve", func(t *testing.T) {
		for _, port := range []uint16{83, 84, 85, 86} {
			g.names(t, client4, vip4, port, 2)
		}
	})
	t.Run("affinity sticks under rr", func(t *testing.T) {
		got := g.names(t, client4, vip4, 87, 5)
		if count(got, got[0]) != len(got) {
			t.Errorf("persistent rr: %v, want one backend", got)
		}
	})
	t.Run("a masqueraded service's destinations see the node, the others the client", func(t *testing.T) {
		for _, fam := range []struct{ vip, client netip.Addr }{{vip4, client4}, {vip6, client6}} {
			masq, plain := map[string]string{}, map[string]string{}
			for range 4 {
				name, src := g.get(t, fam.client, fam.vip, 88)
				masq[name] = src
				name, src = g.get(t, fam.client, fam.vip, 80)
				plain[name] = src
			}
			for _, b := range g.backends[:2] {
				node := b.node4
				if fam.vip.Is6() {
					node = b.node6
				}
				if masq[b.name] != node.String() {
					t.Errorf("%s:88 (masquerade): %s saw %q; want the node's %s (all seen: %v)", fam.vip, b.name, masq[b.name], node, masq)
				}
				if plain[b.name] != fam.client.String() {
					t.Errorf("%s:80: %s saw %q; want the client's %s (all seen: %v)", fam.vip, b.name, plain[b.name], fam.client, plain)
				}
			}
		}
	})
	t.Run("UDP: rr across the backends, masqueraded", func(t *testing.T) {
		seen := map[string]string{}
		for range 4 {
			name, src := g.udp(t, client4, vip4, 53)
			seen[name] = src
		}
		for _, b := range g.backends[:2] {
			if seen[b.name] != b.node4.String() {
				t.Errorf("UDP sources seen %v; want %s to see the node's %s", seen, b.name, b.node4)
			}
		}
	})
	t.Run("IPv6 VIP serves", func(t *testing.T) {
		g.names(t, client6, vip6, 80, 2)
	})
	t.Run("the node never answers ARP or NDP for a VIP", func(t *testing.T) {
		g.checkNoNeighbourAnswer(t)
	})
	present(t, kube, true)

	// A partial sync: b3 goes from the rr service on port 80.
	i := slices.IndexFunc(rs.Services, func(vs dataplane.VirtualService) bool {
		return vs.Key == dataplane.Key{IP: vip4, Protocol: dataplane.TCP, Port: 80}
	})
	rs.Services[i].Destinations = slices.DeleteFunc(rs.Services[i].Destinations, func(d dataplane.Destination) bool {
		return d.Addr == g.backends[2].addr4
	})
	if st, err := b.Sync(ctx, rs); err != nil || st.Full {
		t.Fatalf("partial Sync: %+v, %v; want a partial sync", st, err)
	}
	t.Run("after a partial sync rr skips the removed backend", func(t *testing.T) {
		if got := g.names(t, client4, vip4, 80, 4); slices.Contains(got, "b3") {
			t.Errorf("rr after removing b3: %v", got)
		}
	})
	checkKernel(t, rs)

	// A restart: a new backend adopts what the old one left, with no gap.
	// Had it recreated a service, the kernel's connection counter of that
	// service would have started again from zero.
	before := connections(t, vip4, 80)
	b2, err := dataplane.NewIPVS(dataplane.IPVSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := b2.Sync(ctx, rs); err != nil || !st.Full {
		t.Fatalf("Sync after restart: %+v, %v; want a full sync", st, err)
	}
	checkKernel(t, rs)
	if after := connections(t, vip4, 80); before == 0 || after < before {
		t.Errorf("connections counted by %s:80: %d before the restart, %d after; want the service kept, not recreated", vip4, before, after)
	}
	g.names(t, client4, vip4, 80, 2)

	if err := b2.Cleanup(ctx); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	t.Run("Cleanup removes everything of ours and nothing else", func(t *testing.T) {
		checkKernel(t, dataplane.RuleSet{})
		if _, err := netlink.LinkByName("herald-ipvs0"); err == nil {
			t.Error("herald-ipvs0 is still there")
		}
		c, _ := nftables.New()
		tables, err := c.ListTables()
		if err != nil {
			t.Fatal(err)
		}
		for _, tb := range tables {
			if tb.Name == "herald-ipvs" {
				t.Errorf("nftables table %v herald-ipvs is still there", tb.Family)
			}
		}
		present(t, kube, true)
	})

	t.Run("200 services: full sync, one change, cleanup", func(t *testing.T) {
		measureScale(t, g.backends)
	})
}

// measureScale times the backend at 200 virtual services (50 VIPs, 4
// ports, 3 destinations each) and logs it; under QEMU's
// software emulation, so slower than a real node. 200, not thousands: it
// runs in every unit phase (1000 took 5.8 s to sync, 4.2 s to clean up
// here).
func measureScale(t *testing.T, bs []*backend) {
	ctx := context.Background()
	var rs dataplane.RuleSet
	for i := range 50 {
		vip := netip.AddrFrom4([4]byte{198, 18, byte(i / 200), byte(1 + i%200)})
		for p := range uint16(4) {
			vs := dataplane.VirtualService{Key: dataplane.Key{IP: vip, Protocol: dataplane.TCP, Port: 1000 + p}, Scheduler: dataplane.RoundRobin}
			for _, b := range bs {
				vs.Destinations = append(vs.Destinations, dataplane.Destination{Addr: b.addr4, Port: backendPort})
			}
			rs.Services = append(rs.Services, vs)
		}
	}
	b, err := dataplane.NewIPVS(dataplane.IPVSOptions{})
	must(t, err)
	start := time.Now()
	st, err := b.Sync(ctx, rs)
	must(t, err)
	full := time.Since(start)
	rs.Services[100].Destinations = rs.Services[100].Destinations[1:]
	start = time.Now()
	if _, err := b.Sync(ctx, rs); err != nil {
		t.Fatal(err)
	}
	partial := time.Since(start)
	start = time.Now()
	must(t, b.Cleanup(ctx))
	cleanup := time.Since(start)
	t.Logf("guest: %d services, %d kernel objects: full Sync %s, partial Sync (one destination) %s, Cleanup %s (software emulation)",
		st.Services, st.Rules, full.Round(time.Millisecond), partial.Round(time.Microsecond), cleanup.Round(time.Millisecond))
	c, err := ipvs.New()
	must(t, err)
	left, err := c.Services()
	must(t, err)
	if len(left) != 1 { // kube-proxy's
		t.Errorf("after Cleanup %d IPVS services are left, want only the foreign one", len(left))
	}
}

// ruleSet is what the node programs: one service per scheduler on vip4,
// persistence on 87, masquerading on 88 for both families and on UDP 53.
func ruleSet(bs []*backend) dataplane.RuleSet {
	dests := func(six bool, names ...string) []dataplane.Destination {
		var out []dataplane.Destination
		for _, b := range bs {
			if slices.Contains(names, b.name) {
				a := b.addr4
				if six {
					a = b.addr6
				}
				out = append(out, dataplane.Destination{Addr: a, Port: backendPort})
			}
		}
		slices.SortFunc(out, dataplane.Destination.Compare)
		return out
	}
	svc := func(vip netip.Addr, port uint16, s dataplane.Scheduler, aff time.Duration, d []dataplane.Destination) dataplane.VirtualService {
		return dataplane.VirtualService{Key: dataplane.Key{IP: vip, Protocol: dataplane.TCP, Port: port}, Scheduler: s, Affinity: aff, Destinations: d}
	}
	udp := func(vs dataplane.VirtualService) dataplane.VirtualService {
		vs.Protocol = dataplane.UDP
		return vs
	}
	masq := func(vs dataplane.VirtualService) dataplane.VirtualService {
		vs.Masquerade = true
		return vs
	}
	all := []string{"b1", "b2", "b3"}
	rs := dataplane.RuleSet{Services: []dataplane.VirtualService{
		svc(vip4, 80, dataplane.RoundRobin, 0, dests(false, all...)),
		svc(vip4, 81, dataplane.SourceHash, 0, dests(false, all...)),
		svc(vip4, 82, dataplane.LeastConn, 0, dests(false, "b1", "b2")),
		svc(vip4, 83, dataplane.WeightedRR, 0, dests(false, "b1", "b2")),
		svc(vip4, 84, dataplane.DestinationHash, 0, dests(false, "b1", "b2")),
		svc(vip4, 85, dataplane.ShortestDelay, 0, dests(false, "b1", "b2")),
		svc(vip4, 86, dataplane.NeverQueue, 0, dests(false, "b1", "b2")),
		svc(vip4, 87, dataplane.Random, time.Minute, dests(false, all...)),
		masq(svc(vip4, 88, dataplane.RoundRobin, 0, dests(false, "b1", "b2"))),
		svc(vip6, 80, dataplane.RoundRobin, 0, dests(true, "b1", "b2")),
		masq(udp(svc(vip4, 53, dataplane.RoundRobin, 0, dests(false, "b1", "b2")))),
		masq(svc(vip6, 88, dataplane.RoundRobin, 0, dests(true, "b1", "b2"))),
	}}
	slices.SortFunc(rs.Services, func(a, b dataplane.VirtualService) int { return a.Key.Compare(b.Key) })
	return rs
}

// checkKernel compares the kernel's IPVS services on our VIPs with rs.
func checkKernel(t *testing.T, rs dataplane.RuleSet) {
	t.Helper()
	c, err := ipvs.New()
	if err != nil {
		t.Fatal(err)
	}
	all, err := c.Services()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, s := range all {
		if s.Address != vip4 && s.Address != vip6 {
			continue
		}
		ds, err := c.Destinations(s.Service)
		if err != nil {
			t.Fatal(err)
		}
		got[netip.AddrPortFrom(s.Address, s.Port).String()] = len(ds)
	}
	want := map[string]int{}
	for _, vs := range rs.Services {
		want[netip.AddrPortFrom(vs.IP, vs.Port).String()] = len(vs.Destinations)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("kernel IPVS services (destinations each):\n%v\nwant\n%v", got, want)
	}
}

// connections is the kernel's count of connections the service took.
func connections(t *testing.T, vip netip.Addr, port uint16) uint64 {
	t.Helper()
	c, err := ipvs.New()
	must(t, err)
	s, err := c.Service(ipvs.Service{Address: vip, Port: port, Protocol: ipvs.TCP, Family: ipvs.INET})
	must(t, err, fmt.Sprintf("IPVS service %s:%d", vip, port))
	return max(s.Stats.Connections, s.Stats64.Connections)
}

// addForeignService makes what kube-proxy would have: a dummy link
// kube-ipvs0 with an address, and an IPVS service for it.
func addForeignService(t *testing.T) ipvs.Service {
	t.Helper()
	link := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "kube-ipvs0"}}
	must(t, netlink.LinkAdd(link))
	must(t, netlink.AddrAdd(link, addr(foreignVIP)))
	c, err := ipvs.New()
	must(t, err)
	s := ipvs.Service{Address: foreignVIP, Port: 443, Protocol: ipvs.TCP, Family: ipvs.INET, Scheduler: "rr", Netmask: netmaskAll}
	must(t, c.CreateService(s))
	return s
}

func present(t *testing.T, s ipvs.Service, want bool) {
	t.Helper()
	c, err := ipvs.New()
	must(t, err)
	_, err = c.Service(s)
	if (err == nil) != want {
		t.Errorf("foreign IPVS service %s:%d present: %v, want %v", s.Address, s.Port, err == nil, want)
	}
}

// names GETs the VIP n times, each on a new connection, and returns the
// names of the backends that answered.
func (g *guest) names(t *testing.T, src, vip netip.Addr, port uint16, n int) []string {
	t.Helper()
	var out []string
	for range n {
		name, _ := g.get(t, src, vip, port)
		out = append(out, name)
	}
	return out
}

// get does an HTTP GET from the client's address src to vip:port and
// returns the backend's name and the source address it saw.
func (g *guest) get(t *testing.T, src, vip netip.Addr, port uint16) (name, seen string) {
	t.Helper()
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
			return g.dial(ctx, src, address)
		},
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := fmt.Sprintf("http://%s/", netip.AddrPortFrom(vip, port))
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("GET %s from %s: %v", url, src, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s from %s: %v", url, src, err)
	}
	name, seen, _ = strings.Cut(strings.TrimSpace(string(body)), " ")
	return name, seen
}

// dial connects from the client namespace. The socket belongs to the
// namespace of the thread that creates it, so it is created on a thread
// moved there.
func (g *guest) dial(ctx context.Context, src netip.Addr, address string) (net.Conn, error) {
	var c net.Conn
	var err error
	inNS(g.client, func() {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), Timeout: 5 * time.Second}
		c, err = d.DialContext(ctx, "tcp", address)
	})
	return c, err
}

// udp sends one datagram from the client's address src to vip:port and
// returns the answering backend's name and the source address it saw.
func (g *guest) udp(t *testing.T, src, vip netip.Addr, port uint16) (name, seen string) {
	t.Helper()
	var c net.Conn
	var err error
	inNS(g.client, func() {
		c, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), net.UDPAddrFromAddrPort(netip.AddrPortFrom(vip, port)))
	})
	must(t, err)
	defer c.Close()
	must(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = c.Write([]byte("who?"))
	must(t, err)
	buf := make([]byte, 100)
	n, err := c.Read(buf)
	must(t, err, fmt.Sprintf("UDP %s:%d from %s", vip, port, src))
	name, seen, _ = strings.Cut(strings.TrimSpace(string(buf[:n])), " ")
	return name, seen
}

// hold opens a connection to vip:port, does one request on it and keeps it
// open; it returns the connection and the backend holding it.
func (g *guest) hold(t *testing.T, src, vip netip.Addr, port uint16) (net.Conn, string) {
	t.Helper()
	c, err := g.dial(context.Background(), src, netip.AddrPortFrom(vip, port).String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	name, _, _ := strings.Cut(string(body), " ")
	return c, name
}

// checkNoNeighbourAnswer routes the VIPs on-link from the client, so the
// client asks by ARP and NDP who has them: the node must stay silent (only
// the speaker answers, on the node that owns the VIP). Were it to answer,
// the connection would succeed: IPVS serves the VIP on whatever link the
// packet came in.
func (g *guest) checkNoNeighbourAnswer(t *testing.T) {
	h, err := netlink.NewHandleAt(g.client, unix.NETLINK_ROUTE)
	must(t, err)
	defer h.Close()
	eth, err := h.LinkByName("eth0")
	must(t, err)
	for _, vip := range []netip.Addr{vip4, vip6} {
		route := &netlink.Route{LinkIndex: eth.Attrs().Index, Dst: prefix(vip), Scope: netlink.SCOPE_LINK}
		must(t, h.RouteAdd(route))
		src := client4
		if vip.Is6() {
			src = client6
		}
		// A node answering would connect in milliseconds; 1.5 s of
		// silence is the kernel still asking.
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		c, err := g.dial(ctx, src, netip.AddrPortFrom(vip, 80).String())
		cancel()
		if err == nil {
			c.Close()
			t.Errorf("%s routed on-link from the client: connected, so the node answered ARP/NDP for it", vip)
		}
		neighs, _ := h.NeighList(eth.Attrs().Index, netlink.FAMILY_ALL)
		for _, n := range neighs {
			if a, _ := netip.AddrFromSlice(n.IP); a.Unmap() == vip && n.HardwareAddr != nil && n.State&(netlink.NUD_REACHABLE|netlink.NUD_STALE|netlink.NUD_DELAY|netlink.NUD_PROBE) != 0 {
				t.Errorf("the client learnt %s for %s (neighbour state %#x)", n.HardwareAddr, vip, n.State)
			}
		}
		must(t, h.RouteDel(route))
	}
}

// setUp builds the namespaces, links, addresses, routes and backends.
func setUp(t *testing.T) *guest {
	g := &guest{}
	writeSysctl(t, "net/ipv4/ip_forward", "1")
	writeSysctl(t, "net/ipv6/conf/all/forwarding", "1")
	g.client = newNS(t)
	g.link(t, "c0", g.client,
		[]netip.Addr{nodeClient4, nodeClient6}, []netip.Addr{client4, client4b, client6}, 24, 64)
	for i := 1; i <= 3; i++ {
		b := &backend{
			name:  fmt.Sprintf("b%d", i),
			ns:    newNS(t),
			node4: netip.AddrFrom4([4]byte{203, 0, 113, byte(4*i - 3)}),
			addr4: netip.AddrFrom4([4]byte{203, 0, 113, byte(4*i - 2)}),
			node6: netip.MustParseAddr(fmt.Sprintf("2001:db8:b%d::1", i)),
			addr6: netip.MustParseAddr(fmt.Sprintf("2001:db8:b%d::2", i)),
		}
		g.link(t, b.name, b.ns, []netip.Addr{b.node4, b.node6}, []netip.Addr{b.addr4, b.addr6}, 30, 64)
		b.serve(t)
		g.backends = append(g.backends, b)
	}
	return g
}

// link makes a veth pair from the node (name) to eth0 in ns, with the
// node's and the far side's addresses, and the far side's default routes
// through the node.
func (g *guest) link(t *testing.T, name string, ns netns.NsHandle, nodeAddrs, farAddrs []netip.Addr, bits4, bits6 int) {
	t.Helper()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "eth0", PeerNamespace: netlink.NsFd(ns)}
	must(t, netlink.LinkAdd(veth), "netlink.LinkAdd(veth)")
	node, err := netlink.LinkByName(name)
	must(t, err, "err")
	for _, a := range nodeAddrs {
		must(t, netlink.AddrAdd(node, addrBits(a, bits4, bits6)), "netlink.AddrAdd(node, addrBits(a, bits4, bits6))")
	}
	must(t, netlink.LinkSetUp(node), "netlink.LinkSetUp(node)")
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	must(t, err, "err")
	defer h.Close()
	far, err := h.LinkByName("eth0")
	must(t, err, "err")
	for _, a := range farAddrs {
		must(t, h.AddrAdd(far, addrBits(a, bits4, bits6)), "h.AddrAdd(far, addrBits(a, bits4, bits6))")
	}
	must(t, h.LinkSetUp(far), "h.LinkSetUp(far)")
	lo, err := h.LinkByName("lo")
	must(t, err, "err")
	must(t, h.LinkSetUp(lo), "h.LinkSetUp(lo)")
	for _, gw := range nodeAddrs {
		must(t, h.RouteAdd(&netlink.Route{LinkIndex: far.Attrs().Index, Gw: gw.AsSlice()}), "h.RouteAdd(&netlink.Route{LinkIndex: far.Attrs().Index, Gw: gw.AsSlice()})")
	}
}

// serve runs the backend's HTTP server and UDP echo: both answer with the
// backend's name and the source address it sees.
func (b *backend) serve(t *testing.T) {
	var ln net.Listener
	var err error
	inNS(b.ns, func() { ln, err = net.Listen("tcp", fmt.Sprintf(":%d", backendPort)) })
	must(t, err)
	b.httpServer = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		a, _ := netip.ParseAddr(host)
		fmt.Fprintf(w, "%s %s\n", b.name, a.Unmap())
	})}
	go b.httpServer.Serve(ln)

	var pc net.PacketConn
	inNS(b.ns, func() { pc, err = net.ListenPacket("udp", fmt.Sprintf(":%d", backendPort)) })
	must(t, err)
	go func() {
		buf := make([]byte, 100)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			a := from.(*net.UDPAddr).AddrPort().Addr().Unmap()
			pc.WriteTo([]byte(fmt.Sprintf("%s %s\n", b.name, a)), from)
		}
	}()
}

// newNS makes a network namespace and returns a handle to it, leaving the
// calling thread where it was.
func newNS(t *testing.T) netns.NsHandle {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	must(t, err)
	defer orig.Close()
	ns, err := netns.New()
	must(t, err)
	must(t, netns.Set(orig))
	return ns
}

// inNS runs f on a thread in ns. Should the way back fail, the thread stays
// locked and so dies with the goroutine rather than serve others from the
// wrong namespace.
func inNS(ns netns.NsHandle, f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			panic(err)
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			panic(err)
		}
		f()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
	}()
	<-done
}

var netmaskAll = netmask.MaskFrom(32, 32)

func addr(a netip.Addr) *netlink.Addr { return addrBits(a, 32, 128) }

// addrBits is a as an address with the family's prefix length; IPv6 ones
// get nodad, as duplicate address detection would only delay the test.
func addrBits(a netip.Addr, bits4, bits6 int) *netlink.Addr {
	bits := bits4
	if a.Is6() {
		bits = bits6
	}
	na := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, a.BitLen())}}
	if a.Is6() {
		na.Flags = unix.IFA_F_NODAD
	}
	return na
}

func prefix(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
}

func writeSysctl(t *testing.T, key, value string) {
	t.Helper()
	must(t, os.WriteFile("/proc/sys/"+key, []byte(value), 0o644))
}

func count(s []string, v string) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}

// must ends the test on an error, naming what failed when what is given.
func must(t *testing.T, err error, what ...string) {
	t.Helper()
	if err != nil {
		t.Fatal(strings.Join(append(what, err.Error()), ": "))
	}
}
