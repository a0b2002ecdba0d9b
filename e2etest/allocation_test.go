package e2etest

// Allocation as users meet it: pools, Services, and what kubectl shows.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/e2etest/lab"
)

// newPool creates a pool usable only from namespace ns (so tests cannot take
// each other's addresses) and deletes it when the test ends.
func newPool(t *testing.T, name, ns string, addrs []string, mutate ...func(*v1alpha1.IPAddressPool)) *v1alpha1.IPAddressPool {
	t.Helper()
	p := &v1alpha1.IPAddressPool{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.IPAddressPoolSpec{
			Addresses:         addrs,
			ServiceAllocation: &v1alpha1.ServiceAllocation{Namespaces: []string{ns}},
		},
	}
	for _, m := range mutate {
		m(p)
	}
	if err := crClient.Create(context.Background(), p); err != nil {
		t.Fatalf("create pool %s: %v", name, err)
	}
	t.Cleanup(func() { _ = crClient.Delete(context.Background(), p) })
	return p
}

// lbService creates a Service of type LoadBalancer for app=web on port 80.
func lbService(t *testing.T, ns, name string, mutate ...func(*corev1.Service)) *corev1.Service {
	t.Helper()
	svc := newLBService(ns, name, mutate...)
	if err := crClient.Create(context.Background(), svc); err != nil {
		t.Fatalf("create service %s: %v", name, err)
	}
	return svc
}

// newLBService is the Service lbService creates.
func newLBService(ns, name string, mutate ...func(*corev1.Service)) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP}},
		},
	}
	for _, m := range mutate {
		m(svc)
	}
	return svc
}

// externalIPs waits until the Service has n ingress addresses and returns them.
func externalIPs(t *testing.T, ns, name string, n int) []string {
	t.Helper()
	var ips []string
	eventually(t, 20*time.Second, fmt.Sprintf("%d EXTERNAL-IP(s) on %s/%s", n, ns, name), func(ctx context.Context) (bool, error) {
		var svc corev1.Service
		if err := crClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &svc); err != nil {
			return false, err
		}
		ips = ips[:0]
		for _, in := range svc.Status.LoadBalancer.Ingress {
			ips = append(ips, in.IP)
		}
		return len(ips) == n, nil
	})
	return ips
}

// allocatedCondition waits for the Service's IPAllocated condition to have
// the given status and reason, and returns it.
func allocatedCondition(t *testing.T, ns, name string, status metav1.ConditionStatus, reason string) metav1.Condition {
	t.Helper()
	var got metav1.Condition
	eventually(t, 20*time.Second, fmt.Sprintf("%s/%s condition %s=%s reason %s", ns, name, v1alpha1.ConditionIPAllocated, status, reason), func(ctx context.Context) (bool, error) {
		var svc corev1.Service
		if err := crClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &svc); err != nil {
			return false, err
		}
		c := meta.FindStatusCondition(svc.Status.Conditions, v1alpha1.ConditionIPAllocated)
		if c == nil {
			return false, nil
		}
		got = *c
		return c.Status == status && c.Reason == reason, nil
	})
	return got
}

// events lists "Reason: note" of the events about a Service, oldest first.
func events(t *testing.T, ns, name string) []string {
	t.Helper()
	return eventsMatching(t, ns, "regarding.name="+name)
}

// eventsMatching lists "Reason: note" of the events of namespace ns (all:
// metav1.NamespaceAll) the field selector matches, oldest first.
func eventsMatching(t *testing.T, ns, fieldSelector string) []string {
	t.Helper()
	list, err := theLab.Client.EventsV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: fieldSelector})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(list.Items, func(a, b eventsv1.Event) int { return a.EventTime.Compare(b.EventTime.Time) })
	var out []string
	for _, e := range list.Items {
		out = append(out, e.Reason+": "+e.Note)
	}
	return out
}

