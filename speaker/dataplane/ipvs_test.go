package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/cloudflare/ipvs"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// fakeIPVS is the kernel's IPVS as the backend's shell sees it through
// ipvs.Client, recording every change it is asked for.
type fakeIPVS struct {
	svcs  map[serviceKey]*ipvsService
	calls []string
	// fail makes the call whose record starts with it fail.
	fail string
}

func newFakeIPVS() *fakeIPVS { return &fakeIPVS{svcs: map[serviceKey]*ipvsService{}} }

func (f *fakeIPVS) record(format string, a ...any) error {
	c := fmt.Sprintf(format, a...)
	f.calls = append(f.calls, c)
	if f.fail != "" && strings.HasPrefix(c, f.fail) {
		return errors.New("injected failure")
	}
	return nil
}

func (f *fakeIPVS) Info() (ipvs.Info, error)     { return ipvs.Info{}, nil }
func (f *fakeIPVS) Config() (ipvs.Config, error) { return ipvs.Config{}, nil }
func (f *fakeIPVS) SetConfig(ipvs.Config) error  { return nil }
func (f *fakeIPVS) Service(s ipvs.Service) (ipvs.ServiceExtended, error) {
	return ipvs.ServiceExtended{}, errors.New("not used")
}

func (f *fakeIPVS) Services() ([]ipvs.ServiceExtended, error) {
	var out []ipvs.ServiceExtended
	for _, s := range f.svcs {
		svc := s.Service
		svc.Flags |= ipvs.ServiceHashed
		out = append(out, ipvs.ServiceExtended{Service: svc})
	}
	return out, f.record("list")
}

func (f *fakeIPVS) Destinations(s ipvs.Service) ([]ipvs.DestinationExtended, error) {
	var out []ipvs.DestinationExtended
	for _, d := range f.svcs[keyOf(s)].Destinations {
		out = append(out, ipvs.DestinationExtended{Destination: d})
	}
	return out, nil
}

func (f *fakeIPVS) CreateService(s ipvs.Service) error {
	if err := f.record("add %s", serviceName(s)); err != nil {
		return err
	}
	f.svcs[keyOf(s)] = &ipvsService{Service: s}
	return nil
}

func (f *fakeIPVS) UpdateService(s ipvs.Service) error {
	if err := f.record("update %s", serviceName(s)); err != nil {
		return err
	}
	f.svcs[keyOf(s)].Service = s
	return nil
}

func (f *fakeIPVS) RemoveService(s ipvs.Service) error {
	if err := f.record("del %s", serviceName(s)); err != nil {
		return err
	}
	delete(f.svcs, keyOf(s))
	return nil
}

func (f *fakeIPVS) CreateDestination(s ipvs.Service, d ipvs.Destination) error {
	if err := f.record("add %s -> %s", serviceName(s), netip.AddrPortFrom(d.Address, d.Port)); err != nil {
		return err
	}
	f.svcs[keyOf(s)].Destinations = append(f.svcs[keyOf(s)].Destinations, d)
	return nil
}

func (f *fakeIPVS) UpdateDestination(s ipvs.Service, d ipvs.Destination) error {
	return f.record("update %s -> %s", serviceName(s), netip.AddrPortFrom(d.Address, d.Port))
}

func (f *fakeIPVS) RemoveDestination(s ipvs.Service, d ipvs.Destination) error {
	if err := f.record("del %s -> %s", serviceName(s), netip.AddrPortFrom(d.Address, d.Port)); err != nil {
		return err
	}
	svc := f.svcs[keyOf(s)]
	svc.Destinations = slices.DeleteFunc(svc.Destinations, func(x ipvs.Destination) bool { return compareDests(x, d) == 0 })
	return nil
}

// fakeLink is the dummy link.
type fakeLink struct {
	exists bool
	addrs  map[netip.Addr]bool
	calls  *[]string
}

func (l *fakeLink) Ensure() ([]netip.Addr, error) { l.exists = true; return l.Addrs() }
func (l *fakeLink) Addrs() ([]netip.Addr, error) {
	var out []netip.Addr
	for a := range l.addrs {
		out = append(out, a)
	}
	return out, nil
}
func (l *fakeLink) AddAddr(a netip.Addr) error {
	*l.calls = append(*l.calls, "add-addr "+a.String())
	l.addrs[a] = true
	return nil
}
func (l *fakeLink) DelAddr(a netip.Addr) error {
	*l.calls = append(*l.calls, "del-addr "+a.String())
	delete(l.addrs, a)
	return nil
}
func (l *fakeLink) Delete() error { l.exists = false; clear(l.addrs); return nil }

// fakeMasq is the masquerade table.
type fakeMasq struct {
	elems    []masqElem
	replaced int
	exists   bool
	// log, when set, gets the changes, interleaved with IPVS's calls.
	log *[]string
}

