// Package allocation is the controller's reconcile loop: it gives Services of
// type LoadBalancer their addresses from the pools (through the pure
// allocator in controller/ipam), writes them to the Service status in one
// write, and keeps pools' and other Herald objects' status current.
//
// Three small controllers share one Controller: "service" reconciles one
// Service at a time, "config" judges Herald's configuration as a whole and
// writes verdicts, "usage" writes pools' usage counts at a bounded rate.
//
// Allocation decisions are serial and deterministic (the allocator holds one
// lock); status writes run in parallel. On start, before anything new is
// allocated, every Service's addresses are read back from its status, so a
// restart never changes an assigned address.
package allocation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
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
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/controller/eventwriter"
	"github.com/heraldlb/herald/controller/ipam"
	"github.com/heraldlb/herald/controller/ipmode"
	"github.com/heraldlb/herald/internal/model"
)

// ReasonNamespaceUnavailable: the labels of the Service's namespace, which a
// pool's namespaceSelectors need, could not be read.
const ReasonNamespaceUnavailable = "NamespaceUnavailable"

// Options configure the controller.
type Options struct {
	// LoadBalancerClass is the spec.loadBalancerClass handled; empty means
	// Services without a class, as Kubernetes intends for the default
	// implementation.
	LoadBalancerClass string
	// IPMode, when set (--ip-mode VIP or Proxy), is written to each ingress
	// entry whatever the speakers run: VIP when kube-proxy handles the
	// addresses, Proxy when Herald's dataplane does. Empty (--ip-mode auto):
	// the controller follows the speakers' Leases in Namespace (see package
	// ipmode), and rewrites ipMode on every Service when they switch.
	IPMode corev1.LoadBalancerIPMode
	// Namespace is Herald's namespace, where the speakers' Leases are.
	Namespace string
	// Workers is how many Services are reconciled (and written) at once.
	Workers int
}

// Controller holds the state shared by the Service, configuration and usage
// controllers.
type Controller struct {
	opts     Options
	client   client.Client
	recorder events.EventRecorder
	alloc    ipam.Allocator

	// retry carries Services to reconcile again: pending ones after
	// addresses were freed, pools changed or their namespace's labels did.
	retry *retrier
	// usage asks the usage controller to refresh pools' usage counts.
	usage chan usageEvent
	// configKick has the config controller judge the configuration again.
	configKick chan event.TypedGenericEvent[configRequest]

	// modeMu guards the ipMode decision, which writeStatus reads; in auto
	// mode only the ipmode controller (one worker) and start change it.
	modeMu      sync.Mutex
	mode        ipmode.Decision
	modeDecided bool

	mu    sync.Mutex
	cfg   *model.Config
	pools map[string]*model.Pool // in force: accepted, or the last accepted version (cfg.Pools)
	// ipamPools are the pools last given to the allocator.
	ipamPools []ipam.Pool
	pending   pendingSet // Services waiting for an address
	// poolsSeen fingerprints the pools cfg was built from, so a Service
	// reconcile can tell that the configuration lags behind the cache.
	poolsSeen string
	started   bool
	ready     chan struct{}
}

// newController makes a Controller on a client and recorder; New wires it
// into a manager.
func newController(c client.Client, recorder events.EventRecorder, opts Options) *Controller {
	if opts.Workers == 0 {
		opts.Workers = 16
	}
	// Until start decides from the speakers' Leases (before any write):
	// kube-proxy forwards.
	mode := ipmode.Decision{Mode: corev1.LoadBalancerIPModeVIP, Reason: "not decided yet"}
	if opts.IPMode != "" {
		mode = ipmode.Decision{Mode: opts.IPMode, Reason: "set by --ip-mode"}
	}
	return &Controller{
		opts:        opts,
		client:      c,
		recorder:    recorder,
		retry:       newRetrier(),
		usage:       make(chan usageEvent, 1),
		configKick:  make(chan event.TypedGenericEvent[configRequest], 1),
		mode:        mode,
		modeDecided: opts.IPMode != "",
		pools:       map[string]*model.Pool{},
		pending:     newPendingSet(),
		ready:       make(chan struct{}),
	}
}

