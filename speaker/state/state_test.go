package state

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/heraldlb/herald/speaker/dataplane"
	"github.com/heraldlb/herald/speaker/lease"
	"github.com/heraldlb/herald/speaker/plan"
)

func ptr[T any](v T) *T { return &v }

func lbService(name string, edit ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: "uid-" + types.UID(name), Labels: map[string]string{"app": name},
			Annotations: map[string]string{"herald.dev/allow-shared-ip": "k", "kubectl.kubernetes.io/last-applied-configuration": "{...}"}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIP: "203.0.113.5", Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{Port: 80, NodePort: 30080}}},
		Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "198.51.100.70", IPMode: ptr(corev1.LoadBalancerIPModeVIP)}}}},
	}
	for _, e := range edit {
		e(s)
	}
	return s
}

func slice(name, svc string, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc, "endpointslice.kubernetes.io/managed-by": "x"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   eps,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr(""), Protocol: ptr(corev1.ProtocolTCP), Port: ptr[int32](8080)}},
	}
}

func endpoint(node string, ready *bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{"198.51.100.130"}, NodeName: ptr(node), Conditions: discoveryv1.EndpointConditions{Ready: ready}}
}

func TestTransformServiceKeepsWhatThePlannerReads(t *testing.T) {
	got, _ := TransformService(lbService("web", func(s *corev1.Service) {
		s.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	}))
	s := got.(*corev1.Service)
	if s.ManagedFields != nil || s.Spec.ClusterIP != "" || s.Spec.Ports[0].TargetPort.IntVal != 0 || s.Spec.Selector != nil {
		t.Errorf("kept what the speaker never reads: %+v", s)
	}
	if !reflect.DeepEqual(s.Annotations, map[string]string{"herald.dev/allow-shared-ip": "k"}) {
		t.Errorf("annotations %v, want Herald's only", s.Annotations)
	}
	want := PlanService(lbService("web"), nil, logr.Discard())
	if p := PlanService(s, nil, logr.Discard()); !reflect.DeepEqual(p, want) {
		t.Errorf("planning the slim Service gives %+v, the full one %+v", p, want)
	}
	other, _ := TransformService(lbService("web", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeClusterIP }))
	if o := other.(*corev1.Service); o.Labels != nil || o.Status.LoadBalancer.Ingress != nil || o.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("a ClusterIP Service should be a stub: %+v", o)
	}
}

func TestTransformEndpointSliceKeepsWhatThePlannerReads(t *testing.T) {
	in := slice("web-1", "web", endpoint("a", ptr(true)), endpoint("b", ptr(false)))
	in.Endpoints[0].TargetRef = &corev1.ObjectReference{Kind: "Pod", Name: "web-0"}
	got, _ := TransformEndpointSlice(in)
	es := got.(*discoveryv1.EndpointSlice)
	if len(es.Labels) != 1 || es.Endpoints[0].TargetRef != nil {
		t.Errorf("kept too much: %+v", es)
	}
	svc := lbService("web")
	if a, b := PlanService(svc, []*discoveryv1.EndpointSlice{in}, logr.Discard()), PlanService(svc, []*discoveryv1.EndpointSlice{es}, logr.Discard()); !reflect.DeepEqual(a, b) || !reflect.DeepEqual(a.ReadyNodes, []string{"a"}) {
		t.Errorf("planned %+v from the full slice, %+v from the slim one; want ready nodes [a]", a, b)
	}
}

func TestTransformNodeDropsHeartbeats(t *testing.T) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "a", Labels: map[string]string{"zone": "x"}}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now()},
		{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse, LastHeartbeatTime: metav1.Now()},
	}}}
	got, _ := TransformNode(n)
	want := []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}, {Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse}}
	if c := got.(*corev1.Node).Status.Conditions; !reflect.DeepEqual(c, want) {
		t.Errorf("conditions %v, want %v", c, want)
	}
}

