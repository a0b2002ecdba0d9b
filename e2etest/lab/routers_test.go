package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldlb/herald/internal/bgprouter"
)

// An address two nodes announce, as a LoadBalancer IP would be, and the
// port a tiny server answers on in each of them with the node's name.
var (
	announced4 = netip.MustParsePrefix("203.0.113.200/32")
	announced6 = netip.MustParsePrefix("2001:db8:4::200/128")
)

const announcedPort = 8080

// nodeAnnouncer is the BIRD configuration of a throwaway announcer in a
// lab node (not Herald's speaker): AS 64514, sessions to both routers from
// the node's LAN address, BFD towards FRR, the two prefixes announced with
// the node's addresses as next hops, everything the routers send taken (to
// prove they send nothing).
func nodeAnnouncer(n Node) string {
	return fmt.Sprintf(`router id %s;
protocol device {}
protocol bfd {}
protocol static { ipv4; route %s blackhole; }
protocol static { ipv6; route %s blackhole; }
template bgp uplink {
  local %s as 64514;
  error wait time 1,5;
  ipv4 { import all; export where source = RTS_STATIC; };
  ipv6 { import all; export where source = RTS_STATIC; next hop address %s; };
}
protocol bgp to_frr from uplink { neighbor %s as %d; bfd on; }
protocol bgp to_bird from uplink { neighbor %s as %d; }
`, n.IPv4, announced4, announced6, n.IPv4, n.IPv6, FRRIPv4, FRRASN, BIRDIPv4, BIRDASN)
}

// serveNodeName answers every TCP connection to addr, inside the node's
// namespace, with the node's name.
func serveNodeName(t *testing.T, n Node, addr string) {
	ln, err := listenIn(n.Netns, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, n.Name)
			c.Close()
		}
	}()
}

