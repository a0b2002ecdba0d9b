package allocation

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/controller/ipam"
	"github.com/heraldlb/herald/controller/kubeproxy"
	"github.com/heraldlb/herald/internal/model"
)

func TestServiceGetsTheLowestAddressInOneWriteWithOneEvent(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{}, testPool("lan", 0, "198.51.100.10-198.51.100.12"), lbService("web", "shop"))
	h.mustReconcile("web", "shop")
	h.wantIPs("web", "shop", "198.51.100.10")
	if c := h.condition("web", "shop"); c.Status != metav1.ConditionTrue || c.Reason != v1alpha1.ReasonIPAllocated || c.Message != "198.51.100.10 from pool lan" {
		t.Errorf("condition %+v, want True %s naming the address and pool", c, v1alpha1.ReasonIPAllocated)
	}
	in := h.service("web", "shop").Status.LoadBalancer.Ingress[0]
	if in.IPMode == nil || *in.IPMode != corev1.LoadBalancerIPModeVIP {
		t.Errorf("ipMode %v, want VIP", in.IPMode)
	}
	want := []recorded{{"web/shop", corev1.EventTypeNormal, v1alpha1.ReasonIPAllocated, "assigned 198.51.100.10 from pool lan"}}
	if got := h.events.take(); !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
	if h.statusWrites != 1 {
		t.Errorf("%d status writes, want 1", h.statusWrites)
	}
	// Reconciling again changes nothing: no write, no event.
	h.mustReconcile("web", "shop")
	if got := h.events.take(); len(got) != 0 || h.statusWrites != 1 {
		t.Errorf("a second reconcile wrote %d times and recorded %v", h.statusWrites-1, got)
	}
}

// TestIPModeSwitchReachesAServiceWhoseRequestFails: a Service whose new
// request is refused keeps its address, and its ipMode still follows the
// controller's mode after a restart with the dataplane switched on.
func TestIPModeSwitchReachesAServiceWhoseRequestFails(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{}, testPool("lan", 0, "198.51.100.10-198.51.100.12"), lbService("web", "shop"))
	h.mustReconcile("web", "shop")
	svc := h.service("web", "shop")
	svc.Annotations = map[string]string{v1alpha1.AnnotationLoadBalancerIPs: "not-an-address"}
	if err := h.client.Update(context.Background(), svc); err != nil {
		t.Fatal(err)
	}
	// The controller restarted with --ip-mode=Proxy.
	h.c = newController(h.client, h.events, Options{IPMode: corev1.LoadBalancerIPModeProxy})
	h.mustReconcile("web", "shop")
	h.wantIPs("web", "shop", "198.51.100.10")
	if c := h.condition("web", "shop"); c.Status != metav1.ConditionFalse {
		t.Errorf("condition %+v, want False: the request is invalid", c)
	}
	if in := h.service("web", "shop").Status.LoadBalancer.Ingress[0]; in.IPMode == nil || *in.IPMode != corev1.LoadBalancerIPModeProxy {
		t.Errorf("ipMode %v, want Proxy", in.IPMode)
	}
}

func TestFailureIsTheConditionAndOneWarningUntilItChanges(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{}, testPool("lan", 0, "198.51.100.10"), lbService("web", "a"), lbService("web", "b"))
	h.mustReconcile("web", "a")
	h.mustReconcile("web", "b")
	h.events.take()
	c := h.condition("web", "b")
	if c.Status != metav1.ConditionFalse || c.Reason != string(ipam.ReasonPoolExhausted) || !strings.Contains(c.Message, "lan") {
		t.Errorf("condition %+v, want False %s naming the pool", c, ipam.ReasonPoolExhausted)
	}
	for range 3 {
		h.mustReconcile("web", "b")
	}
	if got := h.events.take(); len(got) != 0 {
		t.Errorf("reconciling a still-failing Service recorded %v", got)
	}
}

