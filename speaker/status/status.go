// Package status writes what a speaker reports to people: one Announcement
// object per Service it announces (kubectl get announcements -A), and events
// on the Service. It runs off the deciding path: the speaker hands it the
// desired state per Service and moves on; a queue keyed by Service coalesces
// repeated changes to one write of the latest state, with its own client and
// so its own rate budget, and a failed write is retried with backoff.
package status

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/speaker/state"
)

// Event reasons of the speaker.
const (
	ReasonAnnouncing     = "Announcing"
	ReasonAnnounceFailed = "AnnounceFailed"
	// On the speaker's Node: it stands down because it hears too few of its
	// peers' gossip, and it hears them again.
	ReasonGossipCutOff   = "GossipCutOff"
	ReasonGossipRejoined = "GossipRejoined"
)

// Modes of an Announcement: a node announcing a Service both ways writes one
// of each.
const (
	ModeLayer2 = "layer2"
	ModeBGP    = "bgp"
)

// Announcement is what this node announces for one Service in one mode.
type Announcement struct {
	IPs        []netip.Addr // sorted
	Interfaces []string     // sorted; layer 2
	Peers      []string     // sorted; BGP
	// Taken are the IPs this node took over in this change: they get an
	// Announcing event, and the Announcements that speakers no longer in
	// Live wrote for the Service are removed (a dead node cannot).
	Taken []netip.Addr
	Live  []string
}

// Reporter is the status queue of one speaker.
type Reporter struct {
	client   client.Client // writes, with the reporter's own rate limiter
	cache    client.Reader // Services, and this node's Announcements
	recorder events.EventRecorder
	node     string
	log      logr.Logger

	queue workqueue.TypedRateLimitingInterface[key]
	mu    sync.Mutex
	want  map[key]*Announcement // nil: announce nothing for it
	taken map[key]takeover      // not yet reported
}

// key names one Announcement of this node.
type key struct {
	svc  types.NamespacedName
	mode string
}

type takeover struct {
	ips  []netip.Addr
	live []string
}

// NewReporter returns a reporter for node; c should have a rate limiter of
// its own, cache is the speaker's cache.
func NewReporter(c client.Client, cache client.Reader, rec events.EventRecorder, node string, log logr.Logger) *Reporter {
	return &Reporter{
		client: c, cache: cache, recorder: rec, node: node, log: log,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[key](),
			workqueue.TypedRateLimitingQueueConfig[key]{Name: "speaker-status"}),
		want:  map[key]*Announcement{},
		taken: map[key]takeover{},
	}
}

// Set records what this node announces for svc over layer 2 (nil: nothing)
// and queues the write. It never blocks on the API. Setting nothing for a
// Service that had nothing set costs nothing.
func (r *Reporter) Set(svc types.NamespacedName, a *Announcement) {
	r.set(key{svc, ModeLayer2}, a)
}

// SetBGP is Set for what this node announces for svc over BGP.
func (r *Reporter) SetBGP(svc types.NamespacedName, a *Announcement) {
	r.set(key{svc, ModeBGP}, a)
}

func (r *Reporter) set(svc key, a *Announcement) {
	r.mu.Lock()
	if a == nil {
		if prev, ok := r.want[svc]; !ok || prev == nil {
			r.mu.Unlock()
			return
		}
		r.want[svc] = nil
	} else {
		r.want[svc] = a
		if len(a.Taken) > 0 {
			t := r.taken[svc]
			t.ips = append(t.ips, a.Taken...)
			t.live = a.Live
			r.taken[svc] = t
		}
	}
	r.mu.Unlock()
	r.queue.Add(svc)
}

// Prune queues the removal of this node's Announcements for Services that
// Set never named: left over from before a restart.
func (r *Reporter) Prune(ctx context.Context) error {
	var list v1alpha1.AnnouncementList
	if err := r.cache.List(ctx, &list, client.MatchingLabels{state.LabelNode: r.node}); err != nil {
		return err
	}
	for i := range list.Items {
		a := &list.Items[i]
		svc := key{types.NamespacedName{Namespace: a.Namespace, Name: a.Spec.Service}, a.Spec.Mode}
		r.mu.Lock()
		_, known := r.want[svc]
		if !known {
			r.want[svc] = nil
		}
		r.mu.Unlock()
		if !known {
			r.queue.Add(svc)
		}
	}
	return nil
}

