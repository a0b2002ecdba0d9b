package allocation

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/controller/ipam"
	"github.com/heraldlb/herald/controller/kubeproxy"
	"github.com/heraldlb/herald/internal/apiservertest"
	"github.com/heraldlb/herald/internal/model"
	heraldscheme "github.com/heraldlb/herald/internal/scheme"
	"github.com/heraldlb/herald/speaker/lease"
)

// The tests of this file run the controller, as main runs it, against a real
// kube-apiserver (package apiservertest); one server serves them all, each
// test in its own namespace.

var (
	apiOnce   sync.Once
	apiServer *apiservertest.Server
	// asController acts as the chart's controller ServiceAccount.
	asController *rest.Config
	apiErr       error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if apiServer != nil {
		apiServer.Stop()
	}
	os.Exit(code)
}

// realAPI starts the shared API server on first use and returns a config
// for the test (admin) and one for the controller (the chart's RBAC); the
// test is skipped when the lab's binaries or helm are missing.
func realAPI(t *testing.T) (admin, controller *rest.Config) {
	t.Helper()
	apiOnce.Do(func() {
		if apiServer, apiErr = apiservertest.Start(); apiErr == nil {
			asController, apiErr = apiServer.AsChartController()
		}
	})
	if errors.Is(apiErr, apiservertest.ErrNoBinaries) || errors.Is(apiErr, apiservertest.ErrNoHelm) {
		t.Skip(apiErr)
	}
	if apiErr != nil {
		t.Fatal(apiErr)
	}
	return rest.CopyConfig(apiServer.Config), rest.CopyConfig(asController)
}

var skipNameValidation = true

