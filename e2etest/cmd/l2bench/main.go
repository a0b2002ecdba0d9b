// Command l2bench measures Herald's layer-2 failover in a lab of its own
// (issues 4 and 8): the outage a client on the LAN sees when the node
// announcing an address drops off the LAN, over many runs; the second move
// when that node comes back (failback); and the time from creating a
// LoadBalancer Service to the first successful request.
//
// The speakers run with the chart's default timings (values.yaml), not the
// lab's short Lease. Failover runs come in three kinds:
//
//   - l2_failover: the announcing node's LAN link goes down; the Service's
//     one pod is on another node.
//   - l2_failover_pod_on_cut_node: the same, but the Service has a pod on
//     every node, so one sits on the cut node (kube-proxy keeps sending it a
//     share of the connections until Kubernetes drops the endpoint).
//   - l2_failover_node_death: the node also loses the API server, as a
//     powered-off node would (a LAN cut alone leaves the lab's forwarder in
//     the node working).
//
// Before each cut the client's own neighbour entry must name the owner's
// MAC: a cut of a node the client does not talk to would report ~0 ms.
//
// Each figure is printed as `bench: NAME VALUE UNIT` and in a table.
// -only failover|create runs one scenario.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/e2etest/herald"
	"github.com/heraldlb/herald/e2etest/lab"
	heraldscheme "github.com/heraldlb/herald/internal/scheme"
)

// The web pod runs on podNode; l2_failover runs cut the other nodes only,
// so the outage measured is the announcement's. The spread pods run one on
// every node.
const (
	ns       = "bench"
	podNode  = "node-3"
	poolCIDR = "198.51.100.64/27"
)

func main() {
	only := flag.String("only", "", "failover or create")
	runs := flag.Int("runs", 20, "runs per scenario (per kind of failover)")
	labWait := flag.Duration("lab-wait", 15*time.Minute, "how long to wait for another lab on this machine")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *only, *runs, *labWait); err != nil {
		fmt.Fprintln(os.Stderr, "l2bench:", err)
		os.Exit(1)
	}
}

type result struct {
	name, unit string
	values     []float64
}

func run(ctx context.Context, only string, runs int, labWait time.Duration) error {
	cfg, err := lab.DefaultConfig()
	if err != nil {
		return err
	}
	cfg.Log = os.Stderr
	l, err := lab.UpWaiting(ctx, cfg, labWait, func(err error) { fmt.Fprintf(os.Stderr, "l2bench: %v; retrying in 3s\n", err) })
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
	c, err := client.New(l.RESTConfig, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	if err := setup(ctx, c, l); err != nil {
		return err
	}
	var results []result
	if only == "" || only == "failover" {
		b := &failoverBench{c: c, l: l, next: netip.MustParsePrefix(poolCIDR).Addr()}
		for _, k := range kinds {
			r, err := b.failover(ctx, k, runs)
			if err != nil {
				return err
			}
			results = append(results, r...)
		}
	}
	if only == "" || only == "create" {
		r, err := createToCurl(ctx, c, runs)
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	fmt.Println()
	fmt.Printf("%-44s %10s %10s %10s  %s\n", "layer 2 (3 nodes, kube-proxy iptables, chart timings)", "median", "max", "runs", "unit")
	for _, r := range results {
		slices.Sort(r.values)
		med, max := r.values[len(r.values)/2], r.values[len(r.values)-1]
		fmt.Printf("%-44s %10.0f %10.0f %10d  %s\n", r.name, med, max, len(r.values), r.unit)
	}
	fmt.Println()
	for _, r := range results {
		fmt.Printf("bench: %s_median %.0f %s\n", r.name, r.values[len(r.values)/2], r.unit)
		fmt.Printf("bench: %s_max %.0f %s\n", r.name, r.values[len(r.values)-1], r.unit)
	}
	return nil
}

// setup makes the pool, its L2Advertisement, one web pod on podNode and one
// spread pod on every node.
func setup(ctx context.Context, c client.Client, l *lab.Lab) error {
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "bench"}, Spec: v1alpha1.IPAddressPoolSpec{Addresses: []string{poolCIDR}}},
		&v1alpha1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "bench"}, Spec: v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{"bench"}}},
		deployment("web", "web", podNode),
	}
	for _, n := range l.PodNodes() {
		objs = append(objs, deployment("spread-"+n.Name, "spread", n.Name))
	}
	for _, o := range objs {
		if err := c.Create(ctx, o); err != nil {
			return fmt.Errorf("create %T: %w", o, err)
		}
	}
	return waitFor(ctx, 60*time.Second, func() bool {
		var list appsv1.DeploymentList
		if c.List(ctx, &list, client.InNamespace(ns)) != nil {
			return false
		}
		for _, d := range list.Items {
			if d.Status.ReadyReplicas != 1 {
				return false
			}
		}
		return len(list.Items) == len(objs)-3
	})
}

