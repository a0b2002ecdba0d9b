package ipam

import (
	"fmt"
	"net/netip"
	"slices"
)

// Port is one of a Service's ports, as far as sharing an address cares.
type Port struct {
	Protocol string // "TCP", "UDP" or "SCTP", as in the Service
	Port     int32
}

// Sharing says with whom a Service may share an address. Two Services may hold
// the same address only if all of these hold:
//
//   - both have the same non-empty Key (the herald.dev/allow-shared-ip
//     annotation), so nobody shares by accident;
//   - no Protocol and Port pair appears in both, or traffic could not tell them
//     apart;
//   - both have externalTrafficPolicy Cluster, or both have Local and the same
//     Selector. With Local only nodes with a ready endpoint announce the
//     address, and one address is announced from one set of nodes; the same pod
//     selector is how the controller can know the sets agree (MetalLB's rule).
type Sharing struct {
	Key   string
	Ports []Port
	// LocalTrafficPolicy is externalTrafficPolicy: Local.
	LocalTrafficPolicy bool
	// Selector is the Service's pod selector in a canonical form (for example
	// labels.Set.String, which sorts keys); compared only under Local.
	Selector string
}

// mayShare reports whether key may hold ip next to its other holders.
func (a *Allocator) mayShare(key Key, sh Sharing, ip netip.Addr) bool {
	st := a.ips[ip]
	if st == nil {
		return true
	}
	for _, other := range st.holders {
		if other != key {
			if kind, _ := clash(sh, a.keys[other].sharing); kind != clashNone {
				return false
			}
		}
	}
	return true
}

// shareProblem is mayShare with an explanation naming the first holder (in
// key order) that key may not share ip with; reason is empty if there is none.
func (a *Allocator) shareProblem(key Key, sh Sharing, ip netip.Addr) (Reason, string) {
	st := a.ips[ip]
	if st == nil {
		return "", ""
	}
	for _, other := range st.holders {
		if other == key {
			continue
		}
		theirs := a.keys[other].sharing
		kind, port := clash(sh, theirs)
		switch kind {
		case clashKey:
			if sh.Key == "" || theirs.Key == "" {
				return ReasonOwnedByOther, fmt.Sprintf("address %s is owned by %s; services share an address only when both set the same sharing key", ip, other)
			}
			return ReasonOwnedByOther, fmt.Sprintf("address %s is owned by %s, whose sharing key is %q, not %q", ip, other, theirs.Key, sh.Key)
		case clashPolicy:
			return ReasonSharingConflict, fmt.Sprintf("address %s is shared with %s, whose externalTrafficPolicy is %s, not %s; services sharing an address need the same policy", ip, other, policyName(theirs), policyName(sh))
		case clashSelector:
			return ReasonSharingConflict, fmt.Sprintf("address %s is shared with %s, which selects other pods; services sharing an address with externalTrafficPolicy Local must select the same pods", ip, other)
		case clashPort:
			return ReasonSharingConflict, fmt.Sprintf("address %s is shared with %s, which also uses %s port %d", ip, other, port.Protocol, port.Port)
		}
	}
	return "", ""
}

type clashKind int

const (
	clashNone clashKind = iota
	clashKey
	clashPolicy
	clashSelector
	clashPort
)

// clash applies the rule documented on Sharing.
func clash(a, b Sharing) (clashKind, Port) {
	switch {
	case a.Key == "" || a.Key != b.Key:
		return clashKey, Port{}
	case a.LocalTrafficPolicy != b.LocalTrafficPolicy:
		return clashPolicy, Port{}
	case a.LocalTrafficPolicy && a.Selector != b.Selector:
		return clashSelector, Port{}
	}
	for _, p := range a.Ports {
		if slices.Contains(b.Ports, p) {
			return clashPort, p
		}
	}
	return clashNone, Port{}
}

func policyName(s Sharing) string {
	if s.LocalTrafficPolicy {
		return "Local"
	}
	return "Cluster"
}
