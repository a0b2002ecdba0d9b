package allocation

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/controller/ipam"
)

// Hostile and bad input, against the real API server: a Service never gets
// an address its pool does not serve it, nor one another Service holds
// unless both opt in to sharing it and may share it; the Service refused
// says why (condition and warning), and the holder keeps its address.

// withPort gives the Service one port.
func withPort(proto corev1.Protocol, port int32) func(*corev1.Service) {
	return func(svc *corev1.Service) {
		svc.Spec.Ports = []corev1.ServicePort{{Name: "p", Port: port, Protocol: proto}}
	}
}

func withLabels(kv ...string) func(*corev1.Service) {
	return func(svc *corev1.Service) {
		if svc.Labels == nil {
			svc.Labels = map[string]string{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			svc.Labels[kv[i]] = kv[i+1]
		}
	}
}

func withLoadBalancerIP(ip string) func(*corev1.Service) {
	return func(svc *corev1.Service) { svc.Spec.LoadBalancerIP = ip }
}

// local sets externalTrafficPolicy Local, selecting pods app=app.
func local(app string) func(*corev1.Service) {
	return func(svc *corev1.Service) {
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		svc.Spec.Selector = map[string]string{"app": app}
	}
}

// createPool creates pool, deleted when the test ends.
func (e *realEnv) createPool(pool *v1alpha1.IPAddressPool) {
	e.t.Helper()
	mustCreate(e.t, e.admin, pool)
	e.t.Cleanup(func() { _ = e.admin.Delete(context.Background(), testPool(pool.Name, 0)) })
}

// updateService applies mutate to Service ns/name as a user would, again
// on a conflict with the controller's status writes.
func (e *realEnv) updateService(ns, name string, mutate ...func(*corev1.Service)) {
	e.t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var svc corev1.Service
		if err := e.admin.Get(e.ctx, nn(ns, name), &svc); err != nil {
			return err
		}
		for _, m := range mutate {
			m(&svc)
		}
		return e.admin.Update(e.ctx, &svc)
	})
	if err != nil {
		e.t.Fatalf("updating %s/%s: %v", ns, name, err)
	}
}

func (e *realEnv) deleteService(ns, name string) {
	e.t.Helper()
	if err := e.admin.Delete(e.ctx, lbService(ns, name)); err != nil {
		e.t.Fatalf("deleting %s/%s: %v", ns, name, err)
	}
}

// waitAddress waits until Service ns/name has exactly ip, with a True
// condition.
func (e *realEnv) waitAddress(ns, name, ip, when string) {
	e.t.Helper()
	eventually(e.t, fmt.Sprintf("%s/%s has %s %s", ns, name, ip, when), func() (bool, string) {
		in, c := ingressOf(e.t, e.admin, ns, name), e.condition(ns, name)
		return len(in) == 1 && in[0].IP == ip && c != nil && c.Status == metav1.ConditionTrue, fmt.Sprintf("ingress %s, condition %v", ingressString(in), c)
	})
}

// wantAddress checks, now, that Service ns/name has exactly ip.
func (e *realEnv) wantAddress(ns, name, ip, when string) {
	e.t.Helper()
	if in := ingressOf(e.t, e.admin, ns, name); len(in) != 1 || in[0].IP != ip {
		e.t.Errorf("%s/%s: ingress %s %s, want %s kept", ns, name, ingressString(in), when, ip)
	}
}

// waitRefused waits until Service ns/name has no address and a False
// condition with reason whose message says msg.
func (e *realEnv) waitRefused(ns, name string, reason ipam.Reason, msg string) {
	e.t.Helper()
	eventually(e.t, fmt.Sprintf("%s/%s is refused, %s: %s", ns, name, reason, msg), func() (bool, string) {
		in, c := ingressOf(e.t, e.admin, ns, name), e.condition(ns, name)
		return len(in) == 0 && c != nil && c.Status == metav1.ConditionFalse && c.Reason == string(reason) && strings.Contains(c.Message, msg),
			fmt.Sprintf("ingress %s, condition %v", ingressString(in), c)
	})
}

