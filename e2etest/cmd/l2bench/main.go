// Command l2bench measures Herald's layer-2 failover in a lab of its own
// (issue 4, "Benchmark"): the outage a client on the LAN sees when the node
// announcing an address drops off the LAN, over many runs, and the time from
// creating a LoadBalancer Service to the first successful request.
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
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/e2etest/herald"
	"github.com/heraldlb/herald/e2etest/lab"
	"github.com/heraldlb/herald/speaker/election"
)

// The pod runs on podNode; failover runs cut the other nodes only, so the
// outage measured is the announcement's, not kube-proxy's view of a dead
// node's endpoints (which Kubernetes clears only after ~40 s).
const (
	ns       = "bench"
	podNode  = "node-3"
	poolCIDR = "198.51.100.64/27"
)

func main() {
	only := flag.String("only", "", "failover or create")
	runs := flag.Int("runs", 20, "runs per scenario")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *only, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "l2bench:", err)
		os.Exit(1)
	}
}

type result struct {
	name, unit string
	values     []float64
}

func run(ctx context.Context, only string, runs int) error {
	cfg, err := lab.DefaultConfig()
	if err != nil {
		return err
	}
	cfg.Log = os.Stderr
	l, err := lab.Up(ctx, cfg)
	if err != nil {
		return err
	}
	defer l.Down()
	h, err := herald.Install(ctx, l, func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) })
	if err != nil {
		return err
	}
	defer h.Stop()
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = v1alpha1.AddToScheme(scheme)
	c, err := client.New(l.RESTConfig, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	if err := setup(ctx, c); err != nil {
		return err
	}
	var results []result
	if only == "" || only == "failover" {
		r, err := failover(ctx, c, l, runs)
		if err != nil {
			return err
		}
		results = append(results, r...)
	}
	if only == "" || only == "create" {
		r, err := createToCurl(ctx, c, runs)
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	fmt.Println()
	fmt.Printf("%-32s %10s %10s %10s  %s\n", "layer 2 (3 nodes, kube-proxy iptables)", "median", "max", "runs", "unit")
	for _, r := range results {
		slices.Sort(r.values)
		med, max := r.values[len(r.values)/2], r.values[len(r.values)-1]
		fmt.Printf("%-32s %10.0f %10.0f %10d  %s\n", r.name, med, max, len(r.values), r.unit)
	}
	fmt.Println()
	for _, r := range results {
		fmt.Printf("bench: %s_median %.0f %s\n", r.name, r.values[len(r.values)/2], r.unit)
		fmt.Printf("bench: %s_max %.0f %s\n", r.name, r.values[len(r.values)-1], r.unit)
	}
	return nil
}

// setup makes the pool, its L2Advertisement and one web pod on podNode.
func setup(ctx context.Context, c client.Client) error {
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "bench"}, Spec: v1alpha1.IPAddressPoolSpec{Addresses: []string{poolCIDR}}},
		&v1alpha1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "bench"}, Spec: v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{"bench"}}},
	}
	one := int32(1)
	labels := map[string]string{"app": "web"}
	objs = append(objs, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{"kubernetes.io/hostname": podNode},
					Containers:   []corev1.Container{{Name: "web", Image: "registry.k8s.io/e2e-test-images/agnhost:2.53", Ports: []corev1.ContainerPort{{ContainerPort: 80}}}},
				},
			},
		},
	})
	for _, o := range objs {
		if err := c.Create(ctx, o); err != nil {
			return fmt.Errorf("create %T: %w", o, err)
		}
	}
	return waitFor(ctx, 60*time.Second, func() bool {
		var d appsv1.Deployment
		return c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &d) == nil && d.Status.ReadyReplicas == 1
	})
}

// service creates a LoadBalancer Service asking for ip.
func service(ctx context.Context, c client.Client, name string, ip netip.Addr) (*corev1.Service, error) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80)}},
		},
	}
	if ip.IsValid() {
		svc.Annotations = map[string]string{v1alpha1.AnnotationLoadBalancerIPs: ip.String()}
	}
	return svc, c.Create(ctx, svc)
}