// New sets the controller up with the manager. The manager's cache should
// use CacheOptions, so that it keeps only what the controller reads.
func New(mgr ctrl.Manager, opts Options) (*Controller, error) {
	// Events are written without client-go's six-minute cache of every
	// event (see package eventwriter).
	ew := eventwriter.New(mgr.GetClient(), mgr.GetScheme(), "herald-controller")
	if err := mgr.Add(ew); err != nil {
		return nil, err
	}
	c := newController(mgr.GetClient(), ew, opts)
	usePQ := true
	svcLog := mgr.GetLogger().WithValues("controller", "service")
	err := ctrl.NewControllerManagedBy(mgr).
		Named("service").
		For(&corev1.Service{}).
		WatchesRawSource(source.TypedChannel(c.retry.out, handler.TypedEnqueueRequestsFromMapFunc(
			func(_ context.Context, svc types.NamespacedName) []reconcile.Request {
				return []reconcile.Request{{NamespacedName: svc}}
			}))).
		// A namespace's labels decide pools' namespaceSelectors; only
		// metadata is cached.
		WatchesMetadata(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(c.namespaceRelabelled),
			builder.WithPredicates(predicate.LabelChangedPredicate{})).
		// The priority queue serves new events before the initial resync of
		// every Service, so a Service created right after a restart is not
		// stuck behind thousands of no-op reconciles.
		WithOptions(controller.Options{MaxConcurrentReconciles: c.opts.Workers, UsePriorityQueue: &usePQ,
			// The default logger of a reconcile encodes the request by
			// reflection, about 3 KiB of garbage per reconcile; a string
			// names the Service as well.
			LogConstructor: func(r *reconcile.Request) logr.Logger {
				if r == nil {
					return svcLog
				}
				return svcLog.WithValues("service", r.String())
			}}).
		Complete(reconcile.Func(c.reconcileService))
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
	if err := mgr.Add(manager.RunnableFunc(c.retry.run)); err != nil {
		return nil, err
	}
	if err := setupConfig(mgr, c); err != nil {
		return nil, err
	}
	if err := setupUsage(mgr, c); err != nil {
		return nil, err
	}
	if err := setupIPMode(mgr, c); err != nil {
		return nil, err
	}
	if !c.autoIPMode() {
		setIPModeGauge(c.opts.IPMode)
	}
	return c, nil
}

// Ready is closed once the controller has read every Service's addresses
// back and may allocate.
func (c *Controller) Ready() <-chan struct{} { return c.ready }

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
	if c.autoIPMode() {
		if _, _, err := c.decideIPMode(ctx); err != nil {
			return err
		}
	}
	var list corev1.ServiceList
	// The cached objects are only read here: copying 10,000 Services would
	// double the controller's peak memory for nothing.
	if err := c.client.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return err
	}
	svcs := make([]*corev1.Service, 0, len(list.Items))
	for i := range list.Items {
		if model.Handles(&list.Items[i], c.opts.LoadBalancerClass) {
			svcs = append(svcs, &list.Items[i])
		}
	}
	slices.SortFunc(svcs, func(a, b *corev1.Service) int {
		if d := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); d != 0 {
			return d
		}
		return keyOf(a).Compare(keyOf(b))
	})
	restored := 0
	for _, svc := range svcs {
		if ips := statusIPs(svc); len(ips) > 0 {
			ann, _ := model.ReadServiceAnnotations(svc.Annotations)
			if err := c.alloc.Restore(keyOf(svc), ips, sharingOf(svc, ann.AllowSharedIP)); err != nil {
				log.FromContext(ctx).Info("could not keep an address from status", "service", keyOf(svc), "reason", err.Error())
			}
			restored++
		}
	}
	for _, svc := range svcs {
		if len(statusIPs(svc)) == 0 {
			// Errors are reported by the Service's own reconcile.
			nsLabels, err := c.namespaceLabels(ctx, c.cfg, svc.Namespace)
			_, _ = c.assignLocked(svc, nsLabels, err)
		}
	}
	log.FromContext(ctx).Info("state rebuilt from Service status", "services", len(svcs), "restored", restored)
	c.started = true
	close(c.ready)
	return nil
}

