package ipam_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/heraldlb/herald/controller/ipam"
	"github.com/heraldlb/herald/internal/iprange"
	"pgregory.net/rapid"
)

// The property test plays random histories of pool edits, Service creates,
// updates and deletes, and controller restarts against small pools, so that
// pools fill up, shrink under assigned Services and addresses get shared.

const (
	nPools   = 4 // p0..p3; p4 is named by requests but never exists
	nSlots   = 8 // slots 0-3 are IPv4 around 10.0.0.255, 4-7 IPv6
	slotSize = 8
	nKeys    = 8
)

// world is the pool configuration: each slot of 8 addresses belongs to at
// most one pool, so pools never overlap, and is cut to [lo, hi].
type world struct {
	present     [nPools]bool
	owner       [nSlots]int // pool index, -1 for none
	lo, hi      [nSlots]int
	prio        [nPools]int // -1 for none
	auto, avoid [nPools]bool
}

func slotAddr(slot, off int) netip.Addr {
	if slot < 4 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], 0x0a0000f0+uint32(slot*slotSize+off)) // from 10.0.0.240
		return netip.AddrFrom4(b)
	}
	b := ip("2001:db8::").As16()
	b[15] = byte((slot-4)*slotSize + off)
	return netip.AddrFrom16(b)
}

func (w *world) pools() []ipam.Pool {
	var out []ipam.Pool
	for i := range nPools {
		if !w.present[i] {
			continue
		}
		p := ipam.Pool{Name: fmt.Sprintf("p%d", i), AutoAssign: w.auto[i], AvoidBuggyIPs: w.avoid[i]}
		if w.prio[i] >= 0 {
			p.Priority = prio(int32(w.prio[i]))
		}
		for s := range nSlots {
			if w.owner[s] == i {
				p.Ranges = append(p.Ranges, iprange.Range{First: slotAddr(s, w.lo[s]), Last: slotAddr(s, w.hi[s])})
			}
		}
		out = append(out, p)
	}
	return out
}

// poolOf is the model's answer to "which pool may hand out addr".
func (w *world) poolOf(addr netip.Addr) (string, bool) {
	for s := range nSlots {
		i := w.owner[s]
		if i < 0 || addr.Less(slotAddr(s, w.lo[s])) || slotAddr(s, w.hi[s]).Less(addr) {
			continue
		}
		if last := addr.As16()[15]; w.avoid[i] && addr.Is4() && (last == 0 || last == 255) {
			return "", false
		}
		return fmt.Sprintf("p%d", i), true
	}
	return "", false
}