// Register makes the Reporter rewrite an Announcement of this node that
// someone else deleted while the node still announces it: a speaker taking
// an address over removes the Announcements of the nodes it saw dead, and
// a node that restarted at that moment may already own the address again.
// Call it before the cache starts.
func (r *Reporter) Register(ctx context.Context, c cache.Cache) error {
	inf, err := c.GetInformer(ctx, &v1alpha1.Announcement{})
	if err != nil {
		return err
	}
	_, err = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{DeleteFunc: func(o any) {
		if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
			o = d.Obj
		}
		a, ok := o.(*v1alpha1.Announcement)
		if !ok || a.Spec.Node != r.node {
			return
		}
		k := key{types.NamespacedName{Namespace: a.Namespace, Name: a.Spec.Service}, a.Spec.Mode}
		r.mu.Lock()
		want := r.want[k] != nil
		r.mu.Unlock()
		if want {
			r.queue.Add(k)
		}
	}})
	return err
}

// Warn records a warning event on a Service, off the deciding path.
func (r *Reporter) Warn(svc types.NamespacedName, reason, format string, args ...any) {
	var s corev1.Service
	if err := r.cache.Get(context.Background(), svc, &s); err != nil {
		return
	}
	r.recorder.Eventf(&s, nil, corev1.EventTypeWarning, reason, "Announce", format, args...)
}

// NodeEvent records an event on this speaker's Node, off the deciding path.
func (r *Reporter) NodeEvent(eventtype, reason, format string, args ...any) {
	node := &corev1.ObjectReference{APIVersion: "v1", Kind: "Node", Name: r.node, UID: types.UID(r.node)}
	r.recorder.Eventf(node, nil, eventtype, reason, "Gossip", format, args...)
}

// Run writes until ctx ends.
func (r *Reporter) Run(ctx context.Context, workers int) {
	go func() {
		<-ctx.Done()
		r.queue.ShutDown()
	}()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r.next(ctx) {
			}
		}()
	}
	wg.Wait()
}

func (r *Reporter) next(ctx context.Context) bool {
	svc, shutdown := r.queue.Get()
	if shutdown {
		return false
	}
	defer r.queue.Done(svc)
	if err := r.sync(ctx, svc); err != nil {
		if ctx.Err() == nil {
			r.log.Error(err, "writing Announcement", "service", svc.svc.String(), "mode", svc.mode)
		}
		r.queue.AddRateLimited(svc)
		return true
	}
	r.queue.Forget(svc)
	return true
}

