package allocation

import (
	"context"
	"maps"
	"slices"
	"sync"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/heraldlb/herald/controller/ipam"
	"github.com/heraldlb/herald/internal/model"
)

// pendingSet holds the Services waiting for an address, each with the pools
// that could serve it, so that an address freed in a pool wakes only the
// Services that pool may serve. A Service that no pool could serve (its
// requested address is outside every pool, say) waits for a configuration
// change, which wakes every pending Service.
type pendingSet struct {
	pools  map[types.NamespacedName][]string
	byPool map[string]map[types.NamespacedName]struct{}
}

func newPendingSet() pendingSet {
	return pendingSet{pools: map[types.NamespacedName][]string{}, byPool: map[string]map[types.NamespacedName]struct{}{}}
}

// add records that svc waits for an address from one of pools.
func (p *pendingSet) add(svc types.NamespacedName, pools []string) {
	p.remove(svc)
	p.pools[svc] = pools
	for _, name := range pools {
		if p.byPool[name] == nil {
			p.byPool[name] = map[types.NamespacedName]struct{}{}
		}
		p.byPool[name][svc] = struct{}{}
	}
}

func (p *pendingSet) remove(svc types.NamespacedName) {
	pools, ok := p.pools[svc]
	if !ok {
		return
	}
	delete(p.pools, svc)
	for _, name := range pools {
		delete(p.byPool[name], svc)
		if len(p.byPool[name]) == 0 {
			delete(p.byPool, name)
		}
	}
}

func (p *pendingSet) has(svc types.NamespacedName) bool {
	_, ok := p.pools[svc]
	return ok
}

// servedBy lists the pending Services pool could serve.
func (p *pendingSet) servedBy(pool string) []types.NamespacedName {
	return slices.Collect(maps.Keys(p.byPool[pool]))
}

// inNamespace lists the pending Services of namespace ns.
func (p *pendingSet) inNamespace(ns string) []types.NamespacedName {
	var out []types.NamespacedName
	for svc := range p.pools {
		if svc.Namespace == ns {
			out = append(out, svc)
		}
	}
	return out
}

func (p *pendingSet) all() []types.NamespacedName { return slices.Collect(maps.Keys(p.pools)) }

// poolsServing lists the pools in cfg that could ever serve req, as the
// allocator decides (see ipam.Allocator.Assign): the pools holding the
// requested addresses, else the named pool, else every pool with
// autoAssign; each only if the Service is eligible for it.
func poolsServing(cfg *model.Config, req ipam.Request) []string {
	var out []string
	ok := func(p *model.Pool) bool {
		return (req.Eligible == nil || req.Eligible(p.Name)) && (req.Pool == "" || req.Pool == p.Name) && !slices.Contains(out, p.Name)
	}
	if len(req.IPs) > 0 {
		for _, ip := range req.IPs {
			if p, found := cfg.PoolOf(ip); found && ok(p) {
				out = append(out, p.Name)
			}
		}
		return out
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Pools)) {
		if p := cfg.Pools[name]; ok(p) && (req.Pool != "" || p.AutoAssign) {
			out = append(out, name)
		}
	}
	return out
}

// retrier hands Services to reconcile again to the Service controller. Adds
// are coalesced: a Service added many times before the controller takes it
// is queued once, and no caller ever blocks or starts a goroutine.
type retrier struct {
	mu   sync.Mutex
	keys map[types.NamespacedName]struct{}
	wake chan struct{}
	out  chan event.TypedGenericEvent[types.NamespacedName]
}

func newRetrier() *retrier {
	return &retrier{
		keys: map[types.NamespacedName]struct{}{},
		wake: make(chan struct{}, 1),
		out:  make(chan event.TypedGenericEvent[types.NamespacedName]),
	}
}

func (r *retrier) add(keys ...types.NamespacedName) {
	if len(keys) == 0 {
		return
	}
	r.mu.Lock()
	for _, k := range keys {
		r.keys[k] = struct{}{}
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// take empties the set and returns what it held.
func (r *retrier) take() []types.NamespacedName {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Collect(maps.Keys(r.keys))
	clear(r.keys)
	return out
}

// run feeds the Services to the controller until ctx ends.
func (r *retrier) run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		}
		for _, k := range r.take() {
			select {
			case r.out <- event.TypedGenericEvent[types.NamespacedName]{Object: k}:
			case <-ctx.Done():
				return nil
			}
		}
	}
}
