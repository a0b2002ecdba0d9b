package dataplane

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"pgregory.net/rapid"
)

var (
	svcKey  = types.NamespacedName{Namespace: "demo", Name: "web"}
	genVIP4 = netip.MustParseAddr("192.0.2.10")
	genVIP6 = netip.MustParseAddr("2001:db8::10")
	lanNode = Nodes{Self: "a", Healthy: []Node{
		{Name: "a", Addrs: []netip.Addr{netip.MustParseAddr("198.51.100.11"), netip.MustParseAddr("2001:db8:1::11")}},
		{Name: "b", Addrs: []netip.Addr{netip.MustParseAddr("198.51.100.12"), netip.MustParseAddr("2001:db8:1::12")}},
		{Name: "c", Addrs: []netip.Addr{netip.MustParseAddr("198.51.100.13")}},
	}}
)

func allSchedulers(Scheduler) bool { return true }

// dests renders destinations as "addr:port ...", then " masqueraded" when
// they are.
func dests(vs VirtualService) string {
	var out []string
	for _, d := range vs.Destinations {
		out = append(out, d.String())
	}
	s := strings.Join(out, " ")
	if vs.Masquerade {
		s += " masqueraded"
	}
	return s
}

func webPort(eps ...Endpoint) Port {
	return Port{Name: "http", Protocol: TCP, Port: 80, NodePort: 30080, Endpoints: eps}
}

func endpointOn(addr, node string) Endpoint {
	return Endpoint{Addr: netip.MustParseAddr(addr), Port: 8080, Node: node}
}