func TestServiceGetsLowestAddressOfARangeWithConditionAndEvent(t *testing.T) {
	ns := newNamespace(t)
	newPool(t, ns+"-range", ns, []string{"203.0.113.130-203.0.113.133"})
	lbService(t, ns, "web")
	if ips := externalIPs(t, ns, "web", 1); ips[0] != "203.0.113.130" {
		t.Fatalf("EXTERNAL-IP %v, want the range's first address 203.0.113.130", ips)
	}
	c := allocatedCondition(t, ns, "web", metav1.ConditionTrue, v1alpha1.ReasonIPAllocated)
	if c.Message != "203.0.113.130 from pool "+ns+"-range" {
		t.Errorf("condition message %q should name the address and its pool", c.Message)
	}
	eventually(t, 10*time.Second, "an IPAllocated event", func(context.Context) (bool, error) {
		ev := events(t, ns, "web")
		return len(ev) == 1 && strings.HasPrefix(ev[0], "IPAllocated: assigned 203.0.113.130"), nil
	})
	var svc corev1.Service
	_ = crClient.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "web"}, &svc)
	if m := svc.Status.LoadBalancer.Ingress[0].IPMode; m == nil || *m != corev1.LoadBalancerIPModeProxy {
		t.Errorf("ipMode %v, want Proxy: the speakers' dataplane (the chart's default) handles the address", m)
	}
}

func TestDualStackServiceGetsOneAddressPerFamilyFromCIDRs(t *testing.T) {
	ns := newNamespace(t)
	newPool(t, ns+"-ds", ns, []string{"203.0.113.136/30", "2001:db8:4::/126"})
	require := corev1.IPFamilyPolicyRequireDualStack
	lbService(t, ns, "ds", func(s *corev1.Service) { s.Spec.IPFamilyPolicy = &require })
	ips := externalIPs(t, ns, "ds", 2)
	if ips[0] != "203.0.113.136" || ips[1] != "2001:db8:4::" {
		t.Errorf("EXTERNAL-IPs %v, want [203.0.113.136 2001:db8:4::]", ips)
	}
	single := corev1.IPFamilyPolicySingleStack
	lbService(t, ns, "v6", func(s *corev1.Service) {
		s.Spec.IPFamilyPolicy = &single
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
	})
	if ips := externalIPs(t, ns, "v6", 1); ips[0] != "2001:db8:4::1" {
		t.Errorf("IPv6 single-stack got %v, want 2001:db8:4::1", ips)
	}
}

func TestRequestedAddressInsideOutsideAndTaken(t *testing.T) {
	ns := newNamespace(t)
	newPool(t, ns+"-req", ns, []string{"203.0.113.140/30"})
	lbService(t, ns, "inside", func(s *corev1.Service) {
		s.Annotations = map[string]string{v1alpha1.AnnotationLoadBalancerIPs: "203.0.113.142"}
	})
	if ips := externalIPs(t, ns, "inside", 1); ips[0] != "203.0.113.142" {
		t.Fatalf("asked for 203.0.113.142, got %v", ips)
	}
	lbService(t, ns, "outside", func(s *corev1.Service) { s.Spec.LoadBalancerIP = "203.0.113.250" })
	c := allocatedCondition(t, ns, "outside", metav1.ConditionFalse, "OutsidePools")
	if !strings.Contains(c.Message, "203.0.113.250") {
		t.Errorf("message %q should name the address", c.Message)
	}
	lbService(t, ns, "taken", func(s *corev1.Service) {
		s.Annotations = map[string]string{v1alpha1.AnnotationLoadBalancerIPs: "203.0.113.142"}
	})
	c = allocatedCondition(t, ns, "taken", metav1.ConditionFalse, "OwnedByOther")
	if !strings.Contains(c.Message, ns+"/inside") {
		t.Errorf("message %q should name the owner %s/inside", c.Message, ns)
	}
}

func TestSharingKeySharesAnAddressUnlessPortsClash(t *testing.T) {
	ns := newNamespace(t)
	newPool(t, ns+"-share", ns, []string{"203.0.113.144/30"})
	shared := func(port int32) func(*corev1.Service) {
		return func(s *corev1.Service) {
			s.Annotations = map[string]string{v1alpha1.AnnotationAllowSharedIP: "key-1"}
			s.Spec.Ports[0].Port = port
		}
	}
	lbService(t, ns, "http", shared(80))
	lbService(t, ns, "https", shared(443))
	a, b := externalIPs(t, ns, "http", 1), externalIPs(t, ns, "https", 1)
	if a[0] != b[0] {
		t.Fatalf("same sharing key, ports 80 and 443: got %v and %v, want one address", a, b)
	}
	// Same key but a port in use: it may not share, so it gets an address of its own.
	lbService(t, ns, "clash", shared(443))
	if c := externalIPs(t, ns, "clash", 1); c[0] == a[0] {
		t.Errorf("port 443 is taken on %s, yet a second Service on 443 got it too", a[0])
	}
	lbService(t, ns, "local", func(s *corev1.Service) {
		shared(8080)(s)
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Annotations[v1alpha1.AnnotationLoadBalancerIPs] = a[0]
	})
	c := allocatedCondition(t, ns, "local", metav1.ConditionFalse, "SharingConflict")
	if !strings.Contains(c.Message, "Local") {
		t.Errorf("policy clash message %q should say externalTrafficPolicy differs", c.Message)
	}
}

