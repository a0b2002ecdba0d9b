package dataplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/internal/netnstest"
)

// The kernel tests program a backend into a real kernel, in network
// namespaces, and check what a user would: which server answered a
// connection to the LoadBalancer address, and which client address it saw.
//
//	client (198.51.100.2, .3; 2001:db8:1::2, ::3)
//	   |  c0: 198.51.100.1/28, 2001:db8:1::1/64
//	node (runs the backend's rules; routes the LB addresses 198.51.100.64/26
//	   |  and 2001:db8:100::/64 to the upstream, the remote node)
//	   br0: 203.0.113.1/24, 2001:db8:2::1/64
//	   +-- pod1   203.0.113.11  2001:db8:2::11  (this node's endpoints)
//	   +-- pod2   203.0.113.12  2001:db8:2::12
//	   +-- remote 203.0.113.21  2001:db8:2::21  (another node: its NodePorts)
//
// Run them as root: go test ./speaker/dataplane -run InKernel -v (about 20 s
// for the three backends: nftables, iptables-legacy, iptables-nft); without
// root, or without the tools, they skip and say why.
//
// Each server namespace runs a small HTTP server, started by the test
// process on a socket opened in that namespace, that answers with its name
// and the client address it saw. Namespaces are named hb-dp-<pid>-...; a
// later run removes those a crashed run left.

const leftoverPrefix = "hb-dp-"

func TestMain(m *testing.M) {
	netnstest.CleanLeftovers(leftoverPrefix, nil)
	os.Exit(m.Run())
}

// The lab's addresses (documentation ranges; the machine's own interface
// may use 192.0.2.0/24, so it is left alone).
var (
	clientV4, client2V4 = netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("198.51.100.3")
	clientV6, client2V6 = netip.MustParseAddr("2001:db8:1::2"), netip.MustParseAddr("2001:db8:1::3")
	nodeV4, nodeV6      = netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("2001:db8:2::1")
	labNodes            = Nodes{Self: "node", Healthy: []Node{
		{Name: "node", Addrs: addrs("203.0.113.1", "2001:db8:2::1")},
		{Name: "remote", Addrs: addrs("203.0.113.21", "2001:db8:2::21")},
	}}
	// Ports the servers listen on: endpoints on 8080 and 8443, the
	// remote node's NodePorts on 30080 and 30443.
	serverPorts = []string{"8080", "8443", "30080", "30443"}
)

// lab is one set of namespaces.
type lab struct {
	t                                *testing.T
	client, node, pod1, pod2, remote string
	http                             map[netip.Addr]*http.Client // by client source address
}

var safeName = regexp.MustCompile(`[^a-z0-9]+`)

func needRoot(t testing.TB, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("kernel test: needs root (network namespaces, netfilter); run go test as root")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("kernel test: %s is not installed (apt-get install nftables iptables)", tool)
		}
	}
}

