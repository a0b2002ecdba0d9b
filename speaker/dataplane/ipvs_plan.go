package dataplane

import (
	"cmp"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"

	"github.com/cloudflare/ipvs"
	"github.com/cloudflare/ipvs/netmask"
)

// This file is the pure half of the ipvs backend: a RuleSet and what the
// kernel holds (as plain values) in, the list of operations that bring the
// kernel to the RuleSet out. ipvs.go gathers the kernel state and applies
// the operations.

// ipvsOpKind is what one operation does.
type ipvsOpKind int

// The kinds, in the order plan emits them: stale addresses go first so that
// the node stops taking traffic for a VIP before its service disappears, and
// new addresses last so that a VIP becomes local only once its IPVS service
// and destinations are in place (a packet to a local address without a
// service would be answered by the node's own stack with a reset).
const (
	opDelAddr ipvsOpKind = iota
	opDelService
	opAddService
	opUpdateService
	opAddDest
	opUpdateDest
	opDelDest
	opAddAddr
)

var opNames = [...]string{"del-addr", "del-service", "add-service", "update-service", "add-dest", "update-dest", "del-dest", "add-addr"}

func (k ipvsOpKind) String() string { return opNames[k] }

// ipvsOp is one change to the kernel: an address on the VIP link, an IPVS
// service, or one of its destinations (Service says which).
type ipvsOp struct {
	Kind    ipvsOpKind
	Addr    netip.Addr
	Service ipvs.Service
	Dest    ipvs.Destination
}

// String is the golden-file form: every value the backend passes to the
// kernel, so that a change of flag, scheduler or forwarding method shows in
// the diff.
func (op ipvsOp) String() string {
	switch op.Kind {
	case opAddAddr, opDelAddr:
		return fmt.Sprintf("%s %s", op.Kind, op.Addr)
	case opAddService, opUpdateService:
		s := op.Service
		return fmt.Sprintf("%s %s family=%s sched=%s flags=%s timeout=%d netmask=%s",
			op.Kind, serviceName(s), s.Family, s.Scheduler, flagNames(s.Flags), s.Timeout, s.Netmask)
	case opDelService:
		return fmt.Sprintf("%s %s", op.Kind, serviceName(op.Service))
	case opAddDest, opUpdateDest:
		d := op.Dest
		return fmt.Sprintf("%s %s -> %s family=%s fwd=%s weight=%d", op.Kind, serviceName(op.Service),
			netip.AddrPortFrom(d.Address, d.Port), d.Family, d.FwdMethod, d.Weight)
	default:
		return fmt.Sprintf("%s %s -> %s", op.Kind, serviceName(op.Service), netip.AddrPortFrom(op.Dest.Address, op.Dest.Port))
	}
}

func serviceName(s ipvs.Service) string {
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(s.Address, s.Port), s.Protocol)
}

func flagNames(f ipvs.Flags) string {
	if f == 0 {
		return "none"
	}
	return strings.ReplaceAll(f.String(), " | ", ",")
}

// ipvsService is one IPVS virtual service as the kernel holds it.
type ipvsService struct {
	Service      ipvs.Service
	Destinations []ipvs.Destination
}

// ipvsState is what the backend owns in the kernel: the addresses on its
// link and the IPVS services for those addresses. Services for any other
// address are someone else's (kube-proxy's kube-ipvs0) and never appear here.
type ipvsState struct {
	Addrs    []netip.Addr
	Services []ipvsService
}

// ipvsScheduler is the IPVS scheduler for s. Random is not an IPVS
// scheduler (netfilter's numgen is); round robin is the closest, and what
// kube-proxy's IPVS mode defaults to.
func ipvsScheduler(s Scheduler) string {
	if s == Random || s == "" {
		return string(RoundRobin)
	}
	return string(s)
}

// ipvsSupports reports whether IPVS has s. Random is accepted too: it is
// the default every Service starts from, and maps to rr.
func ipvsSupports(s Scheduler) bool { return s.Known() }

