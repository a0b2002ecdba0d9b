package model

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/heraldlb/herald/api/v1alpha1"
)

// Handles reports whether Herald, configured for loadBalancerClass class,
// handles svc: a Service of type LoadBalancer whose spec.loadBalancerClass
// is class, or unset when class is empty. Kubernetes leaves Services without
// a class to the cluster's default implementation and those with a class to
// the implementation of that class:
// https://kubernetes.io/docs/concepts/services-networking/service/#load-balancer-class
//
// The controller and the speaker both ask this one function, so they never
// disagree about which Services are Herald's.
func Handles(svc *corev1.Service, class string) bool {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false
	}
	if class == "" {
		return svc.Spec.LoadBalancerClass == nil
	}
	return svc.Spec.LoadBalancerClass != nil && *svc.Spec.LoadBalancerClass == class
}

// heraldAnnotationPrefix marks Herald's own annotations.
const heraldAnnotationPrefix = "herald.dev/"

// ServiceAnnotations are the settings a Service carries in annotations, read
// under Herald's keys or, for a Service moved from MetalLB, under MetalLB's
// (metallb.io/ and metallb.universe.tf/). Precedence, per setting:
// herald.dev/, then metallb.io/, then metallb.universe.tf/; a key that is
// present wins even with an empty value.
type ServiceAnnotations struct {
	// LoadBalancerIPs are the addresses asked for; nil when none is.
	LoadBalancerIPs []netip.Addr
	// LoadBalancerIPsKey is the annotation LoadBalancerIPs came from; empty
	// when none is set.
	LoadBalancerIPsKey string
	// AddressPool is the pool asked for; empty means any.
	AddressPool string
	// AllowSharedIP is the sharing key; empty shares with nobody.
	AllowSharedIP string
	// MetalLBPool is the pool MetalLB recorded having taken the Service's
	// address from (ip-allocated-from-pool); only ever reported.
	MetalLBPool string
	// Conflicts lists, in a fixed order, the keys ignored because a key of
	// higher precedence holds another value for the same setting.
	Conflicts []AnnotationConflict
}

// AnnotationConflict is one setting given two different values, under Key
// (used) and Ignored.
type AnnotationConflict struct {
	Key, Value            string
	Ignored, IgnoredValue string
}

func (c AnnotationConflict) String() string {
	return fmt.Sprintf("annotation %s=%q ignored: %s=%q wins", c.Ignored, c.IgnoredValue, c.Key, c.Value)
}

// ReadServiceAnnotations reads a Service's annotations. The error names the
// annotation at fault (an address that does not parse); LoadBalancerIPs is
// nil then, and the other settings are read all the same.
func ReadServiceAnnotations(ann map[string]string) (ServiceAnnotations, error) {
	var out ServiceAnnotations
	var ipsValue string
	out.LoadBalancerIPsKey, ipsValue, out.Conflicts = aliased(ann, v1alpha1.AnnotationLoadBalancerIPs, out.Conflicts)
	_, out.AddressPool, out.Conflicts = aliased(ann, v1alpha1.AnnotationAddressPool, out.Conflicts)
	_, out.AllowSharedIP, out.Conflicts = aliased(ann, v1alpha1.AnnotationAllowSharedIP, out.Conflicts)
	if v, ok := ann[v1alpha1.MetalLBAnnotationPrefix+v1alpha1.MetalLBAnnotationIPAllocatedFromPool]; ok {
		out.MetalLBPool = v
	} else {
		out.MetalLBPool = ann[v1alpha1.MetalLBLegacyAnnotationPrefix+v1alpha1.MetalLBAnnotationIPAllocatedFromPool]
	}
	if out.LoadBalancerIPsKey == "" {
		return out, nil
	}
	var ips []netip.Addr
	for _, f := range strings.Split(ipsValue, ",") {
		ip, err := netip.ParseAddr(strings.TrimSpace(f))
		if err != nil {
			return out, fmt.Errorf("annotation %s: %q is not an IP address", out.LoadBalancerIPsKey, strings.TrimSpace(f))
		}
		if ip.Zone() != "" {
			// A zone names a link of one node; a Service's address is the LAN's.
			return out, fmt.Errorf("annotation %s: %q has a zone; a Service's address cannot", out.LoadBalancerIPsKey, strings.TrimSpace(f))
		}
		ips = append(ips, ip)
	}
	out.LoadBalancerIPs = ips
	return out, nil
}

// aliased reads the setting of Herald's annotation heraldKey under its keys
// in order of precedence, and appends to conflicts the keys whose value
// differs from the winner's. key is "" when none is present.
func aliased(ann map[string]string, heraldKey string, conflicts []AnnotationConflict) (key, value string, _ []AnnotationConflict) {
	name := strings.TrimPrefix(heraldKey, heraldAnnotationPrefix)
	for _, k := range [...]string{heraldKey, v1alpha1.MetalLBAnnotationPrefix + name, v1alpha1.MetalLBLegacyAnnotationPrefix + name} {
		v, ok := ann[k]
		switch {
		case !ok:
		case key == "":
			key, value = k, v
		case v != value:
			conflicts = append(conflicts, AnnotationConflict{Key: key, Value: value, Ignored: k, IgnoredValue: v})
		}
	}
	return key, value, conflicts
}

// ReadsServiceAnnotation reports whether key is an annotation Herald reads
// on a Service: its own (herald.dev/) or a MetalLB alias. Caches trimmed to
// what Herald reads keep these.
func ReadsServiceAnnotation(key string) bool {
	if strings.HasPrefix(key, heraldAnnotationPrefix) {
		return true
	}
	var name string
	switch {
	case strings.HasPrefix(key, v1alpha1.MetalLBAnnotationPrefix):
		name = key[len(v1alpha1.MetalLBAnnotationPrefix):]
	case strings.HasPrefix(key, v1alpha1.MetalLBLegacyAnnotationPrefix):
		name = key[len(v1alpha1.MetalLBLegacyAnnotationPrefix):]
	default:
		return false
	}
	switch heraldAnnotationPrefix + name {
	case v1alpha1.AnnotationLoadBalancerIPs, v1alpha1.AnnotationAddressPool, v1alpha1.AnnotationAllowSharedIP:
		return true
	}
	return name == v1alpha1.MetalLBAnnotationIPAllocatedFromPool
}