func newLab(t *testing.T) *lab {
	t.Helper()
	short := safeName.ReplaceAllString(strings.ToLower(strings.TrimPrefix(t.Name(), "Test")), "")
	if len(short) > 24 {
		short = short[len(short)-24:]
	}
	base := fmt.Sprintf("%s%d-%s", leftoverPrefix, os.Getpid(), short)
	l := &lab{t: t, client: base + "-c", node: base + "-n", pod1: base + "-p1", pod2: base + "-p2", remote: base + "-r",
		http: map[netip.Addr]*http.Client{}}
	all := []string{l.client, l.node, l.pod1, l.pod2, l.remote}
	t.Cleanup(func() {
		for _, ns := range all {
			_ = exec.Command("ip", "netns", "delete", ns).Run()
		}
	})
	for _, ns := range all {
		netnstest.Run(t, "ip", "netns", "add", ns)
		netnstest.Run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	netnstest.Run(t, "ip", "netns", "exec", l.node, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	netnstest.IPBatch(t, l.node,
		"link add c0 type veth peer name eth0 netns "+l.client,
		"addr add 198.51.100.1/28 dev c0",
		"addr add 2001:db8:1::1/64 dev c0 nodad",
		"link set c0 up",
		"link add br0 type bridge",
		"addr add 203.0.113.1/24 dev br0",
		"addr add 2001:db8:2::1/64 dev br0 nodad",
		"link set br0 up",
	)
	netnstest.IPBatch(t, l.client,
		"addr add 198.51.100.2/28 dev eth0",
		"addr add 198.51.100.3/28 dev eth0",
		"addr add 2001:db8:1::2/64 dev eth0 nodad",
		"addr add 2001:db8:1::3/64 dev eth0 nodad",
		"link set eth0 up",
		"route add 198.51.100.64/26 via 198.51.100.1",
		"route add 2001:db8:100::/64 via 2001:db8:1::1",
	)
	for _, s := range []struct{ ns, port, host string }{{l.pod1, "p1", "11"}, {l.pod2, "p2", "12"}, {l.remote, "r", "21"}} {
		netnstest.IPBatch(t, l.node,
			"link add "+s.port+" type veth peer name eth0 netns "+s.ns,
			"link set "+s.port+" master br0 up",
		)
		netnstest.IPBatch(t, s.ns,
			"addr add 203.0.113."+s.host+"/24 dev eth0",
			"addr add 2001:db8:2::"+s.host+"/64 dev eth0 nodad",
			"link set eth0 up",
			"route add default via 203.0.113.1",
			"route add default via 2001:db8:2::1",
		)
	}
	// The upstream of the LoadBalancer addresses: what is not DNATed goes
	// on through the forward path (where a Service without endpoints is
	// rejected).
	netnstest.IPBatch(t, l.node,
		"route add 198.51.100.64/26 via 203.0.113.21",
		"route add 2001:db8:100::/64 via 2001:db8:2::21",
	)
	for _, s := range []struct{ ns, name string }{{l.pod1, "pod1"}, {l.pod2, "pod2"}, {l.remote, "remote"}} {
		l.serve(s.ns, s.name)
	}
	for _, src := range []netip.Addr{clientV4, client2V4, clientV6, client2V6} {
		l.http[src] = l.httpClient(l.client, src)
	}
	return l
}

// inNS runs fn on an OS thread in namespace ns: the sockets it opens and
// the processes it starts are the namespace's. The thread is never unlocked;
// it ends with the goroutine, so nothing else ever runs in the namespace.
func inNS(ns string, fn func() error) error {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	defer h.Close()
	res := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(h); err != nil {
			res <- fmt.Errorf("entering namespace %s: %w", ns, err)
			return
		}
		res <- fn()
	}()
	return <-res
}

// serve starts the echo server of a namespace on every server port.
func (l *lab) serve(ns, name string) {
	l.t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintf(w, "%s %s", name, host)
	})
	for _, port := range serverPorts {
		var ln net.Listener
		err := inNS(ns, func() (err error) {
			ln, err = net.Listen("tcp", ":"+port)
			return err
		})
		if err != nil {
			l.t.Fatalf("listening in %s: %v", ns, err)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		l.t.Cleanup(func() { _ = srv.Close() })
	}
}