func TestPlanService(t *testing.T) {
	for _, tc := range []struct {
		name   string
		svc    *corev1.Service
		slices []*discoveryv1.EndpointSlice
		want   *plan.Service
	}{
		{"addresses, labels and policy", lbService("web", func(s *corev1.Service) {
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: "2001:db8:1::1:5"})
		}), []*discoveryv1.EndpointSlice{slice("w1", "web", endpoint("b", nil), endpoint("a", ptr(true))), slice("w2", "web", endpoint("c", ptr(false)), endpoint("a", ptr(true)))},
			&plan.Service{Key: types.NamespacedName{Namespace: "ns", Name: "web"}, IPs: []netip.Addr{netip.MustParseAddr("198.51.100.70"), netip.MustParseAddr("2001:db8:1::1:5")},
				Labels: map[string]string{"app": "web"}, LocalTrafficPolicy: true, ReadyNodes: []string{"a", "b"}, NodePorts: true,
				Ports: []dataplane.Port{{Protocol: dataplane.TCP, Port: 80, NodePort: 30080, Endpoints: []dataplane.Endpoint{
					{Addr: netip.MustParseAddr("198.51.100.130"), Port: 8080, Node: "a"}, {Addr: netip.MustParseAddr("198.51.100.130"), Port: 8080, Node: "b"}}}}}},
		{"forwarding: ports matched by name and protocol, affinity, scheduler, no NodePorts", lbService("dns", func(s *corev1.Service) {
			s.Annotations[AnnotationScheduler] = "sh"
			s.Spec.AllocateLoadBalancerNodePorts = ptr(false)
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr[int32](60)}}
			s.Spec.Ports = []corev1.ServicePort{{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53}, {Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: 53}}
		}), []*discoveryv1.EndpointSlice{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "d1", Labels: map[string]string{discoveryv1.LabelServiceName: "dns"}},
			Ports: []discoveryv1.EndpointPort{{Name: ptr("dns"), Protocol: ptr(corev1.ProtocolUDP), Port: ptr[int32](5353)},
				{Name: ptr("dns-tcp"), Protocol: ptr(corev1.ProtocolTCP), Port: ptr[int32](5354)}, {Name: ptr("dns"), Protocol: ptr(corev1.ProtocolTCP), Port: ptr[int32](1)}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.9"}, NodeName: ptr("b")}, {Addresses: []string{"10.244.1.8"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(false)}}},
		}}, &plan.Service{Key: types.NamespacedName{Namespace: "ns", Name: "dns"}, IPs: []netip.Addr{netip.MustParseAddr("198.51.100.70")}, Labels: map[string]string{"app": "dns"},
			ReadyNodes: []string{"b"}, Affinity: time.Minute, Scheduler: "sh",
			Ports: []dataplane.Port{
				{Name: "dns", Protocol: dataplane.UDP, Port: 53, Endpoints: []dataplane.Endpoint{{Addr: netip.MustParseAddr("10.244.1.9"), Port: 5353, Node: "b"}}},
				{Name: "dns-tcp", Protocol: dataplane.TCP, Port: 53, Endpoints: []dataplane.Endpoint{{Addr: netip.MustParseAddr("10.244.1.9"), Port: 5354, Node: "b"}}}}}},
		{"no address yet: nothing to plan", lbService("web", func(s *corev1.Service) { s.Status.LoadBalancer.Ingress = nil }), nil, nil},
		{"a hostname ingress is skipped", lbService("web", func(s *corev1.Service) {
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{Hostname: "lb.example"}, {IP: "garbage"}, {IP: "198.51.100.71"}}
		}), nil, &plan.Service{Key: types.NamespacedName{Namespace: "ns", Name: "web"}, IPs: []netip.Addr{netip.MustParseAddr("198.51.100.71")}, Labels: map[string]string{"app": "web"},
			NodePorts: true, Ports: []dataplane.Port{{Protocol: dataplane.TCP, Port: 80, NodePort: 30080}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := PlanService(tc.svc, tc.slices, logr.Discard()); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("PlanService = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestTrackerReadsServicesWithTheirSlicesByIndex(t *testing.T) {
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	c := fake.NewClientBuilder().WithScheme(scheme).
		WithObjects(lbService("web", func(s *corev1.Service) { s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal }),
			slice("web-1", "web", endpoint("b", nil)), slice("db-1", "db", endpoint("c", nil))).
		WithIndex(&discoveryv1.EndpointSlice{}, indexService, func(o client.Object) []string { return []string{o.GetLabels()[discoveryv1.LabelServiceName]} }).
		Build()
	tr := NewTracker(c, "herald-system", "", logr.Discard(), nil)
	got, err := tr.Service(context.Background(), types.NamespacedName{Namespace: "ns", Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if got == nil || !reflect.DeepEqual(got.ReadyNodes, []string{"b"}) {
		t.Errorf("web = %+v; want ready nodes [b] from its own slice only", got)
	}
	if got, err := tr.Service(context.Background(), types.NamespacedName{Namespace: "ns", Name: "gone"}); got != nil || err != nil {
		t.Errorf("a missing Service: %v, %v; want nil, nil", got, err)
	}
}

func speakerLease(node string, renew time.Time, subnets string) *coordinationv1.Lease {
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "herald-system", Name: lease.Name(node), Annotations: map[string]string{lease.AnnotationSubnets: subnets}},
		Spec:       coordinationv1.LeaseSpec{RenewTime: ptr(metav1.NewMicroTime(renew)), LeaseDurationSeconds: ptr(int32(15))},
	}
}

// A Lease renewal that says nothing new wakes nothing; one that says
// something new, revives an expired Lease, or is refused, does. Other
// components' Leases are ignored.
func TestLeaseEventsWakeOnlyOnNews(t *testing.T) {
	now := time.Unix(10_000, 0)
	errs := 0
	tr := NewTracker(nil, "herald-system", "", logr.Discard(), func() { errs++ })
	tr.now = func() time.Time { return now }
	woke := func() bool {
		select {
		case <-tr.Wake():
			return tr.Take().Leases
		default:
			return false
		}
	}
	tr.ObserveLease(speakerLease("a", now, "eth0=198.51.100.0/25"), false)
	if !woke() {
		t.Fatal("a new speaker Lease must wake the runner")
	}
	tr.ObserveLease(speakerLease("a", now.Add(5*time.Second), "eth0=198.51.100.0/25"), false)
	if woke() {
		t.Error("a plain renewal woke the runner")
	}
	tr.ObserveLease(speakerLease("a", now.Add(6*time.Second), "eth0=198.51.100.0/25,eth1=203.0.113.0/25"), false)
	if !woke() {
		t.Error("a new subnet must wake the runner")
	}
	now = now.Add(time.Minute) // the Lease expired meanwhile
	tr.ObserveLease(speakerLease("a", now, "eth0=198.51.100.0/25,eth1=203.0.113.0/25"), false)
	if !woke() {
		t.Error("reviving an expired Lease must wake the runner")
	}
	controller := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: "herald-system", Name: "herald-controller"}}
	tr.ObserveLease(controller, false)
	if woke() {
		t.Error("the controller's leader Lease woke the speaker")
	}
	tr.ObserveLease(speakerLease("a", now, "eth0"), false)
	if !woke() || errs != 1 {
		t.Errorf("a garbage Lease must wake the runner and count as refused (refused %d)", errs)
	}
	if info := tr.Leases()["a"]; !info.Fresh(now) || len(info.Subnets) != 0 {
		t.Errorf("a refused Lease still keeps its speaker alive, without subnets: %+v", info)
	}
	tr.ObserveLease(speakerLease("a", now, ""), true)
	if _, ok := tr.Leases()["a"]; ok || !woke() {
		t.Error("a deleted Lease is forgotten, and wakes the runner")
	}
}