func TestReleaseWakesOnlyPendingServicesTheFreedPoolServes(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{},
		onlyNamespaces(testPool("team-a", 0, "198.51.100.10"), "a"),
		onlyNamespaces(testPool("team-b", 1, "198.51.100.20"), "b"),
		lbService("a", "first"), lbService("a", "waiting"), lbService("b", "first"), lbService("b", "waiting"))
	for _, k := range []types.NamespacedName{nn("a", "first"), nn("a", "waiting"), nn("b", "first"), nn("b", "waiting")} {
		h.mustReconcile(k.Namespace, k.Name)
	}
	h.wantIPs("a", "waiting")
	h.wantIPs("b", "waiting")
	h.retried() // whatever the rebuild queued

	if err := h.client.Delete(context.Background(), lbService("a", "first")); err != nil {
		t.Fatal(err)
	}
	h.mustReconcile("a", "first")
	if got, want := h.retried(), []types.NamespacedName{nn("a", "waiting")}; !slices.Equal(got, want) {
		t.Fatalf("retried %v after team-a's address was freed, want only %v", got, want)
	}
	h.mustReconcile("a", "waiting")
	h.wantIPs("a", "waiting", "198.51.100.10")
}

func TestManyReleasesQueueEachPendingServiceOnce(t *testing.T) {
	objs := []client.Object{testPool("lan", 0, "198.51.100.10-198.51.100.19")}
	for i := range 10 {
		objs = append(objs, lbService("web", "holder-"+string(rune('a'+i))))
	}
	objs = append(objs, lbService("web", "waiting-1"), lbService("web", "waiting-2"))
	h := newHarness(t, interceptor.Funcs{}, objs...)
	h.mustReconcile("web", "waiting-1") // rebuilds the state: holders first
	h.retried()
	for i := range 10 {
		name := "holder-" + string(rune('a'+i))
		if err := h.client.Delete(context.Background(), lbService("web", name)); err != nil {
			t.Fatal(err)
		}
		h.mustReconcile("web", name)
	}
	if got, want := h.retried(), []types.NamespacedName{nn("web", "waiting-1"), nn("web", "waiting-2")}; !slices.Equal(got, want) {
		t.Fatalf("after 10 releases the queue held %v, want each pending Service once: %v", got, want)
	}
}

func TestLabellingTheNamespaceWakesItsPendingService(t *testing.T) {
	prod := testPool("prod", 0, "198.51.100.10")
	prod.Spec.ServiceAllocation = &v1alpha1.ServiceAllocation{NamespaceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"env": "prod"}}}}
	h := newHarness(t, interceptor.Funcs{}, prod, namespace("shop", nil), namespace("other", nil), lbService("shop", "web"), lbService("other", "web"))
	h.mustReconcile("shop", "web")
	h.mustReconcile("other", "web")
	if c := h.condition("shop", "web"); c.Reason != string(ipam.ReasonNoMatchingPool) {
		t.Fatalf("condition %+v, want %s before the label", c, ipam.ReasonNoMatchingPool)
	}
	ns := namespace("shop", map[string]string{"env": "prod"})
	if err := h.client.Update(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	// What the Namespace watch maps the label change to.
	got := h.c.namespaceRelabelled(context.Background(), ns)
	if len(got) != 1 || got[0].NamespacedName != nn("shop", "web") {
		t.Fatalf("a label change of namespace shop requeues %v, want shop/web alone", got)
	}
	h.mustReconcile("shop", "web")
	h.wantIPs("shop", "web", "198.51.100.10")
}

func TestUnreadableNamespaceIsTheReasonOnTheService(t *testing.T) {
	prod := testPool("prod", 0, "198.51.100.10")
	prod.Spec.ServiceAllocation = &v1alpha1.ServiceAllocation{NamespaceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"env": "prod"}}}}
	broken := interceptor.Funcs{Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
		if m, ok := obj.(*metav1.PartialObjectMetadata); ok && m.Kind == "Namespace" {
			return apierrors.NewServiceUnavailable("cache not synced")
		}
		return c.Get(ctx, key, obj, opts...)
	}}
	h := newHarness(t, broken, prod, namespace("shop", map[string]string{"env": "prod"}), lbService("shop", "web"))
	if err := h.reconcile("shop", "web"); err == nil {
		t.Error("reconcile succeeded; want an error so the workqueue retries with backoff")
	}
	c := h.condition("shop", "web")
	if c.Status != metav1.ConditionFalse || c.Reason != ReasonNamespaceUnavailable || !strings.Contains(c.Message, "namespace shop") || !strings.Contains(c.Message, "cache not synced") {
		t.Errorf("condition %+v, want False %s naming the namespace and the error", c, ReasonNamespaceUnavailable)
	}
	if ev := h.events.take(); len(ev) != 1 || ev[0].reason != v1alpha1.ReasonAllocationFailed || !strings.Contains(ev[0].note, ReasonNamespaceUnavailable) {
		t.Errorf("events %v, want one %s with the reason", ev, v1alpha1.ReasonAllocationFailed)
	}
}

