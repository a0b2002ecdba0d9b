package main

import (
	"context"
	"fmt"
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/api/v1alpha1"
)

// pool makes an IPAddressPool with its L2Advertisement.
func pool(ctx context.Context, c client.Client, name string, addrs ...string) error {
	if err := c.Create(ctx, &v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.IPAddressPoolSpec{Addresses: addrs}}); err != nil {
		return fmt.Errorf("pool %s: %w", name, err)
	}
	return c.Create(ctx, &v1alpha1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{name}}})
}

// lbService is a LoadBalancer Service without a selector (its EndpointSlice
// is the bench's) and without NodePorts, from pool, in family.
func lbService(ns, name, poolName string, family corev1.IPFamily) *corev1.Service {
	single := corev1.IPFamilyPolicySingleStack
	no := false
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: map[string]string{v1alpha1.AnnotationAddressPool: poolName}},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeLoadBalancer, IPFamilies: []corev1.IPFamily{family}, IPFamilyPolicy: &single,
			AllocateLoadBalancerNodePorts: &no,
			Ports:                         []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
		},
	}
}

// endpointSlice is one ready endpoint of Service svc on node.
func endpointSlice(ns, svc, node string, i int) *discoveryv1.EndpointSlice {
	ready := true
	port, proto, name := int32(8080), corev1.ProtocolTCP, "http"
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: svc + "-1", Namespace: ns, Labels: map[string]string{
			discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: "scalebench"}},
		AddressType: discoveryv1.AddressTypeIPv6,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{fmt.Sprintf("2001:db8:2:ff::%x", i+1)},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			NodeName:   &node,
		}},
		Ports: []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
	}
}

// assigned counts the Services in ns that have an address, and returns the
// address of each.
func assigned(ctx context.Context, c client.Client, ns string) (map[string]netip.Addr, error) {
	var list corev1.ServiceList
	if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	out := map[string]netip.Addr{}
	for _, s := range list.Items {
		if len(s.Status.LoadBalancer.Ingress) > 0 {
			if a, err := netip.ParseAddr(s.Status.LoadBalancer.Ingress[0].IP); err == nil {
				out[s.Name] = a
			}
		}
	}
	return out, nil
}

// announced reads the Announcements: which node announces each address.
// An address with two Announcements naming different nodes is listed in
// doubles.
func announced(ctx context.Context, c client.Client) (owner map[netip.Addr]string, doubles []netip.Addr, err error) {
	var list v1alpha1.AnnouncementList
	if err := c.List(ctx, &list); err != nil {
		return nil, nil, err
	}
	owner = map[netip.Addr]string{}
	for _, a := range list.Items {
		if a.Spec.Mode != "layer2" {
			continue
		}
		for _, s := range a.Spec.IPs {
			ip, err := netip.ParseAddr(s)
			if err != nil {
				continue
			}
			if prev, ok := owner[ip]; ok && prev != a.Spec.Node {
				doubles = append(doubles, ip)
			}
			owner[ip] = a.Spec.Node
		}
	}
	return owner, doubles, nil
}

func sorted(s []string) []string { sort.Strings(s); return s }

// perNode counts addresses per node.
func perNode(owner map[netip.Addr]string, keep func(netip.Addr) bool) map[string]int {
	out := map[string]int{}
	for ip, n := range owner {
		if keep == nil || keep(ip) {
			out[n]++
		}
	}
	return out
}
