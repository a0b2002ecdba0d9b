// Command bgpbench measures Herald's BGP in a lab of its own with the lab's
// FRR and BIRD routers (issue 11), with the chart's speaker timings:
//
//   - bgp_appear: a Service created -> its /32 in FRR's table (each speaker
//     announces it; the first path counts), and the same for its withdrawal
//     on deletion (bgp_withdraw_delete);
//   - bgp_withdraw_bfd: a node's LAN link cut -> its next hop gone from FRR's
//     table, with BFD 300 ms x 3; bgp_withdraw_holdtime: the same without
//     BFD, hold time 9 s (the baseline without BFD);
//   - bgp_bulk_1000: 1,000 IPv6 Services created (by 20 clients at once),
//     the last one assigned -> all 1,000 prefixes in FRR's table (and, as
//     bgp_bulk_1000_from_first_create, from the first create);
//   - the speakers' resident memory with those 1,000 Services advertised to
//     three peers (FRR over IPv4, BIRD over IPv4 and over IPv6).
//
// Each figure is printed as `bench: NAME VALUE UNIT`; -runs sets the runs
// of the timed scenarios.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/e2etest/herald"
	"github.com/heraldlb/herald/e2etest/lab"
	"github.com/heraldlb/herald/internal/bgprouter"
	heraldscheme "github.com/heraldlb/herald/internal/scheme"
)

const (
	ns       = "bgpbench"
	nodesASN = 64600
	pool4    = "203.0.113.128/26"
	pool6    = "2001:db8:4::/112"
)

func main() {
	runs := flag.Int("runs", 20, "runs of bgp_appear; bgp_withdraw_bfd runs half as many, bgp_withdraw_holdtime 3")
	bulk := flag.Int("bulk", 1000, "Services of bgp_bulk")
	only := flag.String("only", "", "run one scenario: appear, withdraw or bulk")
	labWait := flag.Duration("lab-wait", 15*time.Minute, "how long to wait for another lab on this machine")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *only, *runs, *bulk, *labWait); err != nil {
		fmt.Fprintln(os.Stderr, "bgpbench:", err)
		os.Exit(1)
	}
}

type result struct {
	name, unit string
	values     []float64
}

func run(ctx context.Context, only string, runs, bulk int, labWait time.Duration) error {
	if m := bgprouter.Missing(); len(m) > 0 {
		return fmt.Errorf("needs %v (Debian packages frr, bird2)", m)
	}
	cfg, err := lab.DefaultConfig()
	if err != nil {
		return err
	}
	cfg.Log, cfg.Routers = os.Stderr, true
	l, err := lab.UpWaiting(ctx, cfg, labWait, func(err error) { fmt.Fprintf(os.Stderr, "bgpbench: %v; retrying in 3s\n", err) })
	if err != nil {
		return err
	}
	defer l.Down()
	h, err := herald.InstallWith(ctx, l, herald.Options{ChartTimings: true}, func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) })
	if err != nil {
		return err
	}
	defer h.Stop()
	scheme := heraldscheme.New()
	// The creates of bgp_bulk must not wait on client-go's default 5 QPS.
	rc := rest.CopyConfig(l.RESTConfig)
	rc.QPS, rc.Burst = 500, 1000
	c, err := client.New(rc, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	b := &bench{c: c, l: l, h: h}
	if err := b.setup(ctx); err != nil {
		return err
	}
	var results []result
	for _, step := range []struct {
		name string
		run  func(context.Context, int) ([]result, error)
	}{
		{"appear", b.appear}, {"withdraw", b.withdrawBFD}, {"withdraw", b.withdrawHoldTime},
		{"bulk", func(ctx context.Context, _ int) ([]result, error) { return b.bulk(ctx, bulk) }},
	} {
		if only != "" && only != step.name {
			continue
		}
		r, err := step.run(ctx, runs)
		if err != nil {
			return err
		}
		results = append(results, r...)
	}
	fmt.Println()
	fmt.Printf("%-36s %10s %10s %6s  %s\n", "BGP (3 nodes, FRR 8.4 and BIRD 2.0)", "median", "max", "runs", "unit")
	for _, r := range results {
		slices.Sort(r.values)
		fmt.Printf("%-36s %10.0f %10.0f %6d  %s\n", r.name, r.values[len(r.values)/2], r.values[len(r.values)-1], len(r.values), r.unit)
	}
	fmt.Println()
	for _, r := range results {
		if len(r.values) == 1 {
			fmt.Printf("bench: %s %.1f %s\n", r.name, r.values[0], r.unit)
			continue
		}
		fmt.Printf("bench: %s_median %.0f %s\n", r.name, r.values[len(r.values)/2], r.unit)
		fmt.Printf("bench: %s_max %.0f %s\n", r.name, r.values[len(r.values)-1], r.unit)
	}
	return nil
}