func TestServiceOfAnotherClassIsClearedAndItsAddressReused(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{}, testPool("lan", 0, "198.51.100.10"), lbService("web", "moving"), lbService("web", "next"))
	h.mustReconcile("web", "moving")
	h.wantIPs("web", "moving", "198.51.100.10")
	svc := h.service("web", "moving")
	class := "other.example/lb"
	svc.Spec.LoadBalancerClass = &class
	if err := h.client.Update(context.Background(), svc); err != nil {
		t.Fatal(err)
	}
	h.events.take()
	h.mustReconcile("web", "moving")
	h.wantIPs("web", "moving")
	if meta.FindStatusCondition(h.service("web", "moving").Status.Conditions, v1alpha1.ConditionIPAllocated) != nil {
		t.Error("Herald's condition stayed on a Service of another class")
	}
	if ev := h.events.take(); len(ev) != 1 || ev[0].reason != v1alpha1.ReasonIPReleased || !strings.Contains(ev[0].note, "198.51.100.10") {
		t.Errorf("events %v, want one %s naming the address", ev, v1alpha1.ReasonIPReleased)
	}
	h.mustReconcile("web", "next")
	h.wantIPs("web", "next", "198.51.100.10")
}

func TestShrunkPoolReleasesWithAnEventAndReassigns(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{}, testPool("lan", 0, "198.51.100.10-198.51.100.11"), lbService("web", "a"), lbService("web", "b"))
	h.mustReconcile("web", "a")
	h.mustReconcile("web", "b")
	h.wantIPs("web", "b", "198.51.100.11")
	var p v1alpha1.IPAddressPool
	if err := h.client.Get(context.Background(), types.NamespacedName{Name: "lan"}, &p); err != nil {
		t.Fatal(err)
	}
	p.Spec.Addresses = []string{"198.51.100.10", "198.51.100.20"}
	if err := h.client.Update(context.Background(), &p); err != nil {
		t.Fatal(err)
	}
	h.events.take()
	h.retried()
	if err := h.c.reconcileConfig(context.Background()); err != nil {
		t.Fatal(err)
	}
	ev := h.events.take()
	if !slices.ContainsFunc(ev, func(e recorded) bool {
		return e.object == "web/b" && e.reason == v1alpha1.ReasonIPReleased && strings.Contains(e.note, "198.51.100.11")
	}) {
		t.Errorf("events %v, want %s on web/b naming 198.51.100.11", ev, v1alpha1.ReasonIPReleased)
	}
	if got := h.retried(); !slices.Contains(got, nn("web", "b")) {
		t.Fatalf("retried %v, want web/b", got)
	}
	h.mustReconcile("web", "b")
	h.wantIPs("web", "b", "198.51.100.20")
	h.wantIPs("web", "a", "198.51.100.10")
}

