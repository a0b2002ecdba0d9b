package v1alpha1

// Annotations a Service can carry to steer its allocation.
const (
	// AnnotationLoadBalancerIPs asks for specific addresses, comma-separated,
	// at most one per family: the way to ask for a dual-stack pair.
	AnnotationLoadBalancerIPs = "herald.dev/loadBalancerIPs"
	// AnnotationAddressPool asks for an address from the named pool.
	AnnotationAddressPool = "herald.dev/address-pool"
	// AnnotationAllowSharedIP lets Services with the same value share an
	// address, when their ports do not clash and their traffic policies agree.
	AnnotationAllowSharedIP = "herald.dev/allow-shared-ip"
)

// MetalLB's annotation prefixes. A Service's loadBalancerIPs, address-pool
// and allow-shared-ip annotations under either prefix are read as Herald's
// own (herald.dev/ wins, then metallb.io/), so Services moved from MetalLB
// need no edits; internal/model reads them, in one place.
const (
	// MetalLBAnnotationPrefix is MetalLB's prefix since v0.14.
	MetalLBAnnotationPrefix = "metallb.io/"
	// MetalLBLegacyAnnotationPrefix is MetalLB's older prefix, still the
	// one most Services and tutorials carry.
	MetalLBLegacyAnnotationPrefix = "metallb.universe.tf/"
	// MetalLBAnnotationIPAllocatedFromPool (under either prefix) is where
	// MetalLB's controller records the pool it took a Service's address
	// from. Herald writes no such annotation (its condition names the pool);
	// it reads MetalLB's to say, when it cannot adopt an address, which
	// MetalLB pool it came from.
	MetalLBAnnotationIPAllocatedFromPool = "ip-allocated-from-pool"
)

// ConditionIPAllocated is the Service status condition the controller keeps:
// True with the addresses and their pool, or False with why not.
const ConditionIPAllocated = "herald.dev/IPAllocated"

// Event reasons, one style for all of Herald.
const (
	ReasonIPAllocated      = "IPAllocated"
	ReasonAllocationFailed = "AllocationFailed"
	ReasonIPReleased       = "IPReleased"
	// ReasonIPNotAdopted: the Service's status held an address, set before
	// Herald handled it (by MetalLB, say), that Herald cannot take over (it
	// is in no pool, or another Service holds it); the address is left in
	// place. Also the reason of the False IPAllocated condition.
	ReasonIPNotAdopted = "IPNotAdopted"
	// ReasonAnnotationConflict: a Service carries one setting under two
	// keys (Herald's and MetalLB's) with different values; the winner is
	// used.
	ReasonAnnotationConflict = "AnnotationConflict"
)