type bench struct {
	c client.Client
	l *lab.Lab
	h *herald.Herald
}

// setup makes the pools, the three peers (BFD towards FRR), one
// advertisement per family and a web pod on every node.
func (b *bench) setup(ctx context.Context) error {
	hold := &metav1.Duration{Duration: 9 * time.Second}
	connect := &metav1.Duration{Duration: time.Second}
	peer := func(name, addr string, asn uint32, bfd string) *v1alpha1.BGPPeer {
		return &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.BGPPeerSpec{
			MyASN: nodesASN, PeerASN: asn, PeerAddress: addr, HoldTime: hold, ConnectTime: connect, BFDProfile: bfd}}
	}
	three := int32(3)
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&v1alpha1.BFDProfile{ObjectMeta: metav1.ObjectMeta{Name: "fast"}, Spec: v1alpha1.BFDProfileSpec{DetectMultiplier: &three}},
		peer("frr", lab.FRRIPv4, lab.FRRASN, "fast"),
		peer("bird4", lab.BIRDIPv4, lab.BIRDASN, ""),
		peer("bird6", lab.BIRDIPv6, lab.BIRDASN, ""),
		&v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "v4"}, Spec: v1alpha1.IPAddressPoolSpec{Addresses: []string{pool4}}},
		&v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "v6"}, Spec: v1alpha1.IPAddressPoolSpec{Addresses: []string{pool6}}},
		&v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "all"}, Spec: v1alpha1.BGPAdvertisementSpec{IPAddressPools: []string{"v4", "v6"}}},
		webDeployment(int32(len(b.l.PodNodes()))),
	}
	for _, o := range objs {
		if err := b.c.Create(ctx, o); err != nil {
			return fmt.Errorf("create %T %s: %w", o, o.GetName(), err)
		}
	}
	return waitFor(ctx, 90*time.Second, "the web pods and every session Established", func() bool {
		var d appsv1.Deployment
		if b.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &d) != nil || d.Status.ReadyReplicas != int32(len(b.l.PodNodes())) {
			return false
		}
		var list v1alpha1.BGPSessionList
		if b.c.List(ctx, &list) != nil {
			return false
		}
		up := 0
		for _, s := range list.Items {
			if s.Status.State == "Established" && (s.Spec.Peer != "frr" || s.Status.BFD == "Up") {
				up++
			}
		}
		return up == 3*len(b.l.Nodes)
	})
}

func webDeployment(replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": "web"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "kubernetes.io/hostname",
						WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: &metav1.LabelSelector{MatchLabels: labels}}},
					Containers: []corev1.Container{{Name: "web", Image: "registry.k8s.io/e2e-test-images/agnhost:2.53", Ports: []corev1.ContainerPort{{ContainerPort: 80}}}},
				},
			},
		},
	}
}

func (b *bench) service(ctx context.Context, name string, ip netip.Addr, family corev1.IPFamily) error {
	single := corev1.IPFamilyPolicySingleStack
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "web"},
			Ports:          []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80)}},
			IPFamilyPolicy: &single, IPFamilies: []corev1.IPFamily{family},
		},
	}
	if ip.IsValid() {
		svc.Annotations = map[string]string{v1alpha1.AnnotationLoadBalancerIPs: ip.String()}
	}
	return b.c.Create(ctx, svc)
}

func (b *bench) deleteService(ctx context.Context, name string) error {
	return client.IgnoreNotFound(b.c.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}))
}