func TestConfigConditionFlipsWithOneEventEachWay(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{}, testPool("lan", 0, "198.51.100.0/28"), testPool("dmz", 1, "198.51.100.32/28"))
	ctx := context.Background()
	accepted := func(name string) metav1.Condition {
		t.Helper()
		var p v1alpha1.IPAddressPool
		if err := h.client.Get(ctx, types.NamespacedName{Name: name}, &p); err != nil {
			t.Fatal(err)
		}
		c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionAccepted)
		if c == nil {
			t.Fatalf("pool %s has no Accepted condition", name)
		}
		return *c
	}
	setAddrs := func(name string, addrs ...string) {
		t.Helper()
		var p v1alpha1.IPAddressPool
		if err := h.client.Get(ctx, types.NamespacedName{Name: name}, &p); err != nil {
			t.Fatal(err)
		}
		p.Spec.Addresses = addrs
		p.Generation++
		if err := h.client.Update(ctx, &p); err != nil {
			t.Fatal(err)
		}
		if err := h.c.reconcileConfig(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.c.reconcileConfig(ctx); err != nil {
		t.Fatal(err)
	}
	h.events.take()
	setAddrs("dmz", "198.51.100.8/29") // overlaps lan
	if c := accepted("dmz"); c.Status != metav1.ConditionFalse || c.Reason != model.ReasonOverlap {
		t.Fatalf("dmz: %+v, want refused for overlap", c)
	}
	if ev := h.events.take(); len(ev) != 1 || ev[0].reason != "ConfigRefused" || ev[0].object != "/dmz" {
		t.Errorf("events %v, want one ConfigRefused on dmz", ev)
	}
	setAddrs("dmz", "198.51.100.64/28")
	if c := accepted("dmz"); c.Status != metav1.ConditionTrue {
		t.Fatalf("dmz: %+v, want accepted again", c)
	}
	if ev := h.events.take(); len(ev) != 1 || ev[0].reason != "ConfigAccepted" {
		t.Errorf("events %v, want one ConfigAccepted on dmz", ev)
	}
}

func TestPoolOverlappingAServiceCIDRIsNotAcceptedAndAssignsNothing(t *testing.T) {
	cidr := &networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes"}, Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.96.0.0/16"}}}
	h := newHarness(t, interceptor.Funcs{}, cidr, testPool("clusterips", 0, "10.96.0.0/24"), lbService("web", "shop"))
	if err := h.c.reconcileConfig(context.Background()); err != nil {
		t.Fatal(err)
	}
	var p v1alpha1.IPAddressPool
	if err := h.client.Get(context.Background(), types.NamespacedName{Name: "clusterips"}, &p); err != nil {
		t.Fatal(err)
	}
	c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionAccepted)
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != model.ReasonClusterAddresses || !strings.Contains(c.Message, "ServiceCIDR kubernetes (10.96.0.0/16)") {
		t.Fatalf("Accepted %+v, want False %s naming the ServiceCIDR", c, model.ReasonClusterAddresses)
	}
	h.mustReconcile("web", "shop")
	h.wantIPs("web", "shop")
}