// deployment runs one pod labelled app=app on node.
func deployment(name, app, node string) *appsv1.Deployment {
	one := int32(1)
	labels := map[string]string{"app": app}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{"kubernetes.io/hostname": node},
					Containers:   []corev1.Container{{Name: "web", Image: "registry.k8s.io/e2e-test-images/agnhost:2.53", Ports: []corev1.ContainerPort{{ContainerPort: 80}}}},
				},
			},
		},
	}
}

// service creates a LoadBalancer Service for the pods labelled app, asking for ip.
func service(ctx context.Context, c client.Client, name, app string, ip netip.Addr) (*corev1.Service, error) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": app},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80)}},
		},
	}
	if ip.IsValid() {
		svc.Annotations = map[string]string{v1alpha1.AnnotationLoadBalancerIPs: ip.String()}
	}
	return svc, c.Create(ctx, svc)
}

// kind is a kind of failover run.
type kind struct {
	name     string
	podOnCut bool // the Service has a pod on every node, the cut one included
	death    bool // the cut node loses the API server too
}

var kinds = []kind{
	{name: "l2_failover"},
	{name: "l2_failover_pod_on_cut_node", podOnCut: true},
	{name: "l2_failover_node_death", death: true},
}

type failoverBench struct {
	c    client.Client
	l    *lab.Lab
	next netip.Addr // next pool address to use
	n    int        // Services made
}

// nextIP cycles through the pool.
func (b *failoverBench) nextIP() netip.Addr {
	pool := netip.MustParsePrefix(poolCIDR)
	ip := b.next
	b.next = b.next.Next()
	if !pool.Contains(b.next) {
		b.next = pool.Addr()
	}
	return ip
}

// owner asks, from the client, which node answers ARP for ip.
func (b *failoverBench) owner(ctx context.Context, ip netip.Addr) (lab.Node, error) {
	answers := make(chan lab.L2Answer, 16)
	p, err := lab.NewL2Prober(lab.ClientNetns, func(a lab.L2Answer) {
		if a.IP == ip && !a.Unsolicited {
			select {
			case answers <- a:
			default:
			}
		}
	})
	if err != nil {
		return lab.Node{}, err
	}
	defer p.Close()
	for range 20 {
		_ = p.Probe(ip)
		select {
		case a := <-answers:
			for _, n := range b.l.Nodes {
				if n.MAC == a.MAC {
					return n, nil
				}
			}
			return lab.Node{}, fmt.Errorf("%s answered by unknown MAC %s", ip, a.MAC)
		case <-time.After(250 * time.Millisecond):
		case <-ctx.Done():
			return lab.Node{}, ctx.Err()
		}
	}
	return lab.Node{}, fmt.Errorf("nobody answers ARP for %s", ip)
}

// cut takes node off (the LAN, and for death the API server too) or back.
func (b *failoverBench) cut(k kind, node string, off bool) error {
	if k.death {
		return b.l.SetNodeDead(node, off)
	}
	return b.l.SetNodeLink(node, !off)
}