// usable lists a pool's addresses of one family, lowest first.
func (w *world) usable(name string, f ipam.Family) []netip.Addr {
	var out []netip.Addr
	for s := range nSlots {
		if w.owner[s] < 0 || fmt.Sprintf("p%d", w.owner[s]) != name || (s < 4) != (f == ipam.IPv4) {
			continue
		}
		for off := w.lo[s]; off <= w.hi[s]; off++ {
			if _, ok := w.poolOf(slotAddr(s, off)); ok {
				out = append(out, slotAddr(s, off))
			}
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

type poolEdit struct{ kind, pool, slot, a, b int }

func (w *world) apply(e poolEdit) {
	switch e.kind {
	case 0: // move a slot to a pool, or out of every pool
		if e.pool == nPools {
			w.owner[e.slot] = -1
		} else {
			w.owner[e.slot] = e.pool
			w.present[e.pool] = true
		}
	case 1: // grow or shrink a slot
		w.lo[e.slot], w.hi[e.slot] = min(e.a, e.b), max(e.a, e.b)
	case 2:
		w.prio[e.pool%nPools] = e.a%4 - 1
	case 3:
		w.auto[e.pool%nPools] = !w.auto[e.pool%nPools]
	case 4:
		w.avoid[e.pool%nPools] = !w.avoid[e.pool%nPools]
	case 5: // delete a pool
		w.present[e.pool%nPools] = false
		for s := range nSlots {
			if w.owner[s] == e.pool%nPools {
				w.owner[s] = -1
			}
		}
	case 6:
		w.present[e.pool%nPools] = true
	}
}

// reqSpec is a Request as plain data, so a history can be replayed.
type reqSpec struct {
	key      int
	families []ipam.Family
	policy   ipam.FamilyPolicy
	ips      []netip.Addr
	pool     string
	eligible []string // nil: every pool
	sharing  ipam.Sharing
}

func (s reqSpec) request() ipam.Request {
	r := ipam.Request{Key: keyName(s.key), Families: s.families, FamilyPolicy: s.policy, IPs: s.ips, Pool: s.pool, Sharing: s.sharing}
	if s.eligible != nil {
		r.Eligible = only(s.eligible...)
	}
	return r
}

func keyName(i int) ipam.Key { return ipam.Key{Namespace: "ns", Name: fmt.Sprintf("s%d", i)} }

type op struct {
	kind string // "pools", "assign", "release", "restart"
	edit poolEdit
	req  reqSpec
}

func (o op) String() string {
	switch o.kind {
	case "pools":
		return fmt.Sprintf("pools%+v", o.edit)
	case "assign":
		return fmt.Sprintf("assign %s %v %v ips=%v pool=%q eligible=%v sharing=%+v", keyName(o.req.key), o.req.families, o.req.policy, o.req.ips, o.req.pool, o.req.eligible, o.req.sharing)
	case "release":
		return "release " + keyName(o.req.key).String()
	}
	return o.kind
}

var (
	poolNameGen = rapid.SampledFrom([]string{"p0", "p1", "p2", "p3", "p4"})
	portGen     = rapid.SampledFrom([]ipam.Port{tcp(80), udp(80), tcp(443)})
	// Weighted by repetition; an empty list means IPv4.
	familiesGen = rapid.SampledFrom([][]ipam.Family{
		{ipam.IPv4}, {ipam.IPv4}, {ipam.IPv4}, {ipam.IPv6}, {ipam.IPv6},
		{ipam.IPv4, ipam.IPv6}, {ipam.IPv4, ipam.IPv6}, {ipam.IPv6, ipam.IPv4}, {ipam.IPv6, ipam.IPv4}, {},
	})
	policyGen = rapid.SampledFrom([]ipam.FamilyPolicy{
		ipam.SingleStack, ipam.SingleStack, ipam.PreferDualStack, ipam.PreferDualStack, ipam.RequireDualStack,
	})
	// Requested addresses: the pools' slots and a little outside them.
	addrGen = rapid.SampledFrom(func() []netip.Addr {
		var out []netip.Addr
		for s := range nSlots {
			for off := range slotSize {
				out = append(out, slotAddr(s, off))
			}
		}
		return append(out, ip("10.0.0.239"), ip("10.0.1.16"), ip("2001:db8::20"))
	}())
)

func worldGen() *rapid.Generator[world] {
	return rapid.Custom(func(t *rapid.T) world {
		var w world
		for i := range nPools {
			// Generators lean to their first values; put the common case there.
			w.present[i] = rapid.SampledFrom([]bool{true, true, false}).Draw(t, "present")
			w.prio[i] = rapid.SampledFrom([]int{-1, 0, 1, 2}).Draw(t, "prio")
			w.auto[i] = rapid.SampledFrom([]bool{true, true, true, false}).Draw(t, "auto")
			w.avoid[i] = rapid.SampledFrom([]bool{false, false, false, true}).Draw(t, "avoid")
		}
		for s := range nSlots {
			w.owner[s] = rapid.SampledFrom([]int{0, 1, 2, 3, -1}).Draw(t, "owner")
			if w.owner[s] >= 0 {
				w.present[w.owner[s]] = true
			}
			w.lo[s] = rapid.SampledFrom([]int{0, 0, 0, 2, 5}).Draw(t, "lo")
			w.hi[s] = max(w.lo[s], rapid.SampledFrom([]int{7, 7, 7, 5, 2}).Draw(t, "hi"))
		}
		return w
	})
}

func opGen() *rapid.Generator[op] {
	return rapid.Custom(func(t *rapid.T) op {
		switch k := rapid.IntRange(0, 19).Draw(t, "kind"); {
		case k < 4:
			return op{kind: "pools", edit: poolEdit{
				kind: rapid.IntRange(0, 6).Draw(t, "edit"),
				pool: rapid.IntRange(0, nPools).Draw(t, "pool"),
				slot: rapid.IntRange(0, nSlots-1).Draw(t, "slot"),
				a:    rapid.IntRange(0, slotSize-1).Draw(t, "a"),
				b:    rapid.IntRange(0, slotSize-1).Draw(t, "b"),
			}}
		case k < 15:
			r := reqSpec{
				key:      rapid.IntRange(0, nKeys-1).Draw(t, "key"),
				families: familiesGen.Draw(t, "families"),
				policy:   policyGen.Draw(t, "policy"),
			}
			if r.policy == ipam.RequireDualStack && len(r.families) < 2 && rapid.IntRange(0, 9).Draw(t, "invalid") > 0 {
				r.policy = ipam.PreferDualStack
			}
			if rapid.IntRange(0, 3).Draw(t, "asks") == 0 {
				r.ips = rapid.SliceOfN(addrGen, 1, 2).Draw(t, "ips")
			}
			if rapid.IntRange(0, 4).Draw(t, "named") == 0 {
				r.pool = poolNameGen.Draw(t, "pool")
			}
			if rapid.IntRange(0, 3).Draw(t, "restricted") == 0 {
				r.eligible = rapid.SliceOfDistinct(poolNameGen, func(s string) string { return s }).Draw(t, "eligible")
			}
			r.sharing = ipam.Sharing{
				Key:                rapid.SampledFrom([]string{"", "", "k1", "k1", "k2"}).Draw(t, "sharingKey"),
				Ports:              rapid.SliceOfNDistinct(portGen, 0, 2, func(p ipam.Port) ipam.Port { return p }).Draw(t, "ports"),
				LocalTrafficPolicy: rapid.IntRange(0, 3).Draw(t, "local") == 0,
				Selector:           rapid.SampledFrom([]string{"app=a", "app=b"}).Draw(t, "selector"),
			}
			return op{kind: "assign", req: r}
		case k < 18:
			return op{kind: "release", req: reqSpec{key: rapid.IntRange(0, nKeys-1).Draw(t, "key")}}
		default:
			return op{kind: "restart"}
		}
	})
}

// mayShare is the rule of ipam.Sharing, restated.
func mayShare(a, b ipam.Sharing) bool {
	if a.Key == "" || a.Key != b.Key || a.LocalTrafficPolicy != b.LocalTrafficPolicy || a.LocalTrafficPolicy && a.Selector != b.Selector {
		return false
	}
	for _, p := range a.Ports {
		if slices.Contains(b.Ports, p) {
			return false
		}
	}
	return true
}

// history runs ops from w and returns one line per op. With check it
// verifies every property after every op; with restarts false a restart is
// skipped, which must not change any later result.
type history struct {
	t        *rapid.T
	check    bool
	restarts bool
	w        world
	a        *ipam.Allocator
	sharing  map[ipam.Key]ipam.Sharing // as last accepted by Assign or Restore
}

func run(t *rapid.T, w world, ops []op, check, restarts bool) []string {
	h := &history{t: t, check: check, restarts: restarts, w: w, a: &ipam.Allocator{}, sharing: map[ipam.Key]ipam.Sharing{}}
	if _, err := h.a.SetPools(w.pools()); err != nil {
		t.Fatalf("initial pools refused: %v", err)
	}
	var log []string
	for i, o := range ops {
		line := h.step(o)
		if check {
			h.checkState(fmt.Sprintf("after op %d (%v)", i, o))
		}
		log = append(log, line)
	}
	return log
}

func (h *history) snapshot() map[ipam.Key]ipam.Assignment {
	out := map[ipam.Key]ipam.Assignment{}
	for k := range nKeys {
		if as, ok := h.a.Assigned(keyName(k)); ok {
			out[keyName(k)] = as
		}
	}
	return out
}

func (h *history) step(o op) string {
	t := h.t
	switch o.kind {
	case "pools":
		before := h.snapshot()
		h.w.apply(o.edit)
		evicted, err := h.a.SetPools(h.w.pools())
		if err != nil {
			t.Fatalf("pools refused: %v", err)
		}
		if h.check {
			h.checkEvictions(before, evicted)
		}
		return fmt.Sprintf("evicted %v", evicted)
	case "assign":
		req := o.req.request()
		before, held := h.a.Assigned(req.Key)
		var want string
		var naive bool
		if h.check {
			want, naive = h.reference(o.req, held)
		}
		got, err := h.a.Assign(req)
		if h.check {
			h.checkAssign(o.req, before, held, got, err)
			h.compareReference(naive, want, got, err)
		}
		switch _, holds := h.a.Assigned(req.Key); {
		case holds:
			// What a failed Assign kept is held under the new Sharing too.
			h.sharing[req.Key] = req.Sharing
		default:
			delete(h.sharing, req.Key)
		}
		if err != nil {
			return err.Error()
		}
		return fmt.Sprintf("%s %v", got.Pool, got.IPs)
	case "release":
		h.a.Release(keyName(o.req.key))
		delete(h.sharing, keyName(o.req.key))
		if _, ok := h.a.Assigned(keyName(o.req.key)); ok {
			t.Fatalf("%s still holds addresses after Release", keyName(o.req.key))
		}
		return "released"
	case "restart":
		if !h.restarts {
			return "restart"
		}
		before := h.snapshot()
		b := &ipam.Allocator{}
		if _, err := b.SetPools(h.w.pools()); err != nil {
			t.Fatalf("pools refused after restart: %v", err)
		}
		for k := range nKeys {
			if as, ok := before[keyName(k)]; ok {
				if err := b.Restore(keyName(k), as.IPs, h.sharing[keyName(k)]); err != nil {
					t.Fatalf("restore of a consistent state failed: %v", err)
				}
			}
		}
		h.a = b
		if after := h.snapshot(); !equalSnapshots(before, after) {
			t.Fatalf("restart changed assignments:\nbefore %v\nafter  %v", before, after)
		}
		return "restart"
	}
	panic(o.kind)
}

func equalSnapshots(a, b map[ipam.Key]ipam.Assignment) bool {
	if len(a) != len(b) {
		return false
	}
	for k, x := range a {
		y, ok := b[k]
		if !ok || x.Pool != y.Pool || !slices.Equal(x.IPs, y.IPs) {
			return false
		}
	}
	return true
}

// checkState: every address is in its recorded pool, owners agree, sharing
// is legal, and usage counts match.
func (h *history) checkState(when string) {
	t := h.t
	owners := map[netip.Addr][]ipam.Key{}
	for k, as := range h.snapshot() {
		var fams []ipam.Family
		for _, addr := range as.IPs {
			name, ok := h.w.poolOf(addr)
			if !ok || name != as.Pool {
				t.Fatalf("%s: %s holds %v, which is not in its pool %s", when, k, addr, as.Pool)
			}
			f := ipam.IPv4
			if addr.Is6() {
				f = ipam.IPv6
			}
			if slices.Contains(fams, f) {
				t.Fatalf("%s: %s holds two %v addresses: %v", when, k, f, as.IPs)
			}
			fams = append(fams, f)
			owners[addr] = append(owners[addr], k)
		}
	}
	for addr, ks := range owners {
		slices.SortFunc(ks, ipam.Key.Compare)
		if got := h.a.Owners(addr); !slices.Equal(got, ks) {
			t.Fatalf("%s: Owners(%v) = %v, assignments say %v", when, addr, got, ks)
		}
		for i := range ks {
			for j := range i {
				if !mayShare(h.sharing[ks[i]], h.sharing[ks[j]]) {
					t.Fatalf("%s: %s and %s hold %v but may not share it (%+v, %+v)", when, ks[i], ks[j], addr, h.sharing[ks[i]], h.sharing[ks[j]])
				}
			}
		}
	}
	for _, p := range h.w.pools() {
		for _, f := range []ipam.Family{ipam.IPv4, ipam.IPv6} {
			u, ok := h.a.Usage(p.Name, f)
			all := h.w.usable(p.Name, f)
			assigned := 0
			for _, addr := range all {
				if len(owners[addr]) > 0 {
					assigned++
				}
			}
			if !ok || u.Assigned != uint64(assigned) || u.Assigned+u.Available != uint64(len(all)) {
				t.Fatalf("%s: usage of %s %v is %+v, want %d assigned of %d", when, p.Name, f, u, assigned, len(all))
			}
		}
	}
}

// checkEvictions: a Service loses only addresses that left every pool (or
// its pool), and is reported exactly when it lost one.
func (h *history) checkEvictions(before map[ipam.Key]ipam.Assignment, evicted []ipam.Key) {
	t := h.t
	if !slices.IsSortedFunc(evicted, ipam.Key.Compare) {
		t.Fatalf("evicted %v not sorted", evicted)
	}
	after := h.snapshot()
	for k, was := range before {
		now := after[k]
		for _, addr := range was.IPs {
			name, ok := h.w.poolOf(addr)
			kept := slices.Contains(now.IPs, addr)
			if kept && (!ok || name != now.Pool) {
				t.Fatalf("%s kept %v outside its pool", k, addr)
			}
			if !kept && ok && (len(now.IPs) == 0 || name == now.Pool) {
				t.Fatalf("%s lost %v, still in pool %s", k, addr, name)
			}
		}
		if lost := len(now.IPs) < len(was.IPs); lost != slices.Contains(evicted, k) {
			t.Fatalf("%s: had %v, has %v, evicted list %v", k, was.IPs, now.IPs, evicted)
		}
	}
}

func (h *history) checkAssign(spec reqSpec, before ipam.Assignment, held bool, got ipam.Assignment, err error) {
	t := h.t
	req := spec.request()
	now, holds := h.a.Assigned(req.Key)
	if err != nil {
		var ae *ipam.AllocationError
		if !errors.As(err, &ae) || ae.Key != req.Key || ae.Reason == "" || !strings.HasPrefix(err.Error(), "service "+req.Key.String()+": ") {
			t.Fatalf("error %q does not name %s with a reason", err, req.Key)
		}
		// The Service keeps what it held as far as the request still allows
		// it (its pool, and sharing under its new Sharing), and loses, as
		// Released says, the rest.
		var lost []netip.Addr
		for _, addr := range before.IPs {
			allowed := spec.eligible == nil || slices.Contains(spec.eligible, before.Pool)
			for _, other := range h.a.Owners(addr) {
				allowed = allowed && (other == req.Key || mayShare(spec.sharing, h.sharing[other]))
			}
			if kept := slices.Contains(now.IPs, addr); kept != allowed {
				t.Fatalf("failed Assign of %s (%v): %v allowed %v, kept %v; held %v, holds %v", req.Key, err, addr, allowed, kept, before, now)
			}
			if !allowed {
				lost = append(lost, addr)
			}
		}
		slices.SortFunc(lost, netip.Addr.Compare)
		if !slices.Equal(ae.Released, lost) || (len(lost) > 0) != (ae.ReleaseReason != "") {
			t.Fatalf("failed Assign of %s lost %v, error says it released %v (%q)", req.Key, lost, ae.Released, ae.ReleaseReason)
		}
		if holds && (now.Pool != before.Pool || len(now.IPs)+len(lost) != len(before.IPs)) {
			t.Fatalf("failed Assign changed %s from %v to %v", req.Key, before, now)
		}
		return
	}
	if !holds || now.Pool != got.Pool || !slices.Equal(now.IPs, got.IPs) {
		t.Fatalf("Assign returned %v but recorded %v", got, now)
	}
	fams := spec.families
	if len(fams) == 0 {
		fams = []ipam.Family{ipam.IPv4}
	}
	var gotFams []ipam.Family
	for _, addr := range got.IPs {
		if addr.Is4() {
			gotFams = append(gotFams, ipam.IPv4)
		} else {
			gotFams = append(gotFams, ipam.IPv6)
		}
	}
	switch {
	case len(got.IPs) == 0:
		t.Fatalf("Assign succeeded without addresses")
	case spec.policy == ipam.SingleStack && !slices.Equal(gotFams, fams[:1]),
		spec.policy == ipam.RequireDualStack && !slices.Equal(gotFams, fams),
		spec.policy == ipam.PreferDualStack && !slices.Equal(gotFams, fams) && !slices.Equal(gotFams, fams[:1]) && !slices.Equal(gotFams, fams[1:]):
		t.Fatalf("%v %v got families %v", spec.policy, fams, gotFams)
	case len(spec.ips) > 0 && !sameSet(spec.ips, got.IPs):
		t.Fatalf("asked for %v, got %v", spec.ips, got.IPs)
	case spec.pool != "" && got.Pool != spec.pool:
		t.Fatalf("asked for pool %s, got %s", spec.pool, got.Pool)
	case spec.eligible != nil && !slices.Contains(spec.eligible, got.Pool):
		t.Fatalf("eligible for %v, got %s", spec.eligible, got.Pool)
	}
	// Without a request for specific addresses, an address the Service
	// already held in a pool it may still use stays.
	if held && len(spec.ips) == 0 && (spec.pool == "" || spec.pool == before.Pool) && (spec.eligible == nil || slices.Contains(spec.eligible, before.Pool)) {
		for _, addr := range before.IPs {
			f := ipam.IPv4
			if addr.Is6() {
				f = ipam.IPv6
			}
			wanted := slices.Contains(fams, f) && (spec.policy != ipam.SingleStack || fams[0] == f)
			legal := true
			for _, other := range h.a.Owners(addr) {
				legal = legal && (other == req.Key || mayShare(spec.sharing, h.sharing[other]))
			}
			if wanted && legal && !slices.Contains(got.IPs, addr) && !(spec.policy == ipam.RequireDualStack && len(before.IPs) == 1) {
				t.Fatalf("%s moved from %v to %v for no reason", req.Key, before, got)
			}
		}
	}
	if again, err := h.a.Assign(req); err != nil || again.Pool != got.Pool || !slices.Equal(again.IPs, got.IPs) {
		t.Fatalf("Assign not idempotent: %v then %v %v", got, again, err)
	}
}

// reference is a naive allocator for a plain single-stack request of a
// Service that holds nothing: the lowest free address of the first pool, in
// priority order, that the Service may use; "" when there is none.
func (h *history) reference(spec reqSpec, held bool) (want string, applies bool) {
	fams := spec.families
	if len(fams) == 0 {
		fams = []ipam.Family{ipam.IPv4}
	}
	if held || len(spec.ips) > 0 || spec.sharing.Key != "" || spec.policy == ipam.RequireDualStack || (spec.policy == ipam.PreferDualStack && len(fams) > 1) {
		return "", false
	}
	eligible := func(name string) bool { return spec.eligible == nil || slices.Contains(spec.eligible, name) }
	var cands []ipam.Pool
	for _, p := range h.w.pools() {
		if eligible(p.Name) && (p.Name == spec.pool || spec.pool == "" && p.AutoAssign) {
			cands = append(cands, p)
		}
	}
	slices.SortFunc(cands, func(a, b ipam.Pool) int {
		switch {
		case a.Priority != nil && b.Priority == nil:
			return -1
		case a.Priority == nil && b.Priority != nil:
			return 1
		case a.Priority != nil && *a.Priority != *b.Priority:
			return int(*a.Priority - *b.Priority)
		}
		return strings.Compare(a.Name, b.Name)
	})
	for _, p := range cands {
		for _, addr := range h.w.usable(p.Name, fams[0]) {
			if len(h.a.Owners(addr)) == 0 {
				want = fmt.Sprintf("%s %v", p.Name, addr)
				break
			}
		}
		if want != "" {
			break
		}
	}
	return want, true
}

func (h *history) compareReference(applies bool, want string, got ipam.Assignment, err error) {
	if !applies {
		return
	}
	have := ""
	if err == nil {
		have = fmt.Sprintf("%s %v", got.Pool, got.IPs[0])
	}
	if have != want {
		h.t.Fatalf("plain request got %q (%v), the naive allocator says %q", have, err, want)
	}
}

func sameSet(a, b []netip.Addr) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.SortFunc(x, netip.Addr.Compare)
	slices.SortFunc(y, netip.Addr.Compare)
	return slices.Equal(x, y)
}

// TestRandomHistoriesKeepEveryAllocationRule: no address is held by two
// Services that may not share it, no address lies outside its pool, restarts
// change nothing, and the same history always gives the same results.
func TestRandomHistoriesKeepEveryAllocationRule(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := worldGen().Draw(t, "world")
		ops := rapid.SliceOfN(opGen(), 20, 120).Draw(t, "ops")
		checked := run(t, w, ops, true, true)
		if replay := run(t, w, ops, false, true); !slices.Equal(replay, checked) {
			t.Fatalf("same history, different results:\n%s", diff(ops, checked, replay))
		}
		if straight := run(t, w, ops, false, false); !slices.Equal(straight, checked) {
			t.Fatalf("restarts changed results:\n%s", diff(ops, checked, straight))
		}
	})
}

func diff(ops []op, a, b []string) string {
	var sb strings.Builder
	for i := range a {
		mark := " "
		if a[i] != b[i] {
			mark = "!"
		}
		fmt.Fprintf(&sb, "%s %v\n    %s\n    %s\n", mark, ops[i], a[i], b[i])
	}
	return sb.String()
}