// TestNodeJoiningWithAPoolsAddressMovesOnlyTheServiceHoldingIt: a node
// that joins with an address of a pool in use (DHCP gave it one) makes the
// pool not Accepted; the Service holding that address is moved off it (the
// speaker would otherwise answer ARP for the node's own address), the
// others keep theirs, none is given the node's address, and a restart of
// the controller changes nothing.
func TestNodeJoiningWithAPoolsAddressMovesOnlyTheServiceHoldingIt(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, interceptor.Funcs{}, testPool("lan", 0, "198.51.100.10-198.51.100.12"), lbService("web", "a"), lbService("web", "b"))
	h.mustReconcile("web", "a")
	h.mustReconcile("web", "b")
	h.wantIPs("web", "a", "198.51.100.10")
	h.wantIPs("web", "b", "198.51.100.11")
	h.events.take()
	h.retried()

	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-3"},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.51.100.10"}}}}
	if err := h.client.Create(ctx, node); err != nil {
		t.Fatal(err)
	}
	if err := h.c.reconcileConfig(ctx); err != nil {
		t.Fatal(err)
	}
	var p v1alpha1.IPAddressPool
	if err := h.client.Get(ctx, types.NamespacedName{Name: "lan"}, &p); err != nil {
		t.Fatal(err)
	}
	if c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionAccepted); c == nil || c.Status != metav1.ConditionFalse ||
		c.Reason != model.ReasonClusterAddresses || !strings.Contains(c.Message, "node worker-3's InternalIP (198.51.100.10)") {
		t.Fatalf("Accepted %+v, want False %s naming the node's address", c, model.ReasonClusterAddresses)
	}
	if got := h.retried(); !slices.Contains(got, nn("web", "a")) {
		t.Fatalf("retried %v, want web/a, which holds the node's address", got)
	}
	h.mustReconcile("web", "a")
	h.mustReconcile("web", "b")
	h.wantIPs("web", "a", "198.51.100.12")
	h.wantIPs("web", "b", "198.51.100.11")
	if ev := h.events.take(); !slices.ContainsFunc(ev, func(e recorded) bool {
		return e.reason == v1alpha1.ReasonIPReleased && strings.Contains(e.note, "198.51.100.10")
	}) {
		t.Errorf("events %v, want %s of 198.51.100.10 on web/a", ev, v1alpha1.ReasonIPReleased)
	}

	// The controller restarts: it has no memory of the pool's last
	// accepted version, and needs none.
	h.c = newController(h.client, h.events, Options{})
	lbc := lbService("web", "c")
	if err := h.client.Create(ctx, lbc); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b", "c"} {
		h.mustReconcile("web", name)
	}
	h.wantIPs("web", "a", "198.51.100.12")
	h.wantIPs("web", "b", "198.51.100.11")
	h.wantIPs("web", "c")
	if c := h.condition("web", "c"); c.Reason != string(ipam.ReasonPoolExhausted) {
		t.Errorf("web/c: condition %+v, want %s: the node's address is never given", c, ipam.ReasonPoolExhausted)
	}
}

func TestPoolsServingFollowsTheAllocatorsRules(t *testing.T) {
	in := model.Input{Pools: []v1alpha1.IPAddressPool{
		*testPool("auto-a", 0, "198.51.100.0/28"), *testPool("auto-b", 1, "198.51.100.16/28"),
		*testPool("manual", 2, "198.51.100.32/28"), *testPool("closed", 3, "198.51.100.48/28"),
	}}
	off := false
	in.Pools[2].Spec.AutoAssign = &off
	cfg := model.Build(in)
	eligible := func(p string) bool { return p != "closed" }
	for _, tc := range []struct {
		name string
		req  ipam.Request
		want []string
	}{
		{"any address: the eligible autoAssign pools", ipam.Request{Eligible: eligible}, []string{"auto-a", "auto-b"}},
		{"a named pool, even without autoAssign", ipam.Request{Pool: "manual", Eligible: eligible}, []string{"manual"}},
		{"a named pool the Service may not use", ipam.Request{Pool: "closed", Eligible: eligible}, nil},
		{"requested addresses: their pools", ipam.Request{IPs: addrs("198.51.100.33", "198.51.100.17"), Eligible: eligible}, []string{"manual", "auto-b"}},
		{"a requested address outside every pool", ipam.Request{IPs: addrs("203.0.113.1"), Eligible: eligible}, nil},
		{"a requested address in a pool the Service may not use", ipam.Request{IPs: addrs("198.51.100.49"), Eligible: eligible}, nil},
	} {
		if got := poolsServing(cfg, tc.req); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestPoolStatusWritesDoNotRebuildTheConfiguration(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{}, testPool("lan", 0, "198.51.100.10-198.51.100.12"), lbService("web", "a"), lbService("web", "b"))
	h.mustReconcile("web", "a")
	before := h.c.cfg
	var p v1alpha1.IPAddressPool
	if err := h.client.Get(context.Background(), types.NamespacedName{Name: "lan"}, &p); err != nil {
		t.Fatal(err)
	}
	p.Status.AssignedIPv4 = 1 // what the usage controller writes
	if err := h.client.Status().Update(context.Background(), &p); err != nil {
		t.Fatal(err)
	}
	h.mustReconcile("web", "b")
	if h.c.cfg != before {
		t.Error("a write of the pool's status rebuilt the configuration (and the allocator's state of every Service)")
	}
	h.wantIPs("web", "b", "198.51.100.11")
}

func TestStatusWriteFromAStaleCacheConflictsInsteadOfOverwriting(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{}, testPool("lan", 0, "198.51.100.10-198.51.100.12"), lbService("web", "shop"))
	stale := h.service("web", "shop")
	fresh := stale.DeepCopy()
	fresh.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.99"}} // written by someone else meanwhile
	if err := h.client.Status().Update(context.Background(), fresh); err != nil {
		t.Fatal(err)
	}
	err := h.c.writeStatus(context.Background(), stale, ipam.Assignment{Pool: "lan", IPs: addrs("198.51.100.10")}, nil)
	if !apierrors.IsConflict(err) {
		t.Fatalf("writing over a newer status: %v, want a conflict", err)
	}
	h.wantIPs("web", "shop", "203.0.113.99")
}

