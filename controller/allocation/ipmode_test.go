package allocation

import (
	"context"
	"slices"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/controller/kubeproxy"
	"github.com/heraldlb/herald/speaker/lease"
)

func testSpeakerLease(node, dataplane string, renewed time.Time, duration time.Duration) *coordinationv1.Lease {
	renew := metav1.NewMicroTime(renewed)
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "herald-system", Name: "herald-speaker-" + node,
			Annotations: map[string]string{lease.AnnotationDataplane: dataplane}},
		Spec: coordinationv1.LeaseSpec{RenewTime: &renew, LeaseDurationSeconds: ptr.To(int32(duration / time.Second))},
	}
}

// TestAutoIPModeDrivesIngressAndStrictARP: in auto mode the decision made
// from the Leases before the first write is what the Service gets; a
// speaker switching its dataplane off requeues every handled Service (and
// the configuration, whose strictARP finding depends on it), and the
// ipmode reconcile asks to run again at the earliest fresh Lease's expiry.
func TestAutoIPModeDrivesIngressAndStrictARP(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	n1 := testSpeakerLease("node-1", "nftables", now, time.Hour)
	n2 := testSpeakerLease("node-2", "ipvs", now, 30*time.Second)
	ipvs := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: kubeproxy.ConfigMapNamespace, Name: kubeproxy.ConfigMapName},
		Data:       map[string]string{kubeproxy.ConfigKey: "kind: KubeProxyConfiguration\nmode: ipvs\n"},
	}
	h := newHarness(t, interceptor.Funcs{}, testPool("lan", 0, "198.51.100.10-198.51.100.12"), lbService("web", "shop"),
		&v1alpha1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "lan", Generation: 1}}, ipvs, n1, n2)
	h.c = newController(h.client, h.events, Options{Namespace: "herald-system"})
	mode := func() string { return modeOf(h.service("web", "shop").Status.LoadBalancer.Ingress[0]) }
	strictARP := func() *metav1.Condition {
		var ad v1alpha1.L2Advertisement
		if err := h.client.Get(ctx, client.ObjectKey{Name: "lan"}, &ad); err != nil {
			t.Fatal(err)
		}
		return meta.FindStatusCondition(ad.Status.Conditions, v1alpha1.ConditionKubeProxyStrictARP)
	}

	h.mustReconcile("web", "shop")
	if m := mode(); m != "Proxy" || h.statusWrites != 1 {
		t.Fatalf("ipMode %s after %d writes, want Proxy in one write: every speaker runs a dataplane", m, h.statusWrites)
	}
	if err := h.c.reconcileConfig(ctx); err != nil {
		t.Fatal(err)
	}
	if c := strictARP(); c != nil {
		t.Errorf("KubeProxyStrictARP %+v with the dataplane on, want none", c)
	}
	res, err := h.c.reconcileIPMode(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Measured from now, not from the Lease's renewal: on a loaded machine
	// the reconciles above can take seconds.
	if d, until := res.RequeueAfter, time.Until(now.Add(30*time.Second)); d < until-time.Second || d > until+time.Second {
		t.Errorf("RequeueAfter %v, want about %v: node-2's Lease expires first", d, until.Round(time.Second))
	}
	if got := h.c.retry.take(); len(got) != 0 {
		t.Errorf("nothing changed, yet %v requeued", got)
	}

	n2 = testSpeakerLease("node-2", "off", now, 30*time.Second)
	var cur coordinationv1.Lease
	if err := h.client.Get(ctx, client.ObjectKeyFromObject(n2), &cur); err != nil {
		t.Fatal(err)
	}
	cur.Annotations = n2.Annotations
	if err := h.client.Update(ctx, &cur); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.reconcileIPMode(ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.c.retry.take(); !slices.Equal(got, []types.NamespacedName{nn("web", "shop")}) {
		t.Errorf("requeued %v after the switch, want web/shop", got)
	}
	select {
	case <-h.c.configKick:
	default:
		t.Error("the configuration is not judged again after the switch")
	}
	h.mustReconcile("web", "shop")
	if m := mode(); m != "VIP" || h.statusWrites != 2 {
		t.Errorf("ipMode %s after %d writes, want VIP in one more write", m, h.statusWrites)
	}
	h.wantIPs("web", "shop", "198.51.100.10")
	if err := h.c.reconcileConfig(ctx); err != nil {
		t.Fatal(err)
	}
	if c := strictARP(); c == nil || c.Status != metav1.ConditionFalse {
		t.Errorf("KubeProxyStrictARP %+v once a speaker runs without a dataplane, want False", c)
	}

	// Every speaker gone (a lone speaker restarting): the mode in force
	// stays, nothing is requeued.
	for _, l := range []*coordinationv1.Lease{n1, n2} {
		if err := h.client.Delete(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	n3 := testSpeakerLease("node-3", "nftables", now, time.Hour)
	if err := h.client.Create(ctx, n3); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.reconcileIPMode(ctx); err != nil {
		t.Fatal(err)
	}
	h.c.retry.take()
	if err := h.client.Delete(ctx, n3); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.reconcileIPMode(ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.c.retry.take(); len(got) != 0 {
		t.Errorf("no speaker's Lease fresh: %v requeued, want none (the mode in force stays)", got)
	}
	if d, _, _ := h.c.decideIPMode(ctx); d.Mode != corev1.LoadBalancerIPModeProxy {
		t.Errorf("no speaker's Lease fresh after Proxy: %s (%s), want Proxy kept", d.Mode, d.Reason)
	}
}
