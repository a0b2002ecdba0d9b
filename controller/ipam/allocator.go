package ipam

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// Assignment is what a Service holds: one address per family, in the order of
// the Request's Families, all from Pool.
type Assignment struct {
	Pool string
	IPs  []netip.Addr
}

// Allocator hands out addresses from pools. The zero value has no pools and is
// ready to use. It is safe for concurrent use: every method holds one mutex,
// so each call sees and leaves a consistent state.
type Allocator struct {
	mu     sync.Mutex
	cfg    *config
	keys   map[Key]*holding
	ips    map[netip.Addr]*ipState
	shared map[string]map[netip.Addr]struct{} // sharing key -> its addresses

	scratch []*pool // candidate pools of the Assign in progress
}

// holding is one Service's assignment.
type holding struct {
	pool    *pool
	ips     []netip.Addr
	sharing Sharing
}

// ipState is one assigned address. All holders of an address have the same
// sharing key, so the address is listed under at most one key in shared.
type ipState struct {
	pool       *pool
	holders    []Key // sorted
	sharingKey string
}

func (a *Allocator) init() {
	if a.keys == nil {
		a.keys = make(map[Key]*holding)
		a.ips = make(map[netip.Addr]*ipState)
		a.shared = make(map[string]map[netip.Addr]struct{})
	}
}

// SetPools replaces the pools. Invalid pools (see ValidatePools) are refused
// and the pools in force stay. Assignments keep their addresses as long as the
// addresses are still in a pool, whatever happened to priorities, autoAssign
// or pool names; addresses that left every pool (a pool shrank, was deleted,
// or now avoids .0 and .255) are released. SetPools returns, sorted, the keys
// that lost an address, so the caller can record an event and reconcile them.
func (a *Allocator) SetPools(pools []Pool) (evicted []Key, err error) {
	cfg, err := newConfig(pools)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.keys
	a.cfg, a.keys, a.ips, a.shared, a.scratch = cfg, nil, nil, nil, nil
	a.init()
	for _, key := range slices.SortedFunc(maps.Keys(old), Key.Compare) {
		h := old[key]
		// Pools may have been recut so that one Service's addresses now lie in
		// two pools; it keeps those in the pool of its first address.
		var p *pool
		var kept []netip.Addr
		for _, ip := range h.ips {
			q, usable := cfg.poolOf(ip)
			if !usable || p != nil && q != p {
				continue
			}
			p = q
			kept = append(kept, ip)
		}
		if len(kept) < len(h.ips) {
			evicted = append(evicted, key)
		}
		if len(kept) > 0 {
			a.commit(key, choice{p, kept}, h.sharing)
		}
	}
	return evicted, nil
}

// Restore records that key holds ips, as read from the Service's status at
// startup, before anything is assigned. Pool priorities, autoAssign and
// eligibility do not matter here: an address in some pool is kept. Addresses
// Restore cannot keep (outside every pool, taken by a Service they may not be
// shared with, a second address of one family or in a second pool) are left
// out, and the error (one *AllocationError per address, joined) names them so
// the caller can say what it does with them: the next Assign gives the
// Service what it still lacks. Restore replaces what key held before.
func (a *Allocator) Restore(key Key, ips []netip.Addr, sharing Sharing) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.init()
	if key.Name == "" {
		return &AllocationError{Reason: ReasonInvalidRequest, Message: "restore without a service key"}
	}
	sharing.Ports = slices.Clone(sharing.Ports)
	var errs []error
	fail := func(reason Reason, format string, args ...any) {
		errs = append(errs, &AllocationError{Key: key, Reason: reason, Message: fmt.Sprintf(format, args...)})
	}
	var c choice
	var seen [2]netip.Addr
	for _, ip := range ips {
		p, usable := a.cfg.poolOf(ip)
		switch {
		case !ip.IsValid() || ip.Zone() != "":
			fail(ReasonInvalidRequest, "status address %q is not a plain IP address", ip)
		case p == nil:
			fail(ReasonOutsidePools, "address %s is outside every pool", ip)
		case !usable:
			fail(ReasonOutsidePools, "address %s is excluded from pool %q by avoidBuggyIPs", ip, p.name)
		case seen[familyOf(ip).index()].IsValid():
			fail(ReasonInvalidRequest, "status holds two %s addresses, %s and %s; a service has one per family", familyOf(ip), seen[familyOf(ip).index()], ip)
		case c.pool != nil && p != c.pool:
			fail(ReasonNoMatchingPool, "address %s is in pool %q, but %s is in pool %q and a service's addresses come from one pool", ip, p.name, c.ips[0], c.pool.name)
		default:
			if reason, msg := a.shareProblem(key, sharing, ip); reason != "" {
				fail(reason, "%s", msg)
				continue
			}
			seen[familyOf(ip).index()] = ip
			c.pool = p
			c.ips = append(c.ips, ip)
		}
	}
	a.release(key)
	if len(c.ips) > 0 {
		a.commit(key, c, sharing)
	}
	return joinErrors(errs)
}

