package layer2_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/heraldlb/herald/internal/netnstest"
	"github.com/heraldlb/herald/speaker/layer2"
)

// The tests' LAN. Only documentation ranges; the hosts' MACs are fixed so a
// neighbour table or an arping line tells which host answered.
const (
	speakerMAC  = "02:00:00:00:02:01"
	speaker2MAC = "02:00:00:00:02:03"
	clientMAC   = "02:00:00:00:02:02"
	fakeMAC     = "02:00:00:00:99:99"

	speakerV4  = "198.51.100.201"
	clientV4   = "198.51.100.202"
	speaker2V4 = "198.51.100.203"
	speakerV6  = "2001:db8:9::201"
	clientV6   = "2001:db8:9::202"
	speaker2V6 = "2001:db8:9::203"
)

var (
	vip4      = netip.MustParseAddr("198.51.100.210")
	otherVIP4 = netip.MustParseAddr("198.51.100.211")
	vip6      = netip.MustParseAddr("2001:db8:9::210")
	otherVIP6 = netip.MustParseAddr("2001:db8:9::211")
)

// lan is a LAN built in network namespaces the way e2etest/lab builds its
// own: a namespace holds a veth pair whose end lan0 is the parent of one
// macvlan (mode bridge) per host, moved into the host's namespace as eth0.
// So eth0 looks like a NIC, not like a pod's veth (which the Announcer's
// interface choice leaves out). Namespaces are named l2t-<random>-<role>,
// apart from the lab's hl- prefix, and deleted when the test ends.
type lan struct {
	t      *testing.T
	prefix string
	ns     string
}

// requireTools skips the test unless it runs as root and the named tools
// are installed.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds network namespaces and opens raw sockets")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s on PATH (Debian: apt-get install iproute2 arping ndisc6)", tool)
		}
	}
}

func newLAN(t *testing.T) *lan {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	n := &lan{t: t, prefix: "l2t-" + hex.EncodeToString(b)}
	n.ns = n.prefix + "-lan"
	t.Cleanup(func() {
		out, _ := exec.Command("ip", "netns", "list").Output()
		for _, line := range strings.Split(string(out), "\n") {
			if name, _, _ := strings.Cut(line, " "); strings.HasPrefix(name, n.prefix+"-") {
				if err := exec.Command("ip", "netns", "delete", name).Run(); err != nil {
					t.Logf("deleting namespace %s: %v", name, err)
				}
			}
		}
	})
	netnstest.Run(t, "ip", "netns", "add", n.ns)
	netnstest.IPBatch(t, n.ns,
		"link set lo up",
		"link add lan0 type veth peer name lan1",
		"link set lan0 up",
		"link set lan1 up",
	)
	return n
}

// addHost creates namespace <prefix>-<role> with eth0 on the LAN and returns
// its name. Duplicate address detection is off so addresses are usable at
// once.
func (n *lan) addHost(role, mac, v4, v6 string) string {
	ns := n.prefix + "-" + role
	netnstest.Run(n.t, "ip", "netns", "add", ns)
	for _, kv := range []string{"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"} {
		netnstest.Run(n.t, "ip", "netns", "exec", ns, "sysctl", "-qw", kv)
	}
	tmp := "mv" + role
	netnstest.IPBatch(n.t, n.ns,
		fmt.Sprintf("link add %s link lan0 address %s type macvlan mode bridge", tmp, mac),
		fmt.Sprintf("link set %s netns %s", tmp, ns),
	)
	netnstest.IPBatch(n.t, ns,
		"link set lo up",
		fmt.Sprintf("link set %s name eth0", tmp),
		"link set eth0 up",
		fmt.Sprintf("addr add %s/25 dev eth0", v4),
		fmt.Sprintf("addr add %s/64 dev eth0", v6),
	)
	return ns
}

// replaceEth0 deletes the host's eth0 and gives it a new one with the same
// MAC and addresses, as when a NIC's driver is reloaded.
func (n *lan) replaceEth0(ns, role, mac, v4, v6 string) {
	netnstest.IPBatch(n.t, ns, "link delete eth0")
	tmp := "mv" + role
	netnstest.IPBatch(n.t, n.ns,
		fmt.Sprintf("link add %s link lan0 address %s type macvlan mode bridge", tmp, mac),
		fmt.Sprintf("link set %s netns %s", tmp, ns),
	)
	netnstest.IPBatch(n.t, ns,
		fmt.Sprintf("link set %s name eth0", tmp),
		"link set eth0 up",
		fmt.Sprintf("addr add %s/25 dev eth0", v4),
		fmt.Sprintf("addr add %s/64 dev eth0", v6),
	)
}

// inNetns runs fn on an OS thread inside namespace ns, then returns the
// thread. Sockets fn opens stay in ns.
func inNetns(t *testing.T, ns string, fn func()) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(ns)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- err
			return
		}
		fn()
		if err := netns.Set(orig); err != nil {
			errc <- err // the thread stays locked and ends with this goroutine
			return
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatalf("in namespace %s: %v", ns, err)
	}
}

// announcerIn creates an Announcer inside namespace ns, closed when the test
// ends.
func announcerIn(t *testing.T, ns string, reg prometheus.Registerer) *layer2.Announcer {
	t.Helper()
	var a *layer2.Announcer
	inNetns(t, ns, func() {
		a = layer2.New(testrLogger(t), reg)
	})
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return a
}

func setOwned(t *testing.T, a *layer2.Announcer, owned map[netip.Addr][]string) {
	t.Helper()
	if err := a.SetOwned(owned); err != nil {
		t.Fatalf("SetOwned(%v): %v", owned, err)
	}
}

var macPattern = regexp.MustCompile(`(?i)\b[0-9a-f]{2}(:[0-9a-f]{2}){5}\b`)

