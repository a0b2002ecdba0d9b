// Package state is what the speaker knows of the cluster: lean informer
// caches (transforms drop what the speaker never reads, EndpointSlices are
// indexed by Service) and a change tracker in the manner of kube-proxy's:
// dirty Service keys, plus flags for the changes that affect every address
// (nodes, speaker Leases, configuration). Events that change nothing the
// speaker reads (a Lease renewal, a Node heartbeat, another component's
// Lease) wake nothing.
//
// It converts what it caches into the planner's types (speaker/plan); it
// decides nothing.
package state

import (
	"cmp"
	"context"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/internal/model"
	"github.com/heraldlb/herald/speaker/dataplane"
	"github.com/heraldlb/herald/speaker/election"
	"github.com/heraldlb/herald/speaker/lease"
	"github.com/heraldlb/herald/speaker/plan"
)

// Labels of the Announcements a speaker writes: the node that wrote it (so a
// speaker caches and removes exactly its own) and the Service it is about.
const (
	LabelNode    = "herald.dev/node"
	LabelService = "herald.dev/service"
)

// indexService indexes EndpointSlices by the name of their Service.
const indexService = "herald.dev/service"

// CacheOptions returns the cache options of a speaker on node: transforms for
// every kind it reads, Leases and Secrets in Herald's namespace only (all RBAC
// grants), and only the Announcements and BGPSessions this node wrote.
func CacheOptions(namespace, node string) cache.Options {
	own := map[string]cache.Config{namespace: {}}
	return cache.Options{
		// managedFields are a large share of every object and never read.
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Service{}:            {Transform: TransformService},
			&discoveryv1.EndpointSlice{}: {Transform: TransformEndpointSlice},
			&corev1.Node{}:               {Transform: TransformNode},
			&coordinationv1.Lease{}:      {Namespaces: own, Transform: TransformLease},
			&corev1.Secret{}:             {Namespaces: own},
			&v1alpha1.Announcement{}:     {Label: labels.SelectorFromSet(labels.Set{LabelNode: node})},
			&v1alpha1.BGPSession{}:       {Label: labels.SelectorFromSet(labels.Set{LabelNode: node})},
			&v1alpha1.IPAddressPool{}:    {},
			&v1alpha1.L2Advertisement{}:  {},
			&v1alpha1.BGPAdvertisement{}: {},
			&v1alpha1.BGPPeer{}:          {},
			&v1alpha1.BFDProfile{}:       {},
		},
	}
}

// Changes is what happened since the last Take.
type Changes struct {
	// Services whose Service or EndpointSlices changed.
	Services []types.NamespacedName
	// Nodes, Leases, Config: a change that can affect every address.
	Nodes, Leases, Config bool
}

// Full reports whether the change affects every address.
func (c Changes) Full() bool { return c.Nodes || c.Leases || c.Config }

// Tracker records changes from the informers and reads the cache.
type Tracker struct {
	reader    client.Reader
	namespace string
	lbClass   string
	log       logr.Logger
	now       func() time.Time
	// LeaseErrors counts Leases refused by lease.Decode (may be nil).
	leaseErrors func()

	mu       sync.Mutex
	services map[types.NamespacedName]bool
	changes  Changes
	leases   map[string]lease.Info
	written  map[string]time.Time // each Lease's renewTime as its speaker wrote it
	wake     chan struct{}
}

// NewTracker returns a tracker reading from reader (the cache). lbClass is
// the loadBalancerClass handled, "" for Services without one.
func NewTracker(reader client.Reader, namespace, lbClass string, log logr.Logger, leaseErrors func()) *Tracker {
	if leaseErrors == nil {
		leaseErrors = func() {}
	}
	return &Tracker{
		reader: reader, namespace: namespace, lbClass: lbClass, log: log, now: time.Now, leaseErrors: leaseErrors,
		services: map[types.NamespacedName]bool{},
		leases:   map[string]lease.Info{},
		written:  map[string]time.Time{},
		wake:     make(chan struct{}, 1),
	}
}