// A renewal counts from when this speaker sees it, whatever clock the
// holder's node keeps.
func TestObservedRenewal(t *testing.T) {
	now := time.Unix(10_000, 0)
	for _, tc := range []struct {
		name                 string
		written, prevWritten time.Time
		prevObserved         time.Time
		seen                 bool
		want                 time.Time
	}{
		{"first sight keeps the written time", now.Add(-3 * time.Second), time.Time{}, time.Time{}, false, now.Add(-3 * time.Second)},
		{"first sight of a long-dead peer keeps it dead", now.Add(-time.Hour), time.Time{}, time.Time{}, false, now.Add(-time.Hour)},
		{"first sight of a clock ahead is capped at now", now.Add(5 * time.Minute), time.Time{}, time.Time{}, false, now},
		{"a renewal counts from now", now.Add(-5 * time.Minute), now.Add(-5*time.Minute - 2*time.Second), now.Add(-2 * time.Second), true, now},
		{"a renewal written ahead counts from now", now.Add(5 * time.Minute), now.Add(5*time.Minute - 2*time.Second), now.Add(-2 * time.Second), true, now},
		{"a renewal written backwards (the holder's clock was set back) is a renewal", now.Add(-time.Hour), now, now.Add(-time.Second), true, now},
		{"the same renewTime again is no renewal", now.Add(-5 * time.Minute), now.Add(-5 * time.Minute), now.Add(-4 * time.Second), true, now.Add(-4 * time.Second)},
	} {
		if got := observedRenewal(tc.written, tc.prevWritten, tc.prevObserved, tc.seen, now); !got.Equal(tc.want) {
			t.Errorf("%s: got %s, want %s", tc.name, got.Sub(now), tc.want.Sub(now))
		}
	}
}

