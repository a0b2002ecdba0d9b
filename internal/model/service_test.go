package model

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestHandlesOnlyLoadBalancersOfTheConfiguredClass(t *testing.T) {
	other, mine := "other.example/lb", "herald.dev/lb"
	for _, tc := range []struct {
		name  string
		typ   corev1.ServiceType
		class *string
		want  map[string]bool // configured class -> handled
	}{
		{"no class", corev1.ServiceTypeLoadBalancer, nil, map[string]bool{"": true, mine: false}},
		{"another implementation's class", corev1.ServiceTypeLoadBalancer, &other, map[string]bool{"": false, mine: false}},
		{"Herald's class", corev1.ServiceTypeLoadBalancer, &mine, map[string]bool{"": false, mine: true}},
		{"not a LoadBalancer", corev1.ServiceTypeNodePort, nil, map[string]bool{"": false, mine: false}},
	} {
		svc := &corev1.Service{Spec: corev1.ServiceSpec{Type: tc.typ, LoadBalancerClass: tc.class}}
		for class, want := range tc.want {
			if got := Handles(svc, class); got != want {
				t.Errorf("%s, configured class %q: Handles = %v, want %v", tc.name, class, got, want)
			}
		}
	}
}