// httpClient makes one connection per request (so that each is scheduled),
// from namespace ns and source address src.
func (l *lab) httpClient(ns string, src netip.Addr) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := inNS(ns, func() (err error) {
			d := net.Dialer{Timeout: 3 * time.Second}
			if src.IsValid() {
				d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
			}
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
}

// answer is what one request to vip:port got: which server, and the client
// address it saw.
type answer struct{ server, saw string }

func get(c *http.Client, vip netip.Addr, port uint16) (answer, error) {
	resp, err := c.Get("http://" + netip.AddrPortFrom(vip, port).String() + "/")
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	server, saw, _ := strings.Cut(string(b), " ")
	return answer{server, saw}, nil
}

// gets makes n requests from src and returns the answers in order.
func (l *lab) gets(src, vip netip.Addr, port uint16, n int) []answer {
	l.t.Helper()
	var out []answer
	for range n {
		a, err := get(l.http[src], vip, port)
		if err != nil {
			l.t.Fatalf("GET %s from %s: %v", netip.AddrPortFrom(vip, port), src, err)
		}
		out = append(out, a)
	}
	return out
}

// sawBy maps each server that answered to the client addresses it saw.
func sawBy(as []answer) map[string]map[string]bool {
	m := map[string]map[string]bool{}
	for _, a := range as {
		if m[a.server] == nil {
			m[a.server] = map[string]bool{}
		}
		m[a.server][a.saw] = true
	}
	return m
}

func (l *lab) inNode(fn func() error) {
	l.t.Helper()
	if err := inNS(l.node, fn); err != nil {
		l.t.Fatal(err)
	}
}

func (l *lab) nodeRun(name string, args ...string) string {
	l.t.Helper()
	return netnstest.Run(l.t, "ip", append([]string{"netns", "exec", l.node, name}, args...)...)
}

func (l *lab) nodeRunInput(input, name string, args ...string) {
	l.t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.node, name}, args...)...)
	cmd.Stdin = strings.NewReader(input)
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// kernelBackend is one backend under the shared test.
type kernelBackend struct {
	tools []string
	new   func() (Backend, error)
	// addForeign installs rules of someone else (a fake kube-proxy,
	// including a DNAT of web's address to pod2 at kube-proxy's usual
	// place); foreign lists everything but ours; ours lists ours.
	addForeign    func(l *lab)
	foreign, ours func(l *lab) string
}

// The lab's Services.
var (
	vipWeb, vipWeb6 = netip.MustParseAddr("198.51.100.65"), netip.MustParseAddr("2001:db8:100::65")
	vipSticky       = netip.MustParseAddr("198.51.100.66")
	vipRR           = netip.MustParseAddr("198.51.100.67")
	vipSH           = netip.MustParseAddr("198.51.100.68")
	vipEmpty        = netip.MustParseAddr("198.51.100.69")
	vipLocal        = netip.MustParseAddr("198.51.100.70")
)

func labService(name string, ips []netip.Addr, eps ...Endpoint) Service {
	return Service{
		Key: types.NamespacedName{Namespace: "lab", Name: name}, IPs: ips, NodePorts: true,
		Ports: []Port{{Name: "http", Protocol: TCP, Port: 80, NodePort: 30080, Endpoints: eps}},
	}
}

// labServices: web is dual-stack with an endpoint on this node (pod1) and
// one on the remote node, both its destinations, masqueraded (Cluster);
// local is the same with externalTrafficPolicy Local: pod1 alone, not
// masqueraded.
func labServices(sched Scheduler, withSH bool) []Service {
	onBoth := []Endpoint{ep("203.0.113.11", 8080, "node"), ep("2001:db8:2::11", 8080, "node"), ep("203.0.113.21", 8080, "remote"), ep("2001:db8:2::21", 8080, "remote")}
	web := labService("web", []netip.Addr{vipWeb, vipWeb6}, onBoth...)
	sticky := labService("sticky", []netip.Addr{vipSticky}, onBoth...)
	sticky.Affinity = time.Hour
	rr := labService("rr", []netip.Addr{vipRR}, onBoth...)
	rr.Scheduler = string(RoundRobin)
	empty := labService("empty", []netip.Addr{vipEmpty})
	empty.Local = true
	local := labService("local", []netip.Addr{vipLocal}, onBoth...)
	local.Local = true
	svcs := []Service{web, sticky, rr, empty, local}
	if withSH {
		sh := labService("sh", []netip.Addr{vipSH}, onBoth...)
		sh.Scheduler = string(sched)
		svcs = append(svcs, sh)
	}
	return svcs
}