// eventsOf lists the events about Service ns/name with reason.
func (e *realEnv) eventsOf(ns, name, reason string) []eventsv1.Event {
	e.t.Helper()
	l, err := e.cs.EventsV1().Events(ns).List(e.ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []eventsv1.Event
	for _, ev := range l.Items {
		if ev.Regarding.Name == name && ev.Reason == reason {
			out = append(out, ev)
		}
	}
	return out
}

// waitWarning waits for exactly one warning about Service ns/name with
// reason whose note says note.
func (e *realEnv) waitWarning(ns, name, reason, note string) {
	e.t.Helper()
	eventually(e.t, fmt.Sprintf("%s/%s has one %s warning saying %q", ns, name, reason, note), func() (bool, string) {
		evs := e.eventsOf(ns, name, reason)
		return len(evs) == 1 && evs[0].Type == corev1.EventTypeWarning && strings.Contains(evs[0].Note, note), fmt.Sprint(evs)
	})
}

// TestServiceAPoolDoesNotServeNeverGetsItsAddress: a Service outside a
// pool's serviceAllocation (another namespace, Service labels or namespace
// labels the pool does not select) asks for the pool's addresses every way
// Herald reads: spec.loadBalancerIP, Herald's and MetalLB's loadBalancerIPs
// and address-pool annotations, the sharing key of a Service the pool
// serves (alone and with its address). It gets nothing, its condition says
// NoMatchingPool naming the pool, with one warning; the Service the pool
// serves keeps its address, and once that one is gone the address goes to
// the next Service the pool serves, never to the refused one.
func TestServiceAPoolDoesNotServeNeverGetsItsAddress(t *testing.T) {
	e := newRealEnv(t)
	runController(t, e.ctl, Options{IPMode: corev1.LoadBalancerIPModeVIP})
	const (
		// %q is the pool.
		notServed    = `is in pool %q, which does not serve this service (see the pool's serviceAllocation)`
		poolRefused  = `address pool %q does not serve this service (see the pool's serviceAllocation)`
		noPoolServes = "no address pool serves this service (see the pools' serviceAllocation namespaces and selectors)"
	)
	for i, tc := range []struct {
		name string
		// by is how the pool chooses: by namespace (empty: the served
		// namespace only), "service labels" (tier=public in it), or
		// "namespace labels" (the served namespace's).
		by string
		// asks is the address the refused Service goes for: "held" (the
		// allowed Service's), "free" (another of the pool's), "" (any).
		asks    string
		request func(held, free, pool string) []func(*corev1.Service)
		msg     string // in the condition
	}{
		{name: "spec.loadBalancerIP of the served Service's address", asks: "held",
			request: func(held, _, _ string) []func(*corev1.Service) {
				return []func(*corev1.Service){withLoadBalancerIP(held)}
			},
			msg: notServed},
		{name: "spec.loadBalancerIP of a free address", asks: "free",
			request: func(_, free, _ string) []func(*corev1.Service) {
				return []func(*corev1.Service){withLoadBalancerIP(free)}
			},
			msg: notServed},
		{name: "herald.dev/loadBalancerIPs", asks: "held",
			request: func(held, _, _ string) []func(*corev1.Service) {
				return []func(*corev1.Service){withAnnotations(v1alpha1.AnnotationLoadBalancerIPs, held)}
			},
			msg: notServed},
		{name: "metallb.universe.tf/loadBalancerIPs", asks: "held",
			request: func(held, _, _ string) []func(*corev1.Service) {
				return []func(*corev1.Service){withAnnotations("metallb.universe.tf/loadBalancerIPs", held)}
			},
			msg: notServed},
		{name: "metallb.io/loadBalancerIPs", asks: "free",
			request: func(_, free, _ string) []func(*corev1.Service) {
				return []func(*corev1.Service){withAnnotations("metallb.io/loadBalancerIPs", free)}
			},
			msg: notServed},
		{name: "herald.dev/address-pool",
			request: func(_, _, pool string) []func(*corev1.Service) {
				return []func(*corev1.Service){withAnnotations(v1alpha1.AnnotationAddressPool, pool)}
			},
			msg: poolRefused},
		{name: "metallb.universe.tf/address-pool",
			request: func(_, _, pool string) []func(*corev1.Service) {
				return []func(*corev1.Service){withAnnotations("metallb.universe.tf/address-pool", pool)}
			},
			msg: poolRefused},
		{name: "the served Service's sharing key",
			request: func(string, string, string) []func(*corev1.Service) {
				return []func(*corev1.Service){withAnnotations(v1alpha1.AnnotationAllowSharedIP, "k")}
			},
			msg: noPoolServes},
		{name: "the served Service's sharing key and address", asks: "held",
			request: func(held, _, _ string) []func(*corev1.Service) {
				return []func(*corev1.Service){withAnnotations(v1alpha1.AnnotationAllowSharedIP, "k"), withLoadBalancerIP(held)}
			},
			msg: notServed},
		{name: "MetalLB's sharing key and loadBalancerIPs", asks: "held",
			request: func(held, _, _ string) []func(*corev1.Service) {
				return []func(*corev1.Service){withAnnotations("metallb.universe.tf/allow-shared-ip", "k", "metallb.universe.tf/loadBalancerIPs", held)}
			},
			msg: notServed},
		{name: "Service labels the pool does not select, with the sharing key and address", by: "service labels", asks: "held",
			request: func(held, _, _ string) []func(*corev1.Service) {
				return []func(*corev1.Service){withLabels("tier", "internal"), withAnnotations(v1alpha1.AnnotationAllowSharedIP, "k"), withLoadBalancerIP(held)}
			},
			msg: notServed},
		{name: "namespace labels the pool does not select, with the sharing key and address", by: "namespace labels", asks: "held",
			request: func(held, _, _ string) []func(*corev1.Service) {
				return []func(*corev1.Service){withAnnotations(v1alpha1.AnnotationAllowSharedIP, "k"), withLoadBalancerIP(held)}
			},
			msg: notServed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := *e
			e.t = t
			served, refusedNS := fmt.Sprintf("deny-%d", i), fmt.Sprintf("deny-%d-other", i)
			held, free := fmt.Sprintf("192.0.2.%d", 4*i), fmt.Sprintf("192.0.2.%d", 4*i+1)
			pool := testPool(served, 0, fmt.Sprintf("192.0.2.%d/30", 4*i))
			// A label of this case alone: Services of other tests' namespaces
			// must not match the pool.
			mustCreate(t, e.admin, namespace(served, map[string]string{served: "yes"}), namespace(refusedNS, nil))
			switch tc.by {
			case "":
				pool.Spec.ServiceAllocation = &v1alpha1.ServiceAllocation{Namespaces: []string{served}}
			case "service labels":
				pool.Spec.ServiceAllocation = &v1alpha1.ServiceAllocation{Namespaces: []string{served},
					ServiceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"tier": "public"}}}}
				refusedNS = served // the same namespace, other labels
			case "namespace labels":
				pool.Spec.ServiceAllocation = &v1alpha1.ServiceAllocation{
					NamespaceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{served: "yes"}}}}
			}
			e.createPool(pool)
			// The served Service, with the sharing key k, TCP 80.
			mustCreate(t, e.admin, lbService(served, "a", withLabels("tier", "public"), withAnnotations(v1alpha1.AnnotationAllowSharedIP, "k")))
			e.waitAddress(served, "a", held, "at first")

			// The refused Service shares no port with it: only the pool's
			// serviceAllocation stands in its way.
			mustCreate(t, e.admin, lbService(refusedNS, "b", append([]func(*corev1.Service){withPort(corev1.ProtocolTCP, 81)}, tc.request(held, free, served)...)...))
			msg := tc.msg
			if strings.Contains(msg, "%q") {
				msg = fmt.Sprintf(msg, served)
			}
			e.waitRefused(refusedNS, "b", ipam.ReasonNoMatchingPool, msg)
			e.waitWarning(refusedNS, "b", v1alpha1.ReasonAllocationFailed, string(ipam.ReasonNoMatchingPool))
			e.wantAddress(served, "a", held, "once b was refused")

			// The address b went for stays for the Services the pool serves.
			want := held
			if tc.asks == "free" {
				want = free
			}
			e.deleteService(served, "a")
			mustCreate(t, e.admin, lbService(served, "c", withLabels("tier", "public"), withLoadBalancerIP(want)))
			e.waitAddress(served, "c", want, "once a is gone")
			e.waitRefused(refusedNS, "b", ipam.ReasonNoMatchingPool, msg)
		})
	}
}