func TestConfigChangesThatLeavePoolsAloneKeepTheAllocatorsState(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{}, testPool("lan", 0, "198.51.100.10-198.51.100.12"), lbService("web", "a"))
	h.mustReconcile("web", "a")
	before := h.c.alloc.Owners(netip.MustParseAddr("198.51.100.10"))
	adv := &v1alpha1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "lan"}}
	if err := h.client.Create(context.Background(), adv); err != nil {
		t.Fatal(err)
	}
	if err := h.c.reconcileConfig(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(h.c.cfg.L2Advertisements) != 1 {
		t.Fatalf("the new advertisement is not in the configuration: %+v", h.c.cfg.L2Advertisements)
	}
	if got := h.c.alloc.Owners(netip.MustParseAddr("198.51.100.10")); !slices.Equal(got, before) || len(got) != 1 {
		t.Errorf("owners of 198.51.100.10: %v before, %v after", before, got)
	}
	h.mustReconcile("web", "a")
	h.wantIPs("web", "a", "198.51.100.10")
}

// A pool deleted while its Services live on (their namespace is still being
// deleted, say) frees their addresses for other Services: the old Services
// must stop showing them, or kube-proxy forwards one address to two
// Services' pods, whichever rule comes first on each node.
func TestDeletedPoolTakesItsAddressOffTheServiceBeforeItIsReused(t *testing.T) {
	old := onlyNamespaces(testPool("old", 0, "198.51.100.88"), "gone")
	h := newHarness(t, interceptor.Funcs{}, old, lbService("gone", "web"), lbService("next", "web"))
	ctx := context.Background()
	if err := h.c.reconcileConfig(ctx); err != nil {
		t.Fatal(err)
	}
	h.mustReconcile("gone", "web")
	h.wantIPs("gone", "web", "198.51.100.88")

	if err := h.client.Delete(ctx, old); err != nil {
		t.Fatal(err)
	}
	if err := h.c.reconcileConfig(ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.retried(); !slices.Contains(got, nn("gone", "web")) {
		t.Fatalf("retried %v, want gone/web", got)
	}
	h.mustReconcile("gone", "web")
	h.wantIPs("gone", "web")
	if c := h.condition("gone", "web"); c.Status != metav1.ConditionFalse {
		t.Errorf("condition %+v, want False: the Service has no address", c)
	}

	if err := h.client.Create(ctx, onlyNamespaces(testPool("new", 1, "198.51.100.88"), "next")); err != nil {
		t.Fatal(err)
	}
	if err := h.c.reconcileConfig(ctx); err != nil {
		t.Fatal(err)
	}
	h.mustReconcile("next", "web")
	h.wantIPs("next", "web", "198.51.100.88")
	h.wantIPs("gone", "web")
}

// TestStrictARPConditionFollowsTheDataplaneAndKubeProxy: the controller's
// mode decides whether kube-proxy's IPVS mode matters; the Accepted
// condition and the strictARP one are written together, once.
func TestStrictARPConditionFollowsTheDataplaneAndKubeProxy(t *testing.T) {
	ipvs := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: kubeproxy.ConfigMapNamespace, Name: kubeproxy.ConfigMapName},
		Data:       map[string]string{kubeproxy.ConfigKey: "kind: KubeProxyConfiguration\nmode: ipvs\n"},
	}
	ad := &v1alpha1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "lan", Generation: 1}}
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		mode   corev1.LoadBalancerIPMode
		cm     *corev1.ConfigMap
		status metav1.ConditionStatus // "": no condition
	}{
		{"dataplane off, IPVS without strictARP", corev1.LoadBalancerIPModeVIP, ipvs, metav1.ConditionFalse},
		{"dataplane on, IPVS without strictARP", corev1.LoadBalancerIPModeProxy, ipvs, ""},
		{"dataplane off, no kube-proxy ConfigMap", corev1.LoadBalancerIPModeVIP, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := []client.Object{ad.DeepCopy()}
			if tc.cm != nil {
				objs = append(objs, tc.cm.DeepCopy())
			}
			writes := 0
			h := newHarness(t, interceptor.Funcs{SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
				writes++
				return c.SubResource(sub).Update(ctx, obj, opts...)
			}}, objs...)
			h.c = newController(h.client, h.events, Options{IPMode: tc.mode})
			for range 2 {
				if err := h.c.reconcileConfig(ctx); err != nil {
					t.Fatal(err)
				}
			}
			var got v1alpha1.L2Advertisement
			if err := h.client.Get(ctx, client.ObjectKey{Name: "lan"}, &got); err != nil {
				t.Fatal(err)
			}
			cond := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionKubeProxyStrictARP)
			var status metav1.ConditionStatus
			if cond != nil {
				status = cond.Status
			}
			if status != tc.status {
				t.Errorf("KubeProxyStrictARP %+v, want status %q", cond, tc.status)
			}
			if meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionAccepted) == nil {
				t.Error("no Accepted condition")
			}
			if writes != 1 {
				t.Errorf("%d status writes, want 1 (both conditions at once, nothing on the second pass)", writes)
			}
			var warnings []recorded
			for _, e := range h.events.take() {
				if e.reason == kubeproxy.ReasonStrictARPDisabled {
					warnings = append(warnings, e)
				}
			}
			want := 0
			if tc.status != "" {
				want = 1
			}
			if len(warnings) != want {
				t.Errorf("%d %s events, want %d", len(warnings), kubeproxy.ReasonStrictARPDisabled, want)
			}
		})
	}
}

