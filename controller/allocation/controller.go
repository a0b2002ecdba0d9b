// Package allocation is the controller's reconcile loop: it gives Services of
// type LoadBalancer their addresses from the pools (through the pure
// allocator in controller/ipam), writes them to the Service status in one
// write, and keeps pools' and other Herald objects' status current.
//
// Allocation decisions are serial and deterministic (the allocator holds one
// lock); status writes run in parallel. On start, before anything new is
// allocated, every Service's addresses are read back from its status, so a
// restart never changes an assigned address.
package allocation

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/controller/ipam"
	"github.com/heraldlb/herald/internal/model"
)

// Options configure the controller.
type Options struct {
	// LoadBalancerClass is the spec.loadBalancerClass handled; empty means
	// Services without a class, as Kubernetes intends for the default
	// implementation.
	LoadBalancerClass string
	// IPMode is written to each ingress entry: VIP when kube-proxy handles
	// the addresses, Proxy when Herald's dataplane does.
	IPMode corev1.LoadBalancerIPMode
	// Workers is how many Services are reconciled (and written) at once.
	Workers int
}

// Controller holds the state shared by the Service and configuration
// reconcilers.
type Controller struct {
	opts     Options
	client   client.Client
	recorder events.EventRecorder
	alloc    ipam.Allocator

	// retry carries Services to reconcile again: pending ones after
	// addresses were freed or pools changed, evicted ones after a pool shrank.
	retry chan event.GenericEvent
	// usage asks the config reconciler to refresh pools' usage counts.
	usage chan event.GenericEvent

	mu      sync.Mutex
	cfg     *model.Config
	pools   map[string]*model.Pool // in force: accepted, or the last accepted version (cfg.Pools)
	pending map[string]bool        // Services waiting for an address
	// poolsSeen fingerprints the pools cfg was built from, so a Service
	// reconcile can tell that the configuration lags behind the cache.
	poolsSeen string
	started   bool
	ready     chan struct{}
}

// New sets the controller up with the manager. The manager must cache
// Services, Namespaces and Herald's kinds (the default).
func New(mgr ctrl.Manager, opts Options) (*Controller, error) {
	if opts.IPMode == "" {
		opts.IPMode = corev1.LoadBalancerIPModeVIP
	}
	if opts.Workers == 0 {
		opts.Workers = 16
	}
	c := &Controller{
		opts:     opts,
		client:   mgr.GetClient(),
		recorder: mgr.GetEventRecorder("herald-controller"),
		retry:    make(chan event.GenericEvent, 4096),
		usage:    make(chan event.GenericEvent, 1),
		pools:    map[string]*model.Pool{},
		pending:  map[string]bool{},
		ready:    make(chan struct{}),
	}
	usePQ := true
	err := ctrl.NewControllerManagedBy(mgr).
		Named("service").
		For(&corev1.Service{}).
		WatchesRawSource(source.Channel(c.retry, &handler.EnqueueRequestForObject{})).
		// The priority queue serves new events before the initial resync of
		// every Service, so a Service created right after a restart is not
		// stuck behind thousands of no-op reconciles.
		WithOptions(controller.Options{MaxConcurrentReconciles: opts.Workers, UsePriorityQueue: &usePQ}).
		Complete(reconcileFunc(c.reconcileService))
	if err != nil {
		return nil, err
	}
	// Rebuild the state as soon as this replica leads, even if no event
	// arrives, so readiness reflects it.
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		for ctx.Err() == nil {
			err := c.start(ctx)
			if err == nil {
				break
			}
			log.FromContext(ctx).Error(err, "rebuilding state from the cluster; retrying")
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
		<-ctx.Done()
		return nil
	})); err != nil {
		return nil, err
	}
	cr := &configReconciler{c: c}
	b := ctrl.NewControllerManagedBy(mgr).Named("config").For(&v1alpha1.IPAddressPool{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesRawSource(source.Channel(c.usage, &handler.EnqueueRequestForObject{}))
	for _, o := range []client.Object{&v1alpha1.L2Advertisement{}, &v1alpha1.BGPPeer{}, &v1alpha1.BGPAdvertisement{}, &v1alpha1.BFDProfile{}} {
		b = b.Watches(o, handler.EnqueueRequestsFromMapFunc(configKey), builder.WithPredicates(predicate.GenerationChangedPredicate{}))
	}
	if err := b.Complete(reconcileFunc(func(ctx context.Context, r ctrl.Request) (ctrl.Result, error) {
		if r.Name != usageRequest {
			r.Name = configRequest // every configuration change is judged as a whole
		}
		return cr.reconcile(ctx, r)
	})); err != nil {
		return nil, err
	}
	return c, nil
}

// Ready is closed once the controller has read every Service's addresses
// back and may allocate.
func (c *Controller) Ready() <-chan struct{} { return c.ready }

type reconcileFunc func(context.Context, ctrl.Request) (ctrl.Result, error)

func (f reconcileFunc) Reconcile(ctx context.Context, r ctrl.Request) (ctrl.Result, error) {
	return f(ctx, r)
}

// configKey funnels every configuration event into one reconcile: the
// configuration is judged as a whole.
func configKey(context.Context, client.Object) []ctrl.Request {
	return []ctrl.Request{{NamespacedName: types.NamespacedName{Name: configRequest}}}
}

// configRequest is the name of the one configuration reconcile request;
// pools are cluster-scoped and can't be named with a slash.
const configRequest = "herald/config"

// start rebuilds the state from the cluster, once, before the first
// allocation: configuration first, then every Service's addresses from its
// status, oldest Service first, then the pending Services in the same order
// so the allocation of a backlog does not depend on event order.
func (c *Controller) start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return nil
	}
	if _, err := c.loadConfigLocked(ctx); err != nil {
		return err
	}
	var list corev1.ServiceList
	if err := c.client.List(ctx, &list); err != nil {
		return err
	}
	svcs := make([]*corev1.Service, 0, len(list.Items))
	for i := range list.Items {
		if c.ours(&list.Items[i]) {
			svcs = append(svcs, &list.Items[i])
		}
	}
	slices.SortFunc(svcs, func(a, b *corev1.Service) int {
		if d := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); d != 0 {
			return d
		}
		return cmp.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	restored := 0
	for _, svc := range svcs {
		if ips := statusIPs(svc); len(ips) > 0 {
			if err := c.alloc.Restore(key(svc), ips, sharingOf(svc)); err != nil {
				log.FromContext(ctx).Info("could not keep an address from status", "service", key(svc), "reason", err.Error())
			}
			restored++
		}
	}
	for _, svc := range svcs {
		if len(statusIPs(svc)) == 0 {
			// Errors are reported by the Service's own reconcile.
			_, _ = c.assignLocked(ctx, svc)
		}
	}
	log.FromContext(ctx).Info("state rebuilt from Service status", "services", len(svcs), "restored", restored)
	c.started = true
	close(c.ready)
	return nil
}

