package dataplane

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/knftables"
)

// The nftables backend, in the manner of kube-proxy's nftables mode: one
// private table (inet herald) and nothing outside it.
//
// A packet for a LoadBalancer address costs one lookup whatever the number
// of Services: the chain "services" matches destination address, protocol
// and port against a verdict map (services-ip4, services-ip6) whose element
// jumps to the virtual service's chain. That chain has one rule per
// destination (two with affinity): its condition picks the destination
// (affinity first, then the scheduler: numgen random, numgen inc, or jhash
// of the source), and its statements mark the packet for masquerading if
// needed, record the affinity and DNAT, which ends the chain. One chain per
// virtual service, not one more per destination as kube-proxy writes: a
// full sync costs about the number of chains and rules, and this halves it.
//
// Hooks:
//   - nat prerouting and output at dstnat-10, so they run before kube-proxy's
//     nat chains at dstnat: a connection is NATed once per hook, the first
//     DNAT wins, and kube-proxy's own rule for the LoadBalancer address (which
//     would send it to any endpoint of the cluster) never sees it;
//   - nat postrouting at srcnat: masquerade what carries the mark;
//   - filter input, forward and output at filter-10: a virtual service with no
//     destination is in the no-endpoints maps and rejected there (its packets
//     are not DNATed, so they still carry the LoadBalancer address).
//
// A full sync deletes and recreates the table in one transaction (the kernel
// applies a transaction atomically, so there is no moment without rules),
// which also adopts whatever a previous run left. Its cost: the affinity sets
// start empty. A partial sync changes only the map elements, chains and
// sets of the virtual services that differ: over netlink when that keeps
// every chain and needs no set (a Service's endpoints changed, without
// affinity: see nftables_netlink.go), through nft otherwise.
//
// Measured (BenchmarkNFTablesKernelSync10k, kernel 6.18, nft 1.0.6, 2
// shared cores): 10,000 virtual services of 3 destinations each (50,020
// objects) take 3.9 s for a full sync (the layout of one chain per
// destination took 6.1 s). A partial sync of one, median of 21: over
// netlink 22 ms of CPU, 31-58 ms wall while other work kept the machine's
// load at 11; through nft (BenchmarkNFTablesKernelSync10kPartialViaNft)
// 109 ms of CPU, 0.14-0.26 s wall. nft's cost is its cache: before running
// even a one-line transaction that adds a rule or an element, nft 1.0.6
// dumps every chain, set and object (1.1 MB of chains here). What is left
// over netlink is the kernel's: a transaction that adds a rule with a
// DNAT, or a map element that jumps, makes the commit validate the whole
// table, walking the 10,000 service chains once per NAT base chain
// (prerouting and output): 19-25 ms of CPU (perf: nft_chain_validate under
// nf_tables_commit), where flushing a chain alone takes 0.13 ms and adding
// an element to a map whose values are not verdicts 0.6 ms. Finding the
// changed service among 10,000 (diff) takes 2.5 ms.
//
// End to end (dpbench -only change, 1,002 Services, the machine 62% idle):
// an EndpointSlice update to the new rule in node-1's kernel, median 18.9
// ms and max 301 ms over 20, where partial syncs through nft gave 157 and
// 529 ms.

// NFTablesOptions configures the nftables backend.
type NFTablesOptions struct {
	// Table is the name of the inet table; default "herald".
	Table string
	// MasqueradeMark is the packet mark bit for masquerading; default
	// DefaultMasqueradeMark.
	MasqueradeMark uint32
}

func (o NFTablesOptions) withDefaults() NFTablesOptions {
	if o.Table == "" {
		o.Table = "herald"
	}
	if o.MasqueradeMark == 0 {
		o.MasqueradeMark = DefaultMasqueradeMark
	}
	return o
}

// NFTables is the nftables Backend.
type NFTables struct {
	opts NFTablesOptions
	nft  knftables.Interface

	mu sync.Mutex
	// applied is what the last successful Sync programmed; nil: the next
	// Sync is full.
	applied map[Key]VirtualService
	objects int // Stats.Rules of applied
	// netlinkSyncs counts the partial syncs that went over netlink;
	// partialViaNft sends them all through nft. For tests and benchmarks.
	netlinkSyncs  int
	partialViaNft bool
}

var _ Backend = (*NFTables)(nil)

// NewNFTables checks that nft works here and returns the backend. Nothing is
// programmed before the first Sync.
func NewNFTables(opts NFTablesOptions) (*NFTables, error) {
	opts = opts.withDefaults()
	nft, err := knftables.New(knftables.InetFamily, opts.Table)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return &NFTables{opts: opts, nft: nft}, nil
}

func (*NFTables) Name() string { return "nftables" }

// Supports: random, rr and sh (numgen random, numgen inc, jhash).
func (*NFTables) Supports(s Scheduler) bool {
	return s == Random || s == RoundRobin || s == SourceHash
}