// failover cuts, run after run, the node announcing an address while the
// client sends a request every 10 ms, each on a new TCP connection with a
// 100 ms timeout. The outage is the time from the last success before the
// cut to the first success after it; the requests that fail in the 3 s after
// that first success show what a pod on the cut node costs. Then the node
// comes back: the failback outage is the longest gap between successes in
// the 10 s after, and the failback move the time until the client's
// neighbour entry names the returning node again.
func (b *failoverBench) failover(ctx context.Context, k kind, runs int) ([]result, error) {
	out := result{name: k.name, unit: "ms"}
	failed := result{name: k.name + "_failed_requests", unit: "requests"}
	after := result{name: k.name + "_failed_after_recovery", unit: "requests"}
	fbGap := result{name: k.name + "_failback_outage", unit: "ms"}
	fbMove := result{name: k.name + "_failback_move", unit: "ms"}
	fbFailed := result{name: k.name + "_failback_failed_requests", unit: "requests"}
	hc := &http.Client{Timeout: 100 * time.Millisecond, Transport: &http.Transport{DialContext: lab.DialContextIn(lab.ClientNetns), DisableKeepAlives: true}}
	app := "web"
	if k.podOnCut {
		app = "spread"
	}
	mismatches := 0
	for run := 0; run < runs; {
		ip := b.nextIP()
		b.n++
		svcName := fmt.Sprintf("f%d", b.n)
		svc, err := service(ctx, b.c, svcName, app, ip)
		if err != nil {
			return nil, err
		}
		url := "http://" + ip.String() + "/"
		get := func() bool {
			resp, err := hc.Get(url)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		}
		// A fresh client: no neighbour entry from an earlier run's owner.
		if err := lab.FlushNeighbours(lab.ClientNetns, ip.String()); err != nil {
			return nil, err
		}
		if err := waitFor(ctx, 30*time.Second, get); err != nil {
			return nil, fmt.Errorf("%s run %d: %s never answered: %w", k.name, run, ip, err)
		}
		owner, err := b.owner(ctx, ip)
		if err != nil {
			return nil, err
		}
		if !k.podOnCut && owner.Name == podNode {
			// Cutting podNode would cut the only pod: another address.
			_ = b.c.Delete(ctx, svc)
			continue
		}
		// The client must really talk to the owner, or the cut misses.
		if err := waitFor(ctx, 5*time.Second, func() bool {
			get()
			mac, _ := lab.NeighbourMAC(lab.ClientNetns, ip)
			return mac == owner.MAC
		}); err != nil {
			mac, state := lab.NeighbourMAC(lab.ClientNetns, ip)
			fmt.Fprintf(os.Stderr, "l2bench: %s run %d: client's neighbour entry for %s is %s %s, not the owner %s (%s): address skipped\n", k.name, run+1, ip, mac, state, owner.Name, owner.MAC)
			mismatches++
			_ = b.c.Delete(ctx, svc)
			if mismatches > runs {
				return nil, fmt.Errorf("%s: the client's neighbour entry disagreed with the answering node %d times", k.name, mismatches)
			}
			continue
		}
		run++
		probing, lastOK, cut := time.Now(), time.Time{}, time.Time{}
		var firstOK time.Time
		nfail, nafter := 0, 0
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
			at := time.Now()
			ok := get()
			// 200 ms of successes first, then the owner goes.
			if cut.IsZero() && time.Since(probing) > 200*time.Millisecond && !lastOK.IsZero() {
				if err := b.cut(k, owner.Name, true); err != nil {
					return nil, err
				}
				cut = time.Now()
			}
			switch {
			case ok && firstOK.IsZero() && !cut.IsZero() && at.After(cut):
				firstOK = at
			case ok && firstOK.IsZero():
				lastOK = at
			case !ok && !cut.IsZero() && firstOK.IsZero():
				nfail++
			case !ok && !firstOK.IsZero():
				nafter++
			}
			if !firstOK.IsZero() && time.Since(firstOK) > 3*time.Second {
				break
			}
			time.Sleep(time.Until(at.Add(10 * time.Millisecond)))
		}
		if cut.IsZero() || firstOK.IsZero() {
			_ = b.cut(k, owner.Name, false)
			return nil, fmt.Errorf("%s run %d: %s did not answer again within 30 s of cutting %s (cut at %v)", k.name, run, ip, owner.Name, cut)
		}
		ms := float64(firstOK.Sub(lastOK).Microseconds()) / 1000
		out.values = append(out.values, ms)
		failed.values = append(failed.values, float64(nfail))
		after.values = append(after.values, float64(nafter))

		// Failback: the node returns and takes its address back.
		back := time.Now()
		if err := b.cut(k, owner.Name, false); err != nil {
			return nil, err
		}
		gap, fbFails, moved := b.failback(ctx, get, ip, owner.MAC, back)
		fbGap.values = append(fbGap.values, gap)
		fbFailed.values = append(fbFailed.values, float64(fbFails))
		move := "never within 10 s"
		if moved > 0 {
			fbMove.values = append(fbMove.values, moved)
			move = fmt.Sprintf("%.0f ms", moved)
		}
		fmt.Fprintf(os.Stderr, "l2bench: %s run %2d: cut %s announcing %s at %s: outage %.0f ms, %d failed requests, %d failed in the 3 s after; back: client moved to it after %s, longest gap %.0f ms, %d failed\n",
			k.name, run, owner.Name, ip, cut.UTC().Format("15:04:05.000"), ms, nfail, nafter, move, gap, fbFails)
		_ = b.c.Delete(ctx, svc)
		time.Sleep(2 * time.Second)
	}
	rs := []result{out, failed, after, fbGap, fbFailed}
	if len(fbMove.values) > 0 {
		rs = append(rs, fbMove)
	}
	return rs, nil
}