// keyOf names a Service for the allocator.
func keyOf(svc *corev1.Service) ipam.Key {
	return ipam.Key{Namespace: svc.Namespace, Name: svc.Name}
}

// namespaceLabels reads the labels of namespace ns when a pool of cfg
// selects namespaces by label; nil otherwise. The error, an
// *ipam.AllocationError, is what the Service's condition reports.
func (c *Controller) namespaceLabels(ctx context.Context, cfg *model.Config, ns string) (map[string]string, error) {
	need := false
	for _, p := range cfg.Pools {
		need = need || len(p.NamespaceSelectors) > 0
	}
	if !need {
		return nil, nil
	}
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	if err := c.client.Get(ctx, types.NamespacedName{Name: ns}, m); err != nil {
		return nil, &ipam.AllocationError{Key: ipam.Key{Namespace: ns}, Reason: ReasonNamespaceUnavailable,
			Message: fmt.Sprintf("reading the labels of namespace %s, which pools' spec.serviceAllocation.namespaceSelectors need: %v", ns, err)}
	}
	return m.Labels, nil
}

// assignLocked asks the allocator for the Service's addresses, and records
// the Service as pending, with the pools that could serve it, when it gets
// none. On failure it returns what the Service still holds in the allocator
// (nothing, once its pool was deleted). c.mu is held so that the
// configuration and the pending set stay consistent with the allocator.
func (c *Controller) assignLocked(svc *corev1.Service, nsLabels map[string]string, nsErr error) (ipam.Assignment, error) {
	nn := types.NamespacedName(keyOf(svc))
	if err := c.adoptLocked(svc); err != nil {
		// Waits for the address to be freed in its pool (another Service
		// held it) or for a configuration change (a pool that holds it),
		// which wakes every pending Service.
		var pools []string
		for _, ip := range statusIPs(svc) {
			if p, ok := c.cfg.PoolOf(ip); ok && !slices.Contains(pools, p.Name) {
				pools = append(pools, p.Name)
			}
		}
		c.pending.add(nn, pools)
		held, _ := c.alloc.Assigned(keyOf(svc))
		return held, err
	}
	held, _ := c.alloc.Assigned(keyOf(svc))
	if nsErr != nil {
		// Retried with backoff, and when the namespace changes.
		c.pending.add(nn, nil)
		return held, nsErr
	}
	req, err := requestFor(svc, nsLabels, c.cfg)
	if err != nil {
		// Only a change of the Service can fix it; its own event comes then.
		// Meanwhile it keeps only what it may still hold: an invalid
		// annotation must not keep an address its pool no longer serves it
		// or whose sharing partner now uses its ports.
		c.pending.remove(nn)
		ae := &ipam.AllocationError{Key: keyOf(svc), Reason: ipam.ReasonInvalidRequest, Message: err.Error()}
		ae.Released, ae.ReleaseReason = c.alloc.Retain(req)
		c.releasedLocked(nn, held.Pool, ae.Released)
		held, _ = c.alloc.Assigned(keyOf(svc))
		return held, ae
	}
	a, err := c.alloc.Assign(req)
	if err != nil {
		// A failed Assign leaves what the Service may still hold.
		c.pending.add(nn, poolsServing(c.cfg, req))
		var ae *ipam.AllocationError
		if errors.As(err, &ae) {
			c.releasedLocked(nn, held.Pool, ae.Released)
		}
		held, _ = c.alloc.Assigned(keyOf(svc))
		return held, err
	}
	c.pending.remove(nn)
	return a, nil
}

// releasedLocked wakes, after svc lost addresses of pool in a failed
// Assign, the other pending Services that pool could serve.
func (c *Controller) releasedLocked(svc types.NamespacedName, pool string, released []netip.Addr) {
	if len(released) == 0 {
		return
	}
	c.retry.add(slices.DeleteFunc(c.pending.servedBy(pool), func(k types.NamespacedName) bool { return k == svc })...)
}