func (n *NFTables) Sync(ctx context.Context, rs RuleSet) (Stats, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	r := nftRenderer{opts: n.opts}
	tx := n.nft.NewTransaction()
	full := n.applied == nil
	var changes []change
	var err error
	switch {
	case full:
		r.full(tx, rs)
	default:
		changes = diff(n.applied, rs)
		if len(changes) > 0 && !n.partialViaNft && nftNetlinkCan(changes) {
			n.netlinkSyncs++
			err = n.partialNetlink(changes)
			break
		}
		r.partial(tx, changes)
	}
	if err == nil && tx.NumOperations() > 0 {
		err = n.nft.Run(ctx, tx)
	}
	if err != nil {
		n.applied = nil
		return Stats{Full: full}, fmt.Errorf("nftables: table %s: %w", n.opts.Table, err)
	}
	if full {
		n.applied = index(rs)
		n.objects = r.count(rs)
	} else {
		for _, c := range changes {
			n.objects += nftServiceObjects(c.New) - nftServiceObjects(c.Old)
		}
		apply(n.applied, changes)
	}
	return Stats{Full: full, Services: len(rs.Services), Rules: n.objects}, nil
}

// Cleanup deletes the table, and with it everything the backend made.
func (n *NFTables) Cleanup(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.applied = nil
	tx := n.nft.NewTransaction()
	// add then delete: deleting a table that is not there would fail.
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	if err := n.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("nftables: deleting table %s: %w", n.opts.Table, err)
	}
	return nil
}

// RenderNFTables is the transaction of a full sync of rs, as nft commands.
func RenderNFTables(opts NFTablesOptions, rs RuleSet) string {
	opts = opts.withDefaults()
	tx := knftables.NewFake(knftables.InetFamily, opts.Table).NewTransaction()
	nftRenderer{opts: opts}.full(tx, rs)
	return tx.String()
}

// RenderNFTablesPartial is the transaction of a partial sync from applied
// (what the last sync programmed) to rs, as nft commands.
func RenderNFTablesPartial(opts NFTablesOptions, applied, rs RuleSet) string {
	opts = opts.withDefaults()
	tx := knftables.NewFake(knftables.InetFamily, opts.Table).NewTransaction()
	nftRenderer{opts: opts}.partial(tx, diff(index(applied), rs))
	return tx.String()
}

// The table's fixed objects.
const (
	nftServicesChain    = "services"
	nftNoEndpointsChain = "no-endpoints"
	nftRejectChain      = "reject-no-endpoints"
	nftMasqChain        = "nat-postrouting"
)

func nftServicesMap(v4 bool) string    { return "services-" + family(v4) }
func nftNoEndpointsMap(v4 bool) string { return "no-endpoints-" + family(v4) }

func family(v4 bool) string {
	if v4 {
		return "ip4"
	}
	return "ip6"
}

// nftRenderer turns virtual services into knftables operations; pure.
type nftRenderer struct {
	opts NFTablesOptions
}

func (r nftRenderer) full(tx *knftables.Transaction, rs RuleSet) {
	// add+delete+add: the table exists before it is deleted, and the
	// kernel applies the three at once.
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("Herald LoadBalancer dataplane")})
	tx.Delete(&knftables.Table{})
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("Herald LoadBalancer dataplane")})
	r.base(tx)
	for i := range rs.Services {
		r.addService(tx, &rs.Services[i], nil)
	}
}

// base adds the maps and the chains that do not depend on the Services.
func (r nftRenderer) base(tx *knftables.Transaction) {
	for _, v4 := range []bool{true, false} {
		addr := "ipv4_addr"
		if !v4 {
			addr = "ipv6_addr"
		}
		for _, m := range []string{nftServicesMap(v4), nftNoEndpointsMap(v4)} {
			tx.Add(&knftables.Map{Name: m, Type: addr + " . inet_proto . inet_service : verdict"})
		}
	}
	tx.Add(&knftables.Chain{Name: nftServicesChain})
	tx.Add(&knftables.Chain{Name: nftNoEndpointsChain})
	for _, v4 := range []bool{true, false} {
		tx.Add(&knftables.Rule{Chain: nftServicesChain, Rule: ipFamily(v4) + " daddr . meta l4proto . th dport vmap @" + nftServicesMap(v4)})
		tx.Add(&knftables.Rule{Chain: nftNoEndpointsChain, Rule: ipFamily(v4) + " daddr . meta l4proto . th dport vmap @" + nftNoEndpointsMap(v4)})
	}
	tx.Add(&knftables.Chain{Name: nftRejectChain})
	tx.Add(&knftables.Rule{Chain: nftRejectChain, Rule: "reject"})

	base := func(name string, typ knftables.BaseChainType, hook knftables.BaseChainHook, prio knftables.BaseChainPriority, rule string) {
		tx.Add(&knftables.Chain{Name: name, Type: &typ, Hook: &hook, Priority: &prio})
		tx.Add(&knftables.Rule{Chain: name, Rule: rule})
	}
	base("nat-prerouting", knftables.NATType, knftables.PreroutingHook, "dstnat - 10", "jump "+nftServicesChain)
	// The same -110 by number: nft (1.0.6) refuses the name dstnat in the
	// output hook.
	base("nat-output", knftables.NATType, knftables.OutputHook, "-110", "jump "+nftServicesChain)
	mark := fmt.Sprintf("0x%x", r.opts.MasqueradeMark)
	base(nftMasqChain, knftables.NATType, knftables.PostroutingHook, knftables.SNATPriority,
		"meta mark & "+mark+" == "+mark+" meta mark set meta mark ^ "+mark+" masquerade fully-random")
	for _, h := range []knftables.BaseChainHook{knftables.InputHook, knftables.ForwardHook, knftables.OutputHook} {
		base("filter-"+string(h), knftables.FilterType, h, "filter - 10", "ct state new jump "+nftNoEndpointsChain)
	}
}