func TestPendingServiceGetsTheAddressFreedByAnother(t *testing.T) {
	ns := newNamespace(t)
	newPool(t, ns+"-one", ns, []string{"203.0.113.148"})
	lbService(t, ns, "first")
	externalIPs(t, ns, "first", 1)
	lbService(t, ns, "second")
	c := allocatedCondition(t, ns, "second", metav1.ConditionFalse, "PoolExhausted")
	if !strings.Contains(c.Message, ns+"-one") {
		t.Errorf("message %q should name the exhausted pool", c.Message)
	}
	// What a user sees: kubectl describe says why the Service is pending.
	out, err := kubectl("describe", "svc", "-n", ns, "second")
	if err != nil || !strings.Contains(out, "AllocationFailed") || !strings.Contains(out, "PoolExhausted") {
		t.Errorf("kubectl describe svc second does not say why it is pending:\n%s", out)
	}
	if err := crClient.Delete(context.Background(), &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "first"}}); err != nil {
		t.Fatal(err)
	}
	if ips := externalIPs(t, ns, "second", 1); ips[0] != "203.0.113.148" {
		t.Errorf("after the owner left, second got %v", ips)
	}
}

func TestDeletedPoolReleasesItsAddressesWhichGetReassigned(t *testing.T) {
	ns := newNamespace(t)
	doomed := newPool(t, ns+"-doomed", ns, []string{"203.0.113.152/31"}, func(p *v1alpha1.IPAddressPool) {
		p.Spec.ServiceAllocation.Priority = 1
	})
	newPool(t, ns+"-spare", ns, []string{"203.0.113.154/31"}, func(p *v1alpha1.IPAddressPool) {
		p.Spec.ServiceAllocation.Priority = 2
	})
	lbService(t, ns, "web")
	if ips := externalIPs(t, ns, "web", 1); ips[0] != "203.0.113.152" {
		t.Fatalf("priority 1 pool should serve first, got %v", ips)
	}
	if err := crClient.Delete(context.Background(), doomed); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "web to move to the spare pool", func(ctx context.Context) (bool, error) {
		ips := externalIPs(t, ns, "web", 1)
		return ips[0] == "203.0.113.154", nil
	})
	eventually(t, 10*time.Second, "an IPReleased event", func(context.Context) (bool, error) {
		for _, e := range events(t, ns, "web") {
			if strings.HasPrefix(e, "IPReleased: released 203.0.113.152") {
				return true, nil
			}
		}
		return false, nil
	})
}

func TestNamespaceAndServiceSelectorsRestrictPools(t *testing.T) {
	ns := newNamespace(t)
	other := newNamespace(t)
	newPool(t, ns+"-sel", ns, []string{"203.0.113.156/31"}, func(p *v1alpha1.IPAddressPool) {
		p.Spec.ServiceAllocation.ServiceSelectors = []metav1.LabelSelector{{MatchLabels: map[string]string{"tier": "edge"}}}
	})
	lbService(t, ns, "edge", func(s *corev1.Service) { s.Labels = map[string]string{"tier": "edge"} })
	externalIPs(t, ns, "edge", 1)
	lbService(t, ns, "internal", func(s *corev1.Service) { s.Labels = map[string]string{"tier": "db"} })
	allocatedCondition(t, ns, "internal", metav1.ConditionFalse, "NoMatchingPool")
	lbService(t, other, "edge", func(s *corev1.Service) { s.Labels = map[string]string{"tier": "edge"} })
	allocatedCondition(t, other, "edge", metav1.ConditionFalse, "NoMatchingPool")
}

