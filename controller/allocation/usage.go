package allocation

import (
	"context"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/controller/ipam"
)

// usageInterval bounds how often pools' usage counts are written: a burst
// of allocations costs one pool status write per second, not one per Service.
const usageInterval = time.Second

// usageRequest is the usage controller's one request: refresh every pool's
// counts.
type usageRequest struct{}

type usageEvent = event.TypedGenericEvent[struct{}]

// usageWriter writes pools' usage counts.
type usageWriter struct {
	c         *Controller
	lastWrite time.Time
}

// setupUsage adds the usage controller, woken by usageChanged.
func setupUsage(mgr manager.Manager, c *Controller) error {
	u := &usageWriter{c: c}
	return builder.TypedControllerManagedBy[usageRequest](mgr).Named("usage").
		WatchesRawSource(source.TypedChannel(c.usage, handler.TypedEnqueueRequestsFromMapFunc(
			func(context.Context, struct{}) []usageRequest { return []usageRequest{{}} }))).
		Complete(reconcile.TypedFunc[usageRequest](func(ctx context.Context, _ usageRequest) (reconcile.Result, error) {
			return u.write(ctx)
		}))
}

// usageChanged asks for a refresh of the pools' usage counts; requests made
// while one is waiting are folded into it.
func (c *Controller) usageChanged() {
	select {
	case c.usage <- usageEvent{}:
	default:
	}
}

// write refreshes every pool's usage counts, at most once per usageInterval.
func (u *usageWriter) write(ctx context.Context) (reconcile.Result, error) {
	if err := u.c.start(ctx); err != nil {
		return reconcile.Result{}, err
	}
	if wait := usageInterval - time.Since(u.lastWrite); wait > 0 {
		return reconcile.Result{RequeueAfter: wait}, nil
	}
	u.lastWrite = time.Now()
	var pools v1alpha1.IPAddressPoolList
	if err := u.c.client.List(ctx, &pools); err != nil {
		return reconcile.Result{}, err
	}
	for i := range pools.Items {
		p := &pools.Items[i]
		st := p.Status
		st.AssignedIPv4, st.AvailableIPv4 = u.usage(p.Name, ipam.IPv4)
		st.AssignedIPv6, st.AvailableIPv6 = u.usage(p.Name, ipam.IPv6)
		st.Assigned = st.AssignedIPv4 + st.AssignedIPv6
		st.Available = satAdd(st.AvailableIPv4, st.AvailableIPv6)
		setPoolGauges(p.Name, &st)
		if st.AssignedIPv4 == p.Status.AssignedIPv4 && st.AssignedIPv6 == p.Status.AssignedIPv6 &&
			st.AvailableIPv4 == p.Status.AvailableIPv4 && st.AvailableIPv6 == p.Status.AvailableIPv6 {
			continue
		}
		p.Status = st
		if err := u.c.client.Status().Update(ctx, p); client.IgnoreNotFound(err) != nil {
			return reconcile.Result{}, err
		}
	}
	return reconcile.Result{}, nil
}

func (u *usageWriter) usage(pool string, f ipam.Family) (assigned, available int64) {
	a, ok := u.c.alloc.Usage(pool, f)
	if !ok {
		return 0, 0
	}
	return sat(a.Assigned), sat(a.Available)
}

func sat(n uint64) int64 {
	if n > uint64(v1alpha1.AvailableSaturated) {
		return v1alpha1.AvailableSaturated
	}
	return int64(n)
}

func satAdd(a, b int64) int64 {
	if a > v1alpha1.AvailableSaturated-b {
		return v1alpha1.AvailableSaturated
	}
	return a + b
}