// nftStaticObjects is what base adds that counts in Stats.Rules: 9 chains
// and 11 rules.
const nftStaticObjects = 9 + 11

func (r nftRenderer) count(rs RuleSet) int {
	n := nftStaticObjects
	for i := range rs.Services {
		n += nftServiceObjects(&rs.Services[i])
	}
	return n
}

// nftServiceObjects (nil: nothing): the map element, and with destinations
// the service chain with one rule per destination, and one more per
// destination for the affinity check.
func nftServiceObjects(vs *VirtualService) int {
	if vs == nil {
		return 0
	}
	n := 1
	if len(vs.Destinations) == 0 {
		return n
	}
	perDest := 1
	if vs.Affinity > 0 {
		perDest = 2
	}
	return n + 1 + perDest*len(vs.Destinations)
}

// partial rewrites the virtual services that differ between applied and
// rs. The order matters inside the transaction: nothing can be deleted
// while a rule or an element still refers to it, so the old elements go
// first, then the old chains are flushed (dropping their references to
// sets), then what is no longer wanted is deleted, then the new state is
// added. A virtual service keeps its chain as long as it has a
// destination, so moving an endpoint is a flush and new rules.
func (r nftRenderer) partial(tx *knftables.Transaction, changes []change) {
	for _, c := range changes {
		if c.Old != nil && (c.New == nil || len(c.Old.Destinations) == 0 != (len(c.New.Destinations) == 0)) {
			tx.Delete(nftElement(c.Old))
		}
	}
	for _, c := range changes {
		if c.Old != nil && len(c.Old.Destinations) > 0 {
			tx.Flush(&knftables.Chain{Name: nftServiceChain(c.Old.Key)})
		}
	}
	for _, c := range changes {
		if c.Old == nil {
			continue
		}
		if len(c.Old.Destinations) > 0 && (c.New == nil || len(c.New.Destinations) == 0) {
			tx.Delete(&knftables.Chain{Name: nftServiceChain(c.Old.Key)})
		}
		keepSets := map[string]bool{}
		if c.New != nil {
			for _, s := range nftSets(c.New) {
				keepSets[s.Name] = true
			}
		}
		for _, s := range nftSets(c.Old) {
			// A new timeout needs a new set.
			if !keepSets[s.Name] || c.Old.Affinity != c.New.Affinity {
				tx.Delete(&knftables.Set{Name: s.Name})
			}
		}
	}
	for _, c := range changes {
		if c.New != nil {
			r.addService(tx, c.New, c.Old)
		}
	}
}

// addService adds what vs needs; old is what the table holds for the same
// key (nil: nothing), whose element is kept when it still fits.
func (r nftRenderer) addService(tx *knftables.Transaction, vs, old *VirtualService) {
	if len(vs.Destinations) > 0 {
		for _, s := range nftSets(vs) {
			tx.Add(s)
		}
		svc := nftServiceChain(vs.Key)
		tx.Add(&knftables.Chain{Name: svc, Comment: knftables.PtrTo(vs.comment())})
		r.serviceRules(tx, vs, svc)
	}
	if old == nil || len(old.Destinations) == 0 != (len(vs.Destinations) == 0) {
		tx.Add(nftElement(vs))
	}
}