// Register adds the EndpointSlice index and the event handlers. Call it
// before the cache starts.
func (t *Tracker) Register(ctx context.Context, c cache.Cache) error {
	if err := c.IndexField(ctx, &discoveryv1.EndpointSlice{}, indexService, func(o client.Object) []string {
		if s := o.GetLabels()[discoveryv1.LabelServiceName]; s != "" {
			return []string{s}
		}
		return nil
	}); err != nil {
		return err
	}
	handlers := []struct {
		obj client.Object
		h   toolscache.ResourceEventHandler
	}{
		{&corev1.Service{}, t.handler(func(o any) { t.serviceChanged(keyOf(o)) }, nil)},
		{&discoveryv1.EndpointSlice{}, t.handler(t.sliceChanged, sameSlice)},
		{&corev1.Node{}, t.handler(func(any) { t.flag(func(c *Changes) { c.Nodes = true }) }, func(a, b any) bool {
			na, nb := a.(*corev1.Node), b.(*corev1.Node)
			return reflect.DeepEqual(na.Labels, nb.Labels) && reflect.DeepEqual(na.Status.Conditions, nb.Status.Conditions) &&
				reflect.DeepEqual(na.Status.Addresses, nb.Status.Addresses)
		})},
		// BGP passwords: a Secret change re-reads the configuration.
		{&corev1.Secret{}, t.handler(func(any) { t.flag(func(c *Changes) { c.Config = true }) }, func(a, b any) bool {
			return reflect.DeepEqual(a.(*corev1.Secret).Data, b.(*corev1.Secret).Data)
		})},
		{&coordinationv1.Lease{}, toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { t.ObserveLease(o, false) },
			UpdateFunc: func(_, o any) { t.ObserveLease(o, false) },
			DeleteFunc: func(o any) { t.ObserveLease(o, true) },
		}},
	}
	for _, o := range []client.Object{&v1alpha1.IPAddressPool{}, &v1alpha1.L2Advertisement{}, &v1alpha1.BGPAdvertisement{}, &v1alpha1.BGPPeer{}, &v1alpha1.BFDProfile{}} {
		handlers = append(handlers, struct {
			obj client.Object
			h   toolscache.ResourceEventHandler
		}{o, t.handler(func(any) { t.flag(func(c *Changes) { c.Config = true }) }, func(a, b any) bool {
			// Status writes (the controller's Accepted condition) change nothing here.
			return a.(client.Object).GetGeneration() == b.(client.Object).GetGeneration() &&
				reflect.DeepEqual(a.(client.Object).GetLabels(), b.(client.Object).GetLabels())
		})})
	}
	for _, h := range handlers {
		inf, err := c.GetInformer(ctx, h.obj)
		if err != nil {
			return err
		}
		if _, err := inf.AddEventHandler(h.h); err != nil {
			return err
		}
	}
	return nil
}

// handler calls changed on adds, deletes and updates, except updates that
// same says change nothing.
func (t *Tracker) handler(changed func(any), same func(old, new any) bool) toolscache.ResourceEventHandler {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc: changed,
		UpdateFunc: func(old, new any) {
			if same == nil || !same(old, new) {
				changed(new)
			}
		},
		DeleteFunc: func(o any) {
			if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			changed(o)
		},
	}
}

// Wake is signalled (coalesced) when there are changes to Take.
func (t *Tracker) Wake() <-chan struct{} { return t.wake }

func (t *Tracker) signal() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

func (t *Tracker) flag(set func(*Changes)) {
	t.mu.Lock()
	set(&t.changes)
	t.mu.Unlock()
	t.signal()
}

// Take returns the changes since the last Take and clears them.
func (t *Tracker) Take() Changes {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.changes
	c.Services = make([]types.NamespacedName, 0, len(t.services))
	for k := range t.services {
		c.Services = append(c.Services, k)
	}
	t.services = map[types.NamespacedName]bool{}
	t.changes = Changes{}
	return c
}