// TestRoutersLearnNodeRoutesAndTheBGPClientFollowsThem brings a lab up with
// routers, has two nodes announce one IPv4 and one IPv6 address over BGP
// (a BIRD in each node, standing in for Herald's speaker), and checks what
// a user of the lab would: both routers' sessions and tables, the ECMP
// route in each router's kernel, requests from the BGP client spread over
// both nodes, nothing sent back to the nodes, and nothing left after Down.
func TestRoutersLearnNodeRoutesAndTheBGPClientFollowsThem(t *testing.T) {
	cfg := needRoot(t)
	if m := bgprouter.Missing(); len(m) > 0 {
		t.Skipf("needs %v (Debian packages frr, bird2)", m)
	}
	cfg.Nodes, cfg.ProxyMode, cfg.Routers = 2, "none", true
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	l, err := Up(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lab with routers up in %v", time.Since(start).Round(100*time.Millisecond))
	downed := false
	defer func() {
		if !downed {
			l.Down()
		}
	}()
	defer func() {
		if t.Failed() {
			t.Logf("FRR's bgpd log:\n%s\nBIRD's log:\n%s", bgprouter.Tail(l.FRR.LogDir, "bgpd.log", 3000), bgprouter.Tail(l.BIRD.LogDir, "bird.out", 3000))
		}
	}()

	// The BGP client's way to FRR, on its own link and across FRR.
	for _, addr := range []string{frrClientSideV4, FRRIPv4, "[" + FRRIPv6 + "]"} {
		c, err := DialContextIn(BGPClientNetns)(ctx, "tcp", addr+":179")
		if err != nil {
			t.Errorf("the BGP client cannot reach FRR's BGP port at %s: %v", addr, err)
			continue
		}
		c.Close()
	}

	var nodeIPs4, nodeIPs6 []netip.Addr
	var announcers []*bgprouter.BIRD
	for _, n := range l.Nodes {
		nodeIPs4, nodeIPs6 = append(nodeIPs4, n.IPv4), append(nodeIPs6, n.IPv6)
		if err := ipBatch(n.Netns, "addr add "+announced4.String()+" dev lo", "addr add "+announced6.String()+" dev lo"); err != nil {
			t.Fatal(err)
		}
		serveNodeName(t, n, fmt.Sprintf("%s:%d", announced4.Addr(), announcedPort))
		serveNodeName(t, n, fmt.Sprintf("[%s]:%d", announced6.Addr(), announcedPort))
		b, err := bgprouter.StartBIRD(ctx, bgprouter.Options{Netns: n.Netns, Dir: filepath.Join(l.routersDir(), n.Name), Config: nodeAnnouncer(n)})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Stop()
		announcers = append(announcers, b)
	}

	wait := func(what string, ok func() (bool, any)) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			done, detail := ok()
			if done {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 30 s: %+v", what, detail)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// Sessions: FRR sees both nodes through its listen range, with BFD
	// up; BIRD through its dynamic neighbours.
	wait("FRR: both nodes Established with BFD up", func() (bool, any) {
		ns, err := l.FRR.Neighbors(ctx)
		for _, ip := range nodeIPs4 {
			if n, ok := bgprouter.Lookup(ns, ip); !ok || !n.Established() || n.BFD != "Up" || n.RemoteAS != 64514 {
				return false, fmt.Sprint(ns, err)
			}
		}
		return true, nil
	})
	wait("BIRD: both nodes Established", func() (bool, any) {
		ns, err := l.BIRD.Neighbors(ctx)
		for _, ip := range nodeIPs4 {
			if n, ok := bgprouter.Lookup(ns, ip); !ok || !n.Established() || n.RemoteAS != 64514 || !strings.HasPrefix(n.Name, "node") {
				return false, fmt.Sprint(ns, err)
			}
		}
		return true, nil
	})

	// Tables: the prefixes with both nodes as next hops, both used.
	// In the kernel, an IPv6 route may go via the nodes' link-local
	// addresses, which BGP carries next to the global ones on a shared LAN
	// (RFC 2545): FRR's zebra prefers them, BIRD the global ones.
	var nodeLL []netip.Addr
	for _, n := range l.Nodes {
		nodeLL = append(nodeLL, eui64LinkLocal(n.MAC))
	}
	for _, tc := range []struct {
		prefix   netip.Prefix
		want, ll []netip.Addr
	}{{announced4, nodeIPs4, nil}, {announced6, nodeIPs6, nodeLL}} {
		wait("FRR: "+tc.prefix.String()+" via both nodes", func() (bool, any) {
			r, err := l.FRR.Route(ctx, tc.prefix)
			if err != nil || r == nil || !slices.Equal(r.NextHops(), tc.want) {
				return false, fmt.Sprint(r, err)
			}
			for _, p := range r.Paths {
				if !p.Best && !p.Multipath || p.ASPath != "64514" {
					return false, r
				}
			}
			return true, nil
		})
		wait("BIRD: "+tc.prefix.String()+" via both nodes", func() (bool, any) {
			r, err := l.BIRD.Route(ctx, tc.prefix)
			return err == nil && r != nil && slices.Equal(r.NextHops(), tc.want), fmt.Sprint(r, err)
		})
		for _, rt := range []struct {
			netns, proto string
		}{{FRRNetns, "bgp"}, {BIRDNetns, "bird"}} {
			wait(rt.netns+"'s kernel: "+tc.prefix.String()+" via both nodes", func() (bool, any) {
				kr, err := bgprouter.KernelRouteIn(ctx, rt.netns, tc.prefix)
				return err == nil && kr != nil && kr.Protocol == rt.proto &&
					(slices.Equal(kr.NextHops, tc.want) || slices.Equal(kr.NextHops, tc.ll)), fmt.Sprint(kr, err)
			})
		}
	}

	// The routers send nothing back: each node's BIRD holds only its own
	// static routes.
	for i, b := range announcers {
		out, err := b.Birdc(ctx, "show", "route", "count")
		if err != nil || !strings.Contains(out, "Total: 2 of 2 routes") {
			t.Errorf("%s's BIRD holds routes the routers sent (want only its 2 static ones): %v %s", l.Nodes[i].Name, err, out)
		}
	}

	// The BGP client's requests follow FRR's ECMP route to both nodes.
	for _, addr := range []netip.Addr{announced4.Addr(), announced6.Addr()} {
		seen := map[string]int{}
		const requests = 32
		for range requests {
			c, err := DialContextIn(BGPClientNetns)(ctx, "tcp", netip.AddrPortFrom(addr, announcedPort).String())
			if err != nil {
				t.Fatalf("the BGP client cannot reach %s: %v", addr, err)
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			b, err := io.ReadAll(c)
			c.Close()
			if err != nil {
				t.Fatalf("reading from %s: %v", addr, err)
			}
			seen[string(b)]++
		}
		t.Logf("%d connections from the BGP client to %s, answered by: %v", requests, addr, seen)
		if len(seen) != 2 {
			t.Errorf("connections to %s reached %v; want both nodes (ECMP at FRR, hash policy 1)", addr, seen)
		}
	}

	// A node's link cut: BFD takes its session down at FRR, and the route
	// keeps the other node only.
	cut := time.Now()
	if err := l.SetNodeLink(l.Nodes[1].Name, false); err != nil {
		t.Fatal(err)
	}
	wait("FRR: "+announced4.String()+" via node-1 only", func() (bool, any) {
		r, err := l.FRR.Route(ctx, announced4)
		return err == nil && r != nil && slices.Equal(r.NextHops(), nodeIPs4[:1]), fmt.Sprint(r, err)
	})
	// FRR asks for 300 ms x 3, but detects by the node's multiplier: BIRD's
	// default 5, so about 1.5 s here.
	t.Logf("node-2's link cut: FRR's route down to node-1 alone %v later (BFD)", time.Since(cut).Round(10*time.Millisecond))
	if err := l.SetNodeLink(l.Nodes[1].Name, true); err != nil {
		t.Fatal(err)
	}

	// Back to the defaults (what an e2e test does after changing them).
	if err := l.ResetRouters(ctx); err != nil {
		t.Fatal(err)
	}
	wait("FRR and BIRD back on their default configurations, node-1 reconnected", func() (bool, any) {
		fn, err1 := l.FRR.Neighbors(ctx)
		bn, err2 := l.BIRD.Neighbors(ctx)
		n1, _ := bgprouter.Lookup(fn, nodeIPs4[0])
		n2, _ := bgprouter.Lookup(bn, nodeIPs4[0])
		return n1.Established() && n2.Established(), fmt.Sprint(fn, bn, err1, err2)
	})

	l.Down()
	downed = true
	left, err := FindLeftovers(cfg.Dir, cfg.BinDir)
	if err != nil {
		t.Fatal(err)
	}
	if !left.Empty() {
		t.Errorf("after Down: %s", left)
	}
	if procs := processesNaming(filepath.Join(cfg.Dir, "routers")); len(procs) > 0 {
		t.Errorf("router processes left after Down: %v", procs)
	}
}

// eui64LinkLocal is the link-local address the kernel gives an interface
// with this MAC (RFC 4291, appendix A).
func eui64LinkLocal(mac string) netip.Addr {
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		panic("bad MAC " + mac)
	}
	a := [16]byte{0: 0xfe, 1: 0x80, 8: hw[0] ^ 2, 9: hw[1], 10: hw[2], 11: 0xff, 12: 0xfe, 13: hw[3], 14: hw[4], 15: hw[5]}
	return netip.AddrFrom16(a)
}

// processesNaming lists the processes whose command line mentions s.
func processesNaming(s string) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := fmt.Sscan(e.Name(), new(int)); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), s) {
			out = append(out, e.Name()+" "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}