// desiredService is vs as an IPVS service.
//
// ClientIP affinity is IPVS persistence: a client (a /32 or /128, so one
// address, as Kubernetes' ClientIP affinity means) goes to the same
// destination until the timeout passes without a connection. The timeout is
// in whole seconds, rounded up so that a sub-second affinity still sticks.
func desiredService(vs *VirtualService) ipvs.Service {
	s := ipvs.Service{
		Address:   vs.IP,
		Port:      vs.Port,
		Protocol:  ipvsProtocol(vs.Protocol),
		Family:    ipvs.INET,
		Netmask:   netmask.MaskFrom(32, 32),
		Scheduler: ipvsScheduler(vs.Scheduler),
	}
	if vs.IP.Is6() {
		s.Family, s.Netmask = ipvs.INET6, netmask.MaskFrom(128, 128)
	}
	if vs.Affinity > 0 {
		s.Flags |= ipvs.ServicePersistent
		s.Timeout = uint32(min(math.Ceil(vs.Affinity.Seconds()), math.MaxUint32))
	}
	return s
}

// desiredDest is d as an IPVS destination: always NAT (masquerade)
// forwarding, since the destinations are NodePorts and endpoints
// addressed by their own address and port, never direct routing. IPVS's
// "masquerade" rewrites only the destination; Destination.Masquerade (the
// source rewrite) is the nftables rule of ipvs_masq.go. Weight 1: a weight
// of 0 would quiesce the destination.
func desiredDest(d Destination) ipvs.Destination {
	out := ipvs.Destination{Address: d.Addr, Port: d.Port, FwdMethod: ipvs.Masquerade, Weight: 1, Family: ipvs.INET}
	if d.Addr.Is6() {
		out.Family = ipvs.INET6
	}
	return out
}

func ipvsProtocol(p Protocol) ipvs.Protocol {
	switch p {
	case UDP:
		return ipvs.UDP
	case SCTP:
		return ipvs.SCTP
	default:
		return ipvs.TCP
	}
}

// sameService reports whether the kernel's service a needs no update to be
// b. The kernel adds the hashed flag to every service it lists.
func sameService(a, b ipvs.Service) bool {
	return a.Scheduler == b.Scheduler && a.Flags&^ipvs.ServiceHashed == b.Flags&^ipvs.ServiceHashed &&
		a.Timeout == b.Timeout && a.Netmask.Bits() == b.Netmask.Bits()
}

func sameDest(a, b ipvs.Destination) bool {
	return a.FwdMethod == b.FwdMethod && a.Weight == b.Weight &&
		a.UpperThreshold == b.UpperThreshold && a.LowerThreshold == b.LowerThreshold
}

// serviceKey identifies an IPVS service the way the kernel does.
type serviceKey struct {
	Addr     netip.Addr
	Protocol ipvs.Protocol
	Port     uint16
}

func keyOf(s ipvs.Service) serviceKey { return serviceKey{s.Address, s.Protocol, s.Port} }

func compareServices(a, b ipvs.Service) int {
	return cmp.Or(a.Address.Compare(b.Address), cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Port, b.Port))
}

func compareDests(a, b ipvs.Destination) int {
	return cmp.Or(a.Address.Compare(b.Address), cmp.Compare(a.Port, b.Port))
}