func keyOf(o any) types.NamespacedName {
	if obj, ok := o.(client.Object); ok {
		return types.NamespacedName{Namespace: obj.GetNamespace(), Name: obj.GetName()}
	}
	return types.NamespacedName{}
}

func (t *Tracker) serviceChanged(k types.NamespacedName) {
	if k.Name == "" {
		return
	}
	t.mu.Lock()
	t.services[k] = true
	t.mu.Unlock()
	t.signal()
}

func (t *Tracker) sliceChanged(o any) {
	es, ok := o.(*discoveryv1.EndpointSlice)
	if !ok || es.Labels[discoveryv1.LabelServiceName] == "" {
		return
	}
	t.serviceChanged(types.NamespacedName{Namespace: es.Namespace, Name: es.Labels[discoveryv1.LabelServiceName]})
}

// sameSlice reports whether two versions of an EndpointSlice (as the
// transform left them) say the same to the speaker.
func sameSlice(a, b any) bool {
	ea, oka := a.(*discoveryv1.EndpointSlice)
	eb, okb := b.(*discoveryv1.EndpointSlice)
	return oka && okb && reflect.DeepEqual(ea.Labels, eb.Labels) && reflect.DeepEqual(ea.Ports, eb.Ports) &&
		reflect.DeepEqual(ea.Endpoints, eb.Endpoints)
}

// ObserveLease keeps the decoded speaker Leases (the informer calls it). A renewal that says nothing
// new, of a Lease that was fresh, wakes nothing: the runner's timer at the
// earliest expiry covers the Leases that stop being renewed.
func (t *Tracker) ObserveLease(o any, deleted bool) {
	if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
		o, deleted = d.Obj, true
	}
	l, ok := o.(*coordinationv1.Lease)
	if !ok || !lease.IsSpeakerLease(l.Name) {
		return // another component's Lease (the controller's leader election)
	}
	info, err := lease.Decode(l)
	if err != nil && !deleted {
		t.leaseErrors()
		t.log.Error(err, "speaker Lease refused: its speaker counts as alive, without subnets or interfaces, until it is fixed")
	}
	t.mu.Lock()
	prev, had := t.leases[info.Node]
	if deleted {
		delete(t.leases, info.Node)
		delete(t.written, info.Node)
	} else {
		written, seen := t.written[info.Node]
		t.written[info.Node] = info.RenewTime
		info.RenewTime = observedRenewal(info.RenewTime, written, prev.RenewTime, had && seen, t.now())
		t.leases[info.Node] = info
	}
	quiet := !deleted && had && prev.SameAnnouncement(info) && prev.Fresh(t.now())
	if !quiet {
		t.changes.Leases = true
	}
	t.mu.Unlock()
	if !quiet {
		t.signal()
	}
}

// observedRenewal is when this speaker counts a Lease as renewed. The
// renewTime a speaker writes is its own node's clock: read as is, a speaker
// whose clock runs minutes behind looks dead to its peers while it counts
// itself alive (two owners for its addresses), and one running ahead looks
// alive for minutes after it died. So, as client-go's leader election does,
// a renewal counts from when this speaker sees renewTime change (on its
// clock); a Lease seen for the first time keeps its written time, capped at
// now, so a speaker that starts does not revive a long-dead peer.
func observedRenewal(written, prevWritten, prevObserved time.Time, seen bool, now time.Time) time.Time {
	switch {
	case seen && written.Equal(prevWritten):
		return prevObserved // a resync or another field's change: not a renewal
	case seen || written.After(now):
		return now
	default:
		return written
	}
}

// Leases returns the decoded speaker Leases by node; their RenewTime is
// when this speaker saw the renewal (observedRenewal).
func (t *Tracker) Leases() map[string]lease.Info {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]lease.Info, len(t.leases))
	for k, v := range t.leases {
		out[k] = v
	}
	return out
}

// ServiceKeys lists every Service in the cache.
func (t *Tracker) ServiceKeys(ctx context.Context) ([]types.NamespacedName, error) {
	var list corev1.ServiceList
	if err := t.reader.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	out := make([]types.NamespacedName, len(list.Items))
	for i := range list.Items {
		out[i] = types.NamespacedName{Namespace: list.Items[i].Namespace, Name: list.Items[i].Name}
	}
	return out, nil
}