// adoptLocked takes over, as they are, the addresses a Service's status
// held before Herald handled it: MetalLB (or an earlier implementation of
// the class) left them there, and traffic already goes to them. start
// restores them like Herald's own; this covers those Restore could not keep
// then, and keeps trying while the Service waits (see pendingSet).
//
// An address Herald cannot keep (in no pool, held by another Service it may
// not share with) stays in the status and the Service gets nothing new:
// taking it away, or giving the Service another address, would change its
// address under its users. The *ipam.AllocationError returned then, with
// reason IPNotAdopted, says so; writeStatus leaves the ingress untouched.
func (c *Controller) adoptLocked(svc *corev1.Service) error {
	ips := statusIPs(svc)
	if len(ips) == 0 || !notYetHeralds(svc) {
		return nil
	}
	held, _ := c.alloc.Assigned(keyOf(svc))
	if !slices.ContainsFunc(ips, func(ip netip.Addr) bool { return !slices.Contains(held.IPs, ip) }) {
		return nil
	}
	ann, _ := model.ReadServiceAnnotations(svc.Annotations)
	err := c.alloc.Restore(keyOf(svc), ips, sharingOf(svc, ann.AllowSharedIP))
	if err == nil {
		return nil
	}
	var why []string
	for _, e := range unjoin(err) {
		why = append(why, e.Error())
	}
	from := ""
	if ann.MetalLBPool != "" {
		from = fmt.Sprintf(" (MetalLB's pool %s)", ann.MetalLBPool)
	}
	return &ipam.AllocationError{Key: keyOf(svc), Reason: v1alpha1.ReasonIPNotAdopted, Message: fmt.Sprintf(
		"%s, in the Service's status before Herald handled it%s, is left as it is and not served by Herald: %s. "+
			"Add the address to an IPAddressPool to adopt it, or remove it from the Service's status to be given a new one",
		joinAddrs(ips), from, strings.Join(why, "; "))}
}

// notYetHeralds reports whether the Service's status was written by someone
// other than Herald: it has no IPAllocated condition, or one saying its
// addresses were not adopted.
func notYetHeralds(svc *corev1.Service) bool {
	cond := meta.FindStatusCondition(svc.Status.Conditions, v1alpha1.ConditionIPAllocated)
	return cond == nil || cond.Reason == v1alpha1.ReasonIPNotAdopted
}

// unjoin lists the errors errors.Join joined, or err alone.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func (c *Controller) reconcileService(ctx context.Context, r reconcile.Request) (ctrl.Result, error) {
	if err := c.start(ctx); err != nil {
		return ctrl.Result{}, err
	}
	var svc corev1.Service
	err := c.client.Get(ctx, r.NamespacedName, &svc)
	if apierrors.IsNotFound(err) {
		c.release(r.NamespacedName)
		return ctrl.Result{}, nil
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	if !model.Handles(&svc, c.opts.LoadBalancerClass) {
		c.release(r.NamespacedName)
		return ctrl.Result{}, c.clearStatus(ctx, &svc)
	}
	// A pool created just before the Service may not have reached the
	// configuration yet; deciding without it would fail for nothing.
	if err := c.refreshConfig(ctx, false); err != nil {
		return ctrl.Result{}, err
	}
	c.mu.Lock()
	cfg := c.cfg
	c.mu.Unlock()
	// Read outside the lock; a configuration that changes meanwhile wakes
	// every pending Service anyway.
	nsLabels, nsErr := c.namespaceLabels(ctx, cfg, svc.Namespace)
	c.mu.Lock()
	a, allocErr := c.assignLocked(&svc, nsLabels, nsErr)
	c.mu.Unlock()
	observeAllocation(allocErr)
	if err := c.writeStatus(ctx, &svc, a, allocErr); err != nil {
		return ctrl.Result{}, err
	}
	var ae *ipam.AllocationError
	if errors.As(allocErr, &ae) && ae.Reason == ReasonNamespaceUnavailable {
		// Reported on the Service; try again with backoff.
		return ctrl.Result{}, allocErr
	}
	return ctrl.Result{}, nil
}

