package lease

import (
	"context"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Keeper renews one speaker's Lease. It runs on its own goroutine with its
// own client, so no other API traffic of the speaker (status, events) can
// delay a renewal and make the others count this speaker dead.
type Keeper struct {
	Client    client.Client
	Namespace string
	Node      string
	Duration  time.Duration
	// Gossip is where this speaker's gossip listens; invalid: none.
	Gossip netip.AddrPort
	// Dataplane is the speaker's --dataplane.
	Dataplane string
	// Local reads this node's subnets per interface and its interface names.
	Local func() (map[netip.Prefix][]string, []string, error)
	Log   logr.Logger

	last    *coordinationv1.Lease // as last written; its resourceVersion saves a read per renewal
	renewed atomic.Int64          // unix nanoseconds of the last successful write
}

// Renewed is when the Lease was last written successfully (zero: never).
func (k *Keeper) Renewed() time.Time {
	if n := k.renewed.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Overdue is when a renewal that has not succeeded by then failed: the
// keeper renews every third of the Lease duration, and a failed attempt
// is retried every second. After Overdue, this speaker does not reach the
// API server.
func (k *Keeper) Overdue() time.Time {
	last := k.Renewed()
	if last.IsZero() {
		return last
	}
	return last.Add(k.Duration/3 + time.Second)
}

// Run renews every third of the Lease duration (after a failure, every
// second) until ctx ends.
func (k *Keeper) Run(ctx context.Context) {
	for {
		wait := k.Duration / 3
		if err := k.Renew(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			k.Log.Error(err, "renewing the speaker Lease")
			wait = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// Renew writes the Lease once: one Update when the last write is known,
// else a read first (and a Create when it does not exist).
func (k *Keeper) Renew(ctx context.Context) error {
	subnets, ifs, err := k.Local()
	if err != nil {
		return err
	}
	ann := Annotations(subnets, ifs, k.Gossip, k.Dataplane)
	now := metav1.NewMicroTime(time.Now())
	dur := int32(k.Duration / time.Second)
	for attempt := 0; ; attempt++ {
		if k.last == nil {
			var l coordinationv1.Lease
			err := k.Client.Get(ctx, types.NamespacedName{Namespace: k.Namespace, Name: Name(k.Node)}, &l)
			if apierrors.IsNotFound(err) {
				l = coordinationv1.Lease{
					ObjectMeta: metav1.ObjectMeta{Namespace: k.Namespace, Name: Name(k.Node), Annotations: ann},
					Spec:       coordinationv1.LeaseSpec{HolderIdentity: &k.Node, LeaseDurationSeconds: &dur, RenewTime: &now},
				}
				if err := k.Client.Create(ctx, &l); err != nil {
					return err
				}
				k.last = &l
				k.renewed.Store(now.UnixNano())
				return nil
			}
			if err != nil {
				return err
			}
			k.last = &l
		}
		l := k.last.DeepCopy()
		l.Annotations = ann
		l.Spec.RenewTime, l.Spec.LeaseDurationSeconds, l.Spec.HolderIdentity = &now, &dur, &k.Node
		err := k.Client.Update(ctx, l)
		if err == nil {
			k.last = l
			k.renewed.Store(now.UnixNano())
			return nil
		}
		k.last = nil
		if !(apierrors.IsConflict(err) || apierrors.IsNotFound(err)) || attempt > 0 {
			return err
		}
	}
}

// Drop deletes the Lease, so the other speakers stop counting this one at
// once instead of when it expires.
func (k *Keeper) Drop(ctx context.Context) error {
	l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: k.Namespace, Name: Name(k.Node)}}
	return client.IgnoreNotFound(k.Client.Delete(ctx, l))
}
