package allocation

import (
	"context"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/heraldlb/herald/api/v1alpha1"
)

// Services moved from MetalLB: its annotations, and the addresses it left
// in their status.

// withStatus sets the Service's status as MetalLB leaves it: the addresses,
// no condition of Herald's.
func withStatus(ips ...string) func(*corev1.Service) {
	return func(svc *corev1.Service) {
		for _, ip := range ips {
			svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
		}
	}
}

func withAnnotations(kv ...string) func(*corev1.Service) {
	return func(svc *corev1.Service) {
		if svc.Annotations == nil {
			svc.Annotations = map[string]string{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			svc.Annotations[kv[i]] = kv[i+1]
		}
	}
}

func TestMetalLBAnnotationsAskForAnAddressAPoolAndSharing(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{},
		testPool("lan", 0, "198.51.100.10-198.51.100.19"), testPool("dmz", 1, "203.0.113.10-203.0.113.19"),
		lbService("web", "pinned", withAnnotations("metallb.universe.tf/loadBalancerIPs", "198.51.100.15")),
		lbService("web", "dmz", withAnnotations("metallb.io/address-pool", "dmz")),
		lbService("web", "dns-tcp", withAnnotations("metallb.universe.tf/address-pool", "dmz", "metallb.universe.tf/allow-shared-ip", "dns")),
		lbService("web", "dns-udp", func(s *corev1.Service) {
			s.Annotations = map[string]string{"metallb.io/address-pool": "dmz", "metallb.io/allow-shared-ip": "dns"}
			s.Spec.Ports[0].Protocol = corev1.ProtocolUDP
		}),
	)
	for _, name := range []string{"pinned", "dmz", "dns-tcp", "dns-udp"} {
		h.mustReconcile("web", name)
	}
	h.wantIPs("web", "pinned", "198.51.100.15")
	h.wantIPs("web", "dmz", "203.0.113.10")
	h.wantIPs("web", "dns-tcp", "203.0.113.11")
	h.wantIPs("web", "dns-udp", "203.0.113.11")
}

func TestHeraldsAnnotationWinsAndTheConflictIsOneWarning(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{},
		testPool("lan", 0, "198.51.100.10-198.51.100.19"),
		lbService("web", "shop", withAnnotations(
			v1alpha1.AnnotationLoadBalancerIPs, "198.51.100.12",
			"metallb.universe.tf/loadBalancerIPs", "198.51.100.17")))
	h.mustReconcile("web", "shop")
	h.wantIPs("web", "shop", "198.51.100.12")
	const conflict = `annotation metallb.universe.tf/loadBalancerIPs="198.51.100.17" ignored: herald.dev/loadBalancerIPs="198.51.100.12" wins`
	if c := h.condition("web", "shop"); c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, conflict) {
		t.Errorf("condition %+v, want True and naming the conflict", c)
	}
	want := []recorded{
		{"web/shop", corev1.EventTypeNormal, v1alpha1.ReasonIPAllocated, "assigned 198.51.100.12 from pool lan"},
		{"web/shop", corev1.EventTypeWarning, v1alpha1.ReasonAnnotationConflict, conflict},
	}
	if got := h.events.take(); !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
	h.mustReconcile("web", "shop")
	if got := h.events.take(); len(got) != 0 || h.statusWrites != 1 {
		t.Errorf("a second reconcile wrote %d times and recorded %v", h.statusWrites-1, got)
	}

	// The conflict resolved: the condition says so, with no new event.
	svc := h.service("web", "shop")
	delete(svc.Annotations, "metallb.universe.tf/loadBalancerIPs")
	if err := h.client.Update(context.Background(), svc); err != nil {
		t.Fatal(err)
	}
	h.mustReconcile("web", "shop")
	if c := h.condition("web", "shop"); c.Message != "198.51.100.12 from pool lan" {
		t.Errorf("condition message %q once the conflict is gone", c.Message)
	}
	if got := h.events.take(); len(got) != 0 {
		t.Errorf("events %v once the conflict is gone, want none", got)
	}
}

// TestAddressMetalLBLeftInAPoolIsAdoptedInOneWrite: the Service keeps the
// address in its status (not the lowest free one) and the ingress entry as
// it is, and the one write adds the condition and ipMode.
func TestAddressMetalLBLeftInAPoolIsAdoptedInOneWrite(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{},
		testPool("lan", 0, "198.51.100.10-198.51.100.19"),
		lbService("web", "shop", withAnnotations("metallb.universe.tf/ip-allocated-from-pool", "lan"), withStatus("198.51.100.17")),
		lbService("web", "new"))
	h.mustReconcile("web", "shop")
	h.mustReconcile("web", "new")
	h.wantIPs("web", "shop", "198.51.100.17")
	h.wantIPs("web", "new", "198.51.100.10")
	if c := h.condition("web", "shop"); c.Status != metav1.ConditionTrue || c.Message != "198.51.100.17 from pool lan" {
		t.Errorf("condition %+v, want True naming the adopted address", c)
	}
	if h.statusWrites != 2 {
		t.Errorf("%d status writes for two Services, want 2", h.statusWrites)
	}
	ev := h.events.take()
	if len(ev) == 0 || ev[0].object != "web/shop" || ev[0].note != "adopted 198.51.100.17 from pool lan, as the Service's status already held it" {
		t.Errorf("events %v, want web/shop's first saying its address was adopted", ev)
	}
}