// nextHops polls FRR for prefix until ok holds for its next hops, and
// returns when it first did.
func (b *bench) nextHops(ctx context.Context, prefix netip.Prefix, timeout time.Duration, ok func([]netip.Addr) bool) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		r, err := b.l.FRR.Route(ctx, prefix)
		at := time.Now()
		if err == nil {
			var nhs []netip.Addr
			if r != nil {
				nhs = r.NextHops()
			}
			if ok(nhs) {
				return at, nil
			}
		}
		if ctx.Err() != nil {
			return time.Time{}, ctx.Err()
		}
	}
	return time.Time{}, fmt.Errorf("%s: not as expected at FRR within %s", prefix, timeout)
}

func (b *bench) appear(ctx context.Context, runs int) ([]result, error) {
	appear := result{name: "bgp_appear", unit: "ms"}
	gone := result{name: "bgp_withdraw_delete", unit: "ms"}
	first := netip.MustParsePrefix(pool4).Addr().Next()
	for i := range runs {
		ip := first
		for range i {
			ip = ip.Next()
		}
		prefix := netip.PrefixFrom(ip, 32)
		name := fmt.Sprintf("appear-%d", i)
		start := time.Now()
		if err := b.service(ctx, name, ip, corev1.IPv4Protocol); err != nil {
			return nil, err
		}
		at, err := b.nextHops(ctx, prefix, 10*time.Second, func(n []netip.Addr) bool { return len(n) > 0 })
		if err != nil {
			return nil, err
		}
		appear.values = append(appear.values, ms(at.Sub(start)))
		if _, err := b.nextHops(ctx, prefix, 10*time.Second, func(n []netip.Addr) bool { return len(n) == len(b.l.Nodes) }); err != nil {
			return nil, err
		}
		start = time.Now()
		if err := b.deleteService(ctx, name); err != nil {
			return nil, err
		}
		at, err = b.nextHops(ctx, prefix, 10*time.Second, func(n []netip.Addr) bool { return len(n) == 0 })
		if err != nil {
			return nil, err
		}
		gone.values = append(gone.values, ms(at.Sub(start)))
		fmt.Fprintf(os.Stderr, "bgpbench: appear %d: %.0f ms, withdrawn %.0f ms after deletion\n", i, appear.values[i], gone.values[i])
	}
	return []result{appear, gone}, nil
}

// withdrawBFD cuts the LAN link of each node in turn under a Service all
// nodes announce, and times its next hop's removal at FRR.
func (b *bench) withdrawBFD(ctx context.Context, runs int) ([]result, error) {
	r, err := b.withdraw(ctx, "bgp_withdraw_bfd", max(runs/2, 3), 5*time.Second)
	return []result{r}, err
}

// withdrawHoldTime does the same with BFD off: the hold time (9 s) ends it.
func (b *bench) withdrawHoldTime(ctx context.Context, _ int) ([]result, error) {
	var p v1alpha1.BGPPeer
	if err := b.c.Get(ctx, client.ObjectKey{Name: "frr"}, &p); err != nil {
		return nil, err
	}
	p.Spec.BFDProfile = ""
	if err := b.c.Update(ctx, &p); err != nil {
		return nil, err
	}
	r, err := b.withdraw(ctx, "bgp_withdraw_holdtime", 3, 20*time.Second)
	return []result{r}, err
}

