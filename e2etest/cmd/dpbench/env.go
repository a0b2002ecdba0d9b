package main

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/e2etest/benchkit"
	"github.com/heraldlb/herald/e2etest/herald"
	"github.com/heraldlb/herald/e2etest/lab"
	heraldscheme "github.com/heraldlb/herald/internal/scheme"
)

const (
	ns       = "dpbench"
	poolName = "dpbench"
	// pool6 holds 65,536 addresses, on the lab's LAN (answered by NDP).
	pool6 = "2001:db8:1::1:0/112"
	// localIP is the address of the Service timed for the first packet:
	// the last of the pool, so it sorts after every other virtual service
	// (iptables walks HERALD-SERVICES in that order: its worst case).
	localIP = "2001:db8:1::1:fff0"
	// nodePortRange holds 10,000 Services with NodePorts and then some.
	nodePortRange = "20000-32767"
	// fewServices is the Service count of the "few" figures: the two real
	// Services and 8 fake ones.
	fewServices = 10
	realCount   = 2
)

// env is the lab with Herald installed and the bench's objects.
type env struct {
	o     options
	lab   *lab.Lab
	h     *herald.Herald
	c     client.Client
	owner lab.Node // node-1: the one node the L2Advertisement selects
	// inOwner is an HTTP client whose connections start in the owner's
	// namespace, for its speaker's and kube-proxy's metrics.
	inOwner *http.Client
	// backend is the owner speaker's --dataplane now.
	backend string
	// fakes is how many fake Services exist: s00000 .. s<fakes-1>.
	fakes int
	// webIP and localIP are the real Services' LB addresses; webPods the
	// IPv6 addresses of the web Service's pods (one per node).
	webIP, localIP netip.Addr
	webPods        []netip.Addr

	// stopController stops restarting the controller.
	stopController func()
}

// up builds the lab (waiting for another lab on the machine), installs
// Herald with the chart's default timings and nftables, and makes the pool,
// the advertisement and the real Services.
func up(ctx context.Context, o options) (*env, error) {
	cfg, err := lab.DefaultConfig()
	if err != nil {
		return nil, err
	}
	cfg.Nodes, cfg.NodePortRange, cfg.Log, cfg.ProxyMode = 3, nodePortRange, os.Stderr, o.proxyMode
	l, err := lab.UpWaiting(ctx, cfg, o.labWait, func(err error) { fmt.Fprintf(os.Stderr, "dpbench: %v; retrying in 3s\n", err) })
	if err != nil {
		return nil, err
	}
	h, err := herald.InstallWith(ctx, l, herald.Options{ChartTimings: true, SpeakerLogLevel: "info", Dataplane: "nftables"},
		func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) })
	if err != nil {
		l.Down()
		return nil, err
	}
	rc := *l.RESTConfig
	rc.QPS, rc.Burst = 2000, 4000
	c, err := client.New(&rc, client.Options{Scheme: heraldscheme.New()})
	if err != nil {
		h.Stop()
		l.Down()
		return nil, err
	}
	e := &env{o: o, lab: l, h: h, c: c, owner: l.Nodes[0], inOwner: herald.SpeakerHTTPClient(l.Nodes[0]), backend: "nftables", stopController: h.KeepControllerRunning(os.Stderr)}
	if err := e.setup(ctx); err != nil {
		e.down()
		return nil, err
	}
	return e, nil
}

func (e *env) down() {
	e.stopController()
	e.h.Stop()
	e.lab.Down()
}