// planIPVS lists the operations that turn cur into desired: the services of
// desired, and addrs on the VIP link. cur must hold only what the backend
// owns. A full sync passes every service and cur as read from the kernel; a
// partial sync only the changed services and cur as it programmed them, but
// always every address (addrsOf the whole RuleSet) so that an address still
// used by an unchanged service stays. The operations come grouped by kind in
// the order of ipvsOpKind, sorted within each kind, so that the output is
// stable and the golden file readable.
func planIPVS(desired []VirtualService, addrs []netip.Addr, cur ipvsState) []ipvsOp {
	var ops []ipvsOp
	have := make(map[serviceKey]*ipvsService, len(cur.Services))
	for i := range cur.Services {
		have[keyOf(cur.Services[i].Service)] = &cur.Services[i]
	}
	wantAddr := map[netip.Addr]bool{}
	for _, a := range addrs {
		wantAddr[a] = true
	}
	wantSvc := map[serviceKey]bool{}
	for i := range desired {
		vs := &desired[i]
		s := desiredService(vs)
		wantSvc[keyOf(s)] = true
		old := have[keyOf(s)]
		if old == nil {
			ops = append(ops, ipvsOp{Kind: opAddService, Service: s})
		} else if !sameService(old.Service, s) {
			ops = append(ops, ipvsOp{Kind: opUpdateService, Service: s})
		}
		ops = append(ops, planDests(s, vs.Destinations, old)...)
	}
	for _, s := range cur.Services {
		if !wantSvc[keyOf(s.Service)] {
			ops = append(ops, ipvsOp{Kind: opDelService, Service: s.Service})
		}
	}
	haveAddr := map[netip.Addr]bool{}
	for _, a := range cur.Addrs {
		haveAddr[a] = true
		if !wantAddr[a] {
			ops = append(ops, ipvsOp{Kind: opDelAddr, Addr: a})
		}
	}
	for a := range wantAddr {
		if !haveAddr[a] {
			ops = append(ops, ipvsOp{Kind: opAddAddr, Addr: a})
		}
	}
	slices.SortFunc(ops, func(a, b ipvsOp) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), a.Addr.Compare(b.Addr),
			compareServices(a.Service, b.Service), compareDests(a.Dest, b.Dest))
	})
	return ops
}

// planDests lists the destination operations of one service; old is what
// the kernel has for it (nil: a new service).
func planDests(s ipvs.Service, want []Destination, old *ipvsService) []ipvsOp {
	var ops []ipvsOp
	have := map[netip.AddrPort]ipvs.Destination{}
	if old != nil {
		for _, d := range old.Destinations {
			have[netip.AddrPortFrom(d.Address, d.Port)] = d
		}
	}
	for _, w := range want {
		d := desiredDest(w)
		ap := netip.AddrPortFrom(d.Address, d.Port)
		o, ok := have[ap]
		delete(have, ap)
		switch {
		case !ok:
			ops = append(ops, ipvsOp{Kind: opAddDest, Service: s, Dest: d})
		case !sameDest(o, d):
			ops = append(ops, ipvsOp{Kind: opUpdateDest, Service: s, Dest: d})
		}
	}
	for _, d := range have {
		ops = append(ops, ipvsOp{Kind: opDelDest, Service: s, Dest: d})
	}
	return ops
}

// addrsOf lists the VIPs of the virtual services, sorted, once each.
func addrsOf(svcs []VirtualService) []netip.Addr {
	out := make([]netip.Addr, 0, len(svcs))
	for _, vs := range svcs {
		out = append(out, vs.IP)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// masqElem is one destination whose connections get the node's source
// address: the virtual service (protocol, VIP, port) and where IPVS sent it.
type masqElem struct {
	Protocol Protocol
	VIP      netip.AddrPort
	Dest     netip.AddrPort
}

// masqElems lists the masquerade elements of the virtual services, sorted.
func masqElems(svcs []VirtualService) []masqElem {
	var out []masqElem
	for _, vs := range svcs {
		if !vs.Masquerade {
			continue
		}
		for _, d := range vs.Destinations {
			out = append(out, masqElem{vs.Protocol, netip.AddrPortFrom(vs.IP, vs.Port), netip.AddrPortFrom(d.Addr, d.Port)})
		}
	}
	slices.SortFunc(out, compareMasq)
	return out
}

func compareMasq(a, b masqElem) int {
	return cmp.Or(a.VIP.Compare(b.VIP), cmp.Compare(a.Protocol, b.Protocol), a.Dest.Compare(b.Dest))
}

func (m masqElem) String() string {
	return fmt.Sprintf("%s/%s -> %s", m.VIP, m.Protocol, m.Dest)
}