func TestLoadBalancerClassOfAnotherImplementationIsLeftAlone(t *testing.T) {
	ns := newNamespace(t)
	newPool(t, ns+"-cls", ns, []string{"203.0.113.158/31"})
	other := "example.com/other-lb"
	lbService(t, ns, "theirs", func(s *corev1.Service) { s.Spec.LoadBalancerClass = &other })
	lbService(t, ns, "ours")
	externalIPs(t, ns, "ours", 1)
	var svc corev1.Service
	if err := crClient.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "theirs"}, &svc); err != nil {
		t.Fatal(err)
	}
	if len(svc.Status.LoadBalancer.Ingress) != 0 || len(svc.Status.Conditions) != 0 {
		t.Errorf("a Service of class %s got status from Herald: %+v", other, svc.Status)
	}
	// Changing the type away from LoadBalancer releases the address.
	ours := &corev1.Service{}
	_ = crClient.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "ours"}, ours)
	ours.Spec.Type = corev1.ServiceTypeClusterIP
	ours.Spec.Ports[0].NodePort = 0
	if err := crClient.Update(context.Background(), ours); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the ClusterIP Service's status to lose the address", func(ctx context.Context) (bool, error) {
		err := crClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "ours"}, ours)
		return err == nil && len(ours.Status.LoadBalancer.Ingress) == 0 && len(ours.Status.Conditions) == 0, err
	})
}

func TestControllerRestartKeepsEveryAddressEvenAfterPoolChanges(t *testing.T) {
	ns := newNamespace(t)
	newPool(t, ns+"-low", ns, []string{"2001:db8:4::100/120"}, func(p *v1alpha1.IPAddressPool) {
		p.Spec.ServiceAllocation.Priority = 5
	})
	single := corev1.IPFamilyPolicySingleStack
	v6 := func(s *corev1.Service) {
		s.Spec.IPFamilyPolicy = &single
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
	}
	before := map[string]string{}
	for i := range 20 {
		lbService(t, ns, fmt.Sprintf("s%d", i), v6)
	}
	for i := range 20 {
		before[fmt.Sprintf("s%d", i)] = externalIPs(t, ns, fmt.Sprintf("s%d", i), 1)[0]
	}
	keepRunning(t)
	hd.Controller().Kill()
	// While the controller is down a better pool appears; it must not
	// attract the Services that already have addresses. (The webhook, which
	// the controller serves, is down too and would refuse the pool: take
	// it out, as a cluster whose webhook is disabled would.)
	withoutWebhook(t)
	newPool(t, ns+"-high", ns, []string{"2001:db8:4::200/120"}, func(p *v1alpha1.IPAddressPool) {
		p.Spec.ServiceAllocation.Priority = 1
	})
	lbService(t, ns, "after", v6)
	if err := hd.StartController(); err != nil {
		t.Fatal(err)
	}
	for name, ip := range before {
		if got := externalIPs(t, ns, name, 1)[0]; got != ip {
			t.Errorf("%s: %s before the restart, %s after", name, ip, got)
		}
	}
	if got := externalIPs(t, ns, "after", 1)[0]; !netip.MustParsePrefix("2001:db8:4::200/120").Contains(netip.MustParseAddr(got)) {
		t.Errorf("a Service created while the controller was down got %s, want one from the priority-1 pool", got)
	}
}

