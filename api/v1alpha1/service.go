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

// ConditionIPAllocated is the Service status condition the controller keeps:
// True with the addresses and their pool, or False with why not.
const ConditionIPAllocated = "herald.dev/IPAllocated"

// Event reasons, one style for all of Herald.
const (
	ReasonIPAllocated      = "IPAllocated"
	ReasonAllocationFailed = "AllocationFailed"
	ReasonIPReleased       = "IPReleased"
)
