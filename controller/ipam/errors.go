package ipam

import "net/netip"

// Reason says why an address could not be assigned or kept. The values are
// CamelCase so the controller can use them as condition and event reasons.
type Reason string

const (
	// ReasonNoMatchingPool: no pool may serve the Service (none eligible, none
	// with autoAssign, the named pool is missing or not eligible, or requested
	// addresses lie in a pool the Service may not use).
	ReasonNoMatchingPool Reason = "NoMatchingPool"
	// ReasonPoolExhausted: the pools that may serve the Service are full.
	ReasonPoolExhausted Reason = "PoolExhausted"
	// ReasonOutsidePools: a requested or restored address is in no pool.
	ReasonOutsidePools Reason = "OutsidePools"
	// ReasonOwnedByOther: the address belongs to a Service it is not shared
	// with.
	ReasonOwnedByOther Reason = "OwnedByOther"
	// ReasonFamilyUnavailable: no pool that may serve the Service has
	// addresses of the family it needs.
	ReasonFamilyUnavailable Reason = "FamilyUnavailable"
	// ReasonSharingConflict: the Services use the same sharing key but clash
	// on a port or on externalTrafficPolicy.
	ReasonSharingConflict Reason = "SharingConflict"
	// ReasonInvalidRequest: the request contradicts itself, for example an
	// IPv6 address asked for by an IPv4 single-stack Service.
	ReasonInvalidRequest Reason = "InvalidRequest"
)

// AllocationError is the error of Assign and Restore.
type AllocationError struct {
	Key     Key // the Service
	Reason  Reason
	Message string // what failed and what to change, without the key
	// Released lists, sorted, the addresses the Service held and lost with
	// this failed Assign, because its request no longer lets it hold them;
	// ReleaseReason says why. They are not part of Message, which stays the
	// same while the failure lasts.
	Released      []netip.Addr
	ReleaseReason string
}

func (e *AllocationError) Error() string {
	if e.Key.Name == "" {
		return e.Message
	}
	return "service " + e.Key.String() + ": " + e.Message
}