func TestDestinations(t *testing.T) {
	onA, onB := endpointOn("10.244.0.5", "a"), endpointOn("10.244.1.5", "b")
	onA6 := endpointOn("fd00:10:244::5", "a")
	noNodePort := func(eps ...Endpoint) Port { return Port{Name: "http", Protocol: TCP, Port: 80, Endpoints: eps} }
	for _, tc := range []struct {
		name         string
		svc          Service
		viaNodePorts bool
		ip           netip.Addr
		want         string
	}{
		{
			name: "Cluster: every ready endpoint, masqueraded",
			svc:  Service{NodePorts: true, Ports: []Port{webPort(onA, onB)}},
			ip:   genVIP4,
			want: "10.244.0.5:8080 10.244.1.5:8080 masqueraded",
		},
		{
			name: "Cluster via NodePorts: own endpoint directly, the other healthy nodes' NodePorts",
			svc:  Service{NodePorts: true, Ports: []Port{webPort(onA, onB)}}, viaNodePorts: true,
			ip:   genVIP4,
			want: "10.244.0.5:8080 198.51.100.12:30080 198.51.100.13:30080 masqueraded",
		},
		{
			name: "Cluster via NodePorts without an endpoint here: every other healthy node",
			svc:  Service{NodePorts: true, Ports: []Port{webPort(onB)}}, viaNodePorts: true,
			ip:   genVIP4,
			want: "198.51.100.12:30080 198.51.100.13:30080 masqueraded",
		},
		{
			name: "Local with an endpoint here: only this node's, not masqueraded, so pods see the client's address",
			svc:  Service{NodePorts: true, Local: true, Ports: []Port{webPort(onA, onB)}},
			ip:   genVIP4,
			want: "10.244.0.5:8080",
		},
		{
			name: "Local via NodePorts with an endpoint here: still only this node's",
			svc:  Service{NodePorts: true, Local: true, Ports: []Port{webPort(onA, onB)}}, viaNodePorts: true,
			ip:   genVIP4,
			want: "10.244.0.5:8080",
		},
		{
			name: "Local without an endpoint here: the other nodes' endpoints, masqueraded",
			svc:  Service{NodePorts: true, Local: true, Ports: []Port{webPort(onB)}},
			ip:   genVIP4,
			want: "10.244.1.5:8080 masqueraded",
		},
		{
			name: "Local via NodePorts without an endpoint here: the NodePorts of the nodes running one",
			svc:  Service{NodePorts: true, Local: true, Ports: []Port{webPort(onB)}}, viaNodePorts: true,
			ip:   genVIP4,
			want: "198.51.100.12:30080 masqueraded",
		},
		{
			name: "Local with no endpoint anywhere: nothing, so the connection is refused",
			svc:  Service{NodePorts: true, Local: true, Ports: []Port{webPort()}}, viaNodePorts: true,
			ip: genVIP4,
		},
		{
			name: "IPv6 address: the IPv6 endpoints",
			svc:  Service{NodePorts: true, Ports: []Port{webPort(onA, onA6, onB)}},
			ip:   genVIP6,
			want: "[fd00:10:244::5]:8080 masqueraded",
		},
		{
			name: "IPv6 address via NodePorts: the nodes that have an IPv6 address",
			svc:  Service{NodePorts: true, Ports: []Port{webPort(onA, onA6, onB)}}, viaNodePorts: true,
			ip:   genVIP6,
			want: "[2001:db8:1::12]:30080 [fd00:10:244::5]:8080 masqueraded",
		},
		{
			name: "via NodePorts, allocateLoadBalancerNodePorts false: every endpoint directly",
			svc:  Service{Ports: []Port{noNodePort(onA, onB)}}, viaNodePorts: true,
			ip:   genVIP4,
			want: "10.244.0.5:8080 10.244.1.5:8080 masqueraded",
		},
		{
			name: "via NodePorts, a port without a NodePort goes to endpoints even when others have one",
			svc:  Service{NodePorts: true, Ports: []Port{noNodePort(onB)}}, viaNodePorts: true,
			ip:   genVIP4,
			want: "10.244.1.5:8080 masqueraded",
		},
		{
			name: "an endpoint without a node name is never taken for this node's",
			svc:  Service{Local: true, Ports: []Port{noNodePort(endpointOn("10.244.2.5", ""))}},
			ip:   genVIP4,
			want: "10.244.2.5:8080 masqueraded",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.svc.Key, tc.svc.IPs = svcKey, []netip.Addr{tc.ip}
			nodes := lanNode
			nodes.ViaNodePorts = tc.viaNodePorts
			vs, warns := ServiceRules(&tc.svc, nodes, allSchedulers)
			if len(warns) != 0 || len(vs) != 1 {
				t.Fatalf("got %d virtual services, warnings %v", len(vs), warns)
			}
			if got := dests(vs[0]); got != tc.want {
				t.Errorf("destinations\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestGenerateOneVirtualServicePerAddressAndPort(t *testing.T) {
	svc := Service{
		Key: svcKey, IPs: []netip.Addr{genVIP6, genVIP4}, NodePorts: true, Affinity: 3 * time.Hour,
		Ports: []Port{webPort(endpointOn("10.244.0.5", "a")), {Name: "dns", Protocol: UDP, Port: 53, NodePort: 30053}},
	}
	rs, warns := Generate([]Service{svc}, lanNode, allSchedulers)
	if len(warns) != 0 {
		t.Fatalf("warnings: %v", warns)
	}
	var got []string
	for _, vs := range rs.Services {
		if vs.Affinity != 3*time.Hour || vs.Scheduler != DefaultScheduler || vs.Service != svcKey {
			t.Errorf("%s: affinity %v scheduler %s service %s", vs.Key, vs.Affinity, vs.Scheduler, vs.Service)
		}
		got = append(got, vs.Key.String()+" "+vs.PortName)
	}
	want := []string{"192.0.2.10:53/UDP dns", "192.0.2.10:80/TCP http", "[2001:db8::10]:53/UDP dns", "[2001:db8::10]:80/TCP http"}
	if !slices.Equal(got, want) {
		t.Errorf("virtual services\n got %q\nwant %q", got, want)
	}
}

func TestSharedAddressKeepsEachServicesPorts(t *testing.T) {
	web := Service{Key: svcKey, IPs: []netip.Addr{genVIP4}, NodePorts: true, Ports: []Port{webPort()}}
	dns := Service{Key: types.NamespacedName{Namespace: "demo", Name: "dns"}, IPs: []netip.Addr{genVIP4}, NodePorts: true,
		Ports: []Port{{Name: "dns", Protocol: UDP, Port: 53, NodePort: 30053}}}
	// A third Service claiming web's port (the controller refuses such sharing).
	clash := Service{Key: types.NamespacedName{Namespace: "demo", Name: "zz"}, IPs: []netip.Addr{genVIP4}, NodePorts: true, Ports: []Port{webPort()}}
	rs, warns := Generate([]Service{clash, web, dns}, lanNode, allSchedulers)
	var got []string
	for _, vs := range rs.Services {
		got = append(got, vs.Key.String()+" "+vs.Service.String())
	}
	want := []string{"192.0.2.10:53/UDP demo/dns", "192.0.2.10:80/TCP demo/web"}
	if !slices.Equal(got, want) {
		t.Errorf("virtual services\n got %q\nwant %q", got, want)
	}
	if len(warns) != 1 || warns[0].Service != clash.Key || !strings.Contains(warns[0].Message, "demo/web") {
		t.Errorf("warnings %v, want one for demo/zz naming demo/web", warns)
	}
}

func TestSchedulerFallsBackWithAWarning(t *testing.T) {
	netfilter := func(s Scheduler) bool { return s == Random || s == RoundRobin || s == SourceHash }
	for _, tc := range []struct {
		annotation string
		want       Scheduler
		warning    string
	}{
		{"", Random, ""},
		{"rr", RoundRobin, ""},
		{"sh", SourceHash, ""},
		{"lc", Random, `scheduler "lc" is not available`},
		{"round-robin", Random, `scheduler "round-robin" is not one of`},
	} {
		svc := Service{Key: svcKey, IPs: []netip.Addr{genVIP4}, Scheduler: tc.annotation, Ports: []Port{webPort()}}
		vs, warns := ServiceRules(&svc, lanNode, netfilter)
		if vs[0].Scheduler != tc.want {
			t.Errorf("%q: scheduler %s, want %s", tc.annotation, vs[0].Scheduler, tc.want)
		}
		if tc.warning == "" && len(warns) > 0 || tc.warning != "" && (len(warns) != 1 || !strings.Contains(warns[0].Message, tc.warning)) {
			t.Errorf("%q: warnings %v, want %q", tc.annotation, warns, tc.warning)
		}
	}
}

// TestGenerateProperties checks, over random Services and nodes, what every
// rule set must satisfy: keys sorted and unique, destinations of the
// address's family, this node's own NodePort never a target, and
// masquerade exactly for what is not this node's own endpoint.
func TestGenerateProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		nodeNames := []string{"a", "b", "c"}
		var nodes Nodes
		nodes.Self = rapid.SampledFrom(nodeNames).Draw(t, "self")
		nodes.ViaNodePorts = rapid.Bool().Draw(t, "viaNodePorts")
		for i, n := range nodeNames {
			if rapid.Bool().Draw(t, "healthy"+n) {
				nodes.Healthy = append(nodes.Healthy, Node{Name: n, Addrs: []netip.Addr{
					netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}), netip.MustParseAddr(fmt.Sprintf("2001:db8:1::%d", i+1))}})
			}
		}
		var svcs []Service
		for i := range rapid.IntRange(1, 4).Draw(t, "services") {
			s := Service{Key: types.NamespacedName{Namespace: "ns", Name: fmt.Sprint("s", i)},
				Local: rapid.Bool().Draw(t, "local"), NodePorts: rapid.Bool().Draw(t, "nodeports")}
			for range rapid.IntRange(1, 2).Draw(t, "ips") {
				s.IPs = append(s.IPs, rapid.SampledFrom([]netip.Addr{genVIP4, genVIP6, netip.MustParseAddr("192.0.2.11")}).Draw(t, "ip"))
			}
			for j := range rapid.IntRange(1, 2).Draw(t, "ports") {
				p := Port{Name: fmt.Sprint("p", j), Protocol: rapid.SampledFrom([]Protocol{TCP, UDP}).Draw(t, "proto"),
					Port: uint16(rapid.IntRange(80, 82).Draw(t, "port")), NodePort: uint16(30000 + j)}
				for k := range rapid.IntRange(0, 4).Draw(t, "endpoints") {
					addr := netip.AddrFrom4([4]byte{10, 244, byte(k), 5})
					if rapid.Bool().Draw(t, "v6") {
						addr = netip.MustParseAddr(fmt.Sprintf("fd00::%d", k+1))
					}
					p.Endpoints = append(p.Endpoints, Endpoint{Addr: addr, Port: 8080, Node: rapid.SampledFrom(nodeNames).Draw(t, "node")})
				}
				s.Ports = append(s.Ports, p)
			}
			svcs = append(svcs, s)
		}
		rs, _ := Generate(svcs, nodes, allSchedulers)
		var selfAddrs []netip.Addr
		for _, n := range nodes.Healthy {
			if n.Name == nodes.Self {
				selfAddrs = n.Addrs
			}
		}
		for i, vs := range rs.Services {
			if i > 0 && rs.Services[i-1].Key.Compare(vs.Key) >= 0 {
				t.Fatalf("keys not sorted and unique: %s then %s", rs.Services[i-1].Key, vs.Key)
			}
			for _, d := range vs.Destinations {
				if d.Addr.Is4() != vs.IP.Is4() {
					t.Fatalf("%s: destination %s of the other family", vs.Key, d)
				}
				if slices.Contains(selfAddrs, d.Addr) {
					t.Fatalf("%s: this node's own NodePort %s is a destination", vs.Key, d)
				}
				if !vs.Masquerade && !slices.ContainsFunc(svcs, func(s Service) bool { return s.hasEndpointOn(nodes.Self, d) }) {
					t.Fatalf("%s: destination %s not masqueraded but not an endpoint on this node", vs.Key, d)
				}
			}
		}
	})
}

func (s Service) hasEndpointOn(node string, d Destination) bool {
	for _, p := range s.Ports {
		for _, e := range p.Endpoints {
			if e.Addr == d.Addr && e.Port == d.Port && e.Node == node {
				return true
			}
		}
	}
	return false
}