// TestAddressInTheStatusOfAServiceThePoolDoesNotServeIsTakenOff: an address
// of a pool written into the status of a Service the pool does not serve
// (by MetalLB before, or by anyone allowed to write Services' status) is
// not adopted: Herald takes it off with an IPReleased warning naming the
// pool, the condition says NoMatchingPool, and the address goes to a
// Service the pool serves.
func TestAddressInTheStatusOfAServiceThePoolDoesNotServeIsTakenOff(t *testing.T) {
	e := newRealEnv(t)
	const ns, other, addr = "status-deny", "status-deny-other", "192.0.2.200"
	e.namespaceWithPool(ns, addr)
	mustCreate(t, e.admin, namespace(other, nil))
	svc := lbService(other, "b")
	mustCreate(t, e.admin, svc)
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: addr, IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)}}
	if err := e.admin.Status().Update(e.ctx, svc); err != nil {
		t.Fatal(err)
	}

	runController(t, e.ctl, Options{IPMode: corev1.LoadBalancerIPModeVIP})
	e.waitRefused(other, "b", ipam.ReasonNoMatchingPool, "no address pool serves this service")
	e.waitWarning(other, "b", v1alpha1.ReasonIPReleased, fmt.Sprintf("released %s: pool %q does not serve this service", addr, ns))
	mustCreate(t, e.admin, lbService(ns, "a"))
	e.waitAddress(ns, "a", addr, "once b's status no longer holds it")
}

