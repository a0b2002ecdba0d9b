// Package model turns Herald's custom resources into one validated
// configuration. Build is a pure function shared by the controller, the
// speaker and the validating webhook, so all three agree on what is valid.
//
// Rules a single object can check alone are CEL rules in the CRDs; Build
// re-checks what it relies on (addresses parse, selectors compile) and adds the
// rules that span objects: pools must not overlap, peers must not repeat,
// references to pools, peers and BFD profiles are resolved, and a
// BGPAdvertisement's aggregation lengths and localPref must suit the pools
// and peers it selects.
package model

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/internal/iprange"
)

// Kinds of the objects a verdict is about.
const (
	KindIPAddressPool    = "IPAddressPool"
	KindL2Advertisement  = "L2Advertisement"
	KindBGPPeer          = "BGPPeer"
	KindBGPAdvertisement = "BGPAdvertisement"
	KindBFDProfile       = "BFDProfile"
)

// Reasons of a refused object, used as the reason of its Accepted condition.
const (
	ReasonAccepted           = "Accepted"
	ReasonInvalidAddresses   = "InvalidAddresses"
	ReasonOverlap            = "OverlappingAddresses"
	ReasonInvalidSelector    = "InvalidSelector"
	ReasonDuplicatePeer      = "DuplicatePeer"
	ReasonUnknownBFDProfile  = "UnknownBFDProfile"
	ReasonInvalidPeerAddress = "InvalidPeerAddress"
	// ReasonClusterAddresses refuses a pool holding addresses the cluster
	// already uses: a Service CIDR (ClusterIPs) or a node's address.
	ReasonClusterAddresses = "OverlapsClusterAddresses"
	// ReasonInvalidAggregationLength refuses a BGPAdvertisement whose
	// aggregate would cover addresses outside a pool it announces.
	ReasonInvalidAggregationLength = "InvalidAggregationLength"
	// ReasonInvalidLocalPref refuses a BGPAdvertisement setting localPref
	// for an eBGP peer it names.
	ReasonInvalidLocalPref = "InvalidLocalPref"
)

// Ref names one object.
type Ref struct{ Kind, Name string }

func (r Ref) String() string { return r.Kind + " " + r.Name }

// Verdict is Build's judgement of one object.
type Verdict struct {
	Accepted bool
	Reason   string // ReasonAccepted or why not
	Message  string // what is wrong and which field, for a person
	Warnings []string
}

// Input is every Herald object in the cluster. Proposed, when set, names an
// object being created or changed (the webhook's question): it is judged as
// the newest of its kind, so it never displaces an object already in force.
type Input struct {
	Pools             []v1alpha1.IPAddressPool
	L2Advertisements  []v1alpha1.L2Advertisement
	BGPPeers          []v1alpha1.BGPPeer
	BGPAdvertisements []v1alpha1.BGPAdvertisement
	BFDProfiles       []v1alpha1.BFDProfile
	Proposed          Ref
	// Reserved are addresses the cluster already uses (Service CIDRs, node
	// addresses): a pool holding any of them is refused.
	Reserved []Reserved
	// LastAccepted are the pools as last accepted. A pool whose current
	// version is refused stays in force as it was: the verdict says refused,
	// but Config.Pools (and advertisements) keep the last accepted version.
	LastAccepted map[string]*Pool
}

// Reserved is a range of addresses the cluster uses for something else.
type Reserved struct {
	iprange.Range
	// What names the user, for a message: "ServiceCIDR kubernetes",
	// "node worker-1 (InternalIP)".
	What string
}

// Config is the validated configuration: only accepted objects are in it.
// Build makes it; it is not to be changed afterwards.
type Config struct {
	Pools             map[string]*Pool
	L2Advertisements  []*Advertisement
	BGPAdvertisements []*Advertisement
	BGPPeers          map[string]*v1alpha1.BGPPeer
	BFDProfiles       map[string]*v1alpha1.BFDProfile
	Verdicts          map[Ref]Verdict

	poolIndex iprange.Index[*Pool] // the ranges of Pools
}

// PoolOf returns the pool in force whose addresses hold ip. Pools in force
// overlap only when a pool's last accepted version clashes with a pool
// judged before it (an older pool changed to take its addresses, with no
// webhook to refuse the change); then the one judged first holds them, as
// it does in every other check of Build.
func (c *Config) PoolOf(ip netip.Addr) (*Pool, bool) {
	e, ok := c.poolIndex.Lookup(ip)
	return e.Value, ok
}

