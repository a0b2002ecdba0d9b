package ipam

import (
	"fmt"
	"net/netip"
	"slices"
)

// Family is an IP address family.
type Family uint8

const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	switch f {
	case IPv4:
		return "IPv4"
	case IPv6:
		return "IPv6"
	}
	return fmt.Sprintf("Family(%d)", uint8(f))
}

func (f Family) index() int {
	if f == IPv6 {
		return 1
	}
	return 0
}

// FamilyPolicy is a Service's spec.ipFamilyPolicy.
type FamilyPolicy uint8

const (
	// SingleStack: one address, of the first of Request.Families.
	SingleStack FamilyPolicy = iota
	// PreferDualStack: one address per family of Request.Families from one
	// pool if some pool can, else one address of the first family that some
	// pool can give, trying Families in order.
	PreferDualStack
	// RequireDualStack: one IPv4 and one IPv6 address from one pool, or none.
	RequireDualStack
)

// Request describes what one Service needs. The caller has done everything
// that needs Kubernetes types: reading annotations and deciding eligibility.
type Request struct {
	Key Key
	// Families is the Service's spec.ipFamilies, primary first. Empty means
	// IPv4, Kubernetes' default.
	Families     []Family
	FamilyPolicy FamilyPolicy
	// IPs are specific addresses asked for (spec.loadBalancerIP or the
	// herald.dev/loadBalancerIPs annotation): at most one per family, all in
	// one pool. Pools without autoAssign may serve them.
	IPs []netip.Addr
	// Pool is a pool asked for by name (herald.dev/address-pool); empty means
	// any. A named pool serves the Service even without autoAssign.
	Pool string
	// Eligible reports whether the Service may use the named pool (the pool's
	// serviceAllocation namespaces and selectors). Nil means every pool. It is
	// called with the Allocator locked, so it must not call the Allocator.
	Eligible func(pool string) bool
	Sharing  Sharing
}

// request is a Request that normalize has checked.
type request struct {
	Request
	wanted []Family // families to assign, primary first
}

func (r *request) fail(reason Reason, format string, args ...any) error {
	return &AllocationError{Key: r.Key, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

func (r *request) eligible(p *pool) bool { return r.Eligible == nil || r.Eligible(p.name) }

// position orders addresses by the request's families.
func (r *request) position(ip netip.Addr) int { return slices.Index(r.wanted, familyOf(ip)) }

func normalize(in Request) (*request, error) {
	r := &request{Request: in}
	if len(r.Families) == 0 {
		r.Families = []Family{IPv4}
	}
	r.Families = slices.Clone(r.Families)
	r.IPs = slices.Clone(r.IPs)
	r.Sharing.Ports = slices.Clone(r.Sharing.Ports)
	switch {
	case r.Key.Name == "":
		return nil, r.fail(ReasonInvalidRequest, "request without a service key")
	case len(r.Families) > 2:
		return nil, r.fail(ReasonInvalidRequest, "%d IP families %v; a service has at most IPv4 and IPv6", len(r.Families), r.Families)
	}
	for i, f := range r.Families {
		if f != IPv4 && f != IPv6 {
			return nil, r.fail(ReasonInvalidRequest, "unknown IP family %v", f)
		}
		if slices.Contains(r.Families[:i], f) {
			return nil, r.fail(ReasonInvalidRequest, "IP family %v listed twice", f)
		}
	}
	switch r.FamilyPolicy {
	case SingleStack:
		r.wanted = r.Families[:1]
	case PreferDualStack:
		r.wanted = r.Families
	case RequireDualStack:
		if len(r.Families) != 2 {
			return nil, r.fail(ReasonInvalidRequest, "RequireDualStack needs IP families IPv4 and IPv6, not %v", r.Families)
		}
		r.wanted = r.Families
	default:
		return nil, r.fail(ReasonInvalidRequest, "unknown IP family policy %d", r.FamilyPolicy)
	}
	var seen [2]netip.Addr
	for _, ip := range r.IPs {
		if !ip.IsValid() || ip.Zone() != "" {
			return nil, r.fail(ReasonInvalidRequest, "requested address %q is not a plain IP address", ip)
		}
		f := familyOf(ip)
		if !slices.Contains(r.wanted, f) {
			return nil, r.fail(ReasonInvalidRequest, "requested address %s is %v, but the service has %v only", ip, f, r.wanted[0])
		}
		if prev := seen[f.index()]; prev.IsValid() {
			return nil, r.fail(ReasonInvalidRequest, "requested addresses %s and %s are both %v; ask for at most one per family", prev, ip, f)
		}
		seen[f.index()] = ip
	}
	if r.FamilyPolicy == RequireDualStack && len(r.IPs) == 1 {
		return nil, r.fail(ReasonInvalidRequest, "RequireDualStack needs an IPv4 and an IPv6 address, but only %s is requested", r.IPs[0])
	}
	slices.SortStableFunc(r.IPs, func(x, y netip.Addr) int { return r.position(x) - r.position(y) })
	return r, nil
}