// failover cuts, run after run, the LAN link of the node announcing an
// address while the client sends a request every 10 ms, each on a new TCP
// connection with a 100 ms timeout; the outage is the time from the last
// success before the cut to the first success after it.
func failover(ctx context.Context, c client.Client, l *lab.Lab, runs int) ([]result, error) {
	out := result{name: "l2_failover", unit: "ms"}
	failed := result{name: "l2_failover_failed_requests", unit: "requests"}
	// Addresses whose owner, among all three nodes, is not podNode, so
	// cutting the owner never cuts the pod: the speakers' own election.
	var ips []netip.Addr
	nodes := []string{"node-1", "node-2", "node-3"}
	for a := netip.MustParsePrefix(poolCIDR).Addr(); len(ips) < runs; a = a.Next() {
		if owner, _ := election.Owner(a, nodes, nil); owner != podNode {
			ips = append(ips, a)
		}
	}
	hc := &http.Client{Timeout: 100 * time.Millisecond, Transport: &http.Transport{DialContext: lab.DialContextIn(lab.ClientNetns), DisableKeepAlives: true}}
	for i, ip := range ips {
		if _, err := service(ctx, c, fmt.Sprintf("f%d", i), ip); err != nil {
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
		if err := waitFor(ctx, 20*time.Second, get); err != nil {
			return nil, fmt.Errorf("run %d: %s never answered: %w", i, ip, err)
		}
		// Cut only once the owner the election gives among all three nodes
		// really announces: after the previous run the cut node may still be
		// rejoining, and cutting a node that does not announce measures nothing.
		owner, _ := election.Owner(ip, nodes, nil)
		svcName := fmt.Sprintf("f%d", i)
		if err := waitFor(ctx, 20*time.Second, func() bool {
			var list v1alpha1.AnnouncementList
			err := c.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{"herald.dev/service": svcName})
			return err == nil && len(list.Items) == 1 && list.Items[0].Spec.Node == owner
		}); err != nil {
			return nil, fmt.Errorf("run %d: %s never announced by %s: %w", i, ip, owner, err)
		}
		probing, lastOK, cut := time.Now(), time.Time{}, time.Time{}
		var firstOK time.Time
		nfail := 0
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
			at := time.Now()
			ok := get()
			// 200 ms of successes first, then the owner drops off the LAN.
			if cut.IsZero() && time.Since(probing) > 200*time.Millisecond && !lastOK.IsZero() {
				if err := l.SetNodeLink(owner, false); err != nil {
					return nil, err
				}
				cut = time.Now()
			}
			if ok {
				if !cut.IsZero() && at.After(cut) {
					firstOK = at
					break
				}
				lastOK = at
			} else if !cut.IsZero() {
				nfail++
			}
			time.Sleep(time.Until(at.Add(10 * time.Millisecond)))
		}
		if err := l.SetNodeLink(owner, true); err != nil {
			return nil, err
		}
		if cut.IsZero() || firstOK.IsZero() {
			return nil, fmt.Errorf("run %d: %s did not answer again within 15 s of cutting %s (cut at %v)", i, ip, owner, cut)
		}
		ms := float64(firstOK.Sub(lastOK).Microseconds()) / 1000
		fmt.Fprintf(os.Stderr, "l2bench: run %2d: cut %s announcing %s at %s: outage %.0f ms, %d failed requests\n", i+1, owner, ip, cut.UTC().Format("15:04:05.000"), ms, nfail)
		out.values = append(out.values, ms)
		failed.values = append(failed.values, float64(nfail))
		// Let the cut node rejoin (its speaker takes its addresses back).
		time.Sleep(3 * time.Second)
	}
	return []result{out, failed}, nil
}

// createToCurl times Service creation to the first successful request from
// the client, polling every 10 ms.
func createToCurl(ctx context.Context, c client.Client, runs int) (result, error) {
	out := result{name: "l2_create_to_curl", unit: "ms"}
	hc := &http.Client{Timeout: 100 * time.Millisecond, Transport: &http.Transport{DialContext: lab.DialContextIn(lab.ClientNetns), DisableKeepAlives: true}}
	for i := range runs {
		start := time.Now()
		svc, err := service(ctx, c, fmt.Sprintf("c%d", i), netip.Addr{})
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