// Advertisers names the advertisements in force that select pool, as
// "Kind name", sorted.
func (c *Config) Advertisers(pool string) []string {
	var out []string
	for kind, ads := range map[string][]*Advertisement{KindL2Advertisement: c.L2Advertisements, KindBGPAdvertisement: c.BGPAdvertisements} {
		for _, a := range ads {
			if slices.Contains(a.Pools, pool) {
				out = append(out, kind+" "+a.Name)
			}
		}
	}
	slices.Sort(out)
	return out
}

// Pool is an accepted IPAddressPool.
type Pool struct {
	Name   string
	Labels map[string]string
	Ranges []iprange.Range
	// ClusterAddresses are the addresses of Ranges the cluster uses (its
	// Service CIDRs, its nodes'), which no Service may be given: a pool
	// that came to hold some (a ServiceCIDR added, a node joined) is
	// refused yet stays in force without them, so that the Services holding
	// its other addresses keep them, also across a restart.
	ClusterAddresses   []iprange.Range
	AutoAssign         bool
	AvoidBuggyIPs      bool
	Priority           *int32 // nil: after every pool that has one
	Namespaces         []string
	NamespaceSelectors []labels.Selector
	ServiceSelectors   []labels.Selector
}

// Assignable lists the addresses of the pool a Service may be given: its
// ranges without its ClusterAddresses.
func (p *Pool) Assignable() []iprange.Range {
	if len(p.ClusterAddresses) == 0 {
		return p.Ranges
	}
	var out []iprange.Range
	for _, r := range p.Ranges {
		out = append(out, r.Without(p.ClusterAddresses...)...)
	}
	return out
}

// Allows reports whether a Service in namespace ns, with the given namespace
// and Service labels, may get addresses from the pool.
func (p *Pool) Allows(ns string, nsLabels, svcLabels map[string]string) bool {
	if len(p.Namespaces) > 0 && !slices.Contains(p.Namespaces, ns) {
		return false
	}
	return AnyMatches(p.NamespaceSelectors, nsLabels) && AnyMatches(p.ServiceSelectors, svcLabels)
}

// Advertisement is an accepted L2Advertisement or BGPAdvertisement, with its
// pool references resolved to the names of accepted pools.
type Advertisement struct {
	Name             string
	Pools            []string
	NodeSelectors    []labels.Selector
	ServiceSelectors []labels.Selector
	L2               *v1alpha1.L2AdvertisementSpec
	BGP              *v1alpha1.BGPAdvertisementSpec
}

// AnyMatches is true when there are no selectors or one of them matches.
func AnyMatches(sels []labels.Selector, set map[string]string) bool {
	if len(sels) == 0 {
		return true
	}
	for _, s := range sels {
		if s.Matches(labels.Set(set)) {
			return true
		}
	}
	return false
}

// Build judges every object and assembles the configuration of the accepted ones.
func Build(in Input) *Config {
	c := &Config{
		Pools:       map[string]*Pool{},
		BGPPeers:    map[string]*v1alpha1.BGPPeer{},
		BFDProfiles: map[string]*v1alpha1.BFDProfile{},
		Verdicts:    map[Ref]Verdict{},
	}
	c.buildPools(in)
	for i := range in.BFDProfiles {
		p := &in.BFDProfiles[i]
		c.BFDProfiles[p.Name] = p
		c.accept(Ref{KindBFDProfile, p.Name}, nil)
	}
	c.buildPeers(in)
	for i := range in.L2Advertisements {
		a := &in.L2Advertisements[i]
		c.buildAdvertisement(Ref{KindL2Advertisement, a.Name}, a.Spec.IPAddressPools, a.Spec.IPAddressPoolSelectors,
			a.Spec.NodeSelectors, a.Spec.ServiceSelectors, func(adv *Advertisement) (string, string) {
				adv.L2 = &a.Spec
				return "", ""
			})
	}
	for i := range in.BGPAdvertisements {
		a := &in.BGPAdvertisements[i]
		ref := Ref{KindBGPAdvertisement, a.Name}
		c.buildAdvertisement(ref, a.Spec.IPAddressPools, a.Spec.IPAddressPoolSelectors,
			a.Spec.NodeSelectors, a.Spec.ServiceSelectors, func(adv *Advertisement) (string, string) {
				adv.BGP = &a.Spec
				for _, peer := range a.Spec.Peers {
					if _, ok := c.BGPPeers[peer]; !ok {
						c.warn(ref, fmt.Sprintf("spec.peers: BGPPeer %q does not exist (yet); the advertisement does not reach it", peer))
					}
				}
				reason, msg, cause := c.checkAggregation(adv.Pools, &a.Spec)
				if reason == "" {
					reason, msg, cause = c.checkLocalPref(ref, &a.Spec)
				}
				if reason != "" && cause == in.Proposed {
					// The proposed pool or peer is fine on its own but takes
					// an advertisement out of force: say so where it is applied.
					c.warn(cause, fmt.Sprintf("%s is refused with this %s: %s", ref, cause.Kind, msg))
				}
				return reason, msg
			})
	}
	return c
}

