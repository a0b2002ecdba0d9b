package status

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/speaker/bgp"
	"github.com/heraldlb/herald/speaker/state"
)

// Event reasons of BGP sessions, recorded on the BGPPeer.
const (
	ReasonSessionUp    = "SessionEstablished"
	ReasonSessionDown  = "SessionDown"
	ReasonSessionReset = "SessionReset"
)

// maxListedPrefixes bounds BGPSession.status.prefixes; the count is exact.
const maxListedPrefixes = 64

// Sessions writes this node's BGPSession objects, one per BGP session, from
// what the BGP output reports, and records an event on the BGPPeer when a
// session comes up and when it goes (or is found) down, once per outage.
// It polls, and wakes early when told a session changed state; it writes
// an object only when what it shows changed.
type Sessions struct {
	client   client.Client // writes, with the status budget
	cache    client.Reader // this node's BGPSessions, BGPPeers, Nodes
	recorder events.EventRecorder
	node     string
	log      logr.Logger

	written map[string]*v1alpha1.BGPSession // by session (BGPPeer) name
	down    map[string]bool                 // sessions whose outage was evented
}

// NewSessions returns a writer for node.
func NewSessions(c client.Client, cache client.Reader, rec events.EventRecorder, node string, log logr.Logger) *Sessions {
	return &Sessions{client: c, cache: cache, recorder: rec, node: node, log: log,
		written: map[string]*v1alpha1.BGPSession{}, down: map[string]bool{}}
}

// Run writes what state reports every interval, and when wake fires, until
// ctx ends; then it deletes this node's BGPSessions.
func (s *Sessions) Run(ctx context.Context, state func() []bgp.PeerState, wake <-chan struct{}, interval time.Duration) {
	if err := s.adopt(ctx); err != nil {
		s.log.Error(err, "listing this node's BGPSessions")
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := s.Sync(ctx, state()); err != nil && ctx.Err() == nil {
			s.log.Error(err, "writing BGPSessions")
		}
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			s.deleteAll(dctx)
			cancel()
			return
		case <-t.C:
		case <-wake:
		}
	}
}

// adopt takes over the BGPSessions a previous speaker on this node wrote.
func (s *Sessions) adopt(ctx context.Context) error {
	var list v1alpha1.BGPSessionList
	if err := s.cache.List(ctx, &list, client.MatchingLabels{state.LabelNode: s.node}); err != nil {
		return err
	}
	for i := range list.Items {
		s.written[list.Items[i].Spec.Peer] = &list.Items[i]
	}
	return nil
}