// joinErrors is errors.Join, but keeps a single error as it is.
func joinErrors(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

// Release forgets key's addresses. Releasing a key that holds nothing is a
// no-op.
func (a *Allocator) Release(key Key) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.init()
	a.release(key)
}

// Assigned returns what key holds.
func (a *Allocator) Assigned(key Key) (Assignment, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.keys[key]
	if h == nil {
		return Assignment{}, false
	}
	return choice{h.pool, h.ips}.assignment(), true
}

// Owners returns the keys holding ip, sorted: none, one, or the Services
// sharing it.
func (a *Allocator) Owners(ip netip.Addr) []Key {
	a.mu.Lock()
	defer a.mu.Unlock()
	if st := a.ips[ip]; st != nil {
		return slices.Clone(st.holders)
	}
	return nil
}

// Usage counts the addresses of one family of a pool; ok is false for an
// unknown pool. An address shared by several Services counts once.
func (a *Allocator) Usage(pool string, family Family) (u Usage, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cfg == nil || (family != IPv4 && family != IPv6) {
		return Usage{}, false
	}
	p := a.cfg.pools[pool]
	if p == nil {
		return Usage{}, false
	}
	return p.space(family).usage(), true
}

// Assign gives the Service described by req its addresses, following the
// rules in the package documentation, and records them. Calling it again with
// the same request returns the same assignment. Errors are *AllocationError.
//
// On error the Service keeps what it held as far as req still allows it (see
// [Allocator.Retain]): a Service that asked for another address or pool keeps
// its current one meanwhile, but one that may no longer use its pool, or may
// no longer share its address with the address's other holders, loses it;
// the error's Released lists what it lost.
func (a *Allocator) Assign(req Request) (Assignment, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.init()
	r, err := normalize(req)
	if err == nil {
		var c choice
		if len(r.IPs) > 0 {
			c, err = a.pickRequested(r)
		} else {
			c, err = a.pickAuto(r)
		}
		if err == nil {
			a.commit(r.Key, c, r.Sharing)
			return c.assignment(), nil
		}
	}
	var ae *AllocationError
	if errors.As(err, &ae) {
		ae.Released, ae.ReleaseReason = a.retain(req)
	}
	return Assignment{}, err
}

// Retain keeps, of what req's Service holds, only what req allows it to hold
// whatever else it asks for: addresses in a pool it is eligible for that it
// may share with their other holders under req's Sharing, which is recorded
// for them. It releases the others and returns them, sorted, with why.
//
// A caller that cannot build the whole request (an annotation that does not
// parse) calls it with what it knows, so that a Service cannot keep an address
// it may no longer have by also asking for something invalid. Assign calls it
// when it fails.
func (a *Allocator) Retain(req Request) (released []netip.Addr, why string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.init()
	return a.retain(req)
}

func (a *Allocator) retain(req Request) (released []netip.Addr, why string) {
	h := a.keys[req.Key]
	if h == nil {
		return nil, ""
	}
	r := &request{Request: req}
	var kept []netip.Addr
	var whys []string
	for _, ip := range h.ips {
		if !r.eligible(h.pool) {
			released = append(released, ip)
			continue
		}
		if reason, msg := a.shareProblem(req.Key, req.Sharing, ip); reason != "" {
			released = append(released, ip)
			whys = append(whys, msg)
			continue
		}
		kept = append(kept, ip)
	}
	if !r.eligible(h.pool) {
		whys = append([]string{fmt.Sprintf("pool %q does not serve this service (see the pool's serviceAllocation)", h.pool.name)}, whys...)
	}
	sh := req.Sharing
	sh.Ports = slices.Clone(sh.Ports)
	if len(kept) == 0 {
		a.release(req.Key)
	} else {
		a.commit(req.Key, choice{h.pool, kept}, sh)
	}
	slices.SortFunc(released, netip.Addr.Compare)
	return released, strings.Join(whys, "; ")
}