// Service reads a Service and its EndpointSlices as the planner sees it; nil
// when it does not exist or is not the speaker's (not a LoadBalancer, another
// class, no address yet).
func (t *Tracker) Service(ctx context.Context, key types.NamespacedName) (*plan.Service, error) {
	var svc corev1.Service
	if err := t.reader.Get(ctx, key, &svc); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	if !model.Handles(&svc, t.lbClass) {
		return nil, nil
	}
	var eps discoveryv1.EndpointSliceList
	if err := t.reader.List(ctx, &eps, client.InNamespace(key.Namespace), client.MatchingFields{indexService: key.Name}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	slices := make([]*discoveryv1.EndpointSlice, len(eps.Items))
	for i := range eps.Items {
		slices[i] = &eps.Items[i]
	}
	return PlanService(&svc, slices, t.log), nil
}

// PlanService converts a Service and its EndpointSlices. Ingress entries
// that are not addresses (a hostname) are skipped; nil when none is left.
func PlanService(svc *corev1.Service, eps []*discoveryv1.EndpointSlice, log logr.Logger) *plan.Service {
	out := &plan.Service{
		Key:                types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name},
		Labels:             svc.Labels,
		LocalTrafficPolicy: svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal,
		ReadyNodes:         readyNodes(eps),
		NodePorts:          svc.Spec.AllocateLoadBalancerNodePorts == nil || *svc.Spec.AllocateLoadBalancerNodePorts,
		Scheduler:          svc.Annotations[AnnotationScheduler],
		Ports:              forwardedPorts(svc, eps),
	}
	if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		// The API server defaults the timeout; 10800 s is its default.
		out.Affinity = 10800 * time.Second
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			out.Affinity = time.Duration(*c.ClientIP.TimeoutSeconds) * time.Second
		}
	}
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if ing.IP == "" {
			continue
		}
		out.ProxyMode = out.ProxyMode || ing.IPMode != nil && *ing.IPMode == corev1.LoadBalancerIPModeProxy
		ip, err := netip.ParseAddr(ing.IP)
		if err != nil {
			log.Info("Service ingress is not an address; skipped", "service", out.Key.String(), "ip", ing.IP)
			continue
		}
		if ip = ip.Unmap(); !slices.Contains(out.IPs, ip) {
			out.IPs = append(out.IPs, ip)
		}
	}
	if len(out.IPs) == 0 {
		return nil
	}
	return out
}

// AnnotationScheduler picks the dataplane's scheduler for a Service.
const AnnotationScheduler = "herald.dev/ipvs-scheduler"

// forwardedPorts resolves each Service port's ready endpoints: an
// EndpointSlice port matches a Service port by name and protocol
// (discovery/v1 EndpointPort), and gives the endpoint's port number.
func forwardedPorts(svc *corev1.Service, eps []*discoveryv1.EndpointSlice) []dataplane.Port {
	out := make([]dataplane.Port, 0, len(svc.Spec.Ports))
	for _, sp := range svc.Spec.Ports {
		p := dataplane.Port{Name: sp.Name, Protocol: dataplane.Protocol(sp.Protocol), Port: uint16(sp.Port), NodePort: uint16(sp.NodePort)}
		if p.Protocol == "" {
			p.Protocol = dataplane.TCP
		}
		for _, es := range eps {
			var port uint16
			for _, ep := range es.Ports {
				name, proto := "", corev1.ProtocolTCP
				if ep.Name != nil {
					name = *ep.Name
				}
				if ep.Protocol != nil {
					proto = *ep.Protocol
				}
				if name == sp.Name && string(proto) == string(p.Protocol) && ep.Port != nil {
					port = uint16(*ep.Port)
				}
			}
			if port == 0 {
				continue
			}
			for _, e := range es.Endpoints {
				if e.Conditions.Ready != nil && !*e.Conditions.Ready {
					continue
				}
				node := ""
				if e.NodeName != nil {
					node = *e.NodeName
				}
				for _, a := range e.Addresses {
					if ip, err := netip.ParseAddr(a); err == nil {
						p.Endpoints = append(p.Endpoints, dataplane.Endpoint{Addr: ip.Unmap(), Port: port, Node: node})
					}
				}
			}
		}
		slices.SortFunc(p.Endpoints, func(a, b dataplane.Endpoint) int {
			return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port), strings.Compare(a.Node, b.Node))
		})
		p.Endpoints = slices.Compact(p.Endpoints)
		out = append(out, p)
	}
	return out
}