func (e *env) setup(ctx context.Context) error {
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: poolName}, Spec: v1alpha1.IPAddressPoolSpec{Addresses: []string{pool6}}},
		// One node receives every address: its speaker programs all of them.
		&v1alpha1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: poolName}, Spec: v1alpha1.L2AdvertisementSpec{
			IPAddressPools: []string{poolName},
			NodeSelectors:  []metav1.LabelSelector{{MatchLabels: map[string]string{"kubernetes.io/hostname": e.owner.Name}}},
		}},
		webDeployment("web", int32(len(e.lab.PodNodes())), ""),
	}
	for _, o := range objs {
		if err := e.c.Create(ctx, o); err != nil {
			return fmt.Errorf("create %T %s: %w", o, o.GetName(), err)
		}
	}
	fmt.Fprintf(os.Stderr, "dpbench: the L2Advertisement selects %s alone: it receives and forwards every LB address, and its speaker programs all of them\n", e.owner.Name)
	// The web pods first, so the lab's scheduler spreads them one per node.
	if _, err := e.pods(ctx, "web", len(e.lab.PodNodes())); err != nil {
		return err
	}
	if err := e.c.Create(ctx, webDeployment("local", 1, e.owner.Name)); err != nil {
		return err
	}
	pods, err := e.pods(ctx, "web", len(e.lab.PodNodes()))
	if err != nil {
		return err
	}
	for _, p := range pods {
		for _, ip := range p.Status.PodIPs {
			if a, err := netip.ParseAddr(ip.IP); err == nil && a.Is6() {
				e.webPods = append(e.webPods, a)
			}
		}
	}
	if _, err := e.pods(ctx, "local", 1); err != nil {
		return err
	}
	if err := e.c.Create(ctx, realService("web", "")); err != nil {
		return err
	}
	if err := e.c.Create(ctx, realService("local", localIP)); err != nil {
		return err
	}
	if err := e.createFakes(ctx, fewServices-realCount); err != nil {
		return err
	}
	ips, err := e.waitAssigned(ctx, fewServices)
	if err != nil {
		return err
	}
	e.webIP, e.localIP = ips["web"], ips["local"]
	if err := e.waitProgrammed(ctx, 2*time.Minute); err != nil {
		return err
	}
	// The web Service goes through the other nodes' NodePorts too: wait
	// until kube-proxy serves them, seen through the LB address.
	return benchkit.WaitFor(ctx, 60*time.Second, 200*time.Millisecond, func() bool {
		ok := 0
		for range 10 {
			if get(ctx, "http://"+netip.AddrPortFrom(e.webIP, 80).String()+"/") == nil {
				ok++
			}
		}
		return ok == 10
	})
}

// pods waits for n Ready pods labelled app=app with addresses.
func (e *env) pods(ctx context.Context, app string, n int) ([]corev1.Pod, error) {
	var ready []corev1.Pod
	err := benchkit.WaitFor(ctx, 90*time.Second, 200*time.Millisecond, func() bool {
		var list corev1.PodList
		if e.c.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{"app": app}) != nil {
			return false
		}
		ready = ready[:0]
		for _, p := range list.Items {
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && len(p.Status.PodIPs) == 2 {
					ready = append(ready, p)
				}
			}
		}
		return len(ready) == n && len(list.Items) == n
	})
	if err != nil {
		return nil, fmt.Errorf("%d Ready pods of %s: %w", n, app, err)
	}
	return ready, nil
}

// webDeployment is the lab's HTTP pods labelled app=name, on node when set.
func webDeployment(name string, replicas int32, node string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "web", Image: "registry.k8s.io/e2e-test-images/agnhost:2.53",
					Ports: []corev1.ContainerPort{{ContainerPort: 80}},
				}}},
			},
		},
	}
	if node != "" {
		d.Spec.Template.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": node}
	}
	return d
}

// realService is an IPv6 LoadBalancer Service of the pods app=name, with
// NodePorts (the default), at ip when set.
func realService(name, ip string) *corev1.Service {
	s := lbService(name)
	s.Spec.Selector = map[string]string{"app": name}
	s.Spec.Ports[0].TargetPort = intstr.FromInt32(80)
	if ip != "" {
		s.Annotations[v1alpha1.AnnotationLoadBalancerIPs] = ip
	}
	return s
}

// lbService is an IPv6 LoadBalancer Service from the bench's pool, with
// NodePorts, without a selector: its EndpointSlice is the bench's.
func lbService(name string) *corev1.Service {
	single := corev1.IPFamilyPolicySingleStack
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: map[string]string{v1alpha1.AnnotationAddressPool: poolName}},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeLoadBalancer, IPFamilies: []corev1.IPFamily{corev1.IPv6Protocol}, IPFamilyPolicy: &single,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
		},
	}
}

func fakeName(i int) string { return fmt.Sprintf("s%05d", i) }

// fakeSlice is fake Service i's EndpointSlice: one ready endpoint on each
// node but the owner (addresses in their pod CIDRs that no pod has).
func (e *env) fakeSlice(i int) *discoveryv1.EndpointSlice {
	ready := true
	port, proto, name := int32(8080), corev1.ProtocolTCP, "http"
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: fakeName(i) + "-1", Namespace: ns, Labels: map[string]string{
			discoveryv1.LabelServiceName: fakeName(i), discoveryv1.LabelManagedBy: "dpbench"}},
		AddressType: discoveryv1.AddressTypeIPv6,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
	}
	for _, n := range e.lab.PodNodes() {
		if n.Name == e.owner.Name {
			continue
		}
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{fakeEndpoint(n, i).String()},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			NodeName:   &n.Name,
		})
	}
	return s
}