func (r nftRenderer) serviceRules(tx *knftables.Transaction, vs *VirtualService, svc string) {
	ipf := ipFamily(vs.IP.Is4())
	mark := "0x" + strconv.FormatUint(uint64(r.opts.MasqueradeMark), 16)
	dnat := "meta l4proto " + vs.Protocol.lower() + " dnat " + ipf + " to "
	// What sending a connection to a destination takes; the DNAT ends
	// the chain.
	send := make([]string, len(vs.Destinations))
	for i, d := range vs.Destinations {
		var b strings.Builder
		if vs.Masquerade {
			b.WriteString("meta mark set meta mark | " + mark + " ")
		}
		if vs.Affinity > 0 {
			b.WriteString("update @" + nftAffinitySet(vs.Key, d) + " { " + ipf + " saddr } ")
		}
		b.WriteString(dnat + d.String()) // 203.0.113.1:80, [2001:db8::1]:80
		send[i] = b.String()
	}
	if vs.Affinity > 0 {
		for i, d := range vs.Destinations {
			tx.Add(&knftables.Rule{Chain: svc, Rule: ipf + " saddr @" + nftAffinitySet(vs.Key, d) + " " + send[i]})
		}
	}
	// The scheduler is a cascade of rules, the last one taking what the
	// others left: with N destinations, rule i takes 1/(N-i) of what
	// reaches it (numgen random), or every (N-i)th (numgen inc, whose
	// counter belongs to the rule), or the sources whose hash is i (jhash,
	// the same in every rule). Not a vmap { 0 : goto ..., } as kube-proxy
	// writes: each such inline map is an anonymous set, and the kernel
	// names and binds each new anonymous set by walking the table's sets
	// and the whole transaction, so a full sync of 10,000 services took
	// 89 s (6.18; 2,000: 1.7 s; quadratic). The price of the cascade: a
	// new connection evaluates up to N-1 rules instead of one lookup.
	n := len(vs.Destinations)
	for i := range n - 1 {
		var cond string
		switch vs.Scheduler {
		case RoundRobin:
			cond = "numgen inc mod " + strconv.Itoa(n-i) + " == 0"
		case SourceHash:
			// A fixed seed keeps the mapping across syncs and restarts.
			cond = fmt.Sprintf("jhash %s saddr mod %d seed 0x%x == %d", ipf, n, nftHashSeed, i)
		default:
			cond = "numgen random mod " + strconv.Itoa(n-i) + " == 0"
		}
		tx.Add(&knftables.Rule{Chain: svc, Rule: cond + " " + send[i]})
	}
	tx.Add(&knftables.Rule{Chain: svc, Rule: send[n-1]})
}

// nftHashSeed is "HRLD".
const nftHashSeed = 0x48524c44

func nftElement(vs *VirtualService) *knftables.Element {
	e := &knftables.Element{
		Key:     []string{vs.IP.String(), vs.Protocol.lower(), fmt.Sprint(vs.Port)},
		Comment: knftables.PtrTo(vs.comment()),
	}
	if len(vs.Destinations) == 0 {
		e.Map, e.Value = nftNoEndpointsMap(vs.IP.Is4()), []string{"goto " + nftRejectChain}
	} else {
		e.Map, e.Value = nftServicesMap(vs.IP.Is4()), []string{"goto " + nftServiceChain(vs.Key)}
	}
	return e
}

// nftSets lists the affinity sets of vs: one per destination, holding the
// clients whose last connection went there, each for the affinity timeout
// after its last connection.
func nftSets(vs *VirtualService) []*knftables.Set {
	if vs.Affinity <= 0 || len(vs.Destinations) == 0 {
		return nil
	}
	typ := "ipv4_addr"
	if !vs.IP.Is4() {
		typ = "ipv6_addr"
	}
	timeout := vs.Affinity.Truncate(time.Second)
	if timeout < time.Second {
		timeout = time.Second
	}
	var out []*knftables.Set
	for _, d := range vs.Destinations {
		out = append(out, &knftables.Set{
			Name: nftAffinitySet(vs.Key, d), Type: typ,
			Flags: []knftables.SetFlag{knftables.DynamicFlag}, Timeout: &timeout,
		})
	}
	return out
}

// Names are readable and deterministic: svc-<address>-<protocol>-<port>,
// and affinity-<address>-<protocol>-<port>-to-<address>-<port> for a
// destination's affinity set (at most about 110 bytes for IPv6, far under
// nft's 256). nft names may hold letters, digits and "/-_." only, so an
// IPv6 address's colons become underscores.

func nftServiceChain(k Key) string {
	return "svc-" + nftName(k.IP.String()) + "-" + k.Protocol.lower() + "-" + strconv.Itoa(int(k.Port))
}

func nftAffinitySet(k Key, d Destination) string {
	return "affinity-" + strings.TrimPrefix(nftServiceChain(k), "svc-") + "-to-" + nftName(d.Addr.String()) + "-" + strconv.Itoa(int(d.Port))
}

func nftName(s string) string { return strings.ReplaceAll(s, ":", "_") }

func ipFamily(v4 bool) string {
	if v4 {
		return "ip"
	}
	return "ip6"
}