// Property: once a speaker has renewed its Lease at least once in view, a
// peer counts it alive exactly while its last renewal, on the peer's own
// clock, is younger than the Lease duration: the holder's clock offset
// (up to an hour either way) changes nothing. Before this, a speaker whose
// clock ran minutes behind was dead to its peers while it owned addresses.
func TestLeaseFreshnessIgnoresTheHolderClock(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		skew := time.Duration(rng.Int64N(int64(2*time.Hour))) - time.Hour
		now := time.Unix(100_000, 0)
		tr := NewTracker(nil, "herald-system", "", logr.Discard(), nil)
		tr.now = func() time.Time { return now }
		var lastRenewal time.Time
		renewals := 0
		for step := range 40 {
			now = now.Add(time.Duration(rng.Int64N(int64(8 * time.Second))))
			if step < 20 && rng.IntN(3) > 0 || step == 0 {
				tr.ObserveLease(speakerLease("a", now.Add(skew), "eth0=198.51.100.0/25"), false)
				lastRenewal, renewals = now, renewals+1
			}
			if renewals < 2 {
				continue // first sight: the written time is all there is
			}
			want := now.Sub(lastRenewal) < 15*time.Second
			if got := tr.Leases()["a"].Fresh(now); got != want {
				t.Fatalf("holder clock off by %s, %s after its last renewal: fresh %v, want %v", skew, now.Sub(lastRenewal), got, want)
			}
		}
	}
}

// An address with ipMode Proxy is one kube-proxy leaves alone: the planner
// must know, so that only forwarding nodes take it (and the slim cache must
// keep it).
func TestPlanServiceReadsIPModeProxy(t *testing.T) {
	svc := lbService("web", func(s *corev1.Service) {
		s.Status.LoadBalancer.Ingress[0].IPMode = ptr(corev1.LoadBalancerIPModeProxy)
	})
	slim, _ := TransformService(svc)
	for _, s := range []*corev1.Service{svc, slim.(*corev1.Service)} {
		if p := PlanService(s, nil, logr.Discard()); p == nil || !p.ProxyMode {
			t.Errorf("PlanService = %+v, want ProxyMode", p)
		}
	}
	if p := PlanService(lbService("web"), nil, logr.Discard()); p.ProxyMode {
		t.Errorf("ipMode VIP planned as Proxy")
	}
}

// A node listing a link-local address with its zone gives the dataplane the
// address without it: a rule cannot name another node's link.
func TestNodeAddressesDropZones(t *testing.T) {
	n := &corev1.Node{Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: "fe80::1%eth0"}, {Type: corev1.NodeInternalIP, Address: "::ffff:192.0.2.1"},
		{Type: corev1.NodeExternalIP, Address: "198.51.100.1"},
	}}}
	got := nodeAddrs(n, corev1.NodeInternalIP)
	if want := []netip.Addr{netip.MustParseAddr("fe80::1"), netip.MustParseAddr("192.0.2.1")}; !reflect.DeepEqual(got, want) {
		t.Errorf("nodeAddrs = %v, want %v", got, want)
	}
}