func (m *fakeMasq) Replace(e []masqElem) error {
	m.elems, m.exists = slices.Clone(e), true
	m.replaced++
	if m.log != nil {
		*m.log = append(*m.log, fmt.Sprintf("masq = %v", e))
	}
	return nil
}
func (m *fakeMasq) Update(add, del []masqElem) error {
	if m.log != nil {
		for _, e := range add {
			*m.log = append(*m.log, fmt.Sprintf("masq + %v", e))
		}
		for _, e := range del {
			*m.log = append(*m.log, fmt.Sprintf("masq - %v", e))
		}
	}
	m.elems = slices.DeleteFunc(m.elems, func(x masqElem) bool { return slices.Contains(del, x) })
	m.elems = append(m.elems, add...)
	slices.SortFunc(m.elems, compareMasq)
	return nil
}
func (m *fakeMasq) Cleanup() error { m.elems, m.exists = nil, false; return nil }

type fakeNode struct {
	ipvs *fakeIPVS
	link *fakeLink
	masq *fakeMasq
	b    *IPVS
}

func newFakeNode() *fakeNode {
	n := &fakeNode{ipvs: newFakeIPVS(), masq: &fakeMasq{}}
	n.link = &fakeLink{addrs: map[netip.Addr]bool{}, calls: &n.ipvs.calls}
	n.b = newIPVS(n.ipvs, n.link, n.masq, func() error { return nil })
	return n
}

func (n *fakeNode) sync(t *testing.T, rs RuleSet) Stats {
	t.Helper()
	n.ipvs.calls = nil
	st, err := n.b.Sync(context.Background(), rs)
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	return st
}

// kubeProxyService is an IPVS service of kube-proxy's, for an address on
// kube-ipvs0, not on Herald's link.
var kubeProxyService = ipvs.Service{Address: netip.MustParseAddr("10.96.0.1"), Port: 443, Protocol: ipvs.TCP, Family: ipvs.INET, Scheduler: "rr"}

func TestIPVSFullSyncAdoptsOursAndNeverTouchesForeignServices(t *testing.T) {
	n := newFakeNode()
	n.ipvs.svcs[keyOf(kubeProxyService)] = &ipvsService{Service: kubeProxyService}
	// A previous run left 203.0.113.10:80 (still wanted, with a stale
	// destination) and 203.0.113.50:80 (no longer wanted).
	prev := RuleSet{Services: []VirtualService{
		vs(vip4, TCP, 80, RoundRobin, 0, dest(ep1, 80), dest(ep2, 80)),
		vs(netip.MustParseAddr("203.0.113.50"), TCP, 80, RoundRobin, 0, dest(ep1, 80)),
	}}
	for _, s := range kernelOf(prev).Services {
		n.ipvs.svcs[keyOf(s.Service)] = &s
	}
	for _, a := range addrsOf(prev.Services) {
		n.link.addrs[a] = true
	}

	st := n.sync(t, RuleSet{Services: []VirtualService{vs(vip4, TCP, 80, RoundRobin, 0, dest(ep1, 80))}})
	want := []string{"list", "del-addr 203.0.113.50", "del 203.0.113.50:80/TCP", "del 203.0.113.10:80/TCP -> 10.1.0.2:80"}
	if !slices.Equal(n.ipvs.calls, want) {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(n.ipvs.calls, "\n"), strings.Join(want, "\n"))
	}
	if n.ipvs.svcs[keyOf(kubeProxyService)] == nil {
		t.Error("kube-proxy's service is gone")
	}
	if !st.Full || st.Services != 1 || st.Rules != 2 {
		t.Errorf("stats %+v, want full, 1 service, 2 rules", st)
	}
}

