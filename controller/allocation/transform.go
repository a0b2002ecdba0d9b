package allocation

import (
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/controller/kubeproxy"
	"github.com/heraldlb/herald/internal/model"
)

// CacheOptions makes the manager's cache keep only what the controller
// reads: at 10,000 Services the cached objects are most of its memory. Of
// ConfigMaps it keeps only kube-proxy's, which is also all that RBAC lets
// it read (a watch with a metadata.name field selector is authorized by
// resourceNames). Of Leases it keeps those of namespace, Herald's, where
// the speakers' Leases are (RBAC grants no others).
func CacheOptions(namespace string) cache.Options {
	return cache.Options{
		DefaultTransform: Transform,
		ByObject: map[client.Object]cache.ByObject{
			&corev1.ConfigMap{}: {
				Namespaces: map[string]cache.Config{kubeproxy.ConfigMapNamespace: {}},
				Field:      fields.OneTermEqualSelector("metadata.name", kubeproxy.ConfigMapName),
			},
			&coordinationv1.Lease{}: {
				Namespaces: map[string]cache.Config{namespace: {}},
			},
		},
	}
}

// Transform trims an object before the cache stores it. Every object loses
// its managedFields. A Service keeps its identity, its type and class, the
// status Herald writes, and, when it is a LoadBalancer, the labels, the
// annotations Herald reads (its own and their MetalLB aliases) and the spec
// fields allocation reads; a node keeps only its addresses; a Lease (the speakers') keeps its annotations and spec, what
// the ipMode decision reads; namespaces (cached as metadata) keep only their
// labels.
//
// Status writes of trimmed Services are merge patches of the status
// (Controller.patchStatus), so nothing trimmed is ever written back.
func Transform(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Service:
		return trimService(o), nil
	case *corev1.Node:
		return &corev1.Node{
			TypeMeta:   o.TypeMeta,
			ObjectMeta: identity(&o.ObjectMeta),
			Status:     corev1.NodeStatus{Addresses: o.Status.Addresses},
		}, nil
	case *coordinationv1.Lease:
		m := identity(&o.ObjectMeta)
		m.Annotations = o.Annotations
		return &coordinationv1.Lease{TypeMeta: o.TypeMeta, ObjectMeta: m, Spec: o.Spec}, nil
	case *metav1.PartialObjectMetadata:
		m := identity(&o.ObjectMeta)
		m.Labels = o.Labels
		return &metav1.PartialObjectMetadata{TypeMeta: o.TypeMeta, ObjectMeta: m}, nil
	}
	return cache.TransformStripManagedFields()(obj)
}

// identity is the metadata every cached object keeps.
func identity(m *metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:              m.Name,
		Namespace:         m.Namespace,
		UID:               m.UID,
		ResourceVersion:   m.ResourceVersion,
		Generation:        m.Generation,
		CreationTimestamp: m.CreationTimestamp,
		DeletionTimestamp: m.DeletionTimestamp,
	}
}

func trimService(s *corev1.Service) *corev1.Service {
	out := &corev1.Service{
		TypeMeta:   s.TypeMeta,
		ObjectMeta: identity(&s.ObjectMeta),
		Spec:       corev1.ServiceSpec{Type: s.Spec.Type, LoadBalancerClass: s.Spec.LoadBalancerClass},
		// Status stays whole: Herald rewrites its ingress entries keeping
		// what others set, and clears them on Services it no longer handles.
		Status: s.Status,
	}
	if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return out
	}
	out.Labels = s.Labels // pools' serviceSelectors
	for k, v := range s.Annotations {
		if model.ReadsServiceAnnotation(k) {
			if out.Annotations == nil {
				out.Annotations = map[string]string{}
			}
			out.Annotations[k] = v
		}
	}
	// What requestFor and sharingOf read.
	out.Spec.Selector = s.Spec.Selector
	out.Spec.ExternalTrafficPolicy = s.Spec.ExternalTrafficPolicy
	out.Spec.IPFamilies = s.Spec.IPFamilies
	out.Spec.IPFamilyPolicy = s.Spec.IPFamilyPolicy
	out.Spec.LoadBalancerIP = s.Spec.LoadBalancerIP
	if len(s.Spec.Ports) > 0 {
		out.Spec.Ports = make([]corev1.ServicePort, len(s.Spec.Ports))
		for i, p := range s.Spec.Ports {
			out.Spec.Ports[i] = corev1.ServicePort{Protocol: p.Protocol, Port: p.Port}
		}
	}
	return out
}

var _ toolscache.TransformFunc = Transform
