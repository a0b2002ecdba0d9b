package allocation

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/heraldlb/herald/controller/ipam"
	"github.com/heraldlb/herald/internal/model"
)

// requestFor turns a Service into what the allocator needs. Errors name the
// field or annotation at fault; the request returned with one still carries
// the Service's key, eligibility and sharing.
func requestFor(svc *corev1.Service, nsLabels map[string]string, cfg *model.Config) (ipam.Request, error) {
	ann, annErr := model.ReadServiceAnnotations(svc.Annotations)
	req := ipam.Request{
		Key:     keyOf(svc),
		Pool:    ann.AddressPool,
		Sharing: sharingOf(svc, ann.AllowSharedIP),
		// Set even when the request is refused below: the Service keeps
		// only what its eligibility and sharing still allow (Retain).
		Eligible: func(pool string) bool {
			p := cfg.Pools[pool]
			return p != nil && p.Allows(svc.Namespace, nsLabels, svc.Labels)
		},
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
	switch {
	case annErr != nil:
		return req, annErr
	case ann.LoadBalancerIPsKey != "":
		req.IPs = ann.LoadBalancerIPs
	case svc.Spec.LoadBalancerIP != "":
		ip, err := netip.ParseAddr(svc.Spec.LoadBalancerIP)
		if err != nil {
			return req, fmt.Errorf("spec.loadBalancerIP: %q is not an IP address", svc.Spec.LoadBalancerIP)
		}
		req.IPs = []netip.Addr{ip}
	}
	return req, nil
}

// sharingOf says with whom the Service may share an address; key is its
// sharing key (model.ServiceAnnotations.AllowSharedIP).
func sharingOf(svc *corev1.Service, key string) ipam.Sharing {
	sh := ipam.Sharing{
		Key:                key,
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