// readyNodes lists, sorted, the nodes with a ready endpoint. An endpoint
// whose readiness is unknown counts as ready, as the EndpointSlice API says
// consumers should (discovery/v1 EndpointConditions.Ready).
func readyNodes(eps []*discoveryv1.EndpointSlice) []string {
	var out []string
	for _, es := range eps {
		for _, e := range es.Endpoints {
			if e.NodeName == nil || (e.Conditions.Ready != nil && !*e.Conditions.Ready) {
				continue
			}
			if !slices.Contains(out, *e.NodeName) {
				out = append(out, *e.NodeName)
			}
		}
	}
	slices.Sort(out)
	return out
}

// NodeAddresses returns a Node's internal and external addresses, without
// zones (see nodeAddrs), in the order the Node lists them; none when the
// Node is not known.
func (t *Tracker) NodeAddresses(ctx context.Context, name string) ([]netip.Addr, error) {
	var n corev1.Node
	if err := t.reader.Get(ctx, types.NamespacedName{Name: name}, &n); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	var out []netip.Addr
	for _, a := range n.Status.Addresses {
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			out = append(out, ip.Unmap().WithZone(""))
		}
	}
	return out, nil
}

// Nodes reads every Node as the election sees it, without what the caller
// adds from the speakers' Leases (SpeakerLive, Interfaces, InterfaceNames),
// and the nodes whose NodePorts the dataplane may send traffic to: Ready,
// not excluded from load balancers, not being deleted, with their internal
// addresses (external ones when a node has none).
func (t *Tracker) Nodes(ctx context.Context) ([]election.Node, []dataplane.Node, error) {
	var list corev1.NodeList
	if err := t.reader.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return nil, nil, err
	}
	out := make([]election.Node, 0, len(list.Items))
	var healthy []dataplane.Node
	for _, n := range list.Items {
		en := election.Node{Name: n.Name, Labels: n.Labels}
		_, en.ExcludedFromLB = n.Labels[corev1.LabelNodeExcludeBalancers]
		ready := false
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeNetworkUnavailable && c.Status == corev1.ConditionTrue {
				en.NetworkUnavailable = true
			}
			ready = ready || c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue
		}
		out = append(out, en)
		if ready && !en.ExcludedFromLB && n.DeletionTimestamp == nil {
			if dn := (dataplane.Node{Name: n.Name, Addrs: nodeAddrs(&n, corev1.NodeInternalIP)}); len(dn.Addrs) > 0 {
				healthy = append(healthy, dn)
			} else if dn.Addrs = nodeAddrs(&n, corev1.NodeExternalIP); len(dn.Addrs) > 0 {
				healthy = append(healthy, dn)
			}
		}
	}
	slices.SortFunc(out, func(a, b election.Node) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(healthy, func(a, b dataplane.Node) int { return strings.Compare(a.Name, b.Name) })
	return out, healthy, nil
}

// nodeAddrs lists n's addresses of type typ. A zone (fe80::1%eth0) names a
// link of n, not of this node, and no dataplane rule can carry one: it is
// dropped.
func nodeAddrs(n *corev1.Node, typ corev1.NodeAddressType) []netip.Addr {
	var out []netip.Addr
	for _, a := range n.Status.Addresses {
		if ip, err := netip.ParseAddr(a.Address); a.Type == typ && err == nil {
			out = append(out, ip.Unmap().WithZone(""))
		}
	}
	return out
}