// namespaceRelabelled maps a change of a namespace's labels to its pending
// Services, which a pool may now serve, and, when a pool selects namespaces
// by label, to those holding addresses, which it may no longer serve.
func (c *Controller) namespaceRelabelled(_ context.Context, ns client.Object) []reconcile.Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []reconcile.Request
	for _, svc := range c.pending.inNamespace(ns.GetName()) {
		out = append(out, reconcile.Request{NamespacedName: svc})
	}
	if c.cfg != nil && slices.ContainsFunc(slices.Collect(maps.Values(c.cfg.Pools)), func(p *model.Pool) bool { return len(p.NamespaceSelectors) > 0 }) {
		for _, k := range c.alloc.Holders("", ns.GetName()) {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName(k)})
		}
	}
	return out
}

// release frees what the Service held and wakes the pending Services the
// freed addresses' pool could serve.
func (c *Controller) release(svc types.NamespacedName) {
	c.mu.Lock()
	a, held := c.alloc.Assigned(ipam.Key(svc))
	c.alloc.Release(ipam.Key(svc))
	c.pending.remove(svc)
	var wake []types.NamespacedName
	if held {
		wake = c.pending.servedBy(a.Pool)
	}
	c.mu.Unlock()
	if held {
		c.usageChanged()
		c.retry.add(wake...)
	}
}

// retryPending wakes every pending Service (after a configuration change).
func (c *Controller) retryPending() {
	c.mu.Lock()
	keys := c.pending.all()
	c.mu.Unlock()
	c.retry.add(keys...)
}

// writeStatus records the outcome in the Service's status, in one write, and
// an event when the outcome changed. After a failure, a holds what the
// Service still holds in the allocator: those of its addresses stay (the last
// good state stays in force), the others go. An address the allocator no
// longer holds for this Service (its pool shrank or was deleted) may be
// assigned to another Service at any moment, and an address in two Services'
// status is forwarded by kube-proxy to either one's pods.
func (c *Controller) writeStatus(ctx context.Context, svc *corev1.Service, a ipam.Assignment, allocErr error) error {
	desired := svc.DeepCopy()
	// Read once per write; a switch that happens meanwhile requeues this
	// Service, which is then written again with the new mode.
	mode := c.ipMode()
	cond := metav1.Condition{Type: v1alpha1.ConditionIPAllocated, ObservedGeneration: svc.Generation}
	adopted := false
	if allocErr != nil {
		var ae *ipam.AllocationError
		reason := string(ipam.ReasonInvalidRequest)
		msg := allocErr.Error()
		if errors.As(allocErr, &ae) {
			reason, msg = string(ae.Reason), ae.Message
		}
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, reason, msg
		if reason != v1alpha1.ReasonIPNotAdopted {
			desired.Status.LoadBalancer.Ingress = heldIngress(svc.Status.LoadBalancer.Ingress, a.IPs, mode)
		}
	} else {
		adopted = notYetHeralds(svc) && slices.Equal(statusIPs(svc), a.IPs)
		desired.Status.LoadBalancer.Ingress = ingressFor(a.IPs, svc.Status.LoadBalancer.Ingress, mode)
		cond.Status, cond.Reason = metav1.ConditionTrue, v1alpha1.ReasonIPAllocated
		cond.Message = fmt.Sprintf("%s from pool %s", joinAddrs(a.IPs), a.Pool)
	}
	// Conflicting annotations follow the outcome in the condition's
	// message, so that each warning is recorded once, when the conflict
	// appears, and the condition shows it as long as it lasts.
	outcome := cond.Message
	var conflicts []string
	ann, _ := model.ReadServiceAnnotations(svc.Annotations)
	for _, cf := range ann.Conflicts {
		conflicts = append(conflicts, cf.String())
		cond.Message += conflictSeparator + cf.String()
	}
	old := meta.FindStatusCondition(svc.Status.Conditions, v1alpha1.ConditionIPAllocated)
	meta.SetStatusCondition(&desired.Status.Conditions, cond)
	if equalStatus(&svc.Status, &desired.Status) {
		return nil
	}
	if err := c.patchStatus(ctx, svc, desired); err != nil {
		return err
	}
	c.usageChanged()
	// Events only on transitions: a new outcome, new addresses, a new
	// conflict.
	if old == nil || old.Status != cond.Status || old.Reason != cond.Reason || (cond.Status == metav1.ConditionTrue && outcomeOf(old.Message) != outcome) {
		switch {
		case cond.Reason == v1alpha1.ReasonIPNotAdopted:
			c.recorder.Eventf(svc, nil, corev1.EventTypeWarning, v1alpha1.ReasonIPNotAdopted, "Adopt", "%s", outcome)
		case allocErr != nil:
			c.recorder.Eventf(svc, nil, corev1.EventTypeWarning, v1alpha1.ReasonAllocationFailed, "Allocate", "%s: %s", cond.Reason, outcome)
		case adopted:
			c.recorder.Eventf(svc, nil, corev1.EventTypeNormal, v1alpha1.ReasonIPAllocated, "Adopt", "adopted %s, as the Service's status already held it", outcome)
		default:
			c.recorder.Eventf(svc, nil, corev1.EventTypeNormal, v1alpha1.ReasonIPAllocated, "Allocate", "assigned %s", outcome)
		}
	}
	// An address taken off the Service because it may no longer hold it
	// (its pool's serviceAllocation, its sharing partner's ports): once,
	// when the allocator released it.
	var ae *ipam.AllocationError
	if errors.As(allocErr, &ae) && len(ae.Released) > 0 {
		c.recorder.Eventf(svc, nil, corev1.EventTypeWarning, v1alpha1.ReasonIPReleased, "Release", "released %s: %s", joinAddrs(ae.Released), ae.ReleaseReason)
	}
	for _, cf := range conflicts {
		if old == nil || !strings.Contains(old.Message, cf) {
			c.recorder.Eventf(svc, nil, corev1.EventTypeWarning, v1alpha1.ReasonAnnotationConflict, "ReadAnnotations", "%s", cf)
		}
	}
	return nil
}