// choice is an assignment not yet recorded.
type choice struct {
	pool *pool
	ips  []netip.Addr
}

func (c choice) assignment() Assignment {
	return Assignment{Pool: c.pool.name, IPs: slices.Clone(c.ips)}
}

func (a *Allocator) pickRequested(r *request) (choice, error) {
	var p *pool
	for _, ip := range r.IPs {
		q, usable := a.cfg.poolOf(ip)
		switch {
		case q == nil:
			return choice{}, r.fail(ReasonOutsidePools, "requested address %s is outside every pool", ip)
		case !usable:
			return choice{}, r.fail(ReasonOutsidePools, "requested address %s is excluded from pool %q by avoidBuggyIPs (it ends in .0 or .255)", ip, q.name)
		case p != nil && q != p:
			return choice{}, r.fail(ReasonNoMatchingPool, "requested addresses %s and %s are in different pools (%q and %q); a service's addresses come from one pool", r.IPs[0], ip, p.name, q.name)
		}
		p = q
	}
	switch {
	case r.Pool != "" && p.name != r.Pool:
		return choice{}, r.fail(ReasonNoMatchingPool, "requested address %s is in pool %q, not in the requested pool %q", r.IPs[0], p.name, r.Pool)
	case !r.eligible(p):
		return choice{}, r.fail(ReasonNoMatchingPool, "requested address %s is in pool %q, which does not serve this service (see the pool's serviceAllocation)", r.IPs[0], p.name)
	}
	for _, ip := range r.IPs {
		if reason, msg := a.shareProblem(r.Key, r.Sharing, ip); reason != "" {
			return choice{}, r.fail(reason, "%s", msg)
		}
	}
	return choice{p, r.IPs}, nil
}

func (a *Allocator) pickAuto(r *request) (choice, error) {
	if c, ok := a.keep(r); ok {
		return c, nil
	}
	return a.pickFresh(r)
}

// keep returns the Service's current addresses if they still serve the
// request, completed from the same pool where a family is missing. It is why
// an address never moves because another pool got a better priority.
func (a *Allocator) keep(r *request) (choice, bool) {
	h := a.keys[r.Key]
	if h == nil || r.Pool != "" && h.pool.name != r.Pool || !r.eligible(h.pool) {
		return choice{}, false
	}
	var have [2]netip.Addr
	kept := 0
	for _, ip := range h.ips {
		if slices.Contains(r.wanted, familyOf(ip)) && a.mayShare(r.Key, r.Sharing, ip) {
			have[familyOf(ip).index()] = ip
			kept++
		}
	}
	if kept == 0 {
		return choice{}, false
	}
	c := choice{pool: h.pool}
	var joins map[*pool]*[2]netip.Addr
	for _, f := range r.wanted {
		ip := have[f.index()]
		if !ip.IsValid() {
			if joins == nil {
				joins = a.joins(r, func(p *pool) bool { return p == h.pool })
			}
			var ok bool
			if ip, ok = pickInPool(h.pool, f, joins[h.pool]); !ok {
				if r.FamilyPolicy == RequireDualStack {
					return choice{}, false
				}
				continue
			}
		}
		c.ips = append(c.ips, ip)
	}
	return c, true
}

// pickFresh chooses a pool and addresses as if the Service held nothing.
func (a *Allocator) pickFresh(r *request) (choice, error) {
	cands, err := a.candidates(r)
	if err != nil {
		return choice{}, err
	}
	joins := a.joins(r, func(p *pool) bool { return slices.Contains(cands, p) })
	for _, fams := range familySets(r) {
		// A Service with a sharing key first joins its key's addresses, in
		// the best pool that has one and can serve every family.
		for _, p := range cands {
			if j := joins[p]; j != nil && (j[0].IsValid() && slices.Contains(fams, IPv4) || j[1].IsValid() && slices.Contains(fams, IPv6)) {
				if c, ok := supply(p, fams, j); ok {
					return c, nil
				}
			}
		}
		for _, p := range cands {
			if c, ok := supply(p, fams, joins[p]); ok {
				return c, nil
			}
		}
	}
	return choice{}, a.freshFailure(r, cands)
}

// familySets lists the sets of families to try, best first.
func familySets(r *request) [][]Family {
	if r.FamilyPolicy == PreferDualStack && len(r.wanted) == 2 {
		return [][]Family{r.wanted, r.wanted[:1], r.wanted[1:]}
	}
	return [][]Family{r.wanted}
}