func (c *Config) accept(r Ref, warnings []string) {
	c.Verdicts[r] = Verdict{Accepted: true, Reason: ReasonAccepted, Message: r.Kind + " is in force", Warnings: warnings}
}

func (c *Config) refuse(r Ref, reason, format string, args ...any) {
	c.Verdicts[r] = Verdict{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

func (c *Config) warn(r Ref, w string) {
	v := c.Verdicts[r]
	v.Warnings = append(v.Warnings, w)
	c.Verdicts[r] = v
}

// byAge orders objects oldest first (then by name); the proposed object, if
// any, goes last, so that of two conflicting objects the one in force stays.
func byAge[T any](items []T, meta func(*T) *metav1.ObjectMeta, proposed string) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	slices.SortStableFunc(out, func(a, b *T) int {
		ma, mb := meta(a), meta(b)
		if pa, pb := ma.Name == proposed, mb.Name == proposed; pa != pb {
			if pa {
				return 1
			}
			return -1
		}
		if c := ma.CreationTimestamp.Compare(mb.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Compare(ma.Name, mb.Name)
	})
	return out
}

// owner says which pool and field claimed a range, for messages.
type owner struct{ pool, field string }

func (c *Config) buildPools(in Input) {
	proposed := ""
	if in.Proposed.Kind == KindIPAddressPool {
		proposed = in.Proposed.Name
	}
	var taken iprange.Index[owner]
	// inForce puts pool in force; a range of it that clashes with one of a
	// pool put in force before stays that pool's in PoolOf.
	inForce := func(pool *Pool) {
		c.Pools[pool.Name] = pool
		for _, r := range pool.Ranges {
			c.poolIndex.Add(r, pool)
		}
	}
	reservedAddrs := withoutZones(in.Reserved)
	for _, p := range byAge(in.Pools, func(p *v1alpha1.IPAddressPool) *metav1.ObjectMeta { return &p.ObjectMeta }, proposed) {
		ref := Ref{KindIPAddressPool, p.Name}
		pool, fields, reason, msg := parsePool(p)
		if reason == "" {
			reason, msg = overlap(pool, fields, &taken)
		}
		if reason == "" {
			if reason, msg = reserved(pool, fields, reservedAddrs); reason != "" {
				// What the cluster uses is taken out, the rest stays in
				// force: the pool's spec did not change, the cluster did.
				if kept := withoutClusterAddresses(pool, reservedAddrs); kept != nil {
					if ref != in.Proposed {
						// The webhook refuses the proposed pool outright.
						msg += "; no Service is given them, and the pool's other addresses stay in force"
					}
					c.refuse(ref, reason, "%s", msg)
					for i, r := range pool.Ranges {
						taken.Add(r, owner{p.Name, fields[i]})
					}
					inForce(kept)
					continue
				}
			}
		}
		if reason != "" {
			c.refuse(ref, reason, "%s", msg)
			if last := withoutClusterAddresses(in.LastAccepted[p.Name], reservedAddrs); last != nil {
				inForce(last)
				for _, r := range last.Ranges {
					taken.Add(r, owner{p.Name, "spec.addresses (last accepted)"})
				}
			}
			continue
		}
		for i, r := range pool.Ranges {
			taken.Add(r, owner{p.Name, fields[i]})
		}
		inForce(pool)
		c.accept(ref, nil)
	}
}

// parsePool checks one pool on its own: its addresses parse and do not
// overlap each other, its selectors compile. fields names the field of each
// of the pool's ranges.
func parsePool(p *v1alpha1.IPAddressPool) (pool *Pool, fields []string, reason, msg string) {
	pool = &Pool{Name: p.Name, Labels: p.Labels, AutoAssign: p.Spec.AutoAssign == nil || *p.Spec.AutoAssign, AvoidBuggyIPs: p.Spec.AvoidBuggyIPs}
	if len(p.Spec.Addresses) == 0 {
		return nil, nil, ReasonInvalidAddresses, "spec.addresses: a pool needs at least one CIDR, range or address"
	}
	var mine iprange.Index[owner]
	for i, s := range p.Spec.Addresses {
		field := fmt.Sprintf("spec.addresses[%d]", i)
		r, err := iprange.Parse(s)
		if err != nil {
			return nil, nil, ReasonInvalidAddresses, fmt.Sprintf("%s: %v", field, err)
		}
		if in, ok := mine.Add(r, owner{p.Name, field}); !ok {
			return nil, nil, ReasonOverlap, overlapMessage(p.Name, field, r, in)
		}
		pool.Ranges = append(pool.Ranges, r)
		fields = append(fields, field)
	}
	if sa := p.Spec.ServiceAllocation; sa != nil {
		prio := sa.Priority
		pool.Priority = &prio
		pool.Namespaces = sa.Namespaces
		var err error
		if pool.NamespaceSelectors, err = selectors("spec.serviceAllocation.namespaceSelectors", sa.NamespaceSelectors); err != nil {
			return nil, nil, ReasonInvalidSelector, err.Error()
		}
		if pool.ServiceSelectors, err = selectors("spec.serviceAllocation.serviceSelectors", sa.ServiceSelectors); err != nil {
			return nil, nil, ReasonInvalidSelector, err.Error()
		}
	}
	return pool, fields, "", ""
}

// overlap finds the first range of pool that overlaps one already taken.
func overlap(pool *Pool, fields []string, taken *iprange.Index[owner]) (string, string) {
	for i, r := range pool.Ranges {
		if in, found := taken.FirstOverlap(r); found {
			return ReasonOverlap, overlapMessage(pool.Name, fields[i], r, in)
		}
	}
	return "", ""
}

func overlapMessage(pool, field string, r iprange.Range, in iprange.Entry[owner]) string {
	where := "pool " + in.Value.pool + "'s"
	if in.Value.pool == pool {
		where = "its own"
	}
	return fmt.Sprintf("%s: %s overlaps %s %s (%s); pools must not share addresses", field, r, where, in.Value.field, in.Range)
}

// reserved finds the first range of pool holding addresses the cluster uses.
func reserved(pool *Pool, fields []string, res []Reserved) (string, string) {
	for i, r := range pool.Ranges {
		for _, x := range res {
			if r.Overlaps(x.Range) {
				return ReasonClusterAddresses, fmt.Sprintf("%s: %s overlaps %s (%s); Services would get addresses the cluster already uses", fields[i], r, x.What, x.Range)
			}
		}
	}
	return "", ""
}

// withoutZones drops the zones of reserved addresses: a node may list a
// link-local address with its zone (fe80::1%eth0), which names a link of
// that node and not another address, and a range with a zone would make
// every range cut out of a pool by it carry the zone too.
func withoutZones(res []Reserved) []Reserved {
	out := make([]Reserved, len(res))
	for i, x := range res {
		out[i] = x
		out[i].First, out[i].Last = x.First.WithZone(""), x.Last.WithZone("")
	}
	return out
}

// withoutClusterAddresses returns pool with the addresses of res it holds
// as its ClusterAddresses (pool itself when there are none), or nil when
// none of its addresses would be left to assign. The pool given is not
// changed: it may be a last accepted version still in use.
func withoutClusterAddresses(pool *Pool, res []Reserved) *Pool {
	if pool == nil {
		return nil
	}
	var used []iprange.Range
	for _, r := range pool.Ranges {
		for _, x := range res {
			if r.Overlaps(x.Range) {
				used = append(used, x.Range)
			}
		}
	}
	if len(used) == 0 {
		return pool
	}
	kept := *pool
	kept.ClusterAddresses = used
	if len(kept.Assignable()) == 0 {
		return nil
	}
	return &kept
}

func selectors(field string, in []metav1.LabelSelector) ([]labels.Selector, error) {
	out := make([]labels.Selector, 0, len(in))
	for i := range in {
		s, err := metav1.LabelSelectorAsSelector(&in[i])
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %v", field, i, err)
		}
		out = append(out, s)
	}
	return out, nil
}

func (c *Config) buildPeers(in Input) {
	proposed := ""
	if in.Proposed.Kind == KindBGPPeer {
		proposed = in.Proposed.Name
	}
	type peerKey struct {
		addr netip.Addr
		port int32
		vrf  string
	}
	seen := map[peerKey][]*v1alpha1.BGPPeer{}
	for _, p := range byAge(in.BGPPeers, func(p *v1alpha1.BGPPeer) *metav1.ObjectMeta { return &p.ObjectMeta }, proposed) {
		ref := Ref{KindBGPPeer, p.Name}
		addr, err := netip.ParseAddr(p.Spec.PeerAddress)
		if err != nil {
			c.refuse(ref, ReasonInvalidPeerAddress, "spec.peerAddress: %q is not an IP address", p.Spec.PeerAddress)
			continue
		}
		if _, err := selectors("spec.nodeSelectors", p.Spec.NodeSelectors); err != nil {
			c.refuse(ref, ReasonInvalidSelector, "%v", err)
			continue
		}
		port := p.Spec.PeerPort
		if port == 0 {
			port = 179
		}
		k := peerKey{addr, port, p.Spec.VRF}
		// Peers of one router on different nodes (a per-node ASN, say) are
		// fine; the same nodes twice is not: one session per peer address.
		var warnings []string
		dup := ""
		for _, other := range seen[k] {
			if len(other.Spec.NodeSelectors) == 0 || len(p.Spec.NodeSelectors) == 0 || apiequality.Semantic.DeepEqual(other.Spec.NodeSelectors, p.Spec.NodeSelectors) {
				dup = other.Name
				break
			}
			warnings = append(warnings, fmt.Sprintf("spec.peerAddress: BGPPeer %s also peers with %s port %d; a node both select opens only the session of the first by name, the other shows Blocked", other.Name, addr, port))
		}
		if dup != "" {
			c.refuse(ref, ReasonDuplicatePeer, "spec.peerAddress: BGPPeer %s already peers with %s port %d from the same nodes; one session per peer address (peers of one router with different nodeSelectors are allowed)", dup, addr, port)
			continue
		}
		if p.Spec.BFDProfile != "" {
			if _, ok := c.BFDProfiles[p.Spec.BFDProfile]; !ok {
				c.refuse(ref, ReasonUnknownBFDProfile, "spec.bfdProfile: BFDProfile %q does not exist; create it or remove the reference", p.Spec.BFDProfile)
				continue
			}
		}
		seen[k] = append(seen[k], p)
		c.BGPPeers[p.Name] = p
		c.accept(ref, warnings)
	}
}

// buildAdvertisement resolves an advertisement's pools and selectors; fill
// adds what is particular to its kind and returns the reason and message of
// a refusal, or "".
func (c *Config) buildAdvertisement(ref Ref, poolNames []string, poolSels, nodeSels, svcSels []metav1.LabelSelector, fill func(*Advertisement) (string, string)) {
	adv := &Advertisement{Name: ref.Name}
	ps, err := selectors("spec.ipAddressPoolSelectors", poolSels)
	if err == nil {
		adv.NodeSelectors, err = selectors("spec.nodeSelectors", nodeSels)
	}
	if err == nil {
		adv.ServiceSelectors, err = selectors("spec.serviceSelectors", svcSels)
	}
	if err != nil {
		c.refuse(ref, ReasonInvalidSelector, "%v", err)
		return
	}
	c.accept(ref, nil)
	for _, name := range poolNames {
		if _, ok := c.Pools[name]; ok {
			adv.Pools = append(adv.Pools, name)
		} else {
			c.warn(ref, fmt.Sprintf("spec.ipAddressPools: IPAddressPool %q does not exist or is not accepted; nothing of it is advertised", name))
		}
	}
	// No pool named and no selector: the advertisement covers every pool.
	all := len(poolNames) == 0 && len(poolSels) == 0
	for name, p := range c.Pools {
		if (all || (len(ps) > 0 && AnyMatches(ps, p.Labels))) && !slices.Contains(adv.Pools, name) {
			adv.Pools = append(adv.Pools, name)
		}
	}
	slices.Sort(adv.Pools)
	if reason, msg := fill(adv); reason != "" {
		c.refuse(ref, reason, "%s", msg)
		return
	}
	if ref.Kind == KindL2Advertisement {
		c.L2Advertisements = append(c.L2Advertisements, adv)
	} else {
		c.BGPAdvertisements = append(c.BGPAdvertisements, adv)
	}
}

// checkAggregation refuses an aggregation length shorter than a CIDR of a
// pool the advertisement announces: the aggregate of one address would then
// cover addresses outside the pool, which routers would send to the cluster.
// MetalLB refuses the same. cause is the pool that sets the bound.
func (c *Config) checkAggregation(pools []string, spec *v1alpha1.BGPAdvertisementSpec) (reason, msg string, cause Ref) {
	for _, fam := range []struct {
		field  string
		length *int32
		is4    bool
	}{{"spec.aggregationLength", spec.AggregationLength, true}, {"spec.aggregationLengthV6", spec.AggregationLengthV6, false}} {
		if fam.length == nil {
			continue // the default is the full length: one route per address
		}
		// The most specific CIDR sets the bound, so that the length the
		// message asks for is enough for every pool.
		var most netip.Prefix
		var in string
		for _, name := range pools {
			for _, r := range c.Pools[name].Ranges {
				if r.First.Is4() != fam.is4 {
					continue
				}
				for _, p := range r.Prefixes() {
					if !most.IsValid() || p.Bits() > most.Bits() {
						most, in = p, name
					}
				}
			}
		}
		if most.IsValid() && int(*fam.length) < most.Bits() {
			return ReasonInvalidAggregationLength, fmt.Sprintf("%s %d is shorter than pool %q's %s: the aggregate would announce addresses outside the pool; use at least %d",
				fam.field, *fam.length, in, most, most.Bits()), Ref{KindIPAddressPool, in}
		}
	}
	return "", "", Ref{}
}

// checkLocalPref refuses localPref for a named eBGP peer: LOCAL_PREF is
// sent to internal peers only (RFC 4271 section 5.1.5), so the setting could
// not do what it says. With no peer named, the advertisement also reaches
// iBGP peers, and only a warning lists the eBGP ones.
func (c *Config) checkLocalPref(ref Ref, spec *v1alpha1.BGPAdvertisementSpec) (reason, msg string, cause Ref) {
	if spec.LocalPref == nil {
		return "", "", Ref{}
	}
	if len(spec.Peers) > 0 {
		for _, name := range spec.Peers {
			if p, ok := c.BGPPeers[name]; ok && isEBGP(p) {
				return ReasonInvalidLocalPref, fmt.Sprintf("spec.localPref: spec.peers names BGPPeer %q, an eBGP peer (%s); LOCAL_PREF is sent to iBGP peers only (RFC 4271 5.1.5): remove localPref or the peer",
					name, sessionASes(p)), Ref{KindBGPPeer, name}
			}
		}
		return "", "", Ref{}
	}
	var ebgp []string
	for _, name := range slices.Sorted(maps.Keys(c.BGPPeers)) {
		if isEBGP(c.BGPPeers[name]) {
			ebgp = append(ebgp, fmt.Sprintf("%q", name))
		}
	}
	if len(ebgp) > 0 {
		c.warn(ref, fmt.Sprintf("spec.localPref: eBGP peers do not get LOCAL_PREF (RFC 4271 5.1.5), so it reaches only the iBGP peers; eBGP: BGPPeer %s", strings.Join(ebgp, ", ")))
	}
	return "", "", Ref{}
}

// isEBGP reports whether the session with p is external: the peer's AS
// differs from ours, or is accepted from any other AS.
func isEBGP(p *v1alpha1.BGPPeer) bool {
	return p.Spec.DynamicASN == v1alpha1.DynamicASNExternal || (p.Spec.PeerASN != 0 && p.Spec.PeerASN != p.Spec.MyASN)
}

// sessionASes says which ASes a session joins, for a message.
func sessionASes(p *v1alpha1.BGPPeer) string {
	if p.Spec.DynamicASN == v1alpha1.DynamicASNExternal {
		return fmt.Sprintf("AS %d to any other AS, dynamicASN external", p.Spec.MyASN)
	}
	return fmt.Sprintf("AS %d to AS %d", p.Spec.MyASN, p.Spec.PeerASN)
}
