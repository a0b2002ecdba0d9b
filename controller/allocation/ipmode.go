package allocation

import (
	"context"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/heraldlb/herald/controller/ipmode"
	"github.com/heraldlb/herald/internal/model"
	"github.com/heraldlb/herald/speaker/lease"
)

// ipModeRequest is the ipmode controller's one request: the decision reads
// every speaker's Lease, whichever changed.
type ipModeRequest struct{}

// autoIPMode reports whether ipMode follows the speakers (no --ip-mode
// override).
func (c *Controller) autoIPMode() bool { return c.opts.IPMode == "" }

// ipMode is the ipMode to write on ingress entries now.
func (c *Controller) ipMode() corev1.LoadBalancerIPMode {
	c.modeMu.Lock()
	defer c.modeMu.Unlock()
	return c.mode.Mode
}

// setupIPMode adds the ipmode controller, in auto mode only: any change of a
// speaker's Lease (in Herald's namespace, the only Leases cached) decides
// again, and so does the expiry of the earliest fresh Lease, by a timer
// (RequeueAfter), since an expiry changes no object.
func setupIPMode(mgr manager.Manager, c *Controller) error {
	if !c.autoIPMode() {
		return nil
	}
	one := handler.TypedEnqueueRequestsFromMapFunc(func(context.Context, client.Object) []ipModeRequest {
		return []ipModeRequest{{}}
	})
	speakerLease := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return strings.HasPrefix(o.GetName(), lease.Prefix)
	})
	return builder.TypedControllerManagedBy[ipModeRequest](mgr).Named("ipmode").
		Watches(&coordinationv1.Lease{}, one, builder.WithPredicates(speakerLease)).
		WithOptions(controller.TypedOptions[ipModeRequest]{MaxConcurrentReconciles: 1}).
		Complete(reconcile.TypedFunc[ipModeRequest](func(ctx context.Context, _ ipModeRequest) (reconcile.Result, error) {
			return c.reconcileIPMode(ctx)
		}))
}

// reconcileIPMode decides again and, when the decision changed, requeues
// every Service the controller handles: each gets one status write with the
// new ipMode and the same addresses (writeStatus reads the decision).
func (c *Controller) reconcileIPMode(ctx context.Context) (reconcile.Result, error) {
	if err := c.start(ctx); err != nil {
		return reconcile.Result{}, err
	}
	d, changed, err := c.decideIPMode(ctx)
	if err != nil {
		return reconcile.Result{}, err
	}
	if changed {
		if err := c.requeueHandled(ctx); err != nil {
			return reconcile.Result{}, err
		}
		// The KubeProxyStrictARP condition depends on the dataplane.
		c.kickConfig()
	}
	if d.Recheck.IsZero() {
		return reconcile.Result{}, nil
	}
	// A little past the expiry: a Lease is fresh strictly before it.
	return reconcile.Result{RequeueAfter: time.Until(d.Recheck) + 10*time.Millisecond}, nil
}

// decideIPMode decides from the cached speaker Leases and records the
// decision; changed reports whether the mode differs from the one in force.
// In start it runs before any status write, so a restarted controller
// writes the mode the speakers call for from its first write.
func (c *Controller) decideIPMode(ctx context.Context) (ipmode.Decision, bool, error) {
	var leases coordinationv1.LeaseList
	if err := c.client.List(ctx, &leases, client.InNamespace(c.opts.Namespace)); err != nil {
		return ipmode.Decision{}, false, err
	}
	var speakers []ipmode.Speaker
	for i := range leases.Items {
		if s, ok := ipmode.FromLease(&leases.Items[i]); ok {
			speakers = append(speakers, s)
		}
	}
	d := ipmode.Decide(speakers, time.Now())
	c.modeMu.Lock()
	old, first := c.mode, !c.modeDecided
	if d.NoneFresh && !first {
		d.Mode, d.Reason = old.Mode, d.Reason+"; keeping "+string(old.Mode)+" until a speaker is back"
	}
	c.mode, c.modeDecided = d, true
	c.modeMu.Unlock()
	changed := old.Mode != d.Mode
	switch {
	case first:
		log.FromContext(ctx).Info("ipMode decided from the speakers' Leases", "ipMode", d.Mode, "reason", d.Reason)
	case changed:
		log.FromContext(ctx).Info("ipMode switched; rewriting it on every Service", "from", old.Mode, "to", d.Mode, "reason", d.Reason)
	}
	setIPModeGauge(d.Mode)
	return d, changed && !first, nil
}

// requeueHandled hands every Service the controller handles to the Service
// controller again.
func (c *Controller) requeueHandled(ctx context.Context) error {
	var list corev1.ServiceList
	if err := c.client.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return err
	}
	keys := make([]types.NamespacedName, 0, len(list.Items))
	for i := range list.Items {
		if svc := &list.Items[i]; model.Handles(svc, c.opts.LoadBalancerClass) {
			keys = append(keys, types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name})
		}
	}
	c.retry.add(keys...)
	return nil
}

// kickConfig has the config controller judge the configuration again.
func (c *Controller) kickConfig() {
	select {
	case c.configKick <- event.TypedGenericEvent[configRequest]{}:
	default:
	}
}