// runController runs the controller with opts until the test ends or stop
// is called, and waits until it has rebuilt its state.
func runController(t *testing.T, cfg *rest.Config, opts Options) (stop func()) {
	t.Helper()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 heraldscheme.New(),
		Cache:                  CacheOptions("herald-system"),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// One process runs the controller several times (a restart).
		Controller: config.Controller{SkipNameValidation: &skipNameValidation},
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(mgr, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("controller stopped: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-c.Ready():
	case err := <-done:
		t.Fatalf("controller stopped before it was ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("controller not ready after 60s")
	}
	return stop
}

func adminClient(t *testing.T, cfg *rest.Config) client.Client {
	t.Helper()
	c, err := client.New(cfg, client.Options{Scheme: heraldscheme.New()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustCreate(t *testing.T, c client.Client, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := c.Create(context.Background(), o); err != nil {
			t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}
}

// realEnv is one test's side of the shared API server: an admin client and
// clientset (watches, events) to act as a user, and the controller's config
// under the chart's RBAC.
type realEnv struct {
	t     *testing.T
	ctx   context.Context
	admin client.Client
	cs    kubernetes.Interface
	ctl   *rest.Config
}

func newRealEnv(t *testing.T) *realEnv {
	t.Helper()
	cfg, ctlCfg := realAPI(t)
	return &realEnv{t: t, ctx: context.Background(), admin: adminClient(t, cfg), cs: kubernetes.NewForConfigOrDie(cfg), ctl: ctlCfg}
}

// namespaceWithPool creates namespace ns and a pool of the same name holding
// addrs for ns alone: Services other tests leave pending in the shared API
// server would otherwise take its addresses. The pool, which is
// cluster-scoped, is deleted when the test ends.
func (e *realEnv) namespaceWithPool(ns string, addrs ...string) *v1alpha1.IPAddressPool {
	e.t.Helper()
	pool := onlyNamespaces(testPool(ns, 0, addrs...), ns)
	mustCreate(e.t, e.admin, namespace(ns, nil), pool)
	e.t.Cleanup(func() { _ = e.admin.Delete(context.Background(), testPool(ns, 0)) })
	return pool
}

// condition is the IPAllocated condition of Service ns/name; nil when it
// has none.
func (e *realEnv) condition(ns, name string) *metav1.Condition {
	e.t.Helper()
	var svc corev1.Service
	if err := e.admin.Get(e.ctx, nn(ns, name), &svc); err != nil {
		e.t.Fatal(err)
	}
	return meta.FindStatusCondition(svc.Status.Conditions, v1alpha1.ConditionIPAllocated)
}

// poolAccepted is the Accepted condition of pool name; nil when it has none.
func (e *realEnv) poolAccepted(name string) *metav1.Condition {
	e.t.Helper()
	var p v1alpha1.IPAddressPool
	if err := e.admin.Get(e.ctx, client.ObjectKey{Name: name}, &p); err != nil {
		e.t.Fatal(err)
	}
	return meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionAccepted)
}

// waitIPModes waits until every Service of names in ns has one ingress
// entry, with ipMode mode, and returns their addresses by name. With was (an
// earlier call's result) each address must be the one it had then: a switch
// of ipMode never moves an address.
func (e *realEnv) waitIPModes(ns string, names []string, mode, when string, was map[string]string) map[string]string {
	e.t.Helper()
	got := map[string]string{}
	for _, name := range names {
		eventually(e.t, fmt.Sprintf("%s has an address with ipMode %s %s", name, mode, when), func() (bool, string) {
			in := ingressOf(e.t, e.admin, ns, name)
			if len(in) != 1 || modeOf(in[0]) != mode {
				return false, fmt.Sprintf("ingress %s, condition %v", ingressString(in), e.condition(ns, name))
			}
			got[name] = in[0].IP
			return true, ""
		})
		if was != nil && got[name] != was[name] {
			e.t.Errorf("%s: EXTERNAL-IP %s %s, was %s", name, got[name], when, was[name])
		}
	}
	return got
}

// eventually polls cond every 50ms until it holds or 30s passed.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var ok bool
		if ok, last = cond(); ok {
			return
		}
	}
	t.Fatalf("%s: not after 30s; last: %s", what, last)
}

func ingressOf(t *testing.T, c client.Client, ns, name string) []corev1.LoadBalancerIngress {
	t.Helper()
	var svc corev1.Service
	if err := c.Get(context.Background(), nn(ns, name), &svc); err != nil {
		t.Fatal(err)
	}
	return svc.Status.LoadBalancer.Ingress
}

func modeOf(in corev1.LoadBalancerIngress) string {
	if in.IPMode == nil {
		return "<none>"
	}
	return string(*in.IPMode)
}

// TestSwitchingToProxyRewritesIPModeOnceKeepingTheAddress: the controller
// restarted with another --ip-mode (the dataplane switched on) rewrites
// ipMode on every Service it manages, one write each, and no address moves:
// kube-proxy then leaves the address to Herald's dataplane without a gap
// longer than that write.
func TestSwitchingToProxyRewritesIPModeOnceKeepingTheAddress(t *testing.T) {
	e := newRealEnv(t)
	const ns = "ipmode-switch"
	e.namespaceWithPool(ns, "203.0.113.16/29")
	names := []string{"web", "api"}
	mustCreate(t, e.admin, lbService(ns, "web"), lbService(ns, "api"))

	stop := runController(t, e.ctl, Options{IPMode: corev1.LoadBalancerIPModeVIP})
	assigned := e.waitIPModes(ns, names, "VIP", "at first", nil)
	stop()

	// Every write of the Services from here on, as the API server sees it.
	w := watchServices(t, e.cs, ns)

	runController(t, e.ctl, Options{IPMode: corev1.LoadBalancerIPModeProxy})
	e.waitIPModes(ns, names, "Proxy", "after the switch", assigned)
	checkWritesEach(t, w, names, 1, "after the switch")
}

// ingressString shows an ingress list as kubectl get -o yaml would.
func ingressString(in []corev1.LoadBalancerIngress) string {
	var parts []string
	for _, e := range in {
		parts = append(parts, fmt.Sprintf("{ip: %s, ipMode: %s, ports: %v}", e.IP, modeOf(e), e.Ports))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// checkWritesEach collects the writes the watch w reports until it is
// quiet for 2s, and checks each Service of names was written exactly want
// times.
func checkWritesEach(t *testing.T, w watch.Interface, names []string, want int, when string) {
	t.Helper()
	writes := map[string]int{}
	for quiet := time.After(2 * time.Second); ; {
		select {
		case ev := <-w.ResultChan():
			if ev.Type != watch.Modified {
				t.Errorf("unexpected %s of %v", ev.Type, ev.Object)
				continue
			}
			writes[ev.Object.(*corev1.Service).Name]++
			quiet = time.After(2 * time.Second)
			continue
		case <-quiet:
		}
		break
	}
	for _, name := range names {
		if writes[name] != want {
			t.Errorf("%s written %d times %s, want exactly %d", name, writes[name], when, want)
		}
	}
}

// watchServices watches the Services of ns from now on, as the API server
// sees them.
func watchServices(t *testing.T, cs kubernetes.Interface, ns string) watch.Interface {
	t.Helper()
	list, err := cs.CoreV1().Services(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := cs.CoreV1().Services(ns).Watch(context.Background(), metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return w
}

// speakerLease is node's speaker Lease in herald-system, renewed now, as a
// speaker running dataplane writes it.
func speakerLease(node, dataplane string, duration time.Duration) *coordinationv1.Lease {
	now := metav1.NewMicroTime(time.Now())
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "herald-system", Name: "herald-speaker-" + node,
			Annotations: map[string]string{lease.AnnotationDataplane: dataplane}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(node), RenewTime: &now, AcquireTime: &now,
			LeaseDurationSeconds: ptr.To(int32(duration / time.Second))},
	}
}

// TestAutoIPModeFollowsTheSpeakersLeases: with --ip-mode auto, ipMode is
// Proxy while every speaker's fresh Lease says it runs a dataplane; one
// speaker switching its dataplane off (a helm upgrade rolling the
// DaemonSet) rewrites every Service to VIP, once each, with its addresses
// unchanged, and back; a Lease saying off stops counting once it expires,
// though nothing writes it again.
func TestAutoIPModeFollowsTheSpeakersLeases(t *testing.T) {
	e := newRealEnv(t)
	c, ctx := e.admin, e.ctx
	const ns = "ipmode-auto"
	names := []string{"web", "api", "db"}
	n1, n2 := speakerLease("node-1", "nftables", time.Hour), speakerLease("node-2", "nftables", time.Hour)
	mustCreate(t, c, n1, n2)
	t.Cleanup(func() {
		_ = c.Delete(ctx, n1)
		_ = c.Delete(ctx, n2)
	})
	e.namespaceWithPool(ns, "203.0.113.64/29")
	for _, name := range names {
		mustCreate(t, c, lbService(ns, name))
	}

	runController(t, e.ctl, Options{Namespace: "herald-system"})
	assigned := e.waitIPModes(ns, names, "Proxy", "while both speakers run nftables", nil)
	// The controller's view of n2 is its latest version.
	setLease := func(l *coordinationv1.Lease, dataplane string, duration time.Duration) {
		t.Helper()
		fresh := speakerLease(strings.TrimPrefix(l.Name, "herald-speaker-"), dataplane, duration)
		if err := c.Get(ctx, client.ObjectKeyFromObject(l), l); err != nil {
			t.Fatal(err)
		}
		l.Annotations, l.Spec = fresh.Annotations, fresh.Spec
		if err := c.Update(ctx, l); err != nil {
			t.Fatal(err)
		}
	}

	w := watchServices(t, e.cs, ns)
	setLease(n2, "off", time.Hour)
	e.waitIPModes(ns, names, "VIP", "once node-2's speaker runs without a dataplane", assigned)
	checkWritesEach(t, w, names, 1, "after the switch to VIP")

	w = watchServices(t, e.cs, ns)
	setLease(n2, "nftables", time.Hour)
	e.waitIPModes(ns, names, "Proxy", "once node-2's speaker runs nftables again", assigned)
	checkWritesEach(t, w, names, 1, "after the switch back to Proxy")

	// node-2's speaker says off and then stops renewing: once its Lease
	// expires, only node-1's counts.
	const short = 4 * time.Second
	w = watchServices(t, e.cs, ns)
	setLease(n2, "off", short)
	expireAt := time.Now().Add(short)
	e.waitIPModes(ns, names, "VIP", "while node-2's off Lease is fresh", assigned)
	if time.Now().After(expireAt) {
		t.Fatal("the switch to VIP took longer than the Lease lived; cannot tell the expiry apart")
	}
	e.waitIPModes(ns, names, "Proxy", "once node-2's off Lease expired", assigned)
	if early := expireAt.Sub(time.Now()); early > 500*time.Millisecond {
		t.Errorf("back to Proxy %v before node-2's off Lease expired", early)
	}
	if late := time.Since(expireAt); late > 3*time.Second {
		t.Errorf("back to Proxy %v after node-2's off Lease expired, want within about a sync", late)
	}
	checkWritesEach(t, w, names, 2, "across the switch to VIP and back")
}

// eventsAbout lists the events recorded about an object of that name, in
// any namespace, with the given reason.
func eventsAbout(t *testing.T, cs kubernetes.Interface, name, reason string) []eventsv1.Event {
	t.Helper()
	l, err := cs.EventsV1().Events("").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []eventsv1.Event
	for _, e := range l.Items {
		if e.Regarding.Name == name && e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

func kubeProxyConfigMap(conf string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: kubeproxy.ConfigMapNamespace, Name: kubeproxy.ConfigMapName},
		Data:       map[string]string{kubeproxy.ConfigKey: conf},
	}
}

// TestKubeProxyIPVSWithoutStrictARPIsOnEveryL2AdvertisementOnce: with the
// dataplane off and kube-proxy in IPVS mode without strictARP, every
// L2Advertisement says so in a condition, with one warning however often
// the configuration is judged again; setting strictARP takes the condition
// away.
func TestKubeProxyIPVSWithoutStrictARPIsOnEveryL2AdvertisementOnce(t *testing.T) {
	e := newRealEnv(t)
	c, cs, ctx := e.admin, e.cs, e.ctx
	const head = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n"
	cm := kubeProxyConfigMap(head + "ipvs:\n  scheduler: rr\n")
	ads := []string{"strictarp-lan", "strictarp-dmz"}
	mustCreate(t, c, cm, &v1alpha1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: ads[0]}}, &v1alpha1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: ads[1]}})
	t.Cleanup(func() {
		_ = c.Delete(ctx, cm)
		for _, name := range ads {
			_ = c.Delete(ctx, &v1alpha1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: name}})
		}
	})
	runController(t, e.ctl, Options{IPMode: corev1.LoadBalancerIPModeVIP})

	condition := func(name string) *metav1.Condition {
		var ad v1alpha1.L2Advertisement
		if err := c.Get(ctx, client.ObjectKey{Name: name}, &ad); err != nil {
			t.Fatal(err)
		}
		return meta.FindStatusCondition(ad.Status.Conditions, v1alpha1.ConditionKubeProxyStrictARP)
	}
	for _, name := range ads {
		eventually(t, name+" says strictARP is off", func() (bool, string) {
			cond := condition(name)
			return cond != nil && cond.Status == metav1.ConditionFalse && cond.Reason == kubeproxy.ReasonStrictARPDisabled, fmt.Sprint(cond)
		})
		if msg := condition(name).Message; !strings.Contains(msg, "kubectl edit configmap -n kube-system kube-proxy") {
			t.Errorf("%s: message %q does not say how to fix it", name, msg)
		}
		eventually(t, name+" has its warning", func() (bool, string) {
			n := len(eventsAbout(t, cs, name, kubeproxy.ReasonStrictARPDisabled))
			return n >= 1, fmt.Sprintf("%d events", n)
		})
	}

	// Judged again (kube-proxy's ConfigMap changed, the problem stays; a new
	// pool): no second warning.
	cm.Data[kubeproxy.ConfigKey] = head + "ipvs:\n  scheduler: lc\n"
	if err := c.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, c, testPool("strictarp", 0, "203.0.113.40/30"))
	t.Cleanup(func() { _ = c.Delete(ctx, testPool("strictarp", 0)) })
	eventually(t, "the pool is judged", func() (bool, string) {
		var p v1alpha1.IPAddressPool
		if err := c.Get(ctx, client.ObjectKey{Name: "strictarp"}, &p); err != nil {
			return false, err.Error()
		}
		return meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionAccepted) != nil, fmt.Sprint(p.Status.Conditions)
	})
	time.Sleep(time.Second) // events are written off the deciding path
	for _, name := range ads {
		if n := len(eventsAbout(t, cs, name, kubeproxy.ReasonStrictARPDisabled)); n != 1 {
			t.Errorf("%s: %d %s events, want exactly 1", name, n, kubeproxy.ReasonStrictARPDisabled)
		}
	}

	// The fix: strictARP true.
	cm.Data[kubeproxy.ConfigKey] = head + "ipvs:\n  scheduler: lc\n  strictARP: true\n"
	if err := c.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	for _, name := range ads {
		eventually(t, name+" no longer says strictARP is off", func() (bool, string) {
			cond := condition(name)
			return cond == nil, fmt.Sprint(cond)
		})
		eventually(t, name+" has one event saying it is resolved", func() (bool, string) {
			n := len(eventsAbout(t, cs, name, kubeproxy.ReasonStrictARPResolved))
			return n == 1, fmt.Sprintf("%d events", n)
		})
	}
}