// arping asks for ip from namespace ns with count ARP requests and returns
// the MACs that answered, one per reply. It works with either arping Debian
// ships: Thomas Habets' (-i) or iputils' (-I).
func arping(t *testing.T, ns string, ip netip.Addr, count int) []string {
	t.Helper()
	help, _ := exec.Command("arping", "--help").CombinedOutput()
	ifFlag := "-I"
	if bytes.Contains(help, []byte("Habets")) {
		ifFlag = "-i"
	}
	out, _ := exec.Command("ip", "netns", "exec", ns, "arping", "-c", fmt.Sprint(count), "-w", fmt.Sprint(count+1), ifFlag, "eth0", ip.String()).CombinedOutput()
	var macs []string
	for _, line := range strings.Split(string(out), "\n") {
		// Habets: "60 bytes from 02:00:...:01 (198.51.100.210): index=0 ..."
		// iputils: "Unicast reply from 198.51.100.210 [02:00:...:01]  0.6ms"
		if strings.Contains(line, "bytes from") || strings.Contains(line, "reply from") {
			if m := macPattern.FindString(line); m != "" {
				macs = append(macs, strings.ToLower(m))
			}
		} else if strings.Contains(line, "rror") || strings.Contains(line, "annot") {
			t.Fatalf("arping %s in %s: %s", ip, ns, out)
		}
	}
	t.Logf("arping %s from %s: %d replies %v", ip, ns, len(macs), macs)
	return macs
}

// ndisc6 solicits ip from namespace ns and returns the link-layer addresses
// of the advertisements it got.
func ndisc6(t *testing.T, ns string, ip netip.Addr, tries int) []string {
	t.Helper()
	out, _ := exec.Command("ip", "netns", "exec", ns, "ndisc6", "-m", "-n", "-r", fmt.Sprint(tries), "-w", "500", ip.String(), "eth0").CombinedOutput()
	var macs []string
	for _, line := range strings.Split(string(out), "\n") {
		// "Target link-layer address: 02:00:00:00:02:01"
		if strings.Contains(line, "link-layer address") {
			if m := macPattern.FindString(line); m != "" {
				macs = append(macs, strings.ToLower(m))
			}
		} else if strings.Contains(line, "rror") || strings.Contains(line, "annot") {
			t.Fatalf("ndisc6 %s in %s: %s", ip, ns, out)
		}
	}
	t.Logf("ndisc6 %s from %s: %v", ip, ns, macs)
	return macs
}

// neighbourMAC reads the link-layer address namespace ns's eth0 has for ip
// ("" if none), straight from the kernel's neighbour table.
func neighbourMAC(t *testing.T, h *netlink.Handle, ip netip.Addr) string {
	t.Helper()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	family := netlink.FAMILY_V4
	if ip.Is6() {
		family = netlink.FAMILY_V6
	}
	neighs, err := h.NeighList(eth0.Attrs().Index, family)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range neighs {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == ip {
			return n.HardwareAddr.String()
		}
	}
	return ""
}

// neighbourState reads the state of the client's neighbour entry for ip
// ("REACHABLE", "STALE", ...; "" if none).
func neighbourState(t *testing.T, h *netlink.Handle, ip netip.Addr) string {
	t.Helper()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	neighs, err := h.NeighList(eth0.Attrs().Index, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range neighs {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == ip {
			return neighStates[n.State]
		}
	}
	return ""
}

var neighStates = map[int]string{
	netlink.NUD_INCOMPLETE: "INCOMPLETE", netlink.NUD_REACHABLE: "REACHABLE", netlink.NUD_STALE: "STALE",
	netlink.NUD_DELAY: "DELAY", netlink.NUD_PROBE: "PROBE", netlink.NUD_FAILED: "FAILED",
	netlink.NUD_NOARP: "NOARP", netlink.NUD_PERMANENT: "PERMANENT",
}

// sendUDP sends one datagram from namespace ns to ip (discard port), which
// makes ns's kernel use, and so check, its neighbour entry for ip.
func sendUDP(t *testing.T, ns string, ip netip.Addr) {
	t.Helper()
	inNetns(t, ns, func() {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 9)))
		if err != nil {
			t.Errorf("dial %s from %s: %v", ip, ns, err)
			return
		}
		defer c.Close()
		if _, err := c.Write([]byte("probe")); err != nil {
			t.Errorf("send to %s from %s: %v", ip, ns, err)
		}
	})
}

func handleIn(t *testing.T, ns string) *netlink.Handle {
	t.Helper()
	nsh, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nsh.Close() })
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// waitFor polls cond every 10 ms until it holds or limit passes, and returns
// how long it took.
func waitFor(limit time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for {
		if cond() {
			return time.Since(start), true
		}
		if time.Since(start) > limit {
			return time.Since(start), false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func allEqual(macs []string, want string) bool {
	for _, m := range macs {
		if m != want {
			return false
		}
	}
	return len(macs) > 0
}

// counter reads one labelled counter from reg.
func counter(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func withTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func testrLogger(t *testing.T) logr.Logger {
	return testr.NewWithOptions(t, testr.Options{Verbosity: 1})
}

// goroutinesIn returns the stacks of the goroutines running code whose
// frames contain one of frames, waiting up to 2 s for them to end.
func goroutinesIn(frames ...string) string {
	var left []string
	waitFor(2*time.Second, func() bool {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		left = nil
		for _, g := range strings.Split(string(buf), "\n\n") {
			for _, f := range frames {
				if strings.Contains(g, f) && !strings.Contains(g, "goroutinesIn") {
					left = append(left, g)
					break
				}
			}
		}
		return len(left) == 0
	})
	return strings.Join(left, "\n\n")
}
