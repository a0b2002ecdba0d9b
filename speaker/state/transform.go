package state

import (
	"strings"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The transforms below run before an object enters the speaker's cache and
// keep only what the speaker reads, so a cluster of 10,000 Services costs
// little memory on every node. Each returns a new object; the informer's own
// copy is dropped.

// heraldAnnotations keeps the herald.dev/ annotations only.
func heraldAnnotations(in map[string]string) map[string]string {
	var out map[string]string
	for k, v := range in {
		if strings.HasPrefix(k, "herald.dev/") {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

func slimMeta(m *metav1.ObjectMeta, withLabels bool) metav1.ObjectMeta {
	out := metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion}
	if withLabels {
		out.Labels = m.Labels
	}
	return out
}

// TransformService keeps a LoadBalancer Service's name, labels, Herald's
// annotations, type, class, traffic policy and ingress addresses with their
// ipMode, and what
// the dataplane forwards: ports (name, protocol, port, NodePort), session
// affinity and allocateLoadBalancerNodePorts. Other Services become stubs:
// the speaker needs to see a type change, nothing else.
func TransformService(obj any) (any, error) {
	s, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil
	}
	out := &corev1.Service{ObjectMeta: slimMeta(&s.ObjectMeta, false)}
	out.Spec.Type = s.Spec.Type
	if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return out, nil
	}
	out.Labels = s.Labels
	out.Annotations = heraldAnnotations(s.Annotations)
	out.Spec.LoadBalancerClass = s.Spec.LoadBalancerClass
	out.Spec.ExternalTrafficPolicy = s.Spec.ExternalTrafficPolicy
	out.Spec.SessionAffinity = s.Spec.SessionAffinity
	out.Spec.SessionAffinityConfig = s.Spec.SessionAffinityConfig
	out.Spec.AllocateLoadBalancerNodePorts = s.Spec.AllocateLoadBalancerNodePorts
	out.Spec.Ports = make([]corev1.ServicePort, len(s.Spec.Ports))
	for i, p := range s.Spec.Ports {
		out.Spec.Ports[i] = corev1.ServicePort{Name: p.Name, Protocol: p.Protocol, Port: p.Port, NodePort: p.NodePort}
	}
	for _, ing := range s.Status.LoadBalancer.Ingress {
		out.Status.LoadBalancer.Ingress = append(out.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ing.IP, IPMode: ing.IPMode})
	}
	return out, nil
}

// TransformEndpointSlice keeps the Service an EndpointSlice belongs to, its
// ports and, per endpoint, its addresses, node and readiness.
func TransformEndpointSlice(obj any) (any, error) {
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return obj, nil
	}
	out := &discoveryv1.EndpointSlice{ObjectMeta: slimMeta(&es.ObjectMeta, false), AddressType: es.AddressType, Ports: es.Ports}
	if svc := es.Labels[discoveryv1.LabelServiceName]; svc != "" {
		out.Labels = map[string]string{discoveryv1.LabelServiceName: svc}
	}
	out.Endpoints = make([]discoveryv1.Endpoint, 0, len(es.Endpoints))
	for _, e := range es.Endpoints {
		out.Endpoints = append(out.Endpoints, discoveryv1.Endpoint{Addresses: e.Addresses, NodeName: e.NodeName, Conditions: discoveryv1.EndpointConditions{Ready: e.Conditions.Ready}})
	}
	return out, nil
}

// TransformNode keeps a Node's labels, its Ready and NetworkUnavailable
// conditions (type and status only: their heartbeat times would wake the
// speaker for nothing), whether it is being deleted, and its internal and
// external addresses (BGP's next hops and router ID, the dataplane's
// NodePort destinations).
func TransformNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	out := &corev1.Node{ObjectMeta: slimMeta(&n.ObjectMeta, true)}
	out.DeletionTimestamp = n.DeletionTimestamp
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP {
			out.Status.Addresses = append(out.Status.Addresses, a)
		}
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeNetworkUnavailable || c.Type == corev1.NodeReady {
			out.Status.Conditions = append(out.Status.Conditions, corev1.NodeCondition{Type: c.Type, Status: c.Status})
		}
	}
	return out, nil
}

// TransformLease keeps a Lease's annotations and spec.
func TransformLease(obj any) (any, error) {
	l, ok := obj.(*coordinationv1.Lease)
	if !ok {
		return obj, nil
	}
	out := &coordinationv1.Lease{ObjectMeta: slimMeta(&l.ObjectMeta, false), Spec: l.Spec}
	out.Annotations = heraldAnnotations(l.Annotations)
	return out, nil
}