// TestAddressOutsideEveryPoolIsLeftInPlaceUntilAPoolHoldsIt: an address
// MetalLB gave from a pool Herald was not given stays in the status, with
// a False condition and a warning naming it and MetalLB's pool; the Service
// gets no other address, and the address is adopted once a pool holds it.
func TestAddressOutsideEveryPoolIsLeftInPlaceUntilAPoolHoldsIt(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{},
		testPool("lan", 0, "198.51.100.10-198.51.100.19"),
		lbService("web", "legacy", withAnnotations("metallb.universe.tf/ip-allocated-from-pool", "old"), withStatus("203.0.113.200")))
	h.mustReconcile("web", "legacy")
	h.wantIPs("web", "legacy", "203.0.113.200")
	c := h.condition("web", "legacy")
	if c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonIPNotAdopted ||
		!strings.Contains(c.Message, "203.0.113.200") || !strings.Contains(c.Message, "MetalLB's pool old") || !strings.Contains(c.Message, "outside every pool") {
		t.Errorf("condition %+v, want False %s naming the address, MetalLB's pool and why", c, v1alpha1.ReasonIPNotAdopted)
	}
	ev := h.events.take()
	if len(ev) != 1 || ev[0].typ != corev1.EventTypeWarning || ev[0].reason != v1alpha1.ReasonIPNotAdopted || ev[0].note != c.Message {
		t.Errorf("events %v, want one %s warning saying what the condition says", ev, v1alpha1.ReasonIPNotAdopted)
	}
	// Reconciled again (any change of the Service): nothing moves, nothing
	// is written or recorded.
	h.mustReconcile("web", "legacy")
	h.wantIPs("web", "legacy", "203.0.113.200")
	if got := h.events.take(); len(got) != 0 || h.statusWrites != 1 {
		t.Errorf("a second reconcile wrote %d times and recorded %v", h.statusWrites-1, got)
	}

	// The pool MetalLB used is added: the address is adopted as it is.
	ctx := context.Background()
	if err := h.client.Create(ctx, testPool("old", 1, "203.0.113.192/27")); err != nil {
		t.Fatal(err)
	}
	h.retried()
	if err := h.c.reconcileConfig(ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.retried(); !slices.Contains(got, nn("web", "legacy")) {
		t.Fatalf("retried %v after the pool was added, want web/legacy", got)
	}
	h.mustReconcile("web", "legacy")
	h.wantIPs("web", "legacy", "203.0.113.200")
	if c := h.condition("web", "legacy"); c.Status != metav1.ConditionTrue || c.Message != "203.0.113.200 from pool old" {
		t.Errorf("condition %+v, want True: adopted from pool old", c)
	}
}

// TestAddressHeldByAnotherServiceIsNotTakenFromIt: two Services' statuses
// hold one address and may not share it; the older keeps it, the other is
// left as it is and says why.
func TestAddressHeldByAnotherServiceIsNotTakenFromIt(t *testing.T) {
	first := lbService("web", "first", withStatus("198.51.100.14"))
	second := lbService("web", "second", withStatus("198.51.100.14"))
	second.CreationTimestamp = metav1.NewTime(epoch.Add(1))
	first.CreationTimestamp = metav1.NewTime(epoch)
	h := newHarness(t, interceptor.Funcs{}, testPool("lan", 0, "198.51.100.10-198.51.100.19"), first, second)
	h.mustReconcile("web", "second")
	h.mustReconcile("web", "first")
	h.wantIPs("web", "first", "198.51.100.14")
	h.wantIPs("web", "second", "198.51.100.14")
	if c := h.condition("web", "first"); c.Status != metav1.ConditionTrue {
		t.Errorf("web/first: condition %+v, want True", c)
	}
	if c := h.condition("web", "second"); c.Reason != v1alpha1.ReasonIPNotAdopted || !strings.Contains(c.Message, "owned by web/first") {
		t.Errorf("web/second: condition %+v, want %s naming web/first", c, v1alpha1.ReasonIPNotAdopted)
	}

	// web/first goes away: web/second is woken and adopts the address.
	h.retried()
	if err := h.client.Delete(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	h.mustReconcile("web", "first")
	if got := h.retried(); !slices.Contains(got, nn("web", "second")) {
		t.Fatalf("retried %v once web/first released 198.51.100.14, want web/second", got)
	}
	h.mustReconcile("web", "second")
	h.wantIPs("web", "second", "198.51.100.14")
	if c := h.condition("web", "second"); c.Status != metav1.ConditionTrue {
		t.Errorf("web/second: condition %+v, want True once the address is free", c)
	}
}

// TestClearingTheStatusOfAnAddressNotAdoptedGivesANewOne: the way out the
// IPNotAdopted condition offers when the old address is not wanted.
func TestClearingTheStatusOfAnAddressNotAdoptedGivesANewOne(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{},
		testPool("lan", 0, "198.51.100.10-198.51.100.19"),
		lbService("web", "legacy", withStatus("203.0.113.200")))
	h.mustReconcile("web", "legacy")
	h.wantIPs("web", "legacy", "203.0.113.200")
	svc := h.service("web", "legacy")
	svc.Status.LoadBalancer.Ingress = nil
	if err := h.client.Status().Update(context.Background(), svc); err != nil {
		t.Fatal(err)
	}
	h.mustReconcile("web", "legacy")
	h.wantIPs("web", "legacy", "198.51.100.10")
	if c := h.condition("web", "legacy"); c.Status != metav1.ConditionTrue {
		t.Errorf("condition %+v, want True once the status was cleared", c)
	}
}
