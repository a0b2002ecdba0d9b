package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/heraldlb/herald/internal/bgprouter"
)

// frr is FRR's zebra, bgpd and bfdd in the router namespace, with their
// files under the test's directory (internal/bgprouter).
type frr struct {
	*bgprouter.FRR
	t *testing.T
}

// requireRouters skips the test unless it runs as root with FRR and BIRD.
func requireRouters(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds network namespaces and runs routers in them")
	}
	if m := bgprouter.Missing(); len(m) > 0 {
		t.Skipf("needs %v (Debian packages frr, bird2, iproute2)", m)
	}
}

// startFRR runs FRR with the given configuration and waits until vtysh
// answers; it stops when the test ends, and a failed test prints its logs.
func startFRR(tp *topo, conf string) *frr {
	tp.t.Helper()
	f, err := bgprouter.StartFRR(context.Background(), bgprouter.Options{Netns: tp.rtr, Dir: tp.dir, Config: conf})
	if err != nil {
		tp.t.Fatal(err)
	}
	tp.t.Cleanup(func() {
		f.Stop()
		if tp.t.Failed() {
			for _, d := range []string{"bgpd.log", "bfdd.log"} {
				tp.t.Logf("%s (tail):\n%s", d, bgprouter.Tail(tp.dir, d, 3000))
			}
		}
	})
	return &frr{FRR: f, t: tp.t}
}

func (f *frr) vtysh(cmd string) string {
	f.t.Helper()
	out, err := f.Vtysh(context.Background(), cmd)
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

// route returns FRR's route for prefix, or nil when it has none.
func (f *frr) route(prefix netip.Prefix) *bgprouter.Route {
	f.t.Helper()
	r, err := f.Route(context.Background(), prefix)
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

// waitRoute polls FRR's table until the prefix is there (present) or gone,
// and returns how long that took from start.
func (f *frr) waitRoute(prefix netip.Prefix, present bool, start time.Time, timeout time.Duration) time.Duration {
	f.t.Helper()
	deadline := start.Add(timeout)
	for {
		r := f.route(prefix)
		if (r != nil) == present {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("FRR: route %s present=%v not reached within %v; route %+v", prefix, present, timeout, r)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// frrConf is FRR's configuration for an eBGP session with the speaker
// over IPv4.
func frrConf(tp *topo, neighbor []string, extra string) string {
	return frrConfFor(tp, speakerV4, speakerAS, neighbor, extra)
}

// frrConfFor is FRR's configuration for a session with the speaker at
// address nbr in AS remoteAS; FRR announces 203.0.113.0/24 and
// 2001:db8:ff::/48 to it and takes its routes of both families.
func frrConfFor(tp *topo, nbr string, remoteAS int, neighbor []string, extra string) string {
	lines := []string{"neighbor " + nbr + " remote-as " + fmt.Sprint(remoteAS), "neighbor " + nbr + " passive"}
	for _, l := range neighbor {
		lines = append(lines, "neighbor "+nbr+" "+l)
	}
	return fmt.Sprintf(`frr defaults traditional
hostname hb-router
log file %s/frr.log
!
%s
router bgp %d
 bgp router-id %s
 no bgp ebgp-requires-policy
 no bgp network import-check
 no bgp fast-external-failover
 %s
 address-family ipv4 unicast
  network 203.0.113.0/24
  neighbor %s activate
 exit-address-family
 address-family ipv6 unicast
  network 2001:db8:ff::/48
  neighbor %s activate
 exit-address-family
!
`, tp.dir, extra, routerAS, routerV4, strings.Join(lines, "\n "), nbr, nbr)
}

// bird is BIRD 2 in the router namespace.
type bird struct {
	*bgprouter.BIRD
	t *testing.T
}

func startBIRD(tp *topo, conf string) *bird {
	tp.t.Helper()
	b, err := bgprouter.StartBIRD(context.Background(), bgprouter.Options{Netns: tp.rtr, Dir: tp.dir, Config: conf})
	if err != nil {
		tp.t.Fatal(err)
	}
	tp.t.Cleanup(b.Stop)
	return &bird{BIRD: b, t: tp.t}
}

// route returns BIRD's route for prefix, or nil when it has none.
func (b *bird) route(prefix netip.Prefix) *bgprouter.Route {
	b.t.Helper()
	r, err := b.Route(context.Background(), prefix)
	if err != nil {
		b.t.Fatal(err)
	}
	return r
}

// waitRoute polls BIRD's table until the prefix is there (present) or
// gone, and returns how long that took from start.
func (b *bird) waitRoute(prefix netip.Prefix, present bool, start time.Time) time.Duration {
	b.t.Helper()
	waitFor(b.t, 5*time.Second, fmt.Sprintf("BIRD: route %s present=%v", prefix, present), func() (bool, string) {
		r := b.route(prefix)
		return (r != nil) == present, fmt.Sprint(r)
	})
	return time.Since(start)
}

// neighbor returns BIRD's session with the speaker.
func (b *bird) neighbor() bgprouter.Neighbor {
	b.t.Helper()
	ns, err := b.Neighbors(context.Background())
	if err != nil {
		b.t.Fatal(err)
	}
	n, _ := bgprouter.Lookup(ns, netip.MustParseAddr(speakerV4))
	return n
}

func birdConf(tp *topo) string {
	return fmt.Sprintf(`router id %s;
log "%s/bird.log" all;
protocol device {}
protocol bgp speaker {
  local %s as %d;
  neighbor %s as %d;
  passive on;
  ipv4 { import all; export none; };
  ipv6 { import all; export none; };
}
`, routerV4, tp.dir, routerV4, routerAS, speakerV4, speakerAS)
}