// TestServicesMetalLBLeftAreAdoptedWithOneStatusWriteEach: Services as
// MetalLB leaves them (its annotations, addresses in their status, no
// condition of Herald's) when Herald's controller first starts: each keeps
// its ingress exactly and is written once (the condition); the address in
// no pool stays with a False condition and a warning; the Service that asks
// through metallb.universe.tf/loadBalancerIPs gets that address.
func TestServicesMetalLBLeftAreAdoptedWithOneStatusWriteEach(t *testing.T) {
	e := newRealEnv(t)
	c, cs, ctx := e.admin, e.cs, e.ctx
	const ns = "adopt"
	e.namespaceWithPool(ns, "198.51.100.208/28")
	left := map[string]string{"web": "198.51.100.213", "api": "198.51.100.209", "legacy": "203.0.113.250"}
	for name, ip := range left {
		svc := lbService(ns, name, withAnnotations("metallb.universe.tf/ip-allocated-from-pool", "adopt"))
		if name == "legacy" {
			svc.Annotations["metallb.universe.tf/ip-allocated-from-pool"] = "old"
		}
		mustCreate(t, c, svc)
		svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip, IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)}}
		if err := c.Status().Update(ctx, svc); err != nil {
			t.Fatalf("setting %s/%s's status as MetalLB does: %v", ns, name, err)
		}
	}
	mustCreate(t, c, lbService(ns, "pinned", withAnnotations("metallb.universe.tf/loadBalancerIPs", "198.51.100.220")))
	before := map[string][]corev1.LoadBalancerIngress{}
	for name := range left {
		before[name] = ingressOf(t, c, ns, name)
	}

	w := watchServices(t, cs, ns)
	runController(t, e.ctl, Options{IPMode: corev1.LoadBalancerIPModeVIP})
	condition := func(name string) *metav1.Condition { return e.condition(ns, name) }
	for name := range left {
		eventually(t, name+" has Herald's condition", func() (bool, string) {
			cond := condition(name)
			return cond != nil, fmt.Sprint(cond)
		})
		if got := ingressOf(t, c, ns, name); !apiequality.Semantic.DeepEqual(got, before[name]) {
			t.Errorf("%s: ingress %s once Herald started, was %s", name, ingressString(got), ingressString(before[name]))
		}
	}
	eventually(t, "pinned gets 198.51.100.220", func() (bool, string) {
		in := ingressOf(t, c, ns, "pinned")
		return len(in) == 1 && in[0].IP == "198.51.100.220", fmt.Sprint(in)
	})
	checkWritesEach(t, w, []string{"web", "api", "legacy", "pinned"}, 1, "when Herald started")

	for _, name := range []string{"web", "api"} {
		if cond := condition(name); cond.Status != metav1.ConditionTrue || cond.Message != left[name]+" from pool adopt" {
			t.Errorf("%s: condition %+v, want True: %s from pool adopt", name, cond, left[name])
		}
	}
	cond := condition("legacy")
	if cond.Status != metav1.ConditionFalse || cond.Reason != v1alpha1.ReasonIPNotAdopted || !strings.Contains(cond.Message, "203.0.113.250") || !strings.Contains(cond.Message, "MetalLB's pool old") {
		t.Errorf("legacy: condition %+v, want False %s naming the address and MetalLB's pool", cond, v1alpha1.ReasonIPNotAdopted)
	}
	eventually(t, "legacy has an "+v1alpha1.ReasonIPNotAdopted+" warning", func() (bool, string) {
		evs := eventsAbout(t, cs, "legacy", v1alpha1.ReasonIPNotAdopted)
		return len(evs) == 1 && evs[0].Type == corev1.EventTypeWarning && strings.Contains(evs[0].Note, "203.0.113.250"), fmt.Sprint(evs)
	})
}