// TestInvalidCRsAreRefusedAtApplyNamingTheField applies every sample in
// api/v1alpha1/testdata with kubectl: valid ones must be accepted, invalid
// ones refused with the message their "# expect:" line names.
func TestInvalidCRsAreRefusedAtApplyNamingTheField(t *testing.T) {
	// These are the CRDs' own single-object rules (CEL): without the webhook,
	// whose cross-object rules would also judge the samples against each other.
	withoutWebhook(t)
	repo, err := lab.RepoDir()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", filepath.Join(repo, "hack/check-crd-samples.sh"))
	cmd.Env = append(os.Environ(), "KUBECTL="+filepath.Join(theLab.BinDir, "kubectl"), "KUBECONFIG="+theLab.Kubeconfig)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("CRD samples: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	t.Log(lines[len(lines)-1])
}

func TestKubectlGetPoolsShowsUsage(t *testing.T) {
	ns := newNamespace(t)
	pool := newPool(t, ns+"-usage", ns, []string{"203.0.113.160/30", "2001:db8:4::1:0/120"})
	lbService(t, ns, "a")
	lbService(t, ns, "b")
	externalIPs(t, ns, "a", 1)
	externalIPs(t, ns, "b", 1)
	var out string
	eventually(t, 10*time.Second, "kubectl get ipaddresspools to show 2 assigned", func(context.Context) (bool, error) {
		var err error
		out, err = kubectl("get", "ipaddresspools", pool.Name, "--no-headers", "-o", "custom-columns=ASSIGNED:.status.assigned,V4FREE:.status.availableIPv4,V6FREE:.status.availableIPv6,ACCEPTED:.status.conditions[0].status")
		return strings.Fields(out) != nil && strings.Join(strings.Fields(out), " ") == "2 2 256 True", err
	})
	table, err := kubectl("get", "ipaddresspools", pool.Name)
	if err != nil {
		t.Fatal(err)
	}
	header := strings.Fields(strings.Split(table, "\n")[0])
	for _, col := range []string{"ADDRESSES", "ASSIGNED", "AVAILABLE", "AGE"} {
		if !slices.Contains(header, col) {
			t.Errorf("kubectl get ipaddresspools lacks column %s:\n%s", col, table)
		}
	}
	if allocs := metric(t, `herald_controller_allocations_total{result="IPAllocated"}`); allocs == "" || allocs == "0" {
		t.Errorf("herald_controller_allocations_total{result=\"IPAllocated\"} = %q after allocations", allocs)
	}
}

func TestRefusedPoolChangeLeavesTheLastAcceptedVersionInForce(t *testing.T) {
	ns := newNamespace(t)
	newPool(t, ns+"-a", ns, []string{"203.0.113.164/31"})
	b := newPool(t, ns+"-b", ns, []string{"203.0.113.166/31"})
	lbService(t, ns, "web", func(s *corev1.Service) {
		s.Annotations = map[string]string{v1alpha1.AnnotationAddressPool: b.Name}
	})
	ip := externalIPs(t, ns, "web", 1)[0]
	// Without the webhook (disabled, or racing an install) the overlap gets
	// in: the controller itself must refuse it at run time.
	withoutWebhook(t)
	var cur v1alpha1.IPAddressPool
	if err := crClient.Get(context.Background(), types.NamespacedName{Name: b.Name}, &cur); err != nil {
		t.Fatal(err)
	}
	cur.Spec.Addresses = []string{"203.0.113.164/30"}
	if err := crClient.Update(context.Background(), &cur); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "pool b to report Accepted=False", func(ctx context.Context) (bool, error) {
		err := crClient.Get(ctx, types.NamespacedName{Name: b.Name}, &cur)
		c := meta.FindStatusCondition(cur.Status.Conditions, v1alpha1.ConditionAccepted)
		return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, "stays in force") && strings.Contains(c.Message, "spec.addresses[0]"), err
	})
	if got := externalIPs(t, ns, "web", 1)[0]; got != ip {
		t.Errorf("the Service moved from %s to %s although the pool change was refused", ip, got)
	}
}

func TestOverlappingPoolIsRefusedByTheWebhookAtApply(t *testing.T) {
	ns := newNamespace(t)
	newPool(t, ns+"-first", ns, []string{"203.0.113.168/30"})
	manifest := fmt.Sprintf(`apiVersion: herald.dev/v1alpha1
kind: IPAddressPool
metadata:
  name: %s-second
spec:
  addresses: ["203.0.113.170-203.0.113.171"]
`, ns)
	out, err := kubectlIn(manifest, "apply", "-f", "-")
	if err == nil {
		_, _ = kubectl("delete", "ipaddresspool", ns+"-second")
		t.Fatalf("an overlapping pool was accepted:\n%s", out)
	}
	for _, want := range []string{"denied the request", "spec.addresses[0]", ns + "-first"} {
		if !strings.Contains(out, want) {
			t.Errorf("refusal should mention %q:\n%s", want, out)
		}
	}
	// An advertisement naming a pool that does not exist is a warning, not an error.
	adv := fmt.Sprintf(`apiVersion: herald.dev/v1alpha1
kind: L2Advertisement
metadata:
  name: %s-adv
spec:
  ipAddressPools: ["no-such-pool"]
`, ns)
	out, err = kubectlIn(adv, "apply", "-f", "-")
	defer kubectl("delete", "l2advertisement", ns+"-adv")
	if err != nil || !strings.Contains(out, "Warning") || !strings.Contains(out, "no-such-pool") {
		t.Errorf("advertisement naming a missing pool: want accepted with a warning, got %v:\n%s", err, out)
	}
}

