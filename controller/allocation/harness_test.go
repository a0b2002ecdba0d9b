package allocation

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/controller/ipam"
	heraldscheme "github.com/heraldlb/herald/internal/scheme"
)

// The reconcilers run here against controller-runtime's fake client, which
// keeps objects and their status subresource as the API server does; what
// depends on the real API server is proven in e2etest.

// recorded is one event, as a person would read it in kubectl describe.
type recorded struct {
	object, typ, reason, note string
}

type recorder struct {
	mu     sync.Mutex
	events []recorded
}

func (r *recorder) Eventf(regarding, _ runtime.Object, typ, reason, _, note string, args ...any) {
	o := regarding.(client.Object)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, recorded{o.GetNamespace() + "/" + o.GetName(), typ, reason, fmt.Sprintf(note, args...)})
}

// take returns the events recorded since the last take.
func (r *recorder) take() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.events
	r.events = nil
	return out
}

type harness struct {
	t      *testing.T
	c      *Controller
	client client.Client
	events *recorder
	// statusWrites counts writes of Service status.
	statusWrites int
}

func newHarness(t *testing.T, funcs interceptor.Funcs, objs ...client.Object) *harness {
	t.Helper()
	s := heraldscheme.New()
	h := &harness{t: t, events: &recorder{}}
	patch := funcs.SubResourcePatch
	funcs.SubResourcePatch = func(ctx context.Context, c client.Client, sub string, obj client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
		if _, ok := obj.(*corev1.Service); ok {
			h.statusWrites++
		}
		if patch != nil {
			return patch(ctx, c, sub, obj, p, opts...)
		}
		return c.SubResource(sub).Patch(ctx, obj, p, opts...)
	}
	h.client = fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).
		WithStatusSubresource(&corev1.Service{}, &v1alpha1.IPAddressPool{}, &v1alpha1.L2Advertisement{}).
		WithInterceptorFuncs(funcs).Build()
	h.c = newController(h.client, h.events, Options{})
	return h
}

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func testPool(name string, age int, addrs ...string) *v1alpha1.IPAddressPool {
	return &v1alpha1.IPAddressPool{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(epoch.Add(time.Duration(age) * time.Second))},
		Spec:       v1alpha1.IPAddressPoolSpec{Addresses: addrs},
	}
}

func onlyNamespaces(p *v1alpha1.IPAddressPool, ns ...string) *v1alpha1.IPAddressPool {
	p.Spec.ServiceAllocation = &v1alpha1.ServiceAllocation{Namespaces: ns}
	return p
}

func namespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func lbService(ns, name string, mutate ...func(*corev1.Service)) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeLoadBalancer,
			Selector:   map[string]string{"app": name},
			Ports:      []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
			IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol},
		},
	}
	for _, m := range mutate {
		m(svc)
	}
	return svc
}

func nn(ns, name string) types.NamespacedName { return types.NamespacedName{Namespace: ns, Name: name} }

// reconcile runs the Service reconcile as the workqueue would.
func (h *harness) reconcile(ns, name string) error {
	h.t.Helper()
	_, err := h.c.reconcileService(context.Background(), reconcile.Request{NamespacedName: nn(ns, name)})
	return err
}

func (h *harness) mustReconcile(ns, name string) {
	h.t.Helper()
	if err := h.reconcile(ns, name); err != nil {
		h.t.Fatalf("reconcile %s/%s: %v", ns, name, err)
	}
}

func (h *harness) service(ns, name string) *corev1.Service {
	h.t.Helper()
	var svc corev1.Service
	if err := h.client.Get(context.Background(), nn(ns, name), &svc); err != nil {
		h.t.Fatal(err)
	}
	return &svc
}

// externalIPs is what kubectl shows as EXTERNAL-IP.
func (h *harness) externalIPs(ns, name string) []string {
	h.t.Helper()
	var out []string
	for _, in := range h.service(ns, name).Status.LoadBalancer.Ingress {
		out = append(out, in.IP)
	}
	return out
}

func (h *harness) condition(ns, name string) metav1.Condition {
	h.t.Helper()
	c := meta.FindStatusCondition(h.service(ns, name).Status.Conditions, v1alpha1.ConditionIPAllocated)
	if c == nil {
		h.t.Fatalf("%s/%s has no %s condition", ns, name, v1alpha1.ConditionIPAllocated)
	}
	return *c
}

func (h *harness) wantIPs(ns, name string, want ...string) {
	h.t.Helper()
	if got := h.externalIPs(ns, name); !slices.Equal(got, want) {
		h.t.Fatalf("%s/%s has EXTERNAL-IP %v, want %v", ns, name, got, want)
	}
}

// retried lists, sorted, the Services handed back to the Service controller.
func (h *harness) retried() []types.NamespacedName {
	out := h.c.retry.take()
	slices.SortFunc(out, func(a, b types.NamespacedName) int { return keyOfNN(a).Compare(keyOfNN(b)) })
	return out
}

func keyOfNN(k types.NamespacedName) ipam.Key { return ipam.Key(k) }

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}
