package allocation

import (
	"reflect"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/internal/model"
)

// fullService is a LoadBalancer Service as the API server returns it, with
// everything Herald reads and much it does not.
func fullService() *corev1.Service {
	pol := corev1.IPFamilyPolicyPreferDualStack
	mode := corev1.LoadBalancerIPModeProxy
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "shop", Name: "web", UID: "u-1", ResourceVersion: "42", Generation: 3,
			Labels: map[string]string{"tier": "front"},
			Annotations: map[string]string{
				v1alpha1.AnnotationAllowSharedIP:                   "dns",
				v1alpha1.AnnotationAddressPool:                     "lan",
				v1alpha1.AnnotationLoadBalancerIPs:                 "198.51.100.7, 2001:db8::7",
				"kubectl.kubernetes.io/last-applied-configuration": `{"a very":"long document"}`,
			},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
		},
		Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeLoadBalancer,
			Selector:              map[string]string{"app": "web"},
			Ports:                 []corev1.ServicePort{{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(5353), NodePort: 31000}},
			ClusterIP:             "10.96.0.10",
			ClusterIPs:            []string{"10.96.0.10", "fd00::10"},
			IPFamilies:            []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol},
			IPFamilyPolicy:        &pol,
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			HealthCheckNodePort:   32000,
			LoadBalancerIP:        "198.51.100.7",
		},
		Status: corev1.ServiceStatus{
			LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "198.51.100.7", IPMode: &mode}}},
			Conditions:   []metav1.Condition{{Type: v1alpha1.ConditionIPAllocated, Status: metav1.ConditionTrue}},
		},
	}
}

// TestTrimmedServiceAllocatesExactlyLikeTheFullOne guards the cache
// transform: whatever it drops, the allocator must be asked the same thing,
// whether the Service says it with Herald's annotations or MetalLB's.
func TestTrimmedServiceAllocatesExactlyLikeTheFullOne(t *testing.T) {
	metallb := fullService()
	metallb.Annotations = map[string]string{
		"metallb.universe.tf/allow-shared-ip":              "dns",
		"metallb.io/address-pool":                          "lan",
		"metallb.universe.tf/address-pool":                 "old",
		"metallb.universe.tf/loadBalancerIPs":              "198.51.100.7, 2001:db8::7",
		"metallb.universe.tf/ip-allocated-from-pool":       "lan",
		"kubectl.kubernetes.io/last-applied-configuration": `{"a very":"long document"}`,
	}
	for name, full := range map[string]*corev1.Service{"Herald's annotations": fullService(), "MetalLB's annotations": metallb} {
		out, err := Transform(full.DeepCopy())
		if err != nil {
			t.Fatal(err)
		}
		trimmed := out.(*corev1.Service)
		cfg := model.Build(model.Input{})
		a, errA := requestFor(full, nil, cfg)
		b, errB := requestFor(trimmed, nil, cfg)
		a.Eligible, b.Eligible = nil, nil // funcs; eligibility reads labels, compared below
		if errA != nil || errB != nil || !reflect.DeepEqual(a, b) || len(a.IPs) != 2 || a.Pool != "lan" || a.Sharing.Key != "dns" {
			t.Errorf("%s: request from the full Service %+v (%v), from the trimmed one %+v (%v)", name, a, errA, b, errB)
		}
		annA, _ := model.ReadServiceAnnotations(full.Annotations)
		annB, _ := model.ReadServiceAnnotations(trimmed.Annotations)
		if !reflect.DeepEqual(annA, annB) {
			t.Errorf("%s: annotations read from the full Service %+v, from the trimmed one %+v", name, annA, annB)
		}
		if !reflect.DeepEqual(trimmed.Labels, full.Labels) || !reflect.DeepEqual(trimmed.Status, full.Status) ||
			trimmed.Generation != full.Generation || trimmed.ResourceVersion != full.ResourceVersion || trimmed.UID != full.UID ||
			!model.Handles(trimmed, "") {
			t.Errorf("%s: trimmed Service lost what allocation, status writes or events read: %+v", name, trimmed)
		}
		if _, ok := trimmed.Annotations["kubectl.kubernetes.io/last-applied-configuration"]; ok || trimmed.ManagedFields != nil || trimmed.Spec.ClusterIPs != nil {
			t.Errorf("%s: trimmed Service kept what Herald never reads: %+v", name, trimmed)
		}
	}
}

func TestOtherServicesAreCachedAsStubs(t *testing.T) {
	svc := fullService()
	svc.Spec.Type = corev1.ServiceTypeClusterIP
	svc.Status = corev1.ServiceStatus{}
	out, _ := Transform(svc)
	want := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", UID: "u-1", ResourceVersion: "42", Generation: 3},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP},
	}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("a ClusterIP Service is cached as %+v, want only %+v", out, want)
	}
}

// TestSpeakerLeasesKeepWhatTheIPModeDecisionReads: annotations and spec
// stay; managedFields and owner references go.
func TestSpeakerLeasesKeepWhatTheIPModeDecisionReads(t *testing.T) {
	l := testSpeakerLease("node-1", "nftables", epoch, 15*time.Second)
	l.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "speaker"}}
	l.OwnerReferences = []metav1.OwnerReference{{Name: "node-1"}}
	out, err := Transform(l)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*coordinationv1.Lease)
	if got.Name != l.Name || got.Namespace != l.Namespace || !reflect.DeepEqual(got.Annotations, l.Annotations) || !reflect.DeepEqual(got.Spec, l.Spec) {
		t.Errorf("cached Lease %+v lost what the ipMode decision reads of %+v", got, l)
	}
	if got.ManagedFields != nil || got.OwnerReferences != nil {
		t.Errorf("cached Lease kept what nothing reads: %+v", got)
	}
}