// TestLabellingTheNamespaceGivesItsPendingServiceAnAddress: a pool that
// selects namespaces by label leaves the Service of an unlabelled namespace
// pending, saying NoMatchingPool; labelling the namespace, and nothing else,
// gives it the pool's address (the controller watches namespaces' labels
// and wakes their pending Services). A Service whose namespace stays
// unlabelled stays pending.
func TestLabellingTheNamespaceGivesItsPendingServiceAnAddress(t *testing.T) {
	e := newRealEnv(t)
	const ns, other = "ns-labels", "ns-labels-other"
	pool := testPool(ns, 0, "203.0.113.88/30")
	pool.Spec.ServiceAllocation = &v1alpha1.ServiceAllocation{NamespaceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"env": "prod"}}}}
	mustCreate(t, e.admin, namespace(ns, nil), namespace(other, nil), pool, lbService(ns, "web"), lbService(other, "web"))
	t.Cleanup(func() { _ = e.admin.Delete(context.Background(), testPool(ns, 0)) })

	runController(t, e.ctl, Options{IPMode: corev1.LoadBalancerIPModeVIP})
	for _, n := range []string{ns, other} {
		eventually(t, n+"/web says no pool matches", func() (bool, string) {
			c := e.condition(n, "web")
			return c != nil && c.Status == metav1.ConditionFalse && c.Reason == string(ipam.ReasonNoMatchingPool), fmt.Sprint(c)
		})
	}

	var labelled corev1.Namespace
	if err := e.admin.Get(e.ctx, client.ObjectKey{Name: ns}, &labelled); err != nil {
		t.Fatal(err)
	}
	labelled.Labels = map[string]string{"env": "prod", corev1.LabelMetadataName: ns}
	if err := e.admin.Update(e.ctx, &labelled); err != nil {
		t.Fatal(err)
	}
	got := e.waitIPModes(ns, []string{"web"}, "VIP", "once its namespace is labelled env=prod", nil)
	if got["web"] != "203.0.113.88" {
		t.Errorf("%s/web: EXTERNAL-IP %s, want the pool's first address 203.0.113.88", ns, got["web"])
	}
	if c := e.condition(ns, "web"); c.Status != metav1.ConditionTrue || c.Message != "203.0.113.88 from pool "+ns {
		t.Errorf("%s/web: condition %+v, want True: 203.0.113.88 from pool %s", ns, c, ns)
	}
	if in, c := ingressOf(t, e.admin, other, "web"), e.condition(other, "web"); len(in) != 0 || c.Reason != string(ipam.ReasonNoMatchingPool) {
		t.Errorf("%s/web, whose namespace has no label: ingress %s, condition %+v; want none, %s", other, ingressString(in), c, ipam.ReasonNoMatchingPool)
	}
}