// sync writes the Announcement of k as last set.
func (r *Reporter) sync(ctx context.Context, k key) error {
	r.mu.Lock()
	want := r.want[k]
	taken := r.taken[k]
	r.mu.Unlock()
	svc := k.svc
	name := AnnouncementName(svc.Name, r.node, k.mode)
	var cur v1alpha1.Announcement
	err := r.cache.Get(ctx, types.NamespacedName{Namespace: svc.Namespace, Name: name}, &cur)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	exists := err == nil
	if want == nil {
		r.mu.Lock()
		if r.want[k] == nil {
			delete(r.want, k)
		}
		r.mu.Unlock()
		if !exists {
			return nil
		}
		return client.IgnoreNotFound(r.client.Delete(ctx, &cur))
	}
	var s corev1.Service
	if err := r.cache.Get(ctx, svc, &s); err != nil {
		// Gone: the garbage collector removes its Announcements.
		return client.IgnoreNotFound(err)
	}
	spec := v1alpha1.AnnouncementSpec{Service: svc.Name, Mode: k.mode, Node: r.node, Interfaces: want.Interfaces, Peers: want.Peers}
	for _, ip := range want.IPs {
		spec.IPs = append(spec.IPs, ip.String())
	}
	if !exists {
		yes := true
		a := &v1alpha1.Announcement{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: svc.Namespace, Name: name,
				Labels: map[string]string{state.LabelNode: r.node, state.LabelService: svc.Name},
				// Deleted with its Service by the garbage collector.
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: s.UID, BlockOwnerDeletion: &yes}},
			},
			Spec: spec,
		}
		switch err := r.client.Create(ctx, a); {
		case err == nil:
			cur = *a
		case apierrors.IsAlreadyExists(err):
			// Written a moment ago and not in the cache yet: read the API.
			if err := r.client.Get(ctx, client.ObjectKeyFromObject(a), &cur); err != nil {
				return err
			}
		default:
			return err
		}
	}
	if !apiequality.Semantic.DeepEqual(cur.Spec, spec) {
		upd := cur.DeepCopy()
		upd.Spec = spec
		if err := r.client.Update(ctx, upd); err != nil {
			return err
		}
	}
	if len(taken.ips) == 0 {
		return nil
	}
	if err := r.removeDeadNodesAnnouncements(ctx, svc, taken.live); err != nil {
		return err
	}
	ips := slices.Clone(taken.ips)
	slices.SortFunc(ips, netip.Addr.Compare)
	ips = slices.Compact(ips)
	r.recorder.Eventf(&s, nil, corev1.EventTypeNormal, ReasonAnnouncing, "Announce",
		"%s announces %s on %s (layer2)", r.node, joinIPs(ips), strings.Join(want.Interfaces, ", "))
	r.mu.Lock()
	delete(r.taken, k)
	r.mu.Unlock()
	return nil
}

// removeDeadNodesAnnouncements deletes the layer-2 Announcements of svc that
// speakers no longer live wrote: in layer 2 an address has one owner, now
// this node, and a dead node cannot remove its own. A read from the API, not
// the cache, which holds only this node's; it happens on takeovers only.
func (r *Reporter) removeDeadNodesAnnouncements(ctx context.Context, svc types.NamespacedName, live []string) error {
	var list v1alpha1.AnnouncementList
	if err := r.client.List(ctx, &list, client.InNamespace(svc.Namespace), client.MatchingLabels{state.LabelService: svc.Name}); err != nil {
		return err
	}
	for i := range list.Items {
		a := &list.Items[i]
		if a.Spec.Mode != ModeLayer2 || a.Spec.Node == r.node || slices.Contains(live, a.Spec.Node) {
			continue
		}
		if err := client.IgnoreNotFound(r.client.Delete(ctx, a)); err != nil {
			return err
		}
	}
	return nil
}

// DeleteAll removes every Announcement this node wrote: on shutdown, after
// the hand-over. It bypasses the queue.
func (r *Reporter) DeleteAll(ctx context.Context) {
	var list v1alpha1.AnnouncementList
	if err := r.cache.List(ctx, &list, client.MatchingLabels{state.LabelNode: r.node}); err != nil {
		r.log.Error(err, "listing this node's Announcements")
		return
	}
	for i := range list.Items {
		if err := client.IgnoreNotFound(r.client.Delete(ctx, &list.Items[i])); err != nil {
			r.log.Error(err, "deleting Announcement", "announcement", list.Items[i].Namespace+"/"+list.Items[i].Name)
			if ctx.Err() != nil {
				return
			}
		}
	}
}

// AnnouncementName is <service>.<node> for layer 2 and <service>.<node>.bgp
// for BGP: a Service name (a DNS label) has no dot, so the Service is
// unambiguous. A node name is at most 253 characters, so a long one is cut
// to fit an object name.
func AnnouncementName(svc, node, mode string) string {
	n := svc + "." + node
	suffix := ""
	if mode == ModeBGP {
		suffix = ".bgp"
	}
	if len(n)+len(suffix) > 253 {
		n = strings.TrimRight(n[:253-len(suffix)], "-.")
	}
	return n + suffix
}

func joinIPs(ips []netip.Addr) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ", ")
}