func TestIPVSPartialSyncTouchesOnlyWhatChanged(t *testing.T) {
	n := newFakeNode()
	rs := sampleRuleSet()
	n.sync(t, rs)
	if n.masq.replaced != 1 {
		t.Fatalf("masquerade table replaced %d times by the first sync, want 1", n.masq.replaced)
	}

	// One destination of one service changes; 203.0.113.11:82 goes, but
	// 203.0.113.11 keeps other services, so its address stays.
	rs = sampleRuleSet()
	rs.Services[0].Destinations = []Destination{dest(ep2, 8080)}
	rs.Services = slices.Delete(rs.Services, 6, 7)
	st := n.sync(t, rs)
	want := []string{
		"add 203.0.113.10:80/TCP -> 10.1.0.2:8080",
		"del 203.0.113.10:80/TCP -> 10.1.0.1:8080",
		"del 203.0.113.10:80/TCP -> 198.51.100.7:30080",
		"del 203.0.113.11:82/TCP",
	}
	slices.Sort(n.ipvs.calls)
	if !slices.Equal(n.ipvs.calls, want) {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(n.ipvs.calls, "\n"), strings.Join(want, "\n"))
	}
	if st.Full {
		t.Error("second sync was full")
	}
	if n.masq.replaced != 1 || !slices.Equal(n.masq.elems, masqElems(rs.Services)) {
		t.Errorf("masquerade elements %v (replaced %d times), want %v updated in place", n.masq.elems, n.masq.replaced, masqElems(rs.Services))
	}

	// The same again: nothing at all.
	if n.sync(t, rs); len(n.ipvs.calls) != 0 {
		t.Errorf("an unchanged RuleSet made calls: %v", n.ipvs.calls)
	}

	// The last service of an address goes: the address goes first.
	rs.Services = slices.DeleteFunc(rs.Services, func(v VirtualService) bool { return v.IP == netip.MustParseAddr("203.0.113.11") })
	n.sync(t, rs)
	want = []string{"del-addr 203.0.113.11", "del 203.0.113.11:80/TCP", "del 203.0.113.11:81/TCP"}
	if !slices.Equal(n.ipvs.calls, want) {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(n.ipvs.calls, "\n"), strings.Join(want, "\n"))
	}
}

// TestIPVSKeepsItsOwnRecord: a caller editing its RuleSet in place after a
// Sync (found in the VM: slices.DeleteFunc on the destinations) must not
// change what the backend believes the kernel holds.
func TestIPVSKeepsItsOwnRecord(t *testing.T) {
	n := newFakeNode()
	rs := RuleSet{Services: []VirtualService{vs(vip4, TCP, 80, RoundRobin, 0, dest(ep1, 80), dest(ep2, 80))}}
	n.sync(t, rs)
	rs.Services[0].Destinations = slices.DeleteFunc(rs.Services[0].Destinations, func(d Destination) bool { return d.Addr == ep1 })
	n.sync(t, rs)
	if want := []string{"del 203.0.113.10:80/TCP -> 10.1.0.1:80"}; !slices.Equal(n.ipvs.calls, want) {
		t.Errorf("calls %v, want %v", n.ipvs.calls, want)
	}
}

func TestIPVSFailedSyncMakesTheNextOneFull(t *testing.T) {
	n := newFakeNode()
	rs := sampleRuleSet()
	n.ipvs.fail = "add 203.0.113.11:81/TCP"
	if _, err := n.b.Sync(context.Background(), rs); err == nil || !strings.Contains(err.Error(), "203.0.113.11:81/TCP") {
		t.Fatalf("Sync error %v, want one naming 203.0.113.11:81/TCP", err)
	}
	n.ipvs.fail = ""
	if st := n.sync(t, rs); !st.Full || n.ipvs.calls[0] != "list" {
		t.Errorf("sync after a failure: full %v, calls %v; want a full sync reading the kernel", st.Full, n.ipvs.calls)
	}
	if ops := planIPVS(rs.Services, addrsOf(rs.Services), mustOwned(t, n)); len(ops) != 0 {
		t.Errorf("kernel not in sync after recovery:\n%s", opStrings(ops))
	}
}

