package dataplane

import (
	"flag"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/knftables"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// The rendering tests go through Generate, from Services and nodes as the
// speaker sees them, so that the glue between the two is what is proven.

var (
	selfNode = Node{Name: "self", Addrs: []netip.Addr{netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("2001:db8:2::1")}}
	node2    = Node{Name: "n2", Addrs: []netip.Addr{netip.MustParseAddr("203.0.113.21"), netip.MustParseAddr("2001:db8:2::21")}}
	node3    = Node{Name: "n3", Addrs: []netip.Addr{netip.MustParseAddr("203.0.113.22"), netip.MustParseAddr("2001:db8:2::22")}}
	nodes    = Nodes{Self: "self", Healthy: []Node{selfNode, node2, node3}}
)

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

func ep(addr string, port uint16, node string) Endpoint {
	return Endpoint{Addr: netip.MustParseAddr(addr), Port: port, Node: node}
}

// web is a Service with one endpoint on this node and one on n2; n3 has none.
func web() Service {
	return Service{
		Key:       types.NamespacedName{Namespace: "default", Name: "web"},
		IPs:       addrs("198.51.100.10"),
		NodePorts: true,
		Ports: []Port{{Name: "http", Protocol: TCP, Port: 80, NodePort: 30080,
			Endpoints: []Endpoint{ep("203.0.113.11", 8080, "self"), ep("203.0.113.12", 8080, "n2")}}},
	}
}

type renderCase struct {
	name string
	svcs func() []Service
	// viaNodePorts: Generate with Nodes.ViaNodePorts.
	viaNodePorts bool
}

func (c renderCase) nodes() Nodes {
	n := nodes
	n.ViaNodePorts = c.viaNodePorts
	return n
}

var renderCases = []renderCase{
	{name: "cluster", svcs: func() []Service { return []Service{web()} }},
	{name: "local", svcs: func() []Service {
		s := web()
		s.Local = true
		return []Service{s}
	}},
	{name: "affinity", svcs: func() []Service {
		s := web()
		s.Affinity = 3 * time.Hour
		return []Service{s}
	}},
	{name: "dualstack", svcs: func() []Service {
		s := web()
		s.IPs = addrs("198.51.100.10", "2001:db8::10")
		s.Ports[0].Endpoints = append(s.Ports[0].Endpoints, ep("2001:db8:2::11", 8080, "self"), ep("2001:db8:2::12", 8080, "n2"))
		return []Service{s}
	}},
	{name: "sharedip", svcs: func() []Service {
		s := web()
		t := web()
		t.Key.Name = "tls"
		t.Ports = []Port{{Name: "https", Protocol: TCP, Port: 443, NodePort: 30443,
			Endpoints: []Endpoint{ep("203.0.113.13", 8443, "self")}}}
		dns := web()
		dns.Key.Name = "dns"
		dns.Ports = []Port{{Name: "dns", Protocol: UDP, Port: 53, NodePort: 30053,
			Endpoints: []Endpoint{ep("203.0.113.14", 53, "n3")}}}
		return []Service{s, t, dns}
	}},
	{name: "via-nodeports", svcs: func() []Service { return []Service{web()} }, viaNodePorts: true},
	{name: "via-nodeports-local-elsewhere", svcs: func() []Service {
		s := web()
		s.Local = true
		s.Ports[0].Endpoints = s.Ports[0].Endpoints[1:]
		return []Service{s}
	}, viaNodePorts: true},
	{name: "no-destinations", svcs: func() []Service {
		s := web()
		s.Local = true
		s.Ports[0].Endpoints = nil
		return []Service{s}
	}},
	{name: "scheduler-random", svcs: func() []Service {
		s := web()
		s.Scheduler = "random"
		return []Service{s}
	}},
	{name: "scheduler-rr", svcs: func() []Service {
		s := web()
		s.Scheduler = "rr"
		return []Service{s}
	}},
	{name: "scheduler-sh", svcs: func() []Service {
		s := web()
		s.Scheduler = "sh"
		return []Service{s}
	}},
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs (go test -update rewrites it)\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestNFTablesRenderGolden(t *testing.T) {
	b := &NFTables{}
	for _, c := range renderCases {
		t.Run(c.name, func(t *testing.T) {
			rs, _ := Generate(c.svcs(), c.nodes(), b.Supports)
			golden(t, filepath.Join("testdata", "nftables", c.name+".nft"), RenderNFTables(NFTablesOptions{}, rs))
		})
	}
}

func TestIPTablesRenderGolden(t *testing.T) {
	b := &IPTables{}
	for _, c := range renderCases {
		t.Run(c.name, func(t *testing.T) {
			rs, _ := Generate(c.svcs(), c.nodes(), b.Supports)
			got := "# iptables-restore --noflush\n" + RenderIPTables(IPTablesOptions{}, true, rs) +
				"# ip6tables-restore --noflush\n" + RenderIPTables(IPTablesOptions{}, false, rs)
			golden(t, filepath.Join("testdata", "iptables", c.name+".rules"), got)
		})
	}
}

// partialCase: web's endpoint on n2 moves to n3 (so, with Local, its
// NodePort destination moves too), a port is added, and a Service goes away.
func partialCase() (before, after []Service) {
	moved := web()
	moved.Local = true
	gone := web()
	gone.Key.Name = "gone"
	gone.IPs = addrs("198.51.100.20")
	before = []Service{moved, gone}

	moved = web()
	moved.Local = true
	moved.Ports[0].Endpoints[1] = ep("203.0.113.12", 8080, "n3")
	moved.Ports = append(moved.Ports, Port{Name: "https", Protocol: TCP, Port: 443, NodePort: 30443,
		Endpoints: []Endpoint{ep("203.0.113.11", 8443, "self")}})
	return before, []Service{moved}
}

func TestPartialRenderGolden(t *testing.T) {
	before, after := partialCase()
	{
		b := &NFTables{}
		old, _ := Generate(before, nodes, b.Supports)
		rs, _ := Generate(after, nodes, b.Supports)
		golden(t, filepath.Join("testdata", "nftables", "partial.nft"), RenderNFTablesPartial(NFTablesOptions{}, old, rs))
	}
	{
		b := &IPTables{}
		old, _ := Generate(before, nodes, b.Supports)
		rs, _ := Generate(after, nodes, b.Supports)
		golden(t, filepath.Join("testdata", "iptables", "partial.rules"), "# iptables-restore --noflush\n"+RenderIPTablesPartial(IPTablesOptions{}, true, old, rs))
	}
}

// A partial sync with nothing changed writes nothing: no transaction, no
// restore.
func TestPartialRenderOfNoChangeIsEmpty(t *testing.T) {
	rs, _ := Generate([]Service{web()}, nodes, func(Scheduler) bool { return true })
	if got := RenderNFTablesPartial(NFTablesOptions{}, rs, rs); got != "" {
		t.Errorf("nftables: %q", got)
	}
	if got := RenderIPTablesPartial(IPTablesOptions{}, true, rs, rs); got != "" {
		t.Errorf("iptables: %q", got)
	}
}

func TestIPTablesHasNoSourceHashAndFallsBackWithAWarning(t *testing.T) {
	s := web()
	s.Scheduler = "sh"
	rs, warns := Generate([]Service{s}, nodes, (&IPTables{}).Supports)
	if len(warns) != 1 || rs.Services[0].Scheduler != Random {
		t.Fatalf("scheduler %s, warnings %v; want random and one warning", rs.Services[0].Scheduler, warns)
	}
	if rs, warns = Generate([]Service{s}, nodes, (&NFTables{}).Supports); len(warns) != 0 || rs.Services[0].Scheduler != SourceHash {
		t.Fatalf("nftables: scheduler %s, warnings %v; want sh and none", rs.Services[0].Scheduler, warns)
	}
}

// Stats.Rules counts what the transaction creates: its chains, rules and
// map elements (counted here from the text, not by the same code).
func TestNFTablesRulesCountMatchesTheTransaction(t *testing.T) {
	for _, c := range renderCases {
		rs, _ := Generate(c.svcs(), c.nodes(), (&NFTables{}).Supports)
		text := RenderNFTables(NFTablesOptions{}, rs)
		n := 0
		for _, l := range strings.Split(text, "\n") {
			if strings.HasPrefix(l, "add chain ") || strings.HasPrefix(l, "add rule ") || strings.HasPrefix(l, "add element ") {
				n++
			}
		}
		if got := (nftRenderer{}).count(rs); got != n {
			t.Errorf("%s: count %d, transaction has %d", c.name, got, n)
		}
	}
}

func TestIPTablesRulesCountMatchesTheRestoreInput(t *testing.T) {
	for _, c := range renderCases {
		rs, _ := Generate(c.svcs(), c.nodes(), (&IPTables{}).Supports)
		n := 0
		for _, v4 := range []bool{true, false} {
			for _, l := range strings.Split(RenderIPTables(IPTablesOptions{}, v4, rs), "\n") {
				if strings.HasPrefix(l, ":") || strings.HasPrefix(l, "-A ") || strings.HasPrefix(l, "-I ") {
					n++
				}
			}
		}
		// The fixed chains, jumps and postrouting rules are in both
		// families' input; count them once.
		n -= 3 + len(iptJumps) + 3
		if got := (iptRenderer{}).count(rs); got != n {
			t.Errorf("%s: count %d, restore input has %d", c.name, got, n)
		}
	}
}

// nft itself accepts every golden transaction (nft -c parses and checks
// against the kernel without changing anything).
func TestNFTablesGoldenIsValidNFT(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("nft -c needs root")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("no nft binary")
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "nftables", "*.nft"))
	for _, f := range files {
		if filepath.Base(f) == "partial.nft" {
			continue // refers to objects of an earlier state
		}
		if out, err := exec.Command("nft", "-c", "-f", f).CombinedOutput(); err != nil {
			t.Errorf("nft -c -f %s: %v\n%s", f, err, out)
		}
	}
}

