package e2etest

// Moving from MetalLB: Services as MetalLB leaves them, then Herald's
// controller starts.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/heraldctl/migrate"
)

// TestMigratedServicesKeepTheirAddressesWithOneStatusWriteEach: Services
// carrying MetalLB's annotations and the addresses MetalLB's controller
// wrote in their status exist before Herald's controller runs (MetalLB's
// controller scaled to zero, Herald's pools applied). Once it starts, no
// address changes, each Service's status is written exactly once (the
// condition), the addresses are served by Herald's speakers, the Service
// that asks through metallb.universe.tf/loadBalancerIPs gets that address,
// and the one whose address is in no pool keeps it with a condition and a
// warning saying so.
func TestMigratedServicesKeepTheirAddressesWithOneStatusWriteEach(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	// The pool as heraldctl migrate translates MetalLB's; applied while the
	// webhook (which the controller serves) is up.
	l2Setup(t, ns, []string{"198.51.100.101-198.51.100.103"})
	pool := ns + "-lan"
	// Addresses handed out only on request, as MetalLB users pin them.
	pinned := newPool(t, ns+"-pinned", ns, []string{"198.51.100.126"}, func(p *v1alpha1.IPAddressPool) { p.Spec.AutoAssign = ptr.To(false) })
	adv := &v1alpha1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: ns + "-pinned"}, Spec: v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{pinned.Name}}}
	if err := crClient.Create(ctx, adv); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = crClient.Delete(context.Background(), adv) })
	createWeb(t, ns, "web", 2)
	readyPods(t, ns, "app=web", 2)

	keepRunning(t)
	hd.Controller().Stop()

	// As MetalLB left them: its annotations, its addresses in the status
	// (not the ones Herald would pick first), no condition of Herald's.
	left := map[string]string{"shop": "198.51.100.103", "api": "198.51.100.102", "legacy": "203.0.113.200"}
	annotations := map[string]map[string]string{
		"shop":   {"metallb.universe.tf/address-pool": pool, "metallb.universe.tf/ip-allocated-from-pool": pool},
		"api":    {"metallb.io/ip-allocated-from-pool": pool},
		"legacy": {"metallb.universe.tf/ip-allocated-from-pool": "retired"},
		"pinned": {"metallb.universe.tf/loadBalancerIPs": "198.51.100.126"},
	}
	for _, name := range []string{"shop", "api", "legacy", "pinned"} {
		svc := lbService(t, ns, name, func(s *corev1.Service) { s.Annotations = annotations[name] })
		if ip, ok := left[name]; ok {
			svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip, IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)}}
			if err := crClient.Status().Update(ctx, svc); err != nil {
				t.Fatalf("writing %s/%s's status as MetalLB does: %v", ns, name, err)
			}
		}
	}

	// Herald's speakers announce what the status holds, as MetalLB's did;
	// kube-proxy forwards (ipMode VIP). Requests to shop's address go on
	// while Herald's controller starts and writes ipMode Proxy.
	shopURL := "http://" + left["shop"] + "/"
	curlOK(t, shopURL)
	p := startProber(shopURL, 20*time.Millisecond)
	defer p.Finish()

	// Every write of the Services from here on, as the API server sees it.
	list, err := theLab.Client.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := theLab.Client.CoreV1().Services(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	start := time.Now()
	if err := hd.StartController(); err != nil {
		t.Fatal(err)
	}
	for name := range left {
		allocated := metav1.ConditionTrue
		if name == "legacy" {
			allocated = metav1.ConditionFalse
		}
		eventually(t, 30*time.Second, ns+"/"+name+" has Herald's condition", func(ctx context.Context) (bool, error) {
			var svc corev1.Service
			if err := crClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &svc); err != nil {
				return false, err
			}
			c := meta.FindStatusCondition(svc.Status.Conditions, v1alpha1.ConditionIPAllocated)
			return c != nil && c.Status == allocated, nil
		})
	}
	if got := externalIPs(t, ns, "pinned", 1); got[0] != "198.51.100.126" {
		t.Errorf("pinned asked for 198.51.100.126 through metallb.universe.tf/loadBalancerIPs and got %s", got[0])
	}
	t.Logf("every Service adopted or answered %.1fs after the controller started", time.Since(start).Seconds())

	// No address changed; one write each.
	for name, ip := range left {
		if got := externalIPs(t, ns, name, 1); got[0] != ip {
			t.Errorf("%s: EXTERNAL-IP %s once Herald runs, was %s under MetalLB", name, got[0], ip)
		}
	}
	writes := statusWrites(w, 3*time.Second)
	for _, name := range []string{"shop", "api", "legacy", "pinned"} {
		if writes[name] != 1 {
			t.Errorf("%s written %d times once Herald's controller started, want exactly 1", name, writes[name])
		}
	}
	t.Logf("status writes per Service: %v", writes)
	// The probe ran from before the start until the writes were 3 s quiet.
	st := p.Finish()
	total, failed, outage := st.Total, st.Failed, st.Outage
	t.Logf("requests to %s while Herald's controller started (ipMode VIP -> %s, the lab's dataplane %s): %d, %d failed, longest outage %s; errors %v",
		shopURL, ipModeOf(t, ns, "shop"), hd.Dataplane(), total, failed, outage, st.Errors)
	if failed > 0 {
		t.Errorf("%d of %d requests to %s failed while Herald's controller started", failed, total, shopURL)
	}

	// The address in no pool: left in place, and said so.
	c := allocatedCondition(t, ns, "legacy", metav1.ConditionFalse, v1alpha1.ReasonIPNotAdopted)
	if !strings.Contains(c.Message, "203.0.113.200") || !strings.Contains(c.Message, "MetalLB's pool retired") {
		t.Errorf("legacy: condition message %q does not name the address and MetalLB's pool", c.Message)
	}
	eventually(t, 10*time.Second, "an "+v1alpha1.ReasonIPNotAdopted+" warning on legacy", func(context.Context) (bool, error) {
		return slices.ContainsFunc(events(t, ns, "legacy"), func(e string) bool {
			return strings.HasPrefix(e, v1alpha1.ReasonIPNotAdopted+": 203.0.113.200")
		}), nil
	})

	// Herald's speakers serve every adopted address: one node answers ARP
	// for it and the client's requests reach the pods.
	for _, name := range []string{"shop", "api", "pinned"} {
		ip := externalIPs(t, ns, name, 1)[0]
		owner, _ := announcer(t, ns, name)
		waitNodePorts(t, ns, name)
		a := curlOK(t, "http://"+ip+"/")
		if got := clientNeighbourNode(ip); got != owner {
			t.Errorf("%s: the client resolves %s to %s, but Herald's speaker on %s announces it", name, ip, got, owner)
		}
		t.Logf("%s: %s announced by %s, answered by %s", name, ip, owner, a.Pod)
	}
}

