package allocation

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/controller/ipam"
	"github.com/heraldlb/herald/internal/model"
)

// usageInterval bounds how often a pool's usage counts are written: a burst
// of allocations costs one pool status write per second, not one per Service.
const usageInterval = time.Second

type configReconciler struct {
	c         *Controller
	lastUsage time.Time
}

// loadConfigLocked judges every Herald object and puts the pools in force
// into the allocator. A pool whose new version is refused stays in force as
// it was last accepted. It returns the Services that lost an address.
func (c *Controller) loadConfigLocked(ctx context.Context) ([]string, error) {
	in, err := model.Read(ctx, c.client)
	if err != nil {
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
	c.cfg, c.pools = cfg, inForce
	for _, k := range evicted {
		c.pending[k] = true
	}
	return evicted, nil
}

func (r *configReconciler) reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	c := r.c
	if err := c.start(ctx); err != nil {
		return ctrl.Result{}, err
	}
	if req.Name == usageRequest {
		return r.writeUsage(ctx)
	}
	if err := c.refreshConfig(ctx, true); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.writeVerdicts(ctx); err != nil {
		return ctrl.Result{}, err
	}
	return r.writeUsage(ctx)
}

// refreshConfig rebuilds the configuration when forced or when the cached
// pools differ from those it was built from. Services that lost an address
// get an event and, like pending ones, another reconcile.
func (c *Controller) refreshConfig(ctx context.Context, force bool) error {
	c.mu.Lock()
	if !force {
		var pools v1alpha1.IPAddressPoolList
		if err := c.client.List(ctx, &pools); err != nil {
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
		ns, name := splitKey(k)
		if c.client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &svc) == nil {
			c.recorder.Eventf(&svc, nil, corev1.EventTypeWarning, v1alpha1.ReasonIPReleased, "Release",
				"released %s: no pool contains it any more (a pool shrank or was deleted); assigning a new address", joinAddrs(statusIPs(&svc)))
		}
	}
	c.retryPending()
	return nil
}

// fingerprint identifies a set of pool versions.
func fingerprint(pools []v1alpha1.IPAddressPool) string {
	parts := make([]string, len(pools))
	for i, p := range pools {
		parts[i] = p.Name + "@" + p.ResourceVersion
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// usageRequest asks the config reconciler to refresh pools' usage counts only.
const usageRequest = "herald/usage"

// writeVerdicts sets the Accepted condition of every Herald object whose
// verdict changed.
func (r *configReconciler) writeVerdicts(ctx context.Context) error {
	c := r.c
	c.mu.Lock()
	verdicts := c.cfg.Verdicts
	inForce := maps.Clone(c.pools)
	c.mu.Unlock()
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
				if kind == model.KindIPAddressPool && inForce[obj.GetName()] != nil {
					cond.Message += "; the last accepted version of the pool stays in force"
				}
			}
			if len(v.Warnings) > 0 {
				cond.Message += "; warning: " + fmt.Sprint(v.Warnings)
			}
			if err := r.setCondition(ctx, obj, cond); err != nil {
				return err
			}
		}
	}
	return nil
}

// setCondition writes cond into obj's status.conditions if it changed, with
// an event when the Accepted status flips.
func (r *configReconciler) setCondition(ctx context.Context, obj client.Object, cond metav1.Condition) error {
	conds := conditionsOf(obj)
	old := meta.FindStatusCondition(*conds, cond.Type)
	if old != nil && old.Status == cond.Status && old.Reason == cond.Reason && old.Message == cond.Message && old.ObservedGeneration == cond.ObservedGeneration {
		return nil
	}
	meta.SetStatusCondition(conds, cond)
	if err := r.c.client.Status().Update(ctx, obj); err != nil {
		return client.IgnoreNotFound(err)
	}
	if old == nil || old.Status != cond.Status || old.Reason != cond.Reason {
		typ, reason := corev1.EventTypeNormal, "ConfigAccepted"
		if cond.Status == metav1.ConditionFalse {
			typ, reason = corev1.EventTypeWarning, "ConfigRefused"
		}
		r.c.recorder.Eventf(obj, nil, typ, reason, "Validate", "%s", cond.Message)
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

// writeUsage refreshes every pool's usage counts, at most once per
// usageInterval.
func (r *configReconciler) writeUsage(ctx context.Context) (ctrl.Result, error) {
	if wait := usageInterval - time.Since(r.lastUsage); wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	r.lastUsage = time.Now()
	var pools v1alpha1.IPAddressPoolList
	if err := r.c.client.List(ctx, &pools); err != nil {
		return ctrl.Result{}, err
	}
	for i := range pools.Items {
		p := &pools.Items[i]
		st := p.Status
		st.AssignedIPv4, st.AvailableIPv4 = r.usage(p.Name, ipam.IPv4)
		st.AssignedIPv6, st.AvailableIPv6 = r.usage(p.Name, ipam.IPv6)
		st.Assigned = st.AssignedIPv4 + st.AssignedIPv6
		st.Available = satAdd(st.AvailableIPv4, st.AvailableIPv6)
		setPoolGauges(p.Name, &st)
		if st.AssignedIPv4 == p.Status.AssignedIPv4 && st.AssignedIPv6 == p.Status.AssignedIPv6 &&
			st.AvailableIPv4 == p.Status.AvailableIPv4 && st.AvailableIPv6 == p.Status.AvailableIPv6 {
			continue
		}
		p.Status = st
		if err := r.c.client.Status().Update(ctx, p); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{}, nil
}

func (r *configReconciler) usage(pool string, f ipam.Family) (assigned, available int64) {
	u, ok := r.c.alloc.Usage(pool, f)
	if !ok {
		return 0, 0
	}
	return sat(u.Assigned), sat(u.Available)
}

func sat(u uint64) int64 {
	if u > uint64(v1alpha1.AvailableSaturated) {
		return v1alpha1.AvailableSaturated
	}
	return int64(u)
}

func satAdd(a, b int64) int64 {
	if a > v1alpha1.AvailableSaturated-b {
		return v1alpha1.AvailableSaturated
	}
	return a + b
}

func splitKey(k string) (string, string) {
	ns, name, _ := strings.Cut(k, "/")
	return ns, name
}

// ipamPool is the pool as the allocator sees it.
func ipamPool(p *model.Pool) ipam.Pool {
	return ipam.Pool{Name: p.Name, Ranges: p.Ranges, AutoAssign: p.AutoAssign, AvoidBuggyIPs: p.AvoidBuggyIPs, Priority: p.Priority}
}