// candidates returns the pools the Service may get new addresses from, best
// first.
func (a *Allocator) candidates(r *request) ([]*pool, error) {
	if a.cfg == nil || len(a.cfg.ranked) == 0 {
		return nil, r.fail(ReasonNoMatchingPool, "no address pool is configured")
	}
	if r.Pool != "" {
		p := a.cfg.pools[r.Pool]
		switch {
		case p == nil:
			return nil, r.fail(ReasonNoMatchingPool, "address pool %q does not exist", r.Pool)
		case !r.eligible(p):
			return nil, r.fail(ReasonNoMatchingPool, "address pool %q does not serve this service (see the pool's serviceAllocation)", r.Pool)
		}
		return []*pool{p}, nil
	}
	cands := a.scratch[:0] // reused under the lock: saves an allocation per Assign
	eligible := 0
	for _, p := range a.cfg.ranked {
		if r.eligible(p) {
			eligible++
			if p.autoAssign {
				cands = append(cands, p)
			}
		}
	}
	switch {
	case eligible == 0:
		return nil, r.fail(ReasonNoMatchingPool, "no address pool serves this service (see the pools' serviceAllocation namespaces and selectors)")
	case len(cands) == 0:
		return nil, r.fail(ReasonNoMatchingPool, "no pool serving this service has autoAssign; ask for a pool by name or for a specific address")
	}
	a.scratch = cands
	return cands, nil
}

// freshFailure says why no candidate pool could serve the request.
func (a *Allocator) freshFailure(r *request, cands []*pool) error {
	hasAll := func(p *pool, fams []Family) bool {
		for _, f := range fams {
			if p.space(f).empty() {
				return false
			}
		}
		return true
	}
	var fit []*pool // pools that have the families but no room
	for _, fams := range familySets(r) {
		for _, p := range cands {
			if hasAll(p, fams) && !slices.Contains(fit, p) {
				fit = append(fit, p)
			}
		}
	}
	var want []string
	for _, f := range r.wanted {
		want = append(want, f.String())
	}
	// "IPv6", "IPv4 or IPv6" (PreferDualStack), "IPv4 and IPv6" (Require).
	wantText := strings.Join(want, " or ")
	if r.FamilyPolicy == RequireDualStack {
		wantText = strings.Join(want, " and ")
	}
	if len(fit) == 0 {
		switch {
		case r.Pool != "" && r.FamilyPolicy == RequireDualStack:
			return r.fail(ReasonFamilyUnavailable, "pool %q does not have both IPv4 and IPv6 addresses, which RequireDualStack needs", r.Pool)
		case r.Pool != "":
			return r.fail(ReasonFamilyUnavailable, "pool %q has no %s addresses", r.Pool, wantText)
		case r.FamilyPolicy == RequireDualStack:
			return r.fail(ReasonFamilyUnavailable, "no pool serving this service has both IPv4 and IPv6 addresses, which RequireDualStack needs")
		}
		return r.fail(ReasonFamilyUnavailable, "no pool serving this service has %s addresses", wantText)
	}
	free := "a free " + wantText + " address"
	if r.FamilyPolicy == RequireDualStack {
		free = "free " + wantText + " addresses"
	}
	stats := func(p *pool) string {
		var fams []string
		for _, f := range r.wanted {
			if s := p.space(f); !s.empty() {
				u := s.usage()
				fams = append(fams, fmt.Sprintf("%v %d assigned, %d free", f, u.Assigned, u.Available))
			}
		}
		return strings.Join(fams, "; ")
	}
	unjoinable := a.unjoinable(r, cands)
	if r.Pool != "" {
		return r.fail(ReasonPoolExhausted, "pool %q has no %s (%s)%s", r.Pool, strings.TrimPrefix(free, "a "), stats(fit[0]), unjoinable)
	}
	const shown = 5
	var parts []string
	for i, p := range fit {
		if i == shown {
			parts = append(parts, fmt.Sprintf("and %d more", len(fit)-shown))
			break
		}
		parts = append(parts, fmt.Sprintf("%q (%s)", p.name, stats(p)))
	}
	return r.fail(ReasonPoolExhausted, "no pool serving this service has %s: %s%s", free, strings.Join(parts, ", "), unjoinable)
}

