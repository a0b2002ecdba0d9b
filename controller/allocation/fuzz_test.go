package allocation

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/controller/ipam"
	"github.com/heraldlb/herald/internal/iprange"
	"github.com/heraldlb/herald/internal/model"
)

// Pools built from fuzzed addresses and Services with fuzzed annotations,
// namespaces and families go through the model and the allocator as the
// controller puts them together. Every address a Service gets lies in a
// pool in force that its namespace and labels may use, outside what the
// cluster uses, in the pool it asked for and at the addresses it asked for;
// no address goes to two Services that do not share; an annotation the
// controller refuses is named in the error.
func FuzzServiceAssignment(f *testing.F) {
	f.Add("198.51.100.0/29", "198.51.100.8/29", "2001:db8::/125", "198.51.100.3", []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add("198.51.100.0/30", "198.51.100.4-198.51.100.5", "fe80::/125", "fe80::1%eth0", []byte("services ask for pools and addresses"))
	f.Add("banana", "198.51.100.0/24", "2001:db8::1-2001:db8::3", "198.51.100.1", []byte{255, 254, 3, 2, 1, 0, 17, 34, 51})
	f.Fuzz(func(t *testing.T, a1, a2, a3, node string, b []byte) {
		in := model.Input{Pools: []v1alpha1.IPAddressPool{
			{ObjectMeta: metav1.ObjectMeta{Name: "web-only"}, Spec: v1alpha1.IPAddressPoolSpec{Addresses: []string{a1},
				ServiceAllocation: &v1alpha1.ServiceAllocation{Priority: 1, Namespaces: []string{"web"}}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "zone-a"}, Spec: v1alpha1.IPAddressPoolSpec{Addresses: []string{a2},
				ServiceAllocation: &v1alpha1.ServiceAllocation{NamespaceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"zone": "a"}}},
					ServiceSelectors: []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"db"}}}}}}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "manual"}, Spec: v1alpha1.IPAddressPoolSpec{Addresses: []string{a3}, AutoAssign: new(false)}},
		}}
		if ip, err := netip.ParseAddr(node); err == nil {
			in.Reserved = []model.Reserved{{Range: iprange.Range{First: ip, Last: ip}, What: "node n's InternalIP"}}
		}
		cfg := model.Build(in)
		var pools []ipam.Pool
		for _, name := range slices.Sorted(maps.Keys(cfg.Pools)) {
			pools = append(pools, ipamPool(cfg.Pools[name]))
		}
		var alloc ipam.Allocator
		if _, err := alloc.SetPools(pools); err != nil {
			t.Fatalf("the allocator refuses the pools the model put in force: %v", err)
		}
		nsLabels := map[string]map[string]string{"web": {"zone": "a"}, "db": {"zone": "b"}, "default": nil}
		byte := func() byte {
			if len(b) == 0 {
				return 0
			}
			c := b[0]
			b = b[1:]
			return c
		}
		held := map[netip.Addr][]*corev1.Service{}
		for i := 0; len(b) > 0 && i < 16; i++ {
			c := byte()
			svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: string(rune('a' + i)), Namespace: []string{"web", "db", "default"}[c%3],
				Labels: map[string]string{"tier": []string{"web", "db"}[c>>2&1]}, Annotations: map[string]string{}},
				Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: int32(80 + c>>3&1)}}}}
			if c&0x10 != 0 {
				svc.Annotations[[]string{v1alpha1.AnnotationAddressPool, "metallb.universe.tf/address-pool"}[c>>5&1]] = []string{"web-only", "zone-a", "manual", "nope"}[byte()%4]
			}
			if c&0x40 != 0 {
				svc.Annotations[[]string{v1alpha1.AnnotationLoadBalancerIPs, "metallb.io/loadBalancerIPs"}[c>>5&1]] = []string{a1, a2, a3, node, "198.51.100.1", "2001:db8::2"}[byte()%6]
			}
			if c&0x80 != 0 {
				svc.Annotations[v1alpha1.AnnotationAllowSharedIP] = "k"
			}
			if f := byte(); f&1 != 0 {
				svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
			}
			req, err := requestFor(svc, nsLabels[svc.Namespace], cfg)
			if err != nil {
				if !strings.HasPrefix(err.Error(), "annotation ") && !strings.HasPrefix(err.Error(), "spec.") {
					t.Fatalf("Service %s: error %q names no annotation or field", svc.Name, err)
				}
				continue
			}
			got, err := alloc.Assign(req)
			if err != nil {
				continue
			}
			p := cfg.Pools[got.Pool]
			switch {
			case p == nil:
				t.Fatalf("Service %s got %v from pool %q, which is not in force", svc.Name, got.IPs, got.Pool)
			case !p.Allows(svc.Namespace, nsLabels[svc.Namespace], svc.Labels):
				t.Fatalf("Service %s/%s got %v from pool %s, which it may not use", svc.Namespace, svc.Name, got.IPs, got.Pool)
			case req.Pool != "" && got.Pool != req.Pool:
				t.Fatalf("Service %s asked for pool %s and got %s", svc.Name, req.Pool, got.Pool)
			case len(req.IPs) > 0 && !slices.Equal(got.IPs, req.IPs):
				t.Fatalf("Service %s asked for %v and got %v", svc.Name, req.IPs, got.IPs)
			case req.Pool == "" && len(req.IPs) == 0 && !p.AutoAssign:
				t.Fatalf("Service %s got %v from %s, which assigns only on request", svc.Name, got.IPs, got.Pool)
			}
			for _, ip := range got.IPs {
				if !slices.ContainsFunc(p.Assignable(), func(r iprange.Range) bool { return r.Contains(ip) }) {
					t.Fatalf("Service %s got %s, not an assignable address of pool %s (%v)", svc.Name, ip, p.Name, p.Assignable())
				}
				if q, ok := cfg.PoolOf(ip); !ok || q != p {
					t.Fatalf("Service %s got %s from %s, but PoolOf says %v", svc.Name, ip, p.Name, q)
				}
				for _, other := range held[ip] {
					if svc.Annotations[v1alpha1.AnnotationAllowSharedIP] == "" || other.Annotations[v1alpha1.AnnotationAllowSharedIP] == "" {
						t.Fatalf("%s goes to %s and %s, which do not share", ip, other.Name, svc.Name)
					}
				}
				held[ip] = append(held[ip], svc)
			}
		}
	})
}