func (b *bench) withdraw(ctx context.Context, name string, runs int, timeout time.Duration) (result, error) {
	out := result{name: name, unit: "ms"}
	ip := netip.MustParsePrefix(pool4).Addr().Next()
	for range 40 {
		ip = ip.Next()
	}
	prefix := netip.PrefixFrom(ip, 32)
	svc := strings.ReplaceAll(name, "_", "-")
	if err := b.service(ctx, svc, ip, corev1.IPv4Protocol); err != nil {
		return out, err
	}
	defer b.deleteService(context.Background(), svc)
	all := len(b.l.Nodes)
	for i := range runs {
		if _, err := b.nextHops(ctx, prefix, 60*time.Second, func(n []netip.Addr) bool { return len(n) == all }); err != nil {
			return out, err
		}
		node := b.l.Nodes[i%all]
		start := time.Now()
		if err := b.l.SetNodeLink(node.Name, false); err != nil {
			return out, err
		}
		at, err := b.nextHops(ctx, prefix, timeout, func(n []netip.Addr) bool { return !slices.Contains(n, node.IPv4) })
		if lerr := b.l.SetNodeLink(node.Name, true); lerr != nil {
			return out, lerr
		}
		if err != nil {
			return out, err
		}
		out.values = append(out.values, ms(at.Sub(start)))
		fmt.Fprintf(os.Stderr, "bgpbench: %s %d (%s): %.0f ms\n", name, i, node.Name, out.values[i])
	}
	return out, nil
}

// bulk creates n IPv6 Services at once and times all their prefixes'
// arrival at FRR, then reads the speakers' memory.
func (b *bench) bulk(ctx context.Context, n int) ([]result, error) {
	start := time.Now()
	// 20 clients at once: the figure is Herald's, not a serial client's.
	errs := make(chan error, n)
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	for range 20 {
		go func() {
			for i := range next {
				errs <- b.service(ctx, fmt.Sprintf("bulk-%d", i), netip.Addr{}, corev1.IPv6Protocol)
			}
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			return nil, err
		}
	}
	created := time.Now()
	var assigned time.Time
	for assigned.IsZero() || b.count6(ctx) < n {
		if assigned.IsZero() {
			var list corev1.ServiceList
			if err := b.c.List(ctx, &list, client.InNamespace(ns)); err == nil {
				got := 0
				for _, s := range list.Items {
					if strings.HasPrefix(s.Name, "bulk-") && len(s.Status.LoadBalancer.Ingress) > 0 {
						got++
					}
				}
				if got == n {
					assigned = time.Now()
				}
			}
		}
		if time.Since(start) > 5*time.Minute {
			return nil, fmt.Errorf("bgp_bulk: %d of %d prefixes at FRR after 5 min", b.count6(ctx), n)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		time.Sleep(50 * time.Millisecond)
	}
	done := time.Now()
	out := []result{
		// The bgp_bulk_1000: Services assigned -> all prefixes at the
		// router. The lab's API server creates about 15 Services/s, so it is
		// timed from the last assignment; the other two show the creates.
		{name: fmt.Sprintf("bgp_bulk_%d", n), unit: "ms", values: []float64{ms(done.Sub(assigned))}},
		{name: fmt.Sprintf("bgp_bulk_%d_from_first_create", n), unit: "ms", values: []float64{ms(done.Sub(start))}},
		{name: fmt.Sprintf("bgp_bulk_%d_create", n), unit: "ms", values: []float64{ms(created.Sub(start))}},
	}
	time.Sleep(5 * time.Second) // let the status writes settle
	rss := result{name: fmt.Sprintf("speaker_rss_bgp_%d_services_3_peers", n), unit: "MiB"}
	for _, node := range b.l.Nodes {
		if p := b.h.Speaker(node.Name); p != nil && p.Running() {
			if v, err := herald.RSSMiB(p.PID()); err == nil {
				rss.values = append(rss.values, v)
			}
		}
	}
	slices.Sort(rss.values)
	if len(rss.values) > 0 {
		out = append(out, result{name: rss.name + "_max", unit: "MiB", values: rss.values[len(rss.values)-1:]})
	}
	return out, nil
}

// count6 is how many IPv6 prefixes of the pool FRR holds.
func (b *bench) count6(ctx context.Context) int {
	out, err := b.l.FRR.Vtysh(ctx, "show bgp ipv6 unicast json")
	if err != nil {
		return 0
	}
	var t struct {
		Routes map[string]json.RawMessage `json:"routes"`
	}
	if json.Unmarshal([]byte(out), &t) != nil {
		return 0
	}
	pool := netip.MustParsePrefix(pool6)
	n := 0
	for k := range t.Routes {
		if p, err := netip.ParsePrefix(k); err == nil && pool.Contains(p.Addr()) {
			n++
		}
	}
	return n
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}
