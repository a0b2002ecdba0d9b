package allocation

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/controller/ipam"
	"github.com/heraldlb/herald/controller/kubeproxy"
	"github.com/heraldlb/herald/internal/model"
)

// configRequest is the config controller's one request: the configuration
// is judged as a whole, whichever object changed.
type configRequest struct{}

// setupConfig adds the config controller: any change of a Herald object, a
// ServiceCIDR or a node's addresses rebuilds the configuration and rewrites
// the verdicts that changed.
func setupConfig(mgr manager.Manager, c *Controller) error {
	all := handler.TypedEnqueueRequestsFromMapFunc(func(context.Context, client.Object) []configRequest {
		return []configRequest{{}}
	})
	b := builder.TypedControllerManagedBy[configRequest](mgr).Named("config")
	watched := []client.Object{&v1alpha1.IPAddressPool{}, &v1alpha1.L2Advertisement{}, &v1alpha1.BGPPeer{}, &v1alpha1.BGPAdvertisement{}, &v1alpha1.BFDProfile{}}
	// ServiceCIDRs are served from Kubernetes 1.33; watching a kind the API
	// server lacks would stop the manager.
	if _, err := mgr.GetRESTMapper().RESTMapping(networkingv1.SchemeGroupVersion.WithKind("ServiceCIDR").GroupKind(), "v1"); err == nil {
		watched = append(watched, &networkingv1.ServiceCIDR{})
	}
	for _, o := range watched {
		b = b.Watches(o, all, builder.WithPredicates(predicate.GenerationChangedPredicate{}))
	}
	b = b.Watches(&corev1.Node{}, all, builder.WithPredicates(nodeAddressesChanged))
	// kube-proxy's ConfigMap (the only one cached, see CacheOptions) decides
	// the KubeProxyStrictARP condition of L2Advertisements. ConfigMaps have
	// no generation: every change passes.
	b = b.Watches(&corev1.ConfigMap{}, all)
	// A switch of ipMode (auto mode) changes whether the dataplane is on.
	b = b.WatchesRawSource(source.TypedChannel(c.configKick, handler.TypedEnqueueRequestsFromMapFunc(
		func(context.Context, configRequest) []configRequest { return []configRequest{{}} })))
	return b.Complete(reconcile.TypedFunc[configRequest](func(ctx context.Context, _ configRequest) (reconcile.Result, error) {
		return reconcile.Result{}, c.reconcileConfig(ctx)
	}))
}

// nodeAddressesChanged passes the node events that can change the reserved
// addresses; a node's status is otherwise rewritten often.
var nodeAddressesChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, okO := e.ObjectOld.(*corev1.Node)
		n, okN := e.ObjectNew.(*corev1.Node)
		return !okO || !okN || !equality.Semantic.DeepEqual(o.Status.Addresses, n.Status.Addresses)
	},
}

// loadConfigLocked judges every Herald object and puts the pools in force
// into the allocator. A pool whose new version is refused stays in force as
// it was last accepted. It returns the Services that lost an address.
func (c *Controller) loadConfigLocked(ctx context.Context) ([]types.NamespacedName, error) {
	in, err := model.Read(ctx, c.client)
	if err != nil {
		return nil, err
	}
	if in.Reserved, err = model.ReadReserved(ctx, c.client); err != nil {
		return nil, err
	}
	c.poolsSeen = fingerprint(in.Pools)
	in.LastAccepted = c.pools
	cfg := model.Build(in)
	inForce := cfg.Pools
	var ip []ipam.Pool
	for _, name := range slices.Sorted(maps.Keys(inForce)) {
		ip = append(ip, ipamPool(inForce[name]))
	}
	// Services holding addresses of a pool whose serviceAllocation changed
	// are checked again: the pool may no longer serve them (no pending
	// Service is among them; every pending one is woken anyway).
	for _, name := range slices.Sorted(maps.Keys(inForce)) {
		if old := c.pools[name]; old != nil && !sameServiceAllocation(old, inForce[name]) {
			for _, k := range c.alloc.Holders(name, "") {
				c.retry.add(types.NamespacedName(k))
			}
		}
	}
	if c.cfg != nil && reflect.DeepEqual(ip, c.ipamPools) {
		// Only verdicts, pools' serviceAllocation or other kinds changed:
		// the allocator's state of every Service need not be rebuilt.
		c.cfg, c.pools = cfg, inForce
		return nil, nil
	}
	evicted, err := c.alloc.SetPools(ip)
	if err != nil {
		// Only possible when last accepted versions clash with new pools;
		// the allocator keeps the pools it had.
		log.FromContext(ctx).Error(err, "pools not applied; the previous pools stay in force")
		if c.cfg == nil {
			c.cfg = cfg
		}
		c.cfg.Verdicts = cfg.Verdicts
		return nil, nil
	}
	c.cfg, c.pools, c.ipamPools = cfg, inForce, ip
	out := make([]types.NamespacedName, len(evicted))
	for i, k := range evicted {
		out[i] = types.NamespacedName(k)
		c.pending.add(out[i], nil) // woken below with every pending Service
	}
	return out, nil
}