// TestAddressIsSharedOnlyWhenBothServicesOptInAndTheHolderKeepsIt: a
// Service asks for the address another holds. Without the same sharing key
// on both (none, one only, two different), or with the same key but a
// clash (a port, the traffic policy, Local with other pods), it is refused
// with OwnedByOther or SharingConflict naming the holder, and one warning;
// the holder keeps its address. With the same key and no clash (the key
// under MetalLB's annotation too) they share it. A Service with the key
// that clashes and asks for no address in particular gets none from a full
// pool, saying why the key did not help. Once the holder is deleted, the
// refused Service gets the address.
func TestAddressIsSharedOnlyWhenBothServicesOptInAndTheHolderKeepsIt(t *testing.T) {
	e := newRealEnv(t)
	runController(t, e.ctl, Options{IPMode: corev1.LoadBalancerIPModeVIP})
	key := func(k string) func(*corev1.Service) { return withAnnotations(v1alpha1.AnnotationAllowSharedIP, k) }
	type mutators = []func(*corev1.Service)
	for i, tc := range []struct {
		name      string
		holder    mutators
		requester mutators // besides asking for the holder's address
		// byKeyOnly: the requester asks for no address, in a pool of one.
		byKeyOnly bool
		reason    ipam.Reason // empty: they share
		msg       string      // %s is the address
	}{
		{name: "no sharing key on either",
			reason: ipam.ReasonOwnedByOther, msg: "address %s is owned by %s/a; services share an address only when both set the same sharing key"},
		{name: "a sharing key on the requester only", requester: mutators{key("k")},
			reason: ipam.ReasonOwnedByOther, msg: "address %s is owned by %s/a; services share an address only when both set the same sharing key"},
		{name: "a sharing key on the holder only", holder: mutators{key("k")},
			reason: ipam.ReasonOwnedByOther, msg: "address %s is owned by %s/a; services share an address only when both set the same sharing key"},
		{name: "different sharing keys", holder: mutators{key("k")}, requester: mutators{key("other")},
			reason: ipam.ReasonOwnedByOther, msg: `address %s is owned by %s/a, whose sharing key is "k", not "other"`},
		{name: "the same key and a clashing port", holder: mutators{key("k")}, requester: mutators{key("k"), withPort(corev1.ProtocolTCP, 80)},
			reason: ipam.ReasonSharingConflict, msg: "address %s is shared with %s/a, which also uses TCP port 80"},
		{name: "the same key and a clashing port, asked by herald.dev/loadBalancerIPs", holder: mutators{key("k")},
			requester: mutators{key("k"), withPort(corev1.ProtocolTCP, 80), func(s *corev1.Service) {
				s.Annotations[v1alpha1.AnnotationLoadBalancerIPs], s.Spec.LoadBalancerIP = s.Spec.LoadBalancerIP, ""
			}},
			reason: ipam.ReasonSharingConflict, msg: "address %s is shared with %s/a, which also uses TCP port 80"},
		{name: "the same key, Cluster and Local", holder: mutators{key("k")}, requester: mutators{key("k"), local("a")},
			reason: ipam.ReasonSharingConflict, msg: "whose externalTrafficPolicy is Cluster, not Local"},
		{name: "the same key, Local with other pods", holder: mutators{key("k"), local("a")}, requester: mutators{key("k"), local("b")},
			reason: ipam.ReasonSharingConflict, msg: "address %s is shared with %s/a, which selects other pods"},
		{name: "the same key and a clashing port, no address asked, pool full", byKeyOnly: true,
			holder: mutators{key("k")}, requester: mutators{key("k"), withPort(corev1.ProtocolTCP, 80)},
			reason: ipam.ReasonPoolExhausted, msg: `sharing key "k" does not help: address %s is shared with %s/a, which also uses TCP port 80`},
		{name: "the same key and other ports share", holder: mutators{key("k")}, requester: mutators{key("k")}},
		{name: "the same port number over UDP shares", holder: mutators{key("k")}, requester: mutators{key("k"), withPort(corev1.ProtocolUDP, 80)}},
		{name: "the same key, Local with the same pods, shares", holder: mutators{key("k"), local("a")}, requester: mutators{key("k"), local("a")}},
		{name: "MetalLB's sharing key on the requester shares", holder: mutators{key("k")},
			requester: mutators{withAnnotations("metallb.universe.tf/allow-shared-ip", "k")}},
		{name: "the same key, no address asked, shares", byKeyOnly: true, holder: mutators{key("k")}, requester: mutators{key("k")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := *e
			e.t = t
			ns := fmt.Sprintf("share-%d", i)
			addr := fmt.Sprintf("198.18.%d.1", i)
			pool := addr
			if !tc.byKeyOnly {
				pool = fmt.Sprintf("198.18.%d.1-198.18.%d.2", i, i)
			}
			e.namespaceWithPool(ns, pool)
			// The holder: TCP 80, its address the pool's first.
			mustCreate(t, e.admin, lbService(ns, "a", tc.holder...))
			e.waitAddress(ns, "a", addr, "at first")

			// The requester: TCP 81 unless the case says otherwise.
			req := append(mutators{withPort(corev1.ProtocolTCP, 81), withAnnotations()}, tc.requester...)
			if !tc.byKeyOnly {
				req = append(mutators{withLoadBalancerIP(addr)}, req...)
			}
			mustCreate(t, e.admin, lbService(ns, "b", req...))
			if tc.reason == "" {
				e.waitAddress(ns, "b", addr, "sharing it")
				e.wantAddress(ns, "a", addr, "once b shares it")
				e.deleteService(ns, "a")
				e.waitAddress(ns, "b", addr, "once a is gone")
				return
			}
			msg := tc.msg
			if strings.Contains(msg, "%s") {
				msg = fmt.Sprintf(tc.msg, addr, ns)
			}
			e.waitRefused(ns, "b", tc.reason, msg)
			e.waitWarning(ns, "b", v1alpha1.ReasonAllocationFailed, string(tc.reason))
			e.wantAddress(ns, "a", addr, "once b was refused")

			e.deleteService(ns, "a")
			e.waitAddress(ns, "b", addr, "once a is gone")
		})
	}
}

