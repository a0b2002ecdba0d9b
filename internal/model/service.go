package model

import corev1 "k8s.io/api/core/v1"

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