// The nftables backend keeps Stats.Rules by difference after a partial
// sync; it must land where a count of the whole new RuleSet does.
func TestPartialSyncRulesCountEqualsAFullCount(t *testing.T) {
	before, after := partialCase()
	old, _ := Generate(before, nodes, func(Scheduler) bool { return true })
	rs, _ := Generate(after, nodes, func(Scheduler) bool { return true })
	nft := (nftRenderer{}).count(old)
	for _, c := range diff(index(old), rs) {
		nft += nftServiceObjects(c.New) - nftServiceObjects(c.Old)
	}
	if want := (nftRenderer{}).count(rs); nft != want {
		t.Errorf("nftables: %d after the partial sync, %d counted", nft, want)
	}
}

// Moving an endpoint rewrites the rules of the service's chain and nothing
// else (a chain or element delete makes nft read the whole table); removing
// the Service deletes its element and its chain.
func TestNFTablesPartialMovingAnEndpointRewritesOneChain(t *testing.T) {
	all := func(Scheduler) bool { return true }
	moved := web()
	moved.Ports[0].Endpoints[0].Addr = netip.MustParseAddr("203.0.113.13")
	before, _ := Generate([]Service{web()}, nodes, all)
	after, _ := Generate([]Service{moved}, nodes, all)
	r := nftRenderer{opts: NFTablesOptions{}.withDefaults()}
	render := func(from, to RuleSet) string {
		tx := knftables.NewFake(knftables.InetFamily, "herald").NewTransaction()
		r.partial(tx, diff(index(from), to))
		return tx.String()
	}
	svc := "svc-198.51.100.10-tcp-80"
	first := render(before, after)
	for _, line := range strings.Split(strings.TrimSpace(first), "\n") {
		if line != "flush chain inet herald "+svc && !strings.HasPrefix(line, "add chain inet herald "+svc+" ") &&
			!strings.HasPrefix(line, "add rule inet herald "+svc+" ") {
			t.Errorf("moving an endpoint: unexpected %q in\n%s", line, first)
		}
	}
	if !strings.Contains(first, "dnat ip to 203.0.113.13:8080") || strings.Contains(first, "203.0.113.11:8080") {
		t.Errorf("moving an endpoint: want the new endpoint and not the old one in\n%s", first)
	}
	gone := render(after, RuleSet{})
	for _, want := range []string{"delete element inet herald services-ip4", "delete chain inet herald " + svc} {
		if !strings.Contains(gone, want) {
			t.Errorf("removing the Service: want %q in\n%s", want, gone)
		}
	}
}