// sameServiceAllocation reports whether pools a and b serve the same
// Services.
func sameServiceAllocation(a, b *model.Pool) bool {
	selectors := func(sels []labels.Selector) []string {
		out := make([]string, len(sels))
		for i, s := range sels {
			out[i] = s.String()
		}
		return out
	}
	return slices.Equal(a.Namespaces, b.Namespaces) &&
		slices.Equal(selectors(a.NamespaceSelectors), selectors(b.NamespaceSelectors)) &&
		slices.Equal(selectors(a.ServiceSelectors), selectors(b.ServiceSelectors))
}

func (c *Controller) reconcileConfig(ctx context.Context) error {
	if err := c.start(ctx); err != nil {
		return err
	}
	if err := c.refreshConfig(ctx, true); err != nil {
		return err
	}
	if err := c.writeVerdicts(ctx); err != nil {
		return err
	}
	c.usageChanged()
	return nil
}

// refreshConfig rebuilds the configuration when forced or when the cached
// pools differ from those it was built from. Services that lost an address
// get an event and, like pending ones, another reconcile.
func (c *Controller) refreshConfig(ctx context.Context, force bool) error {
	c.mu.Lock()
	if !force {
		var pools v1alpha1.IPAddressPoolList
		if err := c.client.List(ctx, &pools, client.UnsafeDisableDeepCopy); err != nil {
			c.mu.Unlock()
			return err
		}
		if fingerprint(pools.Items) == c.poolsSeen {
			c.mu.Unlock()
			return nil
		}
	}
	evicted, err := c.loadConfigLocked(ctx)
	c.mu.Unlock()
	if err != nil {
		return err
	}
	for _, k := range evicted {
		var svc corev1.Service
		if c.client.Get(ctx, k, &svc) == nil {
			c.recorder.Eventf(&svc, nil, corev1.EventTypeWarning, v1alpha1.ReasonIPReleased, "Release",
				"released %s: no pool contains it any more (a pool shrank or was deleted); assigning a new address", joinAddrs(statusIPs(&svc)))
		}
	}
	c.retryPending()
	return nil
}