// A pool no advertisement selects is Advertised False with one warning, and
// loses the condition, with one Normal event, when an advertisement comes.
func TestPoolWithoutAdvertisementIsMarkedOnceUntilOneSelectsIt(t *testing.T) {
	h := newHarness(t, interceptor.Funcs{}, testPool("lan", 0, "198.51.100.0/28"))
	ctx := context.Background()
	advertised := func() *metav1.Condition {
		t.Helper()
		var p v1alpha1.IPAddressPool
		if err := h.client.Get(ctx, types.NamespacedName{Name: "lan"}, &p); err != nil {
			t.Fatal(err)
		}
		return meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionAdvertised)
	}
	reasons := func() []string {
		var out []string
		for _, e := range h.events.take() {
			if e.object == "/lan" && e.reason != "ConfigAccepted" {
				out = append(out, e.reason)
			}
		}
		return out
	}
	for range 2 { // the second pass changes nothing
		if err := h.c.reconcileConfig(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if c := advertised(); c == nil || c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonNotAdvertised {
		t.Fatalf("Advertised %+v, want False %s", c, v1alpha1.ReasonNotAdvertised)
	}
	if got := reasons(); !slices.Equal(got, []string{v1alpha1.ReasonNotAdvertised}) {
		t.Errorf("events %v, want one %s", got, v1alpha1.ReasonNotAdvertised)
	}
	adv := &v1alpha1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "lan"}, Spec: v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{"lan"}}}
	if err := h.client.Create(ctx, adv); err != nil {
		t.Fatal(err)
	}
	if err := h.c.reconcileConfig(ctx); err != nil {
		t.Fatal(err)
	}
	if c := advertised(); c != nil {
		t.Errorf("Advertised %+v after an L2Advertisement selected the pool, want none", c)
	}
	if got := reasons(); !slices.Equal(got, []string{"Advertised"}) {
		t.Errorf("events %v, want one Advertised", got)
	}
}