// fakeEndpoint is the i-th fake address in node n's IPv6 pod CIDR, far
// above the lab's pod slots.
func fakeEndpoint(n lab.Node, i int) netip.Addr {
	b := n.PodCIDRv6.Addr().As16()
	v := uint32(0x10000 + i)
	b[12], b[13], b[14], b[15] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
	return netip.AddrFrom16(b)
}

// createFakes creates fake Services (and their EndpointSlices) until there
// are upTo, with 32 concurrent clients, printing progress.
func (e *env) createFakes(ctx context.Context, upTo int) error {
	from := e.fakes
	if upTo <= from {
		return nil
	}
	err := benchkit.CreateAll(ctx, e.c, "Services with an EndpointSlice", upTo-from, 32, benchkit.Prefixed(os.Stderr, "dpbench: "), func(i int) []client.Object {
		return []client.Object{lbService(fakeName(from + i)), e.fakeSlice(from + i)}
	})
	if err == nil {
		e.fakes = upTo
	}
	return err
}

// scale names figures by Service count: 10 for the few, else -services.
func (e *env) scale() int {
	if e.total() <= fewServices {
		return fewServices
	}
	return e.o.services
}

// total is how many LoadBalancer Services exist.
func (e *env) total() int { return e.fakes + realCount }

// waitAssigned waits until n Services have an address, and returns them by name.
func (e *env) waitAssigned(ctx context.Context, n int) (map[string]netip.Addr, error) {
	var out map[string]netip.Addr
	start := time.Now()
	last := time.Now()
	err := benchkit.WaitFor(ctx, 20*time.Minute, 5*time.Second, func() bool {
		var list corev1.ServiceList
		if e.c.List(ctx, &list, client.InNamespace(ns)) != nil {
			return false
		}
		out = map[string]netip.Addr{}
		for _, s := range list.Items {
			if in := s.Status.LoadBalancer.Ingress; len(in) > 0 {
				if a, err := netip.ParseAddr(in[0].IP); err == nil {
					out[s.Name] = a
				}
			}
		}
		if time.Since(last) > 30*time.Second {
			last = time.Now()
			fmt.Fprintf(os.Stderr, "dpbench: %d of %d Services assigned after %.0fs\n", len(out), n, time.Since(start).Seconds())
		}
		return len(out) == n
	})
	if err != nil {
		return nil, fmt.Errorf("%d of %d Services got an address: %w", len(out), n, err)
	}
	return out, nil
}

// waitProgrammed waits until the owner's speaker has every Service's
// virtual service programmed (its gauge), with no sync pending.
func (e *env) waitProgrammed(ctx context.Context, timeout time.Duration) error {
	want := float64(e.total())
	var got float64
	start, last := time.Now(), time.Now()
	err := benchkit.WaitFor(ctx, timeout, 250*time.Millisecond, func() bool {
		m, err := e.speakerMetrics(ctx)
		if err != nil {
			return false
		}
		got, _ = m.Get(mVirtualServices)
		if time.Since(last) > 30*time.Second {
			last = time.Now()
			fmt.Fprintf(os.Stderr, "dpbench: %s programs %.0f of %.0f virtual services after %.0fs\n", e.owner.Name, got, want, time.Since(start).Seconds())
		}
		return got == want
	})
	if err != nil {
		return fmt.Errorf("%s's speaker programs %.0f virtual services, want %.0f: %w", e.owner.Name, got, want, err)
	}
	return nil
}

// The speaker's dataplane metrics.
const (
	mSyncDuration    = "herald_speaker_dataplane_sync_duration_seconds"
	mVirtualServices = "herald_speaker_dataplane_virtual_services"
	mRules           = "herald_speaker_dataplane_rules"
	mSyncErrors      = "herald_speaker_dataplane_sync_errors_total"
)

func (e *env) speakerMetrics(ctx context.Context) (herald.Metrics, error) {
	return herald.Scrape(ctx, e.inOwner, "http://"+herald.SpeakerMetrics+"/metrics")
}

func (e *env) kubeProxyMetrics(ctx context.Context) (herald.Metrics, error) {
	return herald.Scrape(ctx, e.inOwner, "http://"+lab.KubeProxyMetrics+"/metrics")
}