// fingerprint identifies a set of pool specs: name, UID (a pool deleted
// and created again) and generation, which only spec changes raise. The
// resourceVersion would change with every usage count written to a pool's
// status, about once a second under load, and each change would rebuild the
// allocator's state of every Service.
func fingerprint(pools []v1alpha1.IPAddressPool) string {
	parts := make([]string, len(pools))
	for i, p := range pools {
		parts[i] = fmt.Sprintf("%s@%s@%d", p.Name, p.UID, p.Generation)
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// writeVerdicts sets the Accepted condition of every Herald object whose
// verdict changed, and the KubeProxyStrictARP condition of every
// L2Advertisement: one status write per object whose conditions changed.
func (c *Controller) writeVerdicts(ctx context.Context) error {
	c.mu.Lock()
	cfg := c.cfg
	verdicts := cfg.Verdicts
	inForce := maps.Clone(c.pools)
	c.mu.Unlock()
	arp, err := c.strictARPFinding(ctx)
	if err != nil {
		return err
	}
	lists := map[string]client.ObjectList{
		model.KindIPAddressPool: &v1alpha1.IPAddressPoolList{}, model.KindL2Advertisement: &v1alpha1.L2AdvertisementList{},
		model.KindBGPPeer: &v1alpha1.BGPPeerList{}, model.KindBGPAdvertisement: &v1alpha1.BGPAdvertisementList{},
		model.KindBFDProfile: &v1alpha1.BFDProfileList{},
	}
	for kind, l := range lists {
		if err := c.client.List(ctx, l); err != nil {
			return err
		}
		objs, err := meta.ExtractList(l)
		if err != nil {
			return err
		}
		for _, o := range objs {
			obj := o.(client.Object)
			v, ok := verdicts[model.Ref{Kind: kind, Name: obj.GetName()}]
			if !ok {
				continue
			}
			cond := metav1.Condition{Type: v1alpha1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: v.Reason, Message: v.Message, ObservedGeneration: obj.GetGeneration()}
			if !v.Accepted {
				cond.Status = metav1.ConditionFalse
				// A pool holding cluster addresses stays in force without
				// them, which its message says.
				if kind == model.KindIPAddressPool && inForce[obj.GetName()] != nil && v.Reason != model.ReasonClusterAddresses {
					cond.Message += "; the last accepted version of the pool stays in force"
				}
			}
			if len(v.Warnings) > 0 {
				cond.Message += "; warning: " + fmt.Sprint(v.Warnings)
			}
			changes := []conditionChange{acceptedChange(cond)}
			if kind == model.KindL2Advertisement {
				changes = append(changes, strictARPChange(arp, obj.GetGeneration()))
			}
			if kind == model.KindIPAddressPool && inForce[obj.GetName()] != nil {
				changes = append(changes, advertisedChange(len(cfg.Advertisers(obj.GetName())) > 0, obj.GetGeneration()))
			}
			if err := c.setConditions(ctx, obj, changes...); err != nil {
				return err
			}
		}
	}
	return nil
}

// strictARPFinding judges kube-proxy's ConfigMap, from the cache. Herald's
// dataplane is on when the controller writes ipMode Proxy: in auto mode
// that is when every live speaker runs its dataplane, and kube-proxy leaves
// Proxy addresses alone.
func (c *Controller) strictARPFinding(ctx context.Context) (kubeproxy.Finding, error) {
	var cm corev1.ConfigMap
	err := c.client.Get(ctx, types.NamespacedName{Namespace: kubeproxy.ConfigMapNamespace, Name: kubeproxy.ConfigMapName}, &cm)
	if apierrors.IsNotFound(err) {
		return kubeproxy.CheckStrictARP(nil, c.dataplaneOn()), nil
	}
	if err != nil {
		return kubeproxy.Finding{}, err
	}
	return kubeproxy.CheckStrictARP(&cm, c.dataplaneOn()), nil
}

// dataplaneOn reports whether the speakers forward Herald's addresses
// themselves (see strictARPFinding).
func (c *Controller) dataplaneOn() bool { return c.ipMode() == corev1.LoadBalancerIPModeProxy }

// conditionChange is one condition to set, or with remove its type to take
// away, and the event to record when its status or reason flips (or it goes
// away).
type conditionChange struct {
	cond                           metav1.Condition
	remove                         bool
	eventType, eventReason, action string
}

func acceptedChange(cond metav1.Condition) conditionChange {
	if cond.Status == metav1.ConditionFalse {
		return conditionChange{cond: cond, eventType: corev1.EventTypeWarning, eventReason: "ConfigRefused", action: "Validate"}
	}
	return conditionChange{cond: cond, eventType: corev1.EventTypeNormal, eventReason: "ConfigAccepted", action: "Validate"}
}

// strictARPChange sets KubeProxyStrictARP while there is a finding, with a
// warning named by its reason, and removes it, with a Normal event, once
// there is none.
func strictARPChange(f kubeproxy.Finding, generation int64) conditionChange {
	cond := metav1.Condition{Type: v1alpha1.ConditionKubeProxyStrictARP, Status: f.Status, Reason: f.Reason, Message: f.Message, ObservedGeneration: generation}
	if !f.Problem() {
		cond.Message = "kube-proxy no longer answers ARP for Herald's addresses on every node"
		return conditionChange{cond: cond, remove: true, eventType: corev1.EventTypeNormal, eventReason: kubeproxy.ReasonStrictARPResolved, action: "CheckKubeProxy"}
	}
	return conditionChange{cond: cond, eventType: corev1.EventTypeWarning, eventReason: f.Reason, action: "CheckKubeProxy"}
}

// advertisedChange sets Advertised False on a pool in force that no
// advertisement selects, with a warning, and removes it, with a Normal
// event, once one does.
func advertisedChange(advertised bool, generation int64) conditionChange {
	cond := metav1.Condition{Type: v1alpha1.ConditionAdvertised, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonNotAdvertised,
		Message: "no L2Advertisement or BGPAdvertisement selects this pool: its addresses are assigned to Services but no node announces them", ObservedGeneration: generation}
	if advertised {
		cond.Message = "an advertisement selects the pool: its addresses are announced"
		return conditionChange{cond: cond, remove: true, eventType: corev1.EventTypeNormal, eventReason: "Advertised", action: "Advertise"}
	}
	return conditionChange{cond: cond, eventType: corev1.EventTypeWarning, eventReason: v1alpha1.ReasonNotAdvertised, action: "Advertise"}
}

// setConditions applies the changes to obj's status.conditions and writes
// the status once if any changed, with an event for each condition whose
// status or reason flipped (not for a new message alone: that would repeat
// on every change of, say, a pool's warnings).
func (c *Controller) setConditions(ctx context.Context, obj client.Object, changes ...conditionChange) error {
	conds := conditionsOf(obj)
	var events []conditionChange
	changed := false
	for _, ch := range changes {
		old := meta.FindStatusCondition(*conds, ch.cond.Type)
		if ch.remove {
			if old != nil {
				meta.RemoveStatusCondition(conds, ch.cond.Type)
				changed = true
				events = append(events, ch)
			}
			continue
		}
		cond := ch.cond
		if old != nil && old.Status == cond.Status && old.Reason == cond.Reason && old.Message == cond.Message && old.ObservedGeneration == cond.ObservedGeneration {
			continue
		}
		changed = true
		if old == nil || old.Status != cond.Status || old.Reason != cond.Reason {
			events = append(events, ch)
		}
		meta.SetStatusCondition(conds, cond)
	}
	if !changed {
		return nil
	}
	if err := c.client.Status().Update(ctx, obj); err != nil {
		return client.IgnoreNotFound(err)
	}
	for _, e := range events {
		c.recorder.Eventf(obj, nil, e.eventType, e.eventReason, e.action, "%s", e.cond.Message)
	}
	return nil
}

func conditionsOf(obj client.Object) *[]metav1.Condition {
	switch o := obj.(type) {
	case *v1alpha1.IPAddressPool:
		return &o.Status.Conditions
	case *v1alpha1.L2Advertisement:
		return &o.Status.Conditions
	case *v1alpha1.BGPPeer:
		return &o.Status.Conditions
	case *v1alpha1.BGPAdvertisement:
		return &o.Status.Conditions
	case *v1alpha1.BFDProfile:
		return &o.Status.Conditions
	}
	panic(fmt.Sprintf("conditionsOf: unexpected %T", obj))
}

// ipamPool is the pool as the allocator sees it.
func ipamPool(p *model.Pool) ipam.Pool {
	return ipam.Pool{Name: p.Name, Ranges: p.Assignable(), AutoAssign: p.AutoAssign, AvoidBuggyIPs: p.AvoidBuggyIPs, Priority: p.Priority}
}