func (c *Controller) ours(svc *corev1.Service) bool {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false
	}
	if c.opts.LoadBalancerClass == "" {
		return svc.Spec.LoadBalancerClass == nil
	}
	return svc.Spec.LoadBalancerClass != nil && *svc.Spec.LoadBalancerClass == c.opts.LoadBalancerClass
}

func key(svc *corev1.Service) string { return svc.Namespace + "/" + svc.Name }

// assignLocked asks the allocator for the Service's addresses. c.mu is held
// so that the configuration and the pending set stay consistent with it.
func (c *Controller) assignLocked(ctx context.Context, svc *corev1.Service) (ipam.Assignment, error) {
	var ns corev1.Namespace
	_ = c.client.Get(ctx, types.NamespacedName{Name: svc.Namespace}, &ns)
	req, err := requestFor(svc, ns.Labels, c.cfg)
	if err != nil {
		c.pending[key(svc)] = true
		return ipam.Assignment{}, &ipam.AllocationError{Key: key(svc), Reason: ipam.ReasonInvalidRequest, Message: err.Error()}
	}
	a, err := c.alloc.Assign(req)
	if err != nil {
		c.pending[key(svc)] = true
		return a, err
	}
	delete(c.pending, key(svc))
	return a, nil
}

func (c *Controller) reconcileService(ctx context.Context, r ctrl.Request) (ctrl.Result, error) {
	if err := c.start(ctx); err != nil {
		return ctrl.Result{}, err
	}
	k := r.Namespace + "/" + r.Name
	var svc corev1.Service
	err := c.client.Get(ctx, r.NamespacedName, &svc)
	if apierrors.IsNotFound(err) {
		c.release(k)
		return ctrl.Result{}, nil
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	if !c.ours(&svc) {
		c.release(k)
		return ctrl.Result{}, c.clearStatus(ctx, &svc)
	}
	// A pool created just before the Service may not have reached the
	// configuration yet; deciding without it would fail for nothing.
	if err := c.refreshConfig(ctx, false); err != nil {
		return ctrl.Result{}, err
	}
	c.mu.Lock()
	a, err := c.assignLocked(ctx, &svc)
	c.mu.Unlock()
	observeAllocation(err)
	return ctrl.Result{}, c.writeStatus(ctx, &svc, a, err)
}

// usageChanged asks for a refresh of the pools' usage counts; requests made
// while one is queued are folded into it.
func (c *Controller) usageChanged() {
	select {
	case c.usage <- event.GenericEvent{Object: &v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: usageRequest}}}:
	default:
	}
}

// release frees what the Service held and lets pending Services try again.
func (c *Controller) release(k string) {
	c.mu.Lock()
	_, held := c.alloc.Assigned(k)
	c.alloc.Release(k)
	delete(c.pending, k)
	c.mu.Unlock()
	if held {
		c.usageChanged()
		c.retryPending()
	}
}

// retryPending requeues every Service waiting for an address.
func (c *Controller) retryPending() {
	c.mu.Lock()
	keys := make([]string, 0, len(c.pending))
	for k := range c.pending {
		keys = append(keys, k)
	}
	c.mu.Unlock()
	c.requeue(keys)
}