func mustOwned(t *testing.T, n *fakeNode) ipvsState {
	t.Helper()
	addrs, _ := n.link.Addrs()
	st, err := n.b.owned(addrs)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestIPVSCleanupRemovesOnlyOurs(t *testing.T) {
	n := newFakeNode()
	n.ipvs.svcs[keyOf(kubeProxyService)] = &ipvsService{Service: kubeProxyService}
	n.sync(t, sampleRuleSet())
	if err := n.b.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(n.ipvs.svcs) != 1 || n.ipvs.svcs[keyOf(kubeProxyService)] == nil {
		t.Errorf("after Cleanup the kernel has %d services, want only kube-proxy's", len(n.ipvs.svcs))
	}
	if n.link.exists || len(n.link.addrs) != 0 || n.masq.exists {
		t.Errorf("after Cleanup: link %v, addresses %v, masquerade table %v", n.link.exists, n.link.addrs, n.masq.exists)
	}
	if st := n.sync(t, sampleRuleSet()); !st.Full {
		t.Error("the sync after Cleanup was partial")
	}
}

// TestMasqueradeCoversADestinationForItsWholeLife: IPVS sends no
// connection to a masqueraded destination before its element is in the
// set (the source NAT is decided on a connection's first packet), and the
// element leaves only after the destination.
func TestMasqueradeCoversADestinationForItsWholeLife(t *testing.T) {
	n := newFakeNode()
	n.masq.log = &n.ipvs.calls
	one := func(d Destination) RuleSet {
		return RuleSet{Services: []VirtualService{masq(vs(vip4, TCP, 80, RoundRobin, 0, d))}}
	}
	n.sync(t, one(dest(ep1, 80)))
	want := []string{"list", "masq = [203.0.113.10:80/TCP -> 10.1.0.1:80]", "add 203.0.113.10:80/TCP", "add 203.0.113.10:80/TCP -> 10.1.0.1:80", "add-addr 203.0.113.10"}
	if !slices.Equal(n.ipvs.calls, want) {
		t.Errorf("first sync:\n%s\nwant:\n%s", strings.Join(n.ipvs.calls, "\n"), strings.Join(want, "\n"))
	}
	n.sync(t, one(dest(ep2, 80)))
	want = []string{"masq + 203.0.113.10:80/TCP -> 10.1.0.2:80", "add 203.0.113.10:80/TCP -> 10.1.0.2:80", "del 203.0.113.10:80/TCP -> 10.1.0.1:80", "masq - 203.0.113.10:80/TCP -> 10.1.0.1:80"}
	if !slices.Equal(n.ipvs.calls, want) {
		t.Errorf("destination replaced:\n%s\nwant:\n%s", strings.Join(n.ipvs.calls, "\n"), strings.Join(want, "\n"))
	}
}

func TestIPVSCleanupCanBeRetried(t *testing.T) {
	n := newFakeNode()
	n.sync(t, sampleRuleSet())
	n.ipvs.fail = "del 203.0.113.11:81/TCP"
	if err := n.b.Cleanup(context.Background()); err == nil {
		t.Fatal("Cleanup: no error")
	}
	n.ipvs.fail = ""
	if err := n.b.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(n.ipvs.svcs) != 0 || n.link.exists {
		t.Errorf("after the retried Cleanup: %d services, link %v", len(n.ipvs.svcs), n.link.exists)
	}
}

// TestMasqKeyLayout: each part of the concatenated key starts on a 4-byte
// register boundary, as the rule loads it (masqRule).
func TestMasqKeyLayout(t *testing.T) {
	e := masqElem{Protocol: UDP, VIP: netip.MustParseAddrPort("203.0.113.10:53"), Dest: netip.MustParseAddrPort("10.1.0.2:5353")}
	want := []byte{17, 0, 0, 0, 203, 0, 113, 10, 0, 53, 0, 0, 10, 1, 0, 2, 0x14, 0xe9, 0, 0}
	if got := masqKey(e); !slices.Equal(got, want) {
		t.Errorf("key % x, want % x", got, want)
	}
	m := &nftMasq{table: "herald-ipvs"}
	for _, tb := range m.tables() {
		set := m.set(tb)
		n := 4 + 4 + 4 + 4 + 4
		if tb.Family == nftables.TableFamilyIPv6 {
			n = 4 + 16 + 4 + 16 + 4
			e = masqElem{Protocol: TCP, VIP: netip.MustParseAddrPort("[2001:db8::10]:80"), Dest: netip.MustParseAddrPort("[2001:db8:1::1]:8080")}
		}
		if int(set.KeyType.Bytes) != n || len(masqKey(e)) != n {
			t.Errorf("%v: set key %d bytes, element %d, want %d", tb.Family, set.KeyType.Bytes, len(masqKey(e)), n)
		}
		// The registers the rule loads are consecutive and fill the key.
		next := uint32(reg32)
		for _, x := range masqRule(tb.Family, set) {
			var reg, size uint32
			switch x := x.(type) {
			case *expr.Meta:
				reg, size = x.Register, 1
			case *expr.Ct:
				reg, size = x.Register, 4
				if x.Key == expr.CtKeyDST && tb.Family == nftables.TableFamilyIPv6 {
					size = 16
				}
			case *expr.Payload:
				reg, size = x.DestRegister, x.Len
			default:
				continue
			}
			if reg != next {
				t.Errorf("%v: %T loads into register %d, want %d", tb.Family, x, reg, next)
			}
			next += (size + 3) / 4
		}
		if got := (next - reg32) * 4; int(got) != n {
			t.Errorf("%v: the rule loads %d bytes, the key has %d", tb.Family, got, n)
		}
	}
}

func TestDiffMasq(t *testing.T) {
	a := masqElem{TCP, netip.MustParseAddrPort("203.0.113.10:80"), netip.MustParseAddrPort("10.1.0.1:80")}
	b := masqElem{TCP, netip.MustParseAddrPort("203.0.113.10:80"), netip.MustParseAddrPort("10.1.0.2:80")}
	c := masqElem{UDP, netip.MustParseAddrPort("203.0.113.10:80"), netip.MustParseAddrPort("10.1.0.2:80")}
	add, del := diffMasq([]masqElem{a, b}, []masqElem{b, c})
	if !slices.Equal(add, []masqElem{c}) || !slices.Equal(del, []masqElem{a}) {
		t.Errorf("add %v del %v, want add [%v] del [%v]", add, del, c, a)
	}
}
