package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// benchService is a Service as the bench creates it: IPv6 only (the lab's
// IPv4 ClusterIP range has 126 addresses), no NodePorts (the default range
// holds 2,767), no selector (no EndpointSlices to make: the API server's
// work is the controller's).
func benchService(name string) *corev1.Service {
	single := corev1.IPFamilyPolicySingleStack
	nodePorts := false
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: benchNamespace},
		Spec: corev1.ServiceSpec{
			Type:                          corev1.ServiceTypeLoadBalancer,
			IPFamilies:                    []corev1.IPFamily{corev1.IPv6Protocol},
			IPFamilyPolicy:                &single,
			AllocateLoadBalancerNodePorts: &nodePorts,
			Ports: []corev1.ServicePort{{
				Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080),
			}},
		},
	}
}

// createServices creates n Services named group-NNNNN from the bench's
// concurrent clients. It returns how long that took and when the last
// create returned.
func (b *bench) createServices(ctx context.Context, group string, n int) (time.Duration, time.Time, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		last     time.Time
	)
	for range min(b.opts.clients, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				err := b.createService(ctx, fmt.Sprintf("%s-%05d", group, i))
				now := time.Now()
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
					cancel()
				}
				if now.After(last) {
					last = now
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return 0, last, firstErr
	}
	return time.Since(start), last, ctx.Err()
}

// createService creates one Service, retrying what a loaded API server may
// answer; a retry that finds the Service made is a success.
func (b *bench) createService(ctx context.Context, name string) error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		_, err = b.client.CoreV1().Services(benchNamespace).Create(ctx, benchService(name), metav1.CreateOptions{})
		switch {
		case err == nil:
			return nil
		case apierrors.IsAlreadyExists(err) && attempt > 0:
			return nil
		case apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) || apierrors.IsInternalError(err):
			time.Sleep(time.Duration(attempt+1) * 100 * time.Millisecond)
		default:
			return fmt.Errorf("create Service %s/%s: %w", benchNamespace, name, err)
		}
	}
	return fmt.Errorf("create Service %s/%s: %w", benchNamespace, name, err)
}

// tracker follows the bench's Services through an informer and notes when
// each first showed an EXTERNAL-IP, as `kubectl get svc -w` would.
type tracker struct {
	mu       sync.Mutex
	svcs     map[string]*seen
	created  map[string]int       // by group (the name up to the first '-')
	assigned map[string]int       // by group
	first    map[string]time.Time // first assignment seen, by group
	last     map[string]time.Time // latest first-assignment seen, by group
	moved    map[string]bool      // Services whose addresses changed once set
	changed  chan struct{}        // closed and replaced on every event
}

type seen struct {
	ips string    // ingress addresses, comma-separated; "" while pending
	at  time.Time // when the first address was seen
}

func startTracker(ctx context.Context, c kubernetes.Interface, ns string) (*tracker, error) {
	t := &tracker{
		svcs: map[string]*seen{}, created: map[string]int{}, assigned: map[string]int{},
		first: map[string]time.Time{}, last: map[string]time.Time{}, moved: map[string]bool{},
		changed: make(chan struct{}),
	}
	f := informers.NewSharedInformerFactoryWithOptions(c, 0, informers.WithNamespace(ns))
	inf := f.Core().V1().Services().Informer()
	// 12,000 Services: keep only what the bench reads.
	if err := inf.SetTransform(func(o any) (any, error) {
		if svc, ok := o.(*corev1.Service); ok {
			svc.ManagedFields = nil
			svc.Annotations = nil
		}
		return o, nil
	}); err != nil {
		return nil, err
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { t.observe(o) },
		UpdateFunc: func(_, o any) { t.observe(o) },
	}); err != nil {
		return nil, err
	}
	f.Start(ctx.Done())
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if !cache.WaitForCacheSync(sctx.Done(), inf.HasSynced) {
		return nil, fmt.Errorf("Service informer in %s did not sync", ns)
	}
	return t, nil
}

func group(name string) string {
	g, _, _ := strings.Cut(name, "-")
	return g
}

func ingressIPs(svc *corev1.Service) string {
	var ips []string
	for _, in := range svc.Status.LoadBalancer.Ingress {
		ips = append(ips, in.IP)
	}
	return strings.Join(ips, ",")
}

func (t *tracker) observe(o any) {
	now := time.Now()
	svc, ok := o.(*corev1.Service)
	if !ok {
		return
	}
	ips := ingressIPs(svc)
	g := group(svc.Name)
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.svcs[svc.Name]
	if s == nil {
		s = &seen{}
		t.svcs[svc.Name] = s
		t.created[g]++
	}
	if s.ips != "" && ips != s.ips {
		t.moved[svc.Name] = true
	}
	if s.at.IsZero() && ips != "" {
		s.at = now
		t.assigned[g]++
		if t.first[g].IsZero() {
			t.first[g] = now
		}
		t.last[g] = now
	}
	s.ips = ips
	close(t.changed)
	t.changed = make(chan struct{})
}

// wait returns once done (called with the tracker locked) holds. It gives
// up after timeout, when ctx ends, or when abort is closed (the controller
// exited), and prints progress every few seconds.
func (t *tracker) wait(ctx context.Context, timeout time.Duration, abort <-chan struct{}, what string, progress func(string), done func() bool) error {
	deadline := time.After(timeout)
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		t.mu.Lock()
		ok, ch := done(), t.changed
		t.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-tick.C:
			if progress != nil {
				progress(what)
			}
		case <-abort:
			return fmt.Errorf("the controller exited while waiting for %s", what)
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
	}
}

// Accessors; each locks the tracker.

func (t *tracker) counts(g string) (created, assigned int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.created[g], t.assigned[g]
}

func (t *tracker) span(g string) (first, last time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.first[g], t.last[g]
}

func (t *tracker) assignedAt(name string) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := t.svcs[name]; s != nil {
		return s.at
	}
	return time.Time{}
}

func (t *tracker) assignedTotal() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, c := range t.assigned {
		n += c
	}
	return n
}

func (t *tracker) total() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.svcs)
}

// takeMoved returns the Services whose addresses changed after being set,
// and forgets them.
func (t *tracker) takeMoved() map[string]bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.moved
	t.moved = map[string]bool{}
	return m
}

// waitCreated waits until the informer has seen n Services of the group.
func (b *bench) waitCreated(ctx context.Context, g string, n int) error {
	return b.track.wait(ctx, 2*time.Minute, nil, fmt.Sprintf("the informer to see %d %s Services", n, g), nil, func() bool {
		return b.track.created[g] >= n
	})
}

// waitAssigned waits until n Services of the group have an EXTERNAL-IP.
func (b *bench) waitAssigned(ctx context.Context, g string, n int, timeout time.Duration) error {
	var abort <-chan struct{}
	if b.ctl != nil {
		abort = b.ctl.done
	}
	progress := func(what string) {
		_, a := b.track.counts(g)
		b.progress("  %s: %d of %d have an EXTERNAL-IP", g, a, n)
	}
	return b.track.wait(ctx, timeout, abort, fmt.Sprintf("%d %s Services to get an EXTERNAL-IP", n, g), progress, func() bool {
		return b.track.assigned[g] >= n
	})
}

// listIPs reads every bench Service's addresses with one List.
func (b *bench) listIPs(ctx context.Context) (map[string]string, error) {
	list, err := b.client.CoreV1().Services(benchNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(list.Items))
	for i := range list.Items {
		out[list.Items[i].Name] = ingressIPs(&list.Items[i])
	}
	return out, nil
}