// Sync writes the BGPSessions for the given states and removes the others.
func (s *Sessions) Sync(ctx context.Context, states []bgp.PeerState) error {
	var errs []error
	want := map[string]bool{}
	for _, ps := range states {
		want[ps.Name] = true
		s.event(ctx, ps)
		if err := s.write(ctx, ps); err != nil {
			errs = append(errs, err)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(s.written)) {
		if want[name] {
			continue
		}
		if err := client.IgnoreNotFound(s.client.Delete(ctx, s.written[name])); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(s.written, name)
		delete(s.down, name)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%d BGPSession writes failed, first: %w", len(errs), errs[0])
	}
	return nil
}

// SessionName is <peer>.<node>: a BGPPeer name has no dot only if the user
// chose so, but the node label and spec say whose it is either way.
func SessionName(peer, node string) string {
	n := peer + "." + node
	if len(n) > 253 {
		n = strings.TrimRight(n[:253], "-.")
	}
	return n
}

func statusOf(ps bgp.PeerState) v1alpha1.BGPSessionStatus {
	st := v1alpha1.BGPSessionStatus{
		State: ps.State, PeerASN: ps.PeerASN, BFD: ps.BFD, Reason: ps.Reason, Warnings: ps.Warnings,
		PrefixesAdvertised: int32(len(ps.Advertised)), Flaps: int64(ps.Flaps),
	}
	if !ps.Since.IsZero() {
		// Whole seconds, as the API stores them: a re-read compares equal.
		t := metav1.NewTime(ps.Since.Truncate(time.Second))
		st.EstablishedSince = &t
	}
	for i, p := range ps.Advertised {
		if i == maxListedPrefixes {
			break
		}
		st.Prefixes = append(st.Prefixes, p.String())
	}
	return st
}

func (s *Sessions) write(ctx context.Context, ps bgp.PeerState) error {
	spec := v1alpha1.BGPSessionSpec{Node: s.node, Peer: ps.Name}
	if ps.PeerAddress.IsValid() {
		spec.PeerAddress = ps.PeerAddress.String()
	}
	st := statusOf(ps)
	cur := s.written[ps.Name]
	if cur != nil && apiequality.Semantic.DeepEqual(cur.Spec, spec) && apiequality.Semantic.DeepEqual(cur.Status, st) {
		return nil
	}
	if cur == nil {
		obj := &v1alpha1.BGPSession{
			ObjectMeta: metav1.ObjectMeta{Name: SessionName(ps.Name, s.node), Labels: map[string]string{state.LabelNode: s.node}},
			Spec:       spec, Status: st,
		}
		// Deleted with the Node by the garbage collector.
		var n corev1.Node
		if err := s.cache.Get(ctx, types.NamespacedName{Name: s.node}, &n); err == nil {
			obj.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: n.Name, UID: n.UID}}
		}
		err := s.client.Create(ctx, obj)
		if apierrors.IsAlreadyExists(err) {
			cur = &v1alpha1.BGPSession{}
			if err := s.client.Get(ctx, client.ObjectKeyFromObject(obj), cur); err != nil {
				return err
			}
		} else if err != nil {
			return err
		} else {
			s.written[ps.Name] = obj
			return nil
		}
	}
	upd := cur.DeepCopy()
	upd.Spec, upd.Status = spec, st
	if err := s.client.Update(ctx, upd); err != nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			delete(s.written, ps.Name) // re-read or re-create next time
		}
		return err
	}
	s.written[ps.Name] = upd
	return nil
}

// event records a session's coming up, and its going down (or being found
// down at start) once per outage, with the reason, once the reason says
// more than "connecting".
func (s *Sessions) event(ctx context.Context, ps bgp.PeerState) {
	up := ps.State == bgp.StateEstablished
	switch {
	case up && s.down[ps.Name]:
		delete(s.down, ps.Name)
		s.record(ctx, ps, corev1.EventTypeNormal, ReasonSessionUp, "node %s: BGP session to %s established (peer AS %d)", s.node, ps.PeerAddress, ps.PeerASN)
	case up:
		if cur := s.written[ps.Name]; cur == nil || cur.Status.State != bgp.StateEstablished {
			s.record(ctx, ps, corev1.EventTypeNormal, ReasonSessionUp, "node %s: BGP session to %s established (peer AS %d)", s.node, ps.PeerAddress, ps.PeerASN)
		}
	case !s.down[ps.Name] && ps.Reason != "" && !transient(ps.Reason):
		s.down[ps.Name] = true
		s.record(ctx, ps, corev1.EventTypeWarning, ReasonSessionDown, "node %s: BGP session to %s is %s: %s", s.node, ps.PeerAddress, ps.State, ps.Reason)
	}
}

// transient reasons say nothing yet: the session is on its way.
func transient(reason string) bool {
	return reason == "connecting" || strings.HasPrefix(reason, "not configured in the BGP server")
}

func (s *Sessions) record(ctx context.Context, ps bgp.PeerState, typ, reason, format string, args ...any) {
	var peer v1alpha1.BGPPeer
	if err := s.cache.Get(ctx, types.NamespacedName{Name: ps.Name}, &peer); err != nil {
		return
	}
	s.recorder.Eventf(&peer, nil, typ, reason, "Peer", format, args...)
}

// Reset records that this node reset its session to peer for a change of
// the BGPPeer, and why. It does not block.
func (s *Sessions) Reset(peer string, reasons []string) {
	go s.record(context.Background(), bgp.PeerState{Name: peer}, corev1.EventTypeNormal, ReasonSessionReset,
		"node %s: BGP session reset: %s", s.node, strings.Join(reasons, "; "))
}

func (s *Sessions) deleteAll(ctx context.Context) {
	for name, obj := range s.written {
		if err := client.IgnoreNotFound(s.client.Delete(ctx, obj)); err != nil {
			s.log.Error(err, "deleting BGPSession", "session", obj.Name)
			continue
		}
		delete(s.written, name)
	}
}