// failback probes for 10 s after the cut node's return: the longest gap
// between successes (ms), the failed requests, and when the client's
// neighbour entry first named the returning node (ms after back; 0: never).
func (b *failoverBench) failback(ctx context.Context, get func() bool, ip netip.Addr, mac string, back time.Time) (gapMS float64, fails int, movedMS float64) {
	var moved time.Time
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if m, _ := lab.NeighbourMAC(lab.ClientNetns, ip); m == mac {
				mu.Lock()
				if moved.IsZero() {
					moved = time.Now()
				}
				mu.Unlock()
			}
		}
	}()
	last := back
	var gap time.Duration
	for time.Since(back) < 10*time.Second && ctx.Err() == nil {
		at := time.Now()
		if get() {
			if d := at.Sub(last); d > gap {
				gap = d
			}
			last = at
		} else {
			fails++
		}
		time.Sleep(time.Until(at.Add(10 * time.Millisecond)))
	}
	if d := time.Since(last); d > gap {
		gap = d
	}
	close(done)
	mu.Lock()
	defer mu.Unlock()
	if !moved.IsZero() {
		movedMS = float64(moved.Sub(back).Microseconds()) / 1000
	}
	return float64(gap.Microseconds()) / 1000, fails, movedMS
}

// createToCurl times Service creation to the first successful request from
// the client, polling every 10 ms.
func createToCurl(ctx context.Context, c client.Client, runs int) (result, error) {
	out := result{name: "l2_create_to_curl", unit: "ms"}
	hc := &http.Client{Timeout: 100 * time.Millisecond, Transport: &http.Transport{DialContext: lab.DialContextIn(lab.ClientNetns), DisableKeepAlives: true}}
	for i := range runs {
		// A fresh client: the address was another Service's in the last run,
		// and its neighbour entry must not spare this run the ARP exchange.
		if err := lab.FlushNeighbours(lab.ClientNetns, poolCIDR); err != nil {
			return out, err
		}
		start := time.Now()
		svc, err := service(ctx, c, fmt.Sprintf("c%d", i), "web", netip.Addr{})
		if err != nil {
			return out, err
		}
		ok := waitFor(ctx, 20*time.Second, func() bool {
			if err := c.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil || len(svc.Status.LoadBalancer.Ingress) == 0 {
				return false
			}
			resp, err := hc.Get("http://" + svc.Status.LoadBalancer.Ingress[0].IP + "/")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
		if ok != nil {
			return out, fmt.Errorf("run %d: %w", i, ok)
		}
		out.values = append(out.values, float64(time.Since(start).Microseconds())/1000)
		if err := c.Delete(ctx, svc); err != nil {
			return out, err
		}
	}
	return out, nil
}

func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if cond() {
			return nil
		}
	}
	return fmt.Errorf("timed out after %s", timeout)
}