// unjoinable says, for a Service with a sharing key that found no free
// address, why it could not join its key's lowest address in cands: the
// key alone does not let it share (see Sharing). Empty when there is none.
func (a *Allocator) unjoinable(r *request, cands []*pool) string {
	if r.Sharing.Key == "" {
		return ""
	}
	var lowest netip.Addr
	var why string
	for ip := range a.shared[r.Sharing.Key] {
		if !slices.Contains(cands, a.ips[ip].pool) || lowest.IsValid() && lowest.Less(ip) {
			continue
		}
		if _, msg := a.shareProblem(r.Key, r.Sharing, ip); msg != "" {
			lowest, why = ip, msg
		}
	}
	if why == "" {
		return ""
	}
	return fmt.Sprintf("; sharing key %q does not help: %s", r.Sharing.Key, why)
}

// joins finds, per accepted pool and family, the lowest address that the
// Service's sharing key already uses and that the Service may share.
func (a *Allocator) joins(r *request, accept func(*pool) bool) map[*pool]*[2]netip.Addr {
	if r.Sharing.Key == "" {
		return nil
	}
	var out map[*pool]*[2]netip.Addr
	for ip := range a.shared[r.Sharing.Key] {
		st := a.ips[ip]
		if !accept(st.pool) || !a.mayShare(r.Key, r.Sharing, ip) {
			continue
		}
		if out == nil {
			out = make(map[*pool]*[2]netip.Addr)
		}
		j := out[st.pool]
		if j == nil {
			j = new([2]netip.Addr)
			out[st.pool] = j
		}
		if i := familyOf(ip).index(); !j[i].IsValid() || ip.Less(j[i]) {
			j[i] = ip
		}
	}
	return out
}

// supply picks one address per family from p, or fails if one is missing.
func supply(p *pool, fams []Family, join *[2]netip.Addr) (choice, bool) {
	c := choice{pool: p}
	for _, f := range fams {
		ip, ok := pickInPool(p, f, join)
		if !ok {
			return choice{}, false
		}
		c.ips = append(c.ips, ip)
	}
	return c, true
}

// pickInPool prefers an address to join over the lowest free one.
func pickInPool(p *pool, f Family, join *[2]netip.Addr) (netip.Addr, bool) {
	if join != nil && join[f.index()].IsValid() {
		return join[f.index()], true
	}
	s := p.space(f)
	c, ok := s.lowestFree()
	if !ok {
		return netip.Addr{}, false
	}
	return s.addr(c), true
}

// commit records c as key's assignment, replacing what key held.
func (a *Allocator) commit(key Key, c choice, sh Sharing) {
	a.release(key)
	a.keys[key] = &holding{pool: c.pool, ips: c.ips, sharing: sh}
	for _, ip := range c.ips {
		st := a.ips[ip]
		if st == nil {
			st = &ipState{pool: c.pool}
			a.ips[ip] = st
			s := c.pool.space(familyOf(ip))
			cd, _ := s.coord(keyOf(ip))
			s.used.add(cd)
		}
		i, _ := slices.BinarySearchFunc(st.holders, key, Key.Compare)
		st.holders = slices.Insert(st.holders, i, key)
		if sh.Key != "" && st.sharingKey == "" {
			st.sharingKey = sh.Key
			if a.shared[sh.Key] == nil {
				a.shared[sh.Key] = make(map[netip.Addr]struct{})
			}
			a.shared[sh.Key][ip] = struct{}{}
		}
	}
}

func (a *Allocator) release(key Key) {
	h := a.keys[key]
	if h == nil {
		return
	}
	delete(a.keys, key)
	for _, ip := range h.ips {
		st := a.ips[ip]
		if i, ok := slices.BinarySearchFunc(st.holders, key, Key.Compare); ok {
			st.holders = slices.Delete(st.holders, i, i+1)
		}
		if len(st.holders) > 0 {
			continue
		}
		delete(a.ips, ip)
		s := st.pool.space(familyOf(ip))
		cd, _ := s.coord(keyOf(ip))
		s.used.remove(cd)
		if k := st.sharingKey; k != "" {
			delete(a.shared[k], ip)
			if len(a.shared[k]) == 0 {
				delete(a.shared, k)
			}
		}
	}
}

// Holders returns, sorted, the keys of namespace holding addresses of pool;
// an empty pool or namespace matches any. They are the Services to check
// again when who may use a pool changes (its serviceAllocation, a
// namespace's labels).
func (a *Allocator) Holders(pool, namespace string) []Key {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []Key
	for k, h := range a.keys {
		if (pool == "" || h.pool.name == pool) && (namespace == "" || k.Namespace == namespace) {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, Key.Compare)
	return out
}
