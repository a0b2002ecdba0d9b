package bgp

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const frrDir = "/usr/lib/frr"

// frr is FRR's zebra, bgpd and bfdd in the router namespace, with their own
// configuration, sockets and pid files under the test's directory (never
// the system's /etc/frr or its service).
type frr struct {
	tp *topo
}

func requireFRR(t *testing.T) {
	t.Helper()
	requireLab(t, "vtysh")
	for _, d := range []string{"zebra", "bgpd", "bfdd"} {
		if _, err := os.Stat(filepath.Join(frrDir, d)); err != nil {
			t.Skipf("needs FRR's %s (Debian package frr)", d)
		}
	}
}

// startFRR runs FRR with the given configuration (written as frr.conf)
// and waits until vtysh answers.
func startFRR(tp *topo, conf string) *frr {
	tp.t.Helper()
	f := &frr{tp: tp}
	path := filepath.Join(tp.dir, "frr.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		tp.t.Fatal(err)
	}
	for _, d := range []string{"zebra", "bgpd", "bfdd"} {
		argv := []string{filepath.Join(frrDir, d), "-f", path, "--vty_socket", tp.dir,
			"-z", filepath.Join(tp.dir, "zserv.api"), "-i", filepath.Join(tp.dir, d+".pid"),
			"--log", "file:" + filepath.Join(tp.dir, d+".log")}
		switch d {
		case "bfdd":
			argv = append(argv, "--bfdctl", filepath.Join(tp.dir, "bfdd.sock"))
		case "bgpd":
			argv = append(argv, "-p", "179")
		}
		tp.daemon(tp.rtr, "", argv...)
		if d == "zebra" {
			waitFor(tp.t, 10*time.Second, "zebra's socket", func() (bool, string) {
				_, err := os.Stat(filepath.Join(tp.dir, "zserv.api"))
				return err == nil, fmt.Sprint(err)
			})
		}
	}
	waitFor(tp.t, 10*time.Second, "FRR's vtysh", func() (bool, string) {
		out, err := f.vtyshErr("show bgp summary json")
		return err == nil && strings.Contains(out, "{") && !strings.Contains(out, "is not running"), out
	})
	tp.t.Cleanup(func() {
		if tp.t.Failed() {
			for _, d := range []string{"bgpd", "bfdd"} {
				b, _ := os.ReadFile(filepath.Join(tp.dir, d+".log"))
				tp.t.Logf("%s log (tail):\n%s", d, tail(string(b), 3000))
			}
		}
	})
	return f
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (f *frr) vtyshErr(cmd string) (string, error) {
	out, err := exec.Command("vtysh", "--vty_socket", f.tp.dir, "-c", cmd).CombinedOutput()
	return string(out), err
}

func (f *frr) vtysh(cmd string) string {
	f.tp.t.Helper()
	out, err := f.vtyshErr(cmd)
	if err != nil {
		f.tp.t.Fatalf("vtysh -c %q: %v: %s", cmd, err, out)
	}
	return out
}

// frrRoute is a route as `show bgp <family> unicast <prefix> json` shows it.
type frrRoute struct {
	Prefix string `json:"prefix"`
	Paths  []struct {
		Valid     bool `json:"valid"`
		Community *struct {
			String string `json:"string"`
		} `json:"community"`
		LargeCommunity *struct {
			String string `json:"string"`
		} `json:"largeCommunity"`
		LocPrf   *uint32 `json:"locPrf"`
		Nexthops []struct {
			IP    string `json:"ip"`
			Scope string `json:"scope"`
		} `json:"nexthops"`
		ASPath struct {
			String string `json:"string"`
		} `json:"aspath"`
	} `json:"paths"`
}

// route returns FRR's route for prefix, or nil when it has none.
func (f *frr) route(prefix string) *frrRoute {
	f.tp.t.Helper()
	fam := "ipv4"
	if strings.Contains(prefix, ":") {
		fam = "ipv6"
	}
	out := f.vtysh(fmt.Sprintf("show bgp %s unicast %s json", fam, prefix))
	var r frrRoute
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		f.tp.t.Fatalf("parsing FRR's route %s: %v: %s", prefix, err, out)
	}
	if len(r.Paths) == 0 {
		return nil
	}
	return &r
}

func (r *frrRoute) nexthops() []string {
	var out []string
	for _, p := range r.Paths {
		for _, nh := range p.Nexthops {
			out = append(out, nh.IP+"/"+nh.Scope)
		}
	}
	return out
}

// waitRoute polls FRR's table until the prefix is there (present) or gone,
// and returns how long that took from start.
func (f *frr) waitRoute(prefix string, present bool, start time.Time, timeout time.Duration) time.Duration {
	f.tp.t.Helper()
	deadline := start.Add(timeout)
	for {
		r := f.route(prefix)
		if (r != nil) == present {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			f.tp.t.Fatalf("FRR: route %s present=%v not reached within %v; route %+v", prefix, present, timeout, r)
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
	tp   *topo
	sock string
}

func requireBIRD(t *testing.T) {
	t.Helper()
	requireLab(t, "bird", "birdc")
}

func startBIRD(tp *topo, conf string) *bird {
	tp.t.Helper()
	b := &bird{tp: tp, sock: filepath.Join(tp.dir, "bird.ctl")}
	path := filepath.Join(tp.dir, "bird.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		tp.t.Fatal(err)
	}
	birdPath, _ := exec.LookPath("bird")
	tp.daemon(tp.rtr, "", birdPath, "-f", "-c", path, "-s", b.sock, "-P", filepath.Join(tp.dir, "bird.pid"))
	waitFor(tp.t, 10*time.Second, "BIRD's control socket", func() (bool, string) {
		out, err := exec.Command("birdc", "-s", b.sock, "show", "status").CombinedOutput()
		return err == nil && strings.Contains(string(out), "Daemon is up"), string(out)
	})
	return b
}

// birdc runs a BIRD command; "Network not found" (exit status 1) is an
// answer, not a failure.
func (b *bird) birdc(args ...string) string {
	b.tp.t.Helper()
	out, err := exec.Command("birdc", append([]string{"-s", b.sock}, args...)...).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "Network not found") {
		b.tp.t.Fatalf("birdc %v: %v: %s", args, err, out)
	}
	return string(out)
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