func testBackendInKernel(t *testing.T, kb kernelBackend) {
	needRoot(t, append([]string{"ip"}, kb.tools...)...)
	l := newLab(t)
	ctx := context.Background()
	kb.addForeign(l)
	foreign := kb.foreign(l)

	var b Backend
	l.inNode(func() (err error) { b, err = kb.new(); return err })
	sync := func(b Backend, svcs []Service, wantFull bool) RuleSet {
		t.Helper()
		rs, warns := Generate(svcs, labNodes, b.Supports)
		if len(warns) > 0 {
			t.Fatalf("warnings: %v", warns)
		}
		var st Stats
		start := time.Now()
		l.inNode(func() (err error) { st, err = b.Sync(ctx, rs); return err })
		t.Logf("sync: %+v in %v", st, time.Since(start))
		if st.Full != wantFull || st.Services != len(rs.Services) {
			t.Fatalf("stats %+v; want full %v and %d services", st, wantFull, len(rs.Services))
		}
		return rs
	}
	withSH := b.Supports(SourceHash)
	sync(b, labServices(SourceHash, withSH), true)

	t.Run("ClusterSpreadsOverTheLocalAndTheRemoteEndpointMasqueraded", func(t *testing.T) {
		for _, c := range []struct{ client, vip, node netip.Addr }{{clientV4, vipWeb, nodeV4}, {clientV6, vipWeb6, nodeV6}} {
			got := sawBy(l.gets(c.client, c.vip, 80, 30))
			want := map[string]map[string]bool{
				"pod1":   {c.node.String(): true},
				"remote": {c.node.String(): true},
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s: servers and the client addresses they saw: %v; want %v", c.vip, got, want)
			}
		}
	})
	t.Run("LocalGoesToThisNodesEndpointWithTheClientsAddress", func(t *testing.T) {
		got := sawBy(l.gets(clientV4, vipLocal, 80, 10))
		if want := map[string]map[string]bool{"pod1": {clientV4.String(): true}}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("servers and the client addresses they saw: %v; want %v", got, want)
		}
	})
	t.Run("LocallyOriginatedTrafficIsForwardedToo", func(t *testing.T) {
		c := l.httpClient(l.node, netip.Addr{})
		a, err := get(c, vipWeb, 80)
		if err != nil || (a.server != "pod1" && a.server != "remote") {
			t.Errorf("GET from the node: %v, %v; want pod1 or remote", a, err)
		}
	})
	t.Run("AffinitySticksToOneDestination", func(t *testing.T) {
		got := sawBy(l.gets(clientV4, vipSticky, 80, 20))
		if len(got) != 1 {
			t.Errorf("20 requests reached %v; want one server", got)
		}
	})
	t.Run("RoundRobinAlternates", func(t *testing.T) {
		as := l.gets(clientV4, vipRR, 80, 10)
		for i := 1; i < len(as); i++ {
			if as[i].server == as[i-1].server {
				t.Fatalf("requests %d and %d both went to %s: %v", i-1, i, as[i].server, as)
			}
		}
	})
	t.Run("SourceHashSticksPerSource", func(t *testing.T) {
		if !withSH {
			t.Skipf("%s has no source hashing", b.Name())
		}
		for _, src := range []netip.Addr{clientV4, client2V4} {
			if got := sawBy(l.gets(src, vipSH, 80, 10)); len(got) != 1 {
				t.Errorf("from %s, 10 requests reached %v; want one server", src, got)
			}
		}
	})
	t.Run("NoDestinationsRefusesTheConnection", func(t *testing.T) {
		_, err := get(l.http[clientV4], vipEmpty, 80)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("GET %s: %v; want connection refused", vipEmpty, err)
		}
	})

	// A partial sync: web gains a port, and its local endpoint moves from
	// pod1 to pod2.
	moved := labServices(SourceHash, withSH)
	moved[0].Ports[0].Endpoints[0] = ep("203.0.113.12", 8080, "node")
	moved[0].Ports = append(moved[0].Ports, Port{Name: "https", Protocol: TCP, Port: 443, NodePort: 30443,
		Endpoints: []Endpoint{ep("203.0.113.12", 8443, "node")}})
	sync(b, moved, false)
	t.Run("PartialSyncTakesEffect", func(t *testing.T) {
		for port, wantServers := range map[uint16]string{80: "pod2 remote", 443: "pod2"} {
			got := sawBy(l.gets(clientV4, vipWeb, port, 30))
			servers := []string{}
			for s := range got {
				servers = append(servers, s)
			}
			if s := strings.Join(sortedStrings(servers), " "); s != wantServers {
				t.Errorf("port %d reached %s; want %s", port, s, wantServers)
			}
		}
		// The v6 side of web was not touched: still pod1.
		if got := sawBy(l.gets(clientV6, vipWeb6, 80, 20)); got["pod1"] == nil {
			t.Errorf("IPv6 reached %v; want pod1 among them", got)
		}
	})

	// Without the affinity Service (whose sets fill with clients), the
	// rules are a pure function of the RuleSet: a restarted backend, doing
	// a full sync over what the last one left, must write the same.
	final := append(moved[:1:1], moved[2:]...)
	t.Run("AFailedSyncChangesNothingAndMakesTheNextFull", func(t *testing.T) {
		rs, _ := Generate(final, labNodes, b.Supports)
		rs.Services[0].Protocol = "BOGUS" // refused by nft and iptables alike
		l.inNode(func() error {
			if _, err := b.Sync(ctx, rs); err == nil {
				return errors.New("a sync with protocol BOGUS succeeded")
			}
			return nil
		})
		if got := sawBy(l.gets(clientV4, vipWeb, 443, 10)); got["pod2"] == nil && got["remote"] == nil {
			t.Errorf("after the failed sync, web:443 reached %v; want the rules of the last good sync", got)
		}
	})
	sync(b, final, true)
	// What partial syncs leave for web alone, and for final: a full sync
	// by a restarted backend must write the same (sorted: the kernel lists
	// objects in creation order, which partial syncs change; duplicates
	// would still show).
	small := final[:1]
	sync(b, small, false)
	wantSmall := sortedLines(kb.ours(l))
	sync(b, final, false)
	before := sortedLines(kb.ours(l))
	var b2 Backend
	l.inNode(func() (err error) { b2, err = kb.new(); return err })
	sync(b2, final, true)
	t.Run("RestartAdoptsWithoutDuplicates", func(t *testing.T) {
		if after := sortedLines(kb.ours(l)); after != before {
			t.Errorf("our rules after a restart:\n%s\nbefore:\n%s", after, before)
		}
		if got := sawBy(l.gets(clientV4, vipWeb, 80, 20)); got["pod1"] != nil {
			t.Errorf("after the restart, web reached %v; pod1 is no longer a destination", got)
		}
	})
	l.inNode(func() (err error) { b2, err = kb.new(); return err })
	sync(b2, small, true)
	t.Run("RestartRemovesWhatIsNoLongerWanted", func(t *testing.T) {
		if got := sortedLines(kb.ours(l)); got != wantSmall {
			t.Errorf("our rules after a restart with fewer services:\n%s\nwant:\n%s", got, wantSmall)
		}
		if _, err := get(l.http[clientV4], vipRR, 80); err == nil {
			t.Errorf("GET %s answered after its Service went", vipRR)
		}
	})
	t.Run("ForeignRulesUntouched", func(t *testing.T) {
		if got := kb.foreign(l); got != foreign {
			t.Errorf("foreign rules changed:\n%s\nwere:\n%s", got, foreign)
		}
	})
	l.inNode(func() error { return b2.Cleanup(ctx) })
	// Again, with nothing left to remove: still no error.
	l.inNode(func() error { return b2.Cleanup(ctx) })
	t.Run("CleanupLeavesNothingOfOurs", func(t *testing.T) {
		if got := kb.ours(l); got != "" {
			t.Errorf("left after Cleanup:\n%s", got)
		}
		if got := kb.foreign(l); got != foreign {
			t.Errorf("foreign rules changed by Cleanup:\n%s\nwere:\n%s", got, foreign)
		}
		// The fake kube-proxy's rule for web's address is in force again.
		if a, err := get(l.http[clientV4], vipWeb, 80); err != nil || a.server != "pod2" {
			t.Errorf("after Cleanup, web answered %v, %v; want kube-proxy's pod2", a, err)
		}
	})
}