// conflictSeparator precedes each annotation conflict in the condition's
// message (model.AnnotationConflict.String begins with "annotation ").
const conflictSeparator = "; "

// outcomeOf is a condition's message without the annotation conflicts.
func outcomeOf(message string) string {
	outcome, _, _ := strings.Cut(message, conflictSeparator+"annotation ")
	return outcome
}

// patchStatus writes desired's ingress list and conditions in one JSON
// merge patch (RFC 7386) of the status subresource, guarded by the cached
// resourceVersion like an update. The cache holds Services stripped of what
// the controller does not read (Transform), so an update would send a
// mangled object; the patch carries only the two fields Herald owns, built
// directly rather than by diffing two serialized Services on every write.
func (c *Controller) patchStatus(ctx context.Context, cached, desired *corev1.Service) error {
	body, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"resourceVersion": cached.ResourceVersion},
		"status": map[string]any{
			// A nil list is null, which removes the field.
			"loadBalancer": map[string]any{"ingress": desired.Status.LoadBalancer.Ingress},
			"conditions":   desired.Status.Conditions,
		},
	})
	if err != nil {
		return err
	}
	if err := c.client.Status().Patch(ctx, desired, client.RawPatch(types.MergePatchType, body)); err != nil {
		return err
	}
	countWrite()
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
	if err := c.patchStatus(ctx, svc, desired); err != nil {
		return err
	}
	c.recorder.Eventf(svc, nil, corev1.EventTypeNormal, v1alpha1.ReasonIPReleased, "Release", "released %s: the Service is no longer a LoadBalancer of this controller's class", joinAddrs(statusIPs(svc)))
	return nil
}

// ingressFor builds the ingress list, keeping fields another party may have
// set on entries whose address is unchanged. ipMode is always mode: when
// the decision changes (the speakers switched their dataplane, or the
// controller restarted with another --ip-mode) it is rewritten on every
// Service (equalStatus sees the difference), one write each, without moving
// an address.
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

// heldIngress keeps the ingress entries whose address is in held, as they
// are but for their ipMode, which follows mode even then: after a switch of
// the dataplane, an address still served must not keep telling kube-proxy
// the opposite of what the nodes do. nil when no entry is held.
func heldIngress(old []corev1.LoadBalancerIngress, held []netip.Addr, mode corev1.LoadBalancerIPMode) []corev1.LoadBalancerIngress {
	var out []corev1.LoadBalancerIngress
	for _, in := range old {
		if ip, err := netip.ParseAddr(in.IP); err == nil && slices.Contains(held, ip) {
			m := mode
			in.IPMode = &m
			out = append(out, in)
		}
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