// withoutWebhook removes the ValidatingWebhookConfiguration for the rest of
// the test and puts the same object back afterwards.
func withoutWebhook(t *testing.T) {
	t.Helper()
	wh := theLab.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	saved, err := wh.Get(context.Background(), "herald-validating-webhook", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Delete(context.Background(), saved.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The API server learns of the deletion through a watch: until then it
	// still calls the webhook. A pool inside the Service CIDR, which the
	// webhook refuses, is accepted (dry run) once it no longer does.
	eventually(t, 10*time.Second, "the API server to stop calling the webhook", func(ctx context.Context) (bool, error) {
		probe := &v1alpha1.IPAddressPool{
			ObjectMeta: metav1.ObjectMeta{Name: "webhook-off-probe"},
			Spec:       v1alpha1.IPAddressPoolSpec{Addresses: []string{"203.0.113.126/32"}},
		}
		return crClient.Create(ctx, probe, client.DryRunAll) == nil, nil
	})
	t.Cleanup(func() {
		saved.ResourceVersion, saved.UID = "", ""
		if _, err := wh.Create(context.Background(), saved, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestPendingServiceGetsItsAddressOnceItsNamespaceIsLabelled(t *testing.T) {
	ns := newNamespace(t)
	newPool(t, ns+"-prod", ns, []string{"203.0.113.172/31"}, func(p *v1alpha1.IPAddressPool) {
		p.Spec.ServiceAllocation.NamespaceSelectors = []metav1.LabelSelector{{MatchLabels: map[string]string{"env": "prod"}}}
	})
	lbService(t, ns, "web")
	allocatedCondition(t, ns, "web", metav1.ConditionFalse, "NoMatchingPool")
	if out, err := kubectl("label", "namespace", ns, "env=prod"); err != nil {
		t.Fatalf("kubectl label: %v\n%s", err, out)
	}
	if got := externalIPs(t, ns, "web", 1)[0]; got != "203.0.113.172" {
		t.Errorf("EXTERNAL-IP %s, want 203.0.113.172", got)
	}
}

// poolAccepted waits for the pool's Accepted condition to have the given
// status and reason, and returns it.
func poolAccepted(t *testing.T, name string, status metav1.ConditionStatus, reason string) metav1.Condition {
	t.Helper()
	var got metav1.Condition
	eventually(t, 20*time.Second, fmt.Sprintf("pool %s Accepted=%s reason %s", name, status, reason), func(ctx context.Context) (bool, error) {
		var p v1alpha1.IPAddressPool
		if err := crClient.Get(ctx, types.NamespacedName{Name: name}, &p); err != nil {
			return false, err
		}
		c := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionAccepted)
		if c == nil {
			return false, nil
		}
		got = *c
		return c.Status == status && c.Reason == reason, nil
	})
	return got
}

func TestPoolHoldingClusterIPsOrNodeAddressesIsRefusedAtApplyAndNeverUsed(t *testing.T) {
	ns := newNamespace(t)
	for _, tc := range []struct{ addrs, want string }{
		{"203.0.113.100-203.0.113.101", "overlaps ServiceCIDR kubernetes (" + lab.ServiceCIDRv4 + ")"},
		{"198.51.100.8/29", "overlaps node "},
	} {
		manifest := fmt.Sprintf("apiVersion: herald.dev/v1alpha1\nkind: IPAddressPool\nmetadata:\n  name: %s-reserved\nspec:\n  addresses: [%q]\n", ns, tc.addrs)
		out, err := kubectlIn(manifest, "apply", "-f", "-")
		if err == nil {
			_, _ = kubectl("delete", "ipaddresspool", ns+"-reserved")
			t.Fatalf("pool %s was accepted:\n%s", tc.addrs, out)
		}
		for _, want := range []string{"denied the request", "spec.addresses[0]", tc.want} {
			if !strings.Contains(out, want) {
				t.Errorf("refusal of %s should mention %q:\n%s", tc.addrs, want, out)
			}
		}
	}
	// One that slips in (webhook off) is not Accepted and serves no Service.
	withoutWebhook(t)
	newPool(t, ns+"-clusterips", ns, []string{"203.0.113.100-203.0.113.101"})
	c := poolAccepted(t, ns+"-clusterips", metav1.ConditionFalse, "OverlapsClusterAddresses")
	if !strings.Contains(c.Message, "ServiceCIDR kubernetes") {
		t.Errorf("Accepted message %q should name the ServiceCIDR", c.Message)
	}
	lbService(t, ns, "web")
	allocatedCondition(t, ns, "web", metav1.ConditionFalse, "NoMatchingPool")
}