// TestServiceCIDRCreatedOverAPoolTakesItsAcceptance: Service CIDRs can grow
// at run time (networking.k8s.io/v1 ServiceCIDR, Kubernetes 1.33). A pool
// in use when a ServiceCIDR holding some of its addresses is created is
// then Accepted False, reason OverlapsClusterAddresses, naming the
// ServiceCIDR, with one ConfigRefused warning; the Service holding such an
// address moves to one of the pool's others, the other Service keeps its
// own. Once the ServiceCIDR is gone the pool is accepted again and nothing
// moves back.
func TestServiceCIDRCreatedOverAPoolTakesItsAcceptance(t *testing.T) {
	e := newRealEnv(t)
	const name = "cidr-guard"
	e.namespaceWithPool(name, "10.200.0.7-10.200.0.9")
	mustCreate(t, e.admin, lbService(name, "a"))
	runController(t, e.ctl, Options{IPMode: corev1.LoadBalancerIPModeVIP})
	if got := e.waitIPModes(name, []string{"a"}, "VIP", "at first", nil); got["a"] != "10.200.0.7" {
		t.Fatalf("a: EXTERNAL-IP %s, want 10.200.0.7", got["a"])
	}
	mustCreate(t, e.admin, lbService(name, "b"))
	if got := e.waitIPModes(name, []string{"b"}, "VIP", "at first", nil); got["b"] != "10.200.0.8" {
		t.Fatalf("b: EXTERNAL-IP %s, want 10.200.0.8", got["b"])
	}
	eventually(t, "the pool is accepted", func() (bool, string) {
		c := e.poolAccepted(name)
		return c != nil && c.Status == metav1.ConditionTrue, fmt.Sprint(c)
	})

	cidr := &networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.200.0.0/29"}}}
	mustCreate(t, e.admin, cidr)
	removeServiceCIDR := func() {
		// No kube-controller-manager runs here to remove the finalizer
		// that keeps a ServiceCIDR until its ClusterIPs are gone.
		_ = e.admin.Delete(context.Background(), cidr)
		if err := e.admin.Get(context.Background(), client.ObjectKeyFromObject(cidr), cidr); err == nil {
			cidr.Finalizers = nil
			_ = e.admin.Update(context.Background(), cidr)
		}
	}
	t.Cleanup(removeServiceCIDR)
	const want = "spec.addresses[0]: 10.200.0.7-10.200.0.9 overlaps ServiceCIDR " + name + " (10.200.0.0/29)"
	eventually(t, "the pool is refused, naming the ServiceCIDR", func() (bool, string) {
		c := e.poolAccepted(name)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == model.ReasonClusterAddresses && strings.Contains(c.Message, want), fmt.Sprint(c)
	})
	eventually(t, "one ConfigRefused warning about the pool", func() (bool, string) {
		evs := eventsAbout(t, e.cs, name, "ConfigRefused")
		return len(evs) == 1 && evs[0].Type == corev1.EventTypeWarning && strings.Contains(evs[0].Note, "ServiceCIDR "+name), fmt.Sprint(evs)
	})
	eventually(t, "a, on a ClusterIP address, moves to the pool's free address", func() (bool, string) {
		in := ingressOf(t, e.admin, name, "a")
		return len(in) == 1 && in[0].IP == "10.200.0.9", ingressString(in)
	})
	if in := ingressOf(t, e.admin, name, "b"); len(in) != 1 || in[0].IP != "10.200.0.8" {
		t.Errorf("b: ingress %s, want 10.200.0.8 kept", ingressString(in))
	}

	removeServiceCIDR()
	eventually(t, "the pool is accepted again once the ServiceCIDR is gone", func() (bool, string) {
		c := e.poolAccepted(name)
		return c != nil && c.Status == metav1.ConditionTrue, fmt.Sprint(c)
	})
	for svc, ip := range map[string]string{"a": "10.200.0.9", "b": "10.200.0.8"} {
		if in := ingressOf(t, e.admin, name, svc); len(in) != 1 || in[0].IP != ip {
			t.Errorf("%s: ingress %s once the ServiceCIDR is gone, want %s kept", svc, ingressString(in), ip)
		}
	}
}
