package dataplane

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cloudflare/ipvs"
	"github.com/cloudflare/ipvs/netmask"
	"k8s.io/apimachinery/pkg/types"
)

var (
	vip4 = netip.MustParseAddr("203.0.113.10")
	vip6 = netip.MustParseAddr("2001:db8::10")
	ep1  = netip.MustParseAddr("10.1.0.1")
	ep2  = netip.MustParseAddr("10.1.0.2")
	node = netip.MustParseAddr("198.51.100.7")
)

func dest(a netip.Addr, port uint16) Destination {
	return Destination{Addr: a, Port: port}
}

func masq(v VirtualService) VirtualService {
	v.Masquerade = true
	return v
}

func vs(ip netip.Addr, proto Protocol, port uint16, sched Scheduler, aff time.Duration, ds ...Destination) VirtualService {
	return VirtualService{
		Key:     Key{IP: ip, Protocol: proto, Port: port},
		Service: types.NamespacedName{Namespace: "shop", Name: "web"}, PortName: "http",
		Destinations: ds, Affinity: aff, Scheduler: sched,
	}
}

// sampleRuleSet has every shape the backend renders: each protocol, both
// families, affinity, every scheduler, local and masqueraded destinations,
// and a service without destinations.
func sampleRuleSet() RuleSet {
	ep6 := netip.MustParseAddr("2001:db8:1::1")
	node6 := netip.MustParseAddr("2001:db8:2::7")
	return RuleSet{Services: []VirtualService{
		masq(vs(vip4, TCP, 80, Random, 0, dest(ep1, 8080), dest(node, 30080))),
		masq(vs(vip4, TCP, 443, SourceHash, 3*time.Hour, dest(ep1, 8443), dest(ep2, 8443))),
		masq(vs(vip4, UDP, 53, LeastConn, 0, dest(ep2, 5353))),
		vs(vip4, SCTP, 9000, WeightedRR, 1500*time.Millisecond, dest(ep1, 9000)),
		vs(netip.MustParseAddr("203.0.113.11"), TCP, 80, DestinationHash, 0),
		vs(netip.MustParseAddr("203.0.113.11"), TCP, 81, ShortestDelay, 0, dest(ep1, 80)),
		vs(netip.MustParseAddr("203.0.113.11"), TCP, 82, NeverQueue, 0, dest(ep1, 80)),
		masq(vs(vip6, TCP, 80, RoundRobin, 0, dest(ep6, 8080), dest(node6, 30080))),
	}}
}