func (c *Controller) requeue(keys []string) {
	if len(keys) == 0 {
		return
	}
	go func() {
		for _, k := range keys {
			ns, name, _ := strings.Cut(k, "/")
			c.retry <- event.GenericEvent{Object: &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}}
		}
	}()
}

// writeStatus records the outcome in the Service's status, in one write, and
// an event when the outcome changed. A failure keeps the addresses the
// Service already had: the last good state stays in force.
func (c *Controller) writeStatus(ctx context.Context, svc *corev1.Service, a ipam.Assignment, allocErr error) error {
	desired := svc.DeepCopy()
	cond := metav1.Condition{Type: v1alpha1.ConditionIPAllocated, ObservedGeneration: svc.Generation}
	if allocErr != nil {
		var ae *ipam.AllocationError
		reason := string(ipam.ReasonInvalidRequest)
		msg := allocErr.Error()
		if errors.As(allocErr, &ae) {
			reason, msg = string(ae.Reason), ae.Message
		}
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, reason, msg
	} else {
		desired.Status.LoadBalancer.Ingress = ingressFor(a.IPs, svc.Status.LoadBalancer.Ingress, c.opts.IPMode)
		cond.Status, cond.Reason = metav1.ConditionTrue, v1alpha1.ReasonIPAllocated
		cond.Message = fmt.Sprintf("%s from pool %s", joinAddrs(a.IPs), a.Pool)
	}
	old := meta.FindStatusCondition(svc.Status.Conditions, v1alpha1.ConditionIPAllocated)
	meta.SetStatusCondition(&desired.Status.Conditions, cond)
	if equalStatus(&svc.Status, &desired.Status) {
		return nil
	}
	if err := c.client.Status().Update(ctx, desired); err != nil {
		return err
	}
	countWrite()
	c.usageChanged()
	// Events only on transitions: a new outcome, or new addresses.
	if old == nil || old.Status != cond.Status || old.Reason != cond.Reason || (cond.Status == metav1.ConditionTrue && old.Message != cond.Message) {
		if allocErr != nil {
			c.recorder.Eventf(svc, nil, corev1.EventTypeWarning, v1alpha1.ReasonAllocationFailed, "Allocate", "%s: %s", cond.Reason, cond.Message)
		} else {
			c.recorder.Eventf(svc, nil, corev1.EventTypeNormal, v1alpha1.ReasonIPAllocated, "Allocate", "assigned %s", cond.Message)
		}
	}
	return nil
}

// clearStatus removes what Herald wrote on a Service it no longer handles
// (type or class changed).
func (c *Controller) clearStatus(ctx context.Context, svc *corev1.Service) error {
	if meta.FindStatusCondition(svc.Status.Conditions, v1alpha1.ConditionIPAllocated) == nil {
		return nil
	}
	desired := svc.DeepCopy()
	meta.RemoveStatusCondition(&desired.Status.Conditions, v1alpha1.ConditionIPAllocated)
	desired.Status.LoadBalancer.Ingress = nil
	if err := c.client.Status().Update(ctx, desired); err != nil {
		return err
	}
	countWrite()
	c.recorder.Eventf(svc, nil, corev1.EventTypeNormal, v1alpha1.ReasonIPReleased, "Release", "released %s: the Service is no longer a LoadBalancer of this controller's class", joinAddrs(statusIPs(svc)))
	return nil
}

// ingressFor builds the ingress list, keeping fields another party may have
// set on entries whose address is unchanged.
func ingressFor(ips []netip.Addr, old []corev1.LoadBalancerIngress, mode corev1.LoadBalancerIPMode) []corev1.LoadBalancerIngress {
	out := make([]corev1.LoadBalancerIngress, 0, len(ips))
	for _, ip := range ips {
		in := corev1.LoadBalancerIngress{IP: ip.String()}
		for _, o := range old {
			if o.IP == in.IP {
				in = o
			}
		}
		m := mode
		in.IPMode = &m
		out = append(out, in)
	}
	return out
}

func equalStatus(a, b *corev1.ServiceStatus) bool {
	if len(a.LoadBalancer.Ingress) != len(b.LoadBalancer.Ingress) || len(a.Conditions) != len(b.Conditions) {
		return false
	}
	for i := range a.LoadBalancer.Ingress {
		x, y := a.LoadBalancer.Ingress[i], b.LoadBalancer.Ingress[i]
		if x.IP != y.IP || (x.IPMode == nil) != (y.IPMode == nil) || (x.IPMode != nil && *x.IPMode != *y.IPMode) {
			return false
		}
	}
	for i := range a.Conditions {
		x, y := a.Conditions[i], b.Conditions[i]
		if x.Type != y.Type || x.Status != y.Status || x.Reason != y.Reason || x.Message != y.Message || x.ObservedGeneration != y.ObservedGeneration {
			return false
		}
	}
	return true
}

func joinAddrs(ips []netip.Addr) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ", ")
}