func sortedLines(s string) string {
	lines := strings.Split(s, "\n")
	for i := range lines {
		lines[i] = strings.TrimRight(strings.TrimSpace(lines[i]), ",")
	}
	return strings.Join(sortedStrings(lines), "\n")
}

func sortedStrings(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

// nftables

func nftKernelBackend() kernelBackend {
	return kernelBackend{
		tools: []string{"nft"},
		new:   func() (Backend, error) { return NewNFTables(NFTablesOptions{}) },
		addForeign: func(l *lab) {
			l.nodeRunInput(`
table ip kube-proxy {
	chain nat-prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr 198.51.100.65 tcp dport 80 dnat to 203.0.113.12:8080
	}
	chain filter-forward {
		type filter hook forward priority filter; policy accept;
		ct state invalid drop
	}
}
`, "nft", "-f", "-")
		},
		foreign: func(l *lab) string { return withoutTable(l.nodeRun("nft", "list", "ruleset"), "table inet herald {") },
		ours: func(l *lab) string {
			out, err := exec.Command("ip", "netns", "exec", l.node, "nft", "list", "table", "inet", "herald").CombinedOutput()
			if err != nil {
				return "" // no table
			}
			return string(out)
		},
	}
}

// withoutTable removes the block of one table from `nft list ruleset`.
func withoutTable(ruleset, header string) string {
	var b strings.Builder
	in := false
	for _, line := range strings.SplitAfter(ruleset, "\n") {
		switch {
		case strings.HasPrefix(line, header):
			in = true
		case in && strings.HasPrefix(line, "}"):
			in = false
		case !in:
			b.WriteString(line)
		}
	}
	return b.String()
}

func TestNFTablesInKernel(t *testing.T) { testBackendInKernel(t, nftKernelBackend()) }

// iptables, legacy and nf_tables

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// iptSave is iptables-save of both families without comments and counters,
// split into our lines and the others.
func iptSave(l *lab, bin string) (ours, foreign string) {
	var o, f strings.Builder
	for _, save := range []string{bin + "-save", strings.Replace(bin, "iptables", "ip6tables", 1) + "-save"} {
		for _, line := range strings.SplitAfter(l.nodeRun(save), "\n") {
			line = counters.ReplaceAllString(line, "")
			switch {
			case strings.HasPrefix(line, "#"):
			case strings.Contains(line, iptPrefix):
				o.WriteString(line)
			default:
				f.WriteString(line)
			}
		}
	}
	return o.String(), f.String()
}

func iptKernelBackend(bin string) kernelBackend {
	return kernelBackend{
		tools: []string{bin + "-restore", bin + "-save", strings.Replace(bin, "iptables", "ip6tables", 1) + "-restore"},
		new:   func() (Backend, error) { return NewIPTables(IPTablesOptions{Binary: bin}) },
		addForeign: func(l *lab) {
			l.nodeRunInput(`*nat
:KUBE-SERVICES - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES -d 198.51.100.65/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 203.0.113.12:8080
COMMIT
*filter
:KUBE-FORWARD - [0:0]
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
COMMIT
`, bin+"-restore", "--noflush")
			// IPv6 too, nat included: iptables creates a built-in table on
			// first use and never deletes it, so the comparison would see
			// an empty nat table appear.
			l.nodeRunInput("*nat\n:KUBE-SERVICES - [0:0]\n-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n*filter\n:KUBE-FORWARD - [0:0]\n-A FORWARD -j KUBE-FORWARD\nCOMMIT\n",
				strings.Replace(bin, "iptables", "ip6tables", 1)+"-restore", "--noflush")
		},
		foreign: func(l *lab) string { _, f := iptSave(l, bin); return f },
		ours:    func(l *lab) string { o, _ := iptSave(l, bin); return o },
	}
}

func TestIPTablesLegacyInKernel(t *testing.T) {
	testBackendInKernel(t, iptKernelBackend("iptables-legacy"))
}
func TestIPTablesNFTInKernel(t *testing.T) { testBackendInKernel(t, iptKernelBackend("iptables-nft")) }
