package bgprouter

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldlb/herald/internal/netnstest"
)

const leftoverPrefix = "hb-bgprouter-"

func TestMain(m *testing.M) {
	netnstest.CleanLeftovers(leftoverPrefix, KillLeftovers)
	os.Exit(m.Run())
}

// Two routers on one link: FRR (AS 64512, 198.51.100.1) and BIRD (AS
// 64513, 198.51.100.2). Each announces a /32 with communities to the
// other; what each reads back about the other's route, the session and its
// kernel is what tests of Herald assert on.
const (
	frrV4  = "198.51.100.1"
	birdV4 = "198.51.100.2"
	frrV6  = "2001:db8:1::1"
	birdV6 = "2001:db8:1::2"
)

var (
	fromBIRD  = netip.MustParsePrefix("203.0.113.200/32")
	fromBIRD6 = netip.MustParsePrefix("2001:db8:4::200/128")
	fromFRR   = netip.MustParsePrefix("203.0.113.201/32")
)

func TestFRRAndBIRDReadBackEachOthersRoutes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds network namespaces and runs routers in them")
	}
	if m := Missing(); len(m) > 0 {
		t.Skipf("needs %v (Debian packages frr, bird2, iproute2)", m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	base := fmt.Sprintf("%s%d", leftoverPrefix, os.Getpid())
	nsF, nsB := base+"-f", base+"-b"
	dir := filepath.Join(os.TempDir(), base)
	t.Cleanup(func() {
		KillLeftovers(dir)
		for _, ns := range []string{nsF, nsB} {
			netnstest.Run(t, "ip", "netns", "delete", ns)
		}
		_ = os.RemoveAll(dir)
	})
	for _, ns := range []string{nsF, nsB} {
		netnstest.Run(t, "ip", "netns", "add", ns)
	}
	netnstest.IPBatch(t, nsF, "link set lo up", "link add eth0 type veth peer name eth0 netns "+nsB,
		"link set eth0 up", "addr add "+frrV4+"/24 dev eth0", "addr add "+frrV6+"/64 dev eth0 nodad")
	netnstest.IPBatch(t, nsB, "link set lo up", "link set eth0 up",
		"addr add "+birdV4+"/24 dev eth0", "addr add "+birdV6+"/64 dev eth0 nodad")

	f, err := StartFRR(ctx, Options{Netns: nsF, Dir: filepath.Join(dir, "frr"), Config: fmt.Sprintf(`frr defaults traditional
route-map tag permit 10
 set community 64512:7 64512:8
 set large-community 64512:1:2
!
router bgp 64512
 bgp router-id %s
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor %s remote-as 64513
 neighbor %s timers 3 9
 address-family ipv4 unicast
  network %s route-map tag
 exit-address-family
 address-family ipv6 unicast
  neighbor %s activate
 exit-address-family
!
`, frrV4, birdV4, birdV4, fromFRR, birdV4)})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	b, err := StartBIRD(ctx, Options{Netns: nsB, Dir: filepath.Join(dir, "bird"), Config: fmt.Sprintf(`router id %s;
protocol device {}
protocol kernel { ipv4 { import none; export all; }; }
protocol static { ipv4; route %s blackhole { bgp_community.add((64513,100)); bgp_community.add((65535,65281)); bgp_large_community.add((64513,3,4)); }; }
protocol static { ipv6; route %s blackhole; }
protocol bgp frr {
  local %s as 64513;
  neighbor %s as 64512;
  ipv4 { import all; export all; };
  ipv6 { import all; export all; next hop address %s; };
}
`, birdV4, fromBIRD, fromBIRD6, birdV4, frrV4, birdV6)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	defer func() {
		if t.Failed() {
			t.Logf("bgpd log:\n%s\nbird log:\n%s", Tail(f.LogDir, "bgpd.log", 3000), Tail(b.LogDir, "bird.out", 3000))
		}
	}()

	wait := func(what string, ok func() (bool, any)) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			done, detail := ok()
			if done {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 20 s: %v", what, detail)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	var fr *Route
	wait("BIRD's route in FRR, selected", func() (bool, any) {
		fr, err = f.Route(ctx, fromBIRD)
		return err == nil && fr != nil && fr.Paths[0].Best, err
	})
	p := fr.Paths[0]
	if want := []netip.Addr{netip.MustParseAddr(birdV4)}; !slices.Equal(fr.NextHops(), want) || p.From != want[0] || !p.Best {
		t.Errorf("FRR's route %s: next hops %v from %s best %v; want %v from BIRD, best", fromBIRD, fr.NextHops(), p.From, p.Best, want)
	}
	if !slices.Equal(p.Communities, []string{"64513:100", "65535:65281"}) || !slices.Equal(p.LargeCommunities, []string{"64513:3:4"}) || p.ASPath != "64513" || p.LocalPref != nil {
		t.Errorf("FRR's route %s: %+v; want communities 64513:100 and no-export, large 64513:3:4, AS path 64513, no local pref (eBGP)", fromBIRD, p)
	}
	var fr6 *Route
	wait("BIRD's IPv6 route in FRR", func() (bool, any) {
		fr6, err = f.Route(ctx, fromBIRD6)
		return err == nil && fr6 != nil, err
	})
	if want := []netip.Addr{netip.MustParseAddr(birdV6)}; !slices.Equal(fr6.NextHops(), want) {
		t.Errorf("FRR's route %s: next hops %v (all: %v), want %v", fromBIRD6, fr6.NextHops(), fr6.Paths[0].NextHops, want)
	}
	if r, err := f.Route(ctx, netip.MustParsePrefix("203.0.113.202/32")); err != nil || r != nil {
		t.Errorf("FRR's route for a prefix nobody announced: %+v, %v; want nil", r, err)
	}

	var br *Route
	wait("FRR's route in BIRD", func() (bool, any) {
		br, err = b.Route(ctx, fromFRR)
		return err == nil && br != nil, err
	})
	p = br.Paths[0]
	if want := []netip.Addr{netip.MustParseAddr(frrV4)}; !slices.Equal(br.NextHops(), want) || p.From != want[0] || !p.Best {
		t.Errorf("BIRD's route %s: next hops %v from %s best %v; want %v from FRR, best", fromFRR, br.NextHops(), p.From, p.Best, want)
	}
	if !slices.Equal(p.Communities, []string{"64512:7", "64512:8"}) || !slices.Equal(p.LargeCommunities, []string{"64512:1:2"}) || p.ASPath != "64512" || p.LocalPref == nil || *p.LocalPref != 100 {
		t.Errorf("BIRD's route %s: %+v; want communities 64512:7 64512:8, large 64512:1:2, AS path 64512, local pref 100", fromFRR, p)
	}
	if r, err := b.Route(ctx, netip.MustParsePrefix("203.0.113.202/32")); err != nil || r != nil {
		t.Errorf("BIRD's route for a prefix nobody announced: %+v, %v; want nil", r, err)
	}

	fn, err := f.Neighbors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := Lookup(fn, netip.MustParseAddr(birdV4)); !ok || !n.Established() || n.RemoteAS != 64513 || n.Uptime < 0 || n.Uptime > time.Minute {
		t.Errorf("FRR's neighbours: %+v; want BIRD Established, AS 64513, up for a moment", fn)
	}
	bn, err := b.Neighbors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := Lookup(bn, netip.MustParseAddr(frrV4)); !ok || n.Name != "frr" || !n.Established() || n.RemoteAS != 64512 || n.Uptime < 0 || n.Uptime > time.Minute {
		t.Errorf("BIRD's neighbours: %+v; want frr Established, AS 64512, up for a moment", bn)
	}
	ps, err := b.Protocols(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(ps, func(p Protocol) bool { return p.Name == "frr" }); i < 0 || ps[i].Proto != "BGP" || ps[i].State != "up" || ps[i].Info != "Established" {
		t.Errorf("BIRD's protocols: %+v; want frr BGP up Established", ps)
	}

	// Each kernel holds the other's route: zebra installs FRR's, BIRD's
	// kernel protocol BIRD's.
	var kr *KernelRoute
	wait("BIRD's route in FRR's kernel", func() (bool, any) {
		kr, err = KernelRouteIn(ctx, nsF, fromBIRD)
		return err == nil && kr != nil, err
	})
	if kr.Protocol != "bgp" || !slices.Equal(kr.NextHops, []netip.Addr{netip.MustParseAddr(birdV4)}) {
		t.Errorf("FRR's kernel route %s: %+v; want proto bgp via %s", fromBIRD, kr, birdV4)
	}
	wait("FRR's route in BIRD's kernel", func() (bool, any) {
		kr, err = KernelRouteIn(ctx, nsB, fromFRR)
		return err == nil && kr != nil, err
	})
	if kr.Protocol != "bird" || !slices.Equal(kr.NextHops, []netip.Addr{netip.MustParseAddr(frrV4)}) {
		t.Errorf("BIRD's kernel route %s: %+v; want proto bird via %s", fromFRR, kr, frrV4)
	}
	if kr, err := KernelRouteIn(ctx, nsF, netip.MustParsePrefix("203.0.113.202/32")); err != nil || kr != nil {
		t.Errorf("FRR's kernel route for a prefix nobody announced: %+v, %v; want nil", kr, err)
	}

	// Reconfiguring: BIRD stops exporting (configure keeps the session up
	// and withdraws), FRR drops its BGP instance and takes a new one.
	upBefore := fn[0].Uptime
	if err := b.Configure(ctx, fmt.Sprintf(`router id %s;
protocol device {}
protocol kernel { ipv4 { import none; export all; }; }
protocol bgp frr {
  local %s as 64513;
  neighbor %s as 64512;
  ipv4 { import all; export none; };
  ipv6 { import all; export none; next hop address %s; };
}
`, birdV4, birdV4, frrV4, birdV6)); err != nil {
		t.Fatal(err)
	}
	wait("BIRD's route withdrawn from FRR", func() (bool, any) {
		fr, err = f.Route(ctx, fromBIRD)
		return err == nil && fr == nil, err
	})
	if err := b.Configure(ctx, "this is not BIRD's syntax;\n"); err == nil {
		t.Errorf("Configure accepted a broken configuration")
	}
	if err := f.Apply(ctx, "router bgp 64512\n neighbor "+birdV4+" description bird\n"); err != nil {
		t.Fatal(err)
	}
	fn, _ = f.Neighbors(ctx)
	if n, _ := Lookup(fn, netip.MustParseAddr(birdV4)); !n.Established() || n.Uptime < upBefore {
		t.Errorf("Apply of a description disturbed the session: %+v (uptime before %v)", n, upBefore)
	}
	if err := f.Apply(ctx, "router bgp 64512\n no such command\n"); err == nil {
		t.Errorf("Apply accepted a command FRR does not know")
	}
	if err := f.Replace(ctx, "router bgp 64512\n bgp router-id "+frrV4+"\n no bgp ebgp-requires-policy\n neighbor "+birdV4+" remote-as 64513\n"); err != nil {
		t.Fatal(err)
	}
	running, _ := f.Vtysh(ctx, "show running-config")
	if containsLine(running, "route-map tag permit 10") || !containsLine(running, " neighbor "+birdV4+" remote-as 64513") || containsLine(running, "  network "+fromFRR.String()+" route-map tag") {
		t.Errorf("after Replace, the running configuration is not the new one:\n%s", running)
	}
	wait("FRR's route withdrawn from BIRD", func() (bool, any) {
		br, err = b.Route(ctx, fromFRR)
		return err == nil && br == nil, err
	})
}

func containsLine(text, line string) bool {
	for _, l := range strings.Split(text, "\n") {
		if l == line {
			return true
		}
	}
	return false
}
