package allocation

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/controller/ipam"
	"github.com/heraldlb/herald/internal/model"
)

// requestFor turns a Service into what the allocator needs. Errors name the
// field or annotation at fault.
func requestFor(svc *corev1.Service, nsLabels map[string]string, cfg *model.Config) (ipam.Request, error) {
	req := ipam.Request{
		Key:     keyOf(svc),
		Pool:    svc.Annotations[v1alpha1.AnnotationAddressPool],
		Sharing: sharingOf(svc),
	}
	for _, f := range svc.Spec.IPFamilies {
		if f == corev1.IPv6Protocol {
			req.Families = append(req.Families, ipam.IPv6)
		} else {
			req.Families = append(req.Families, ipam.IPv4)
		}
	}
	if p := svc.Spec.IPFamilyPolicy; p != nil {
		switch *p {
		case corev1.IPFamilyPolicyPreferDualStack:
			req.FamilyPolicy = ipam.PreferDualStack
		case corev1.IPFamilyPolicyRequireDualStack:
			req.FamilyPolicy = ipam.RequireDualStack
		}
	}
	if s, ok := svc.Annotations[v1alpha1.AnnotationLoadBalancerIPs]; ok {
		for _, f := range strings.Split(s, ",") {
			ip, err := netip.ParseAddr(strings.TrimSpace(f))
			if err != nil {
				return req, fmt.Errorf("annotation %s: %q is not an IP address", v1alpha1.AnnotationLoadBalancerIPs, strings.TrimSpace(f))
			}
			req.IPs = append(req.IPs, ip)
		}
	} else if s := svc.Spec.LoadBalancerIP; s != "" {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return req, fmt.Errorf("spec.loadBalancerIP: %q is not an IP address", s)
		}
		req.IPs = []netip.Addr{ip}
	}
	req.Eligible = func(pool string) bool {
		p := cfg.Pools[pool]
		return p != nil && p.Allows(svc.Namespace, nsLabels, svc.Labels)
	}
	return req, nil
}

// sharingOf says with whom the Service may share an address.
func sharingOf(svc *corev1.Service) ipam.Sharing {
	sh := ipam.Sharing{
		Key:                svc.Annotations[v1alpha1.AnnotationAllowSharedIP],
		LocalTrafficPolicy: svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal,
		Selector:           labels.Set(svc.Spec.Selector).String(),
	}
	for _, p := range svc.Spec.Ports {
		proto := string(p.Protocol)
		if proto == "" {
			proto = string(corev1.ProtocolTCP)
		}
		sh.Ports = append(sh.Ports, ipam.Port{Protocol: proto, Port: p.Port})
	}
	return sh
}

// statusIPs reads the addresses in the Service's status.
func statusIPs(svc *corev1.Service) []netip.Addr {
	var ips []netip.Addr
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if ip, err := netip.ParseAddr(in.IP); err == nil {
			ips = append(ips, ip)
		}
	}
	return ips
}