func opStrings(ops []ipvsOp) string {
	var b strings.Builder
	for _, op := range ops {
		b.WriteString(op.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// TestIPVSGoldenFromEmpty: the first sync on an empty node, every value
// passed to the kernel, and the masquerade elements.
func TestIPVSGoldenFromEmpty(t *testing.T) {
	rs := sampleRuleSet()
	var b strings.Builder
	b.WriteString("# planIPVS(sampleRuleSet(), empty kernel)\n")
	b.WriteString(opStrings(planIPVS(rs.Services, addrsOf(rs.Services), ipvsState{})))
	b.WriteString("# masquerade elements\n")
	for _, e := range masqElems(rs.Services) {
		b.WriteString(e.String() + "\n")
	}
	golden(t, "testdata/ipvs/sample.golden", b.String())
}

// kernelOf is what the kernel holds after rs was programmed, as the kernel
// lists it (with the hashed flag it adds).
func kernelOf(rs RuleSet) ipvsState {
	var st ipvsState
	st.Addrs = addrsOf(rs.Services)
	for i := range rs.Services {
		s := programmed(&rs.Services[i])
		s.Service.Flags |= ipvs.ServiceHashed
		st.Services = append(st.Services, s)
	}
	return st
}

func TestPlanIPVS(t *testing.T) {
	foreign := netip.MustParseAddr("203.0.113.99")
	base := RuleSet{Services: []VirtualService{
		masq(vs(vip4, TCP, 80, RoundRobin, 0, dest(ep1, 8080), dest(ep2, 8080))),
		vs(vip4, TCP, 443, RoundRobin, 0, dest(ep1, 8443)),
	}}
	with := func(f func(rs *RuleSet)) RuleSet {
		rs := RuleSet{Services: append([]VirtualService(nil), base.Services...)}
		for i := range rs.Services {
			rs.Services[i].Destinations = append([]Destination(nil), rs.Services[i].Destinations...)
		}
		f(&rs)
		return rs
	}
	tests := []struct {
		name string
		want RuleSet
		cur  ipvsState
		ops  []string
	}{{
		name: "in sync: nothing to do",
		want: base, cur: kernelOf(base),
	}, {
		name: "empty kernel: services, then destinations, then the address last",
		want: with(func(rs *RuleSet) { rs.Services = rs.Services[1:] }),
		ops: []string{
			"add-service 203.0.113.10:443/TCP family=INET sched=rr flags=none timeout=0 netmask=255.255.255.255",
			"add-dest 203.0.113.10:443/TCP -> 10.1.0.1:8443 family=INET fwd=Masquerade weight=1",
			"add-addr 203.0.113.10",
		},
	}, {
		name: "a destination goes: only it is removed",
		want: with(func(rs *RuleSet) { rs.Services[0].Destinations = rs.Services[0].Destinations[:1] }),
		cur:  kernelOf(base),
		ops:  []string{"del-dest 203.0.113.10:80/TCP -> 10.1.0.2:8080"},
	}, {
		name: "the scheduler changes: the service is updated in place, destinations kept",
		want: with(func(rs *RuleSet) { rs.Services[1].Scheduler = LeastConn }),
		cur:  kernelOf(base),
		ops:  []string{"update-service 203.0.113.10:443/TCP family=INET sched=lc flags=none timeout=0 netmask=255.255.255.255"},
	}, {
		name: "affinity set: persistent with the timeout in seconds",
		want: with(func(rs *RuleSet) { rs.Services[1].Affinity = 10800 * time.Second }),
		cur:  kernelOf(base),
		ops:  []string{"update-service 203.0.113.10:443/TCP family=INET sched=rr flags=ServicePersistent timeout=10800 netmask=255.255.255.255"},
	}, {
		name: "a destination replaced: the new one added before the old one goes",
		want: with(func(rs *RuleSet) { rs.Services[1].Destinations = []Destination{dest(ep2, 8443)} }),
		cur:  kernelOf(base),
		ops: []string{
			"add-dest 203.0.113.10:443/TCP -> 10.1.0.2:8443 family=INET fwd=Masquerade weight=1",
			"del-dest 203.0.113.10:443/TCP -> 10.1.0.1:8443",
		},
	}, {
		name: "a destination quiesced by someone (weight 0) is restored",
		want: base,
		cur: func() ipvsState {
			st := kernelOf(base)
			st.Services[1].Destinations[0].Weight = 0
			return st
		}(),
		ops: []string{"update-dest 203.0.113.10:443/TCP -> 10.1.0.1:8443 family=INET fwd=Masquerade weight=1"},
	}, {
		name: "a stale VIP of a previous run: its address goes first, then its service",
		want: base,
		cur: func() ipvsState {
			st := kernelOf(base)
			old := kernelOf(RuleSet{Services: []VirtualService{vs(foreign, UDP, 53, RoundRobin, 0, dest(ep1, 53))}})
			st.Addrs = append(st.Addrs, old.Addrs...)
			st.Services = append(st.Services, old.Services...)
			return st
		}(),
		ops: []string{"del-addr 203.0.113.99", "del-service 203.0.113.99:53/UDP"},
	}, {
		name: "a service with no destination is still programmed (IPVS rejects its connections)",
		want: RuleSet{Services: []VirtualService{vs(vip6, UDP, 53, DestinationHash, 0)}},
		ops: []string{
			"add-service [2001:db8::10]:53/UDP family=INET6 sched=dh flags=none timeout=0 netmask=128",
			"add-addr 2001:db8::10",
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := strings.Split(strings.TrimSuffix(opStrings(planIPVS(tt.want.Services, addrsOf(tt.want.Services), tt.cur)), "\n"), "\n")
			if got[0] == "" {
				got = nil
			}
			if strings.Join(got, "\n") != strings.Join(tt.ops, "\n") {
				t.Errorf("ops:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.ops, "\n"))
			}
		})
	}
}

// TestPlanIPVSConverges: applying the plan to a model kernel gives the
// state a fresh plan finds nothing to do in, from any starting point among
// the table's rule sets.
func TestPlanIPVSConverges(t *testing.T) {
	sets := []RuleSet{{}, sampleRuleSet(), {Services: sampleRuleSet().Services[2:5]}, {Services: []VirtualService{
		masq(vs(vip4, TCP, 80, LeastConn, time.Minute, dest(ep2, 1))),
	}}}
	for i, from := range sets {
		for j, to := range sets {
			k := modelKernel(kernelOf(from))
			k.apply(t, planIPVS(to.Services, addrsOf(to.Services), k.state()))
			if ops := planIPVS(to.Services, addrsOf(to.Services), k.state()); len(ops) != 0 {
				t.Errorf("%d -> %d: still to do after applying the plan:\n%s", i, j, opStrings(ops))
			}
		}
	}
}

// model is a kernel as plan sees it, for TestPlanIPVSConverges.
type model struct {
	addrs map[netip.Addr]bool
	svcs  map[serviceKey]*ipvsService
}

func modelKernel(st ipvsState) *model {
	m := &model{addrs: map[netip.Addr]bool{}, svcs: map[serviceKey]*ipvsService{}}
	for _, a := range st.Addrs {
		m.addrs[a] = true
	}
	for _, s := range st.Services {
		m.svcs[keyOf(s.Service)] = &s
	}
	return m
}

func (m *model) apply(t *testing.T, ops []ipvsOp) {
	t.Helper()
	for _, op := range ops {
		s := m.svcs[keyOf(op.Service)]
		switch op.Kind {
		case opAddAddr:
			m.addrs[op.Addr] = true
		case opDelAddr:
			delete(m.addrs, op.Addr)
		case opAddService:
			if s != nil {
				t.Fatalf("%s: exists", op)
			}
			m.svcs[keyOf(op.Service)] = &ipvsService{Service: op.Service}
		case opUpdateService:
			s.Service = op.Service
		case opDelService:
			delete(m.svcs, keyOf(op.Service))
		case opAddDest, opUpdateDest, opDelDest:
			if s == nil {
				t.Fatalf("%s: no such service", op)
			}
			kept := s.Destinations[:0]
			for _, d := range s.Destinations {
				if compareDests(d, op.Dest) != 0 {
					kept = append(kept, d)
				}
			}
			s.Destinations = kept
			if op.Kind != opDelDest {
				s.Destinations = append(s.Destinations, op.Dest)
			}
		}
	}
}

func (m *model) state() ipvsState {
	var st ipvsState
	for a := range m.addrs {
		st.Addrs = append(st.Addrs, a)
	}
	for _, s := range m.svcs {
		st.Services = append(st.Services, *s)
	}
	return st
}

// TestIPVSValuesPassed pins the values IPVS needs that a typo would break
// silently: the scheduler names the kernel modules register, the netmask
// per family (IPv6 takes a prefix length), the forwarding method.
func TestIPVSValuesPassed(t *testing.T) {
	for _, tt := range []struct {
		in   Scheduler
		want string
	}{{Random, "rr"}, {"", "rr"}, {RoundRobin, "rr"}, {WeightedRR, "wrr"}, {LeastConn, "lc"},
		{DestinationHash, "dh"}, {SourceHash, "sh"}, {ShortestDelay, "sed"}, {NeverQueue, "nq"}} {
		if got := ipvsScheduler(tt.in); got != tt.want {
			t.Errorf("ipvsScheduler(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	for _, s := range Schedulers {
		if !(&IPVS{}).Supports(s) {
			t.Errorf("Supports(%q) = false", s)
		}
	}
	if (&IPVS{}).Supports("fo") {
		t.Error(`Supports("fo") = true: not a scheduler a Service can ask for`)
	}
	v4 := vs(vip4, UDP, 53, SourceHash, 90*time.Second)
	if s := desiredService(&v4); s.Family != ipvs.INET || s.Netmask != netmask.MaskFrom(32, 32) ||
		s.Protocol != ipvs.UDP || s.Flags != ipvs.ServicePersistent || s.Timeout != 90 {
		t.Errorf("IPv4 service: %+v", s)
	}
	v6 := vs(vip6, SCTP, 1, RoundRobin, 0)
	if s := desiredService(&v6); s.Family != ipvs.INET6 || s.Netmask.Bits() != 128 || s.Protocol != ipvs.SCTP || s.Flags != 0 || s.Timeout != 0 {
		t.Errorf("IPv6 service: %+v", s)
	}
	// Always NAT forwarding, whatever VirtualService.Masquerade says: the
	// source rewrite is nftables' job.
	if d := desiredDest(dest(ep1, 80)); d.FwdMethod != ipvs.Masquerade || d.Weight != 1 || d.Family != ipvs.INET {
		t.Errorf("destination: %+v", d)
	}
}