// TestServiceThatMayNoLongerShareOrUseItsPoolLosesItsAddressAndTheOtherKeepsIt:
// two Services share the only address of a pool (key k, TCP 80 and 81).
// The second then changes so that it may no longer hold the address: its
// port clashes, it drops or changes its key, it turns Local, it also asks
// for something invalid, its labels or its namespace's no longer match the
// pool, or the pool's serviceAllocation is edited to leave it out. It loses
// the address (no ingress, a False condition, one IPReleased warning saying
// why) and the first keeps it: no Service keeps a port of another's
// address, or an address its pool refuses it, by asking for something it
// cannot get.
func TestServiceThatMayNoLongerShareOrUseItsPoolLosesItsAddressAndTheOtherKeepsIt(t *testing.T) {
	e := newRealEnv(t)
	runController(t, e.ctl, Options{IPMode: corev1.LoadBalancerIPModeVIP})
	for i, tc := range []struct {
		name string
		// change is what happens to b (in namespace bNS) or its pool.
		change   func(e *realEnv, pool, bNS string)
		reason   ipam.Reason
		msg      string // in b's condition
		released string // in the warning, after "released <address>: "
	}{
		{name: "its port now clashes",
			change: func(e *realEnv, _, bNS string) { e.updateService(bNS, "b", withPort(corev1.ProtocolTCP, 80)) },
			reason: ipam.ReasonPoolExhausted, msg: `sharing key "k" does not help: address %s is shared with %s/a, which also uses TCP port 80`,
			released: "address %s is shared with %s/a, which also uses TCP port 80"},
		{name: "it drops its sharing key",
			change: func(e *realEnv, _, bNS string) {
				e.updateService(bNS, "b", func(s *corev1.Service) { delete(s.Annotations, v1alpha1.AnnotationAllowSharedIP) })
			},
			reason: ipam.ReasonPoolExhausted, msg: "no pool serving this service has a free IPv4 address",
			released: "address %s is owned by %s/a; services share an address only when both set the same sharing key"},
		{name: "it changes its sharing key",
			change: func(e *realEnv, _, bNS string) {
				e.updateService(bNS, "b", withAnnotations(v1alpha1.AnnotationAllowSharedIP, "other"))
			},
			reason: ipam.ReasonPoolExhausted, msg: "no pool serving this service has a free IPv4 address",
			released: `address %s is owned by %s/a, whose sharing key is "k", not "other"`},
		{name: "it turns Local",
			change: func(e *realEnv, _, bNS string) { e.updateService(bNS, "b", local("b")) },
			reason: ipam.ReasonPoolExhausted, msg: `sharing key "k" does not help: address %s is shared with %s/a, whose externalTrafficPolicy is Cluster, not Local`,
			released: "address %s is shared with %s/a, whose externalTrafficPolicy is Cluster, not Local"},
		{name: "its port clashes and it asks for an address that does not parse",
			change: func(e *realEnv, _, bNS string) {
				e.updateService(bNS, "b", withPort(corev1.ProtocolTCP, 80), withAnnotations(v1alpha1.AnnotationLoadBalancerIPs, "not-an-ip"))
			},
			reason: ipam.ReasonInvalidRequest, msg: `annotation herald.dev/loadBalancerIPs: "not-an-ip" is not an IP address`,
			released: "address %s is shared with %s/a, which also uses TCP port 80"},
		{name: "its labels no longer match the pool",
			change: func(e *realEnv, _, bNS string) {
				e.updateService(bNS, "b", func(s *corev1.Service) { delete(s.Labels, "tier") })
			},
			reason: ipam.ReasonNoMatchingPool, msg: "no address pool serves this service",
			released: `pool "%[2]s" does not serve this service`},
		{name: "the pool's serviceAllocation is edited to leave it out",
			change: func(e *realEnv, pool, _ string) {
				var p client.Object = testPool(pool, 0)
				err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
					var cur v1alpha1.IPAddressPool
					if err := e.admin.Get(e.ctx, client.ObjectKeyFromObject(p), &cur); err != nil {
						return err
					}
					cur.Spec.ServiceAllocation.ServiceSelectors = []metav1.LabelSelector{{MatchLabels: map[string]string{"name": "a"}}}
					return e.admin.Update(e.ctx, &cur)
				})
				if err != nil {
					e.t.Fatal(err)
				}
			},
			reason: ipam.ReasonNoMatchingPool, msg: "no address pool serves this service",
			released: `pool "%[2]s" does not serve this service`},
		{name: "its namespace's labels no longer match the pool",
			change: func(e *realEnv, _, bNS string) {
				var n corev1.Namespace
				if err := e.admin.Get(e.ctx, client.ObjectKey{Name: bNS}, &n); err != nil {
					e.t.Fatal(err)
				}
				delete(n.Labels, "lose-"+bNS)
				if err := e.admin.Update(e.ctx, &n); err != nil {
					e.t.Fatal(err)
				}
			},
			reason: ipam.ReasonNoMatchingPool, msg: "no address pool serves this service",
			released: `pool "%[2]s" does not serve this service`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := *e
			e.t = t
			ns, bNS := fmt.Sprintf("lose-%d", i), fmt.Sprintf("lose-%d-b", i)
			addr := fmt.Sprintf("198.19.%d.1", i)
			// Labels on both namespaces, so that removing b's one takes b
			// out of the pool's namespaceSelectors.
			mustCreate(t, e.admin, namespace(ns, map[string]string{"lose-" + bNS: "yes"}), namespace(bNS, map[string]string{"lose-" + bNS: "yes"}))
			pool := testPool(ns, 0, addr)
			pool.Spec.ServiceAllocation = &v1alpha1.ServiceAllocation{
				NamespaceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"lose-" + bNS: "yes"}}},
				ServiceSelectors:   []metav1.LabelSelector{{MatchLabels: map[string]string{"tier": "public"}}},
			}
			e.createPool(pool)
			shared := []func(*corev1.Service){withLabels("tier", "public", "name", ""), withAnnotations(v1alpha1.AnnotationAllowSharedIP, "k")}
			mustCreate(t, e.admin, lbService(ns, "a", append(shared, withLabels("name", "a"))...))
			e.waitAddress(ns, "a", addr, "at first")
			mustCreate(t, e.admin, lbService(bNS, "b", append(shared, withPort(corev1.ProtocolTCP, 81))...))
			e.waitAddress(bNS, "b", addr, "sharing it")

			tc.change(&e, ns, bNS)
			msg, released := tc.msg, tc.released
			if strings.Contains(msg, "%s") {
				msg = fmt.Sprintf(msg, addr, ns)
			}
			if strings.Contains(released, "%") {
				released = fmt.Sprintf(released, addr, ns)
			}
			e.waitRefused(bNS, "b", tc.reason, msg)
			e.waitWarning(bNS, "b", v1alpha1.ReasonIPReleased, fmt.Sprintf("released %s: %s", addr, released))
			e.wantAddress(ns, "a", addr, "once b lost it")
			if c := e.condition(ns, "a"); c == nil || c.Status != metav1.ConditionTrue {
				t.Errorf("%s/a: condition %v, want True", ns, c)
			}
		})
	}
}