// statusWrites counts, per Service, the changes w reports until it has been
// quiet for quiet.
func statusWrites(w watch.Interface, quiet time.Duration) map[string]int {
	writes := map[string]int{}
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				return writes
			}
			if svc, isSvc := ev.Object.(*corev1.Service); isSvc && ev.Type == watch.Modified {
				writes[svc.Name]++
			} else {
				writes[fmt.Sprintf("%s %T", ev.Type, ev.Object)]++
			}
		case <-time.After(quiet):
			return writes
		}
	}
}

// TestHeraldctlMigrateOfTheLayer2TutorialGivesTheAddressMetalLBWould: the
// legacy ConfigMap of MetalLB's layer-2 tutorial (one pool, protocol
// layer2, a range), translated as `heraldctl migrate -f` does and applied,
// gives the first Service the range's lowest address and the second the
// next one, as MetalLB's allocator does, and the client reaches them. The
// range is on the lab's IPv6 LAN: its IPv4 one has no free range left
// (and 198.51.100.48-52, among the node addresses, gave .50 first).
func TestHeraldctlMigrateOfTheLayer2TutorialGivesTheAddressMetalLBWould(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	configMap := fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata:
  namespace: metallb-system
  name: config
data:
  config: |
    address-pools:
    - name: %s-default
      protocol: layer2
      addresses:
      - 2001:db8:1::1:30-2001:db8:1::1:34
`, ns)
	in := &migrate.Input{}
	if err := in.AddYAML("tutorial.yaml", []byte(configMap)); err != nil {
		t.Fatal(err)
	}
	res := migrate.Translate(in, migrate.Options{})
	if !res.Complete() || len(res.Pools) != 1 || len(res.L2Advertisements) != 1 {
		var report strings.Builder
		_ = res.WriteReport(&report)
		t.Fatalf("translation: %d pools, %d L2Advertisements, complete %v:\n%s", len(res.Pools), len(res.L2Advertisements), res.Complete(), report.String())
	}
	for _, o := range []client.Object{&res.Pools[0], &res.L2Advertisements[0]} {
		if err := crClient.Create(ctx, o); err != nil {
			t.Fatalf("applying the translated %T %s: %v", o, o.GetName(), err)
		}
		t.Cleanup(func() { _ = crClient.Delete(context.Background(), o) })
	}
	createWeb(t, ns, "web", 2)
	readyPods(t, ns, "app=web", 2)
	single := corev1.IPFamilyPolicySingleStack
	for _, want := range []struct{ svc, ip string }{{"first", "2001:db8:1::1:30"}, {"second", "2001:db8:1::1:31"}} {
		lbService(t, ns, want.svc, func(s *corev1.Service) {
			s.Spec.IPFamilyPolicy = &single
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
		})
		got := externalIPs(t, ns, want.svc, 1)[0]
		if got != want.ip {
			t.Errorf("%s got %s; MetalLB would give %s (its range's lowest free address)", want.svc, got, want.ip)
		}
		curlOK(t, "http://["+got+"]/")
	}
}
