// Package reconcile is the speaker's loop: it gathers what the cluster says
// (Services and their addresses, pools and advertisements through the shared
// model, endpoints, nodes, other speakers' Leases and the gossip view),
// elects with the pure functions of speaker/election which addresses this
// node announces, and applies that to the layer-2 announcer and to the
// Announcement objects users read.
package reconcile

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/internal/model"
	"github.com/heraldlb/herald/speaker/election"
)

// Options configure a speaker.
type Options struct {
	NodeName  string
	Namespace string // Herald's namespace: Leases, the gossip Secret
	// LoadBalancerClass as for the controller: empty means Services without a class.
	LoadBalancerClass string
	LeaseDuration     time.Duration
	// GossipAddr and GossipPort are where this speaker's gossip listens; an
	// invalid GossipAddr runs without gossip (the API view alone).
	GossipAddr netip.Addr
	GossipPort int
	// Resync bounds how long a change no event reports (a peer's Lease
	// expiring) goes unnoticed.
	Resync time.Duration
	// HandoverTimeout bounds how long a stopping speaker keeps answering
	// while it waits to see the new owner announce.
	HandoverTimeout time.Duration
}

// Announcer is the layer-2 side (speaker/layer2.Announcer).
type Announcer interface {
	SetOwned(owned map[netip.Addr][]string) error
	WaitAnnouncedByOther(ctx context.Context, ip netip.Addr) error
	Close() error
}

// Gossip is the fast membership (speaker/membership.Membership).
type Gossip interface {
	Join(addrs []string) (int, error)
	Alive() map[string]bool
	Healthy() bool
	Changes() <-chan struct{}
	Leave(timeout time.Duration) error
}

// Speaker is one node's speaker.
type Speaker struct {
	opts      Options
	client    client.Client // reads from the manager's cache
	recorder  events.EventRecorder
	announcer Announcer
	gossip    Gossip // nil: no gossip
	log       logr.Logger
	// localInterfaces reads this node's subnets per interface (netlink).
	localInterfaces func() (map[netip.Prefix][]string, []string, error)

	trigger chan struct{}
	mu      sync.Mutex
	owned   map[netip.Addr]ownership // what this node announces now
	orphans map[netip.Addr]bool      // addresses no node can announce, as last reported
	pools   map[string]*model.Pool   // pools in force at the last reconcile
	peers   []string                 // gossip addresses of speakers with a fresh Lease, for the joiner
	ready   chan struct{}
	once    sync.Once
	started time.Time
}

// gossiplessGrace is how long a speaker without gossip waits before it counts
// itself as such: long enough for every peer's watch to see its Lease say so,
// so no peer still expects gossip from it and takes its addresses over.
const gossiplessGrace = 3 * time.Second

// ownership is one address this node announces, and for which Service(s).
type ownership struct {
	interfaces []string
	services   []string // namespace/name, sorted
}

// New makes a speaker. gossip may be nil.
func New(c client.Client, rec events.EventRecorder, ann Announcer, gossip Gossip, localInterfaces func() (map[netip.Prefix][]string, []string, error), opts Options, log logr.Logger) *Speaker {
	if opts.LeaseDuration == 0 {
		opts.LeaseDuration = 15 * time.Second
	}
	if opts.Resync == 0 {
		opts.Resync = time.Second
	}
	if opts.HandoverTimeout == 0 {
		opts.HandoverTimeout = 3 * time.Second
	}
	return &Speaker{
		opts: opts, client: c, recorder: rec, announcer: ann, gossip: gossip, log: log,
		localInterfaces: localInterfaces,
		trigger:         make(chan struct{}, 1),
		owned:           map[netip.Addr]ownership{},
		orphans:         map[netip.Addr]bool{},
		ready:           make(chan struct{}),
		started:         time.Now(),
	}
}

// Trigger asks for a reconcile soon; calls while one is pending fold into it.
func (s *Speaker) Trigger() {
	select {
	case s.trigger <- struct{}{}:
	default:
	}
}

// Ready is closed after the first successful reconcile.
func (s *Speaker) Ready() <-chan struct{} { return s.ready }

// Run reconciles until ctx ends, then hands over: it withdraws its Lease and
// leaves the gossip so the others elect new owners at once, keeps answering
// until each new owner has announced (or HandoverTimeout passes), and only
// then stops answering.
func (s *Speaker) Run(ctx context.Context) error {
	var gossipChanges <-chan struct{}
	if s.gossip != nil {
		gossipChanges = s.gossip.Changes()
		go s.joiner(ctx)
	}
	tick := time.NewTicker(s.opts.Resync)
	defer tick.Stop()
	lastLease := time.Time{}
	for {
		if time.Since(lastLease) > s.opts.LeaseDuration/3 {
			if subnets, names, err := s.localInterfaces(); err != nil {
				s.log.Error(err, "reading this node's interfaces")
			} else if err := s.renewLease(ctx, subnets, names); err != nil && ctx.Err() == nil {
				s.log.Error(err, "renewing the speaker Lease")
			} else {
				lastLease = time.Now()
			}
		}
		if ctx.Err() != nil {
			break
		}
		if err := s.reconcile(ctx); err != nil && ctx.Err() == nil {
			s.log.Error(err, "reconcile")
		} else if ctx.Err() == nil {
			s.once.Do(func() { close(s.ready) })
		}
		select {
		case <-ctx.Done():
		case <-s.trigger:
		case <-gossipChanges:
		case <-tick.C:
		}
		if ctx.Err() != nil {
			break
		}
	}
	return s.handover()
}

// reconcile computes what this node announces and applies it.
func (s *Speaker) reconcile(ctx context.Context) error {
	in, err := s.gather(ctx)
	if err != nil {
		return err
	}
	want, orphans := s.elect(in)
	s.reportOrphans(in, orphans)
	s.mu.Lock()
	prev := s.owned
	s.mu.Unlock()
	owned := map[netip.Addr][]string{}
	for ip, o := range want {
		owned[ip] = o.interfaces
	}
	if err := s.announcer.SetOwned(owned); err != nil {
		return err
	}
	s.mu.Lock()
	s.owned = want
	s.mu.Unlock()
	s.report(ctx, in, prev, want)
	return nil
}

// inputs is everything an election needs, read at one moment.
type inputs struct {
	cfg      *model.Config
	services []corev1.Service
	slices   []discoveryv1.EndpointSlice
	nodes    []election.Node
	live     []string
	announce bool
	now      time.Time
}

func (s *Speaker) gather(ctx context.Context) (*inputs, error) {
	in := &inputs{now: time.Now()}
	cfgIn, err := model.Read(ctx, s.client)
	if err != nil {
		return nil, err
	}
	var svcs corev1.ServiceList
	var eps discoveryv1.EndpointSliceList
	var nodes corev1.NodeList
	var leases coordinationv1.LeaseList
	for _, l := range []client.ObjectList{&svcs, &eps, &nodes} {
		if err := s.client.List(ctx, l); err != nil {
			return nil, err
		}
	}
	if err := s.client.List(ctx, &leases, client.InNamespace(s.opts.Namespace)); err != nil {
		return nil, err
	}
	// Like the controller, keep a pool whose change is refused in force as
	// last accepted, so its addresses stay announced.
	cfgIn.LastAccepted = s.pools
	in.cfg = model.Build(cfgIn)
	s.pools = in.cfg.Pools
	in.services, in.slices = svcs.Items, eps.Items

	infos := map[string]leaseInfo{}
	var k8sLive, withoutGossip []string
	var gossipPeers []string
	for i := range leases.Items {
		info, ok := readLease(&leases.Items[i], in.now)
		if !ok {
			continue
		}
		infos[info.node] = info
		if info.fresh {
			k8sLive = append(k8sLive, info.node)
			// A speaker without gossip publishes no gossip address. Its own
			// flag counts once the others have had time to see it.
			if info.gossip == "" && (info.node != s.opts.NodeName || in.now.Sub(s.started) > gossiplessGrace) {
				withoutGossip = append(withoutGossip, info.node)
			}
			if info.node != s.opts.NodeName && info.gossip != "" {
				gossipPeers = append(gossipPeers, info.gossip)
			}
		}
	}
	slices.Sort(k8sLive)
	alive, healthy := map[string]bool(nil), false
	if s.gossip != nil {
		s.joinPeers(gossipPeers)
		alive, healthy = s.gossip.Alive(), s.gossip.Healthy()
	}
	in.live, in.announce = election.Live(election.Peers{
		Self: s.opts.NodeName, K8sLive: k8sLive, WithoutGossip: withoutGossip,
		GossipHealthy: healthy, GossipAlive: alive,
	})
	for _, n := range nodes.Items {
		info := infos[n.Name]
		en := election.Node{
			Name:           n.Name,
			Labels:         n.Labels,
			SpeakerLive:    slices.Contains(in.live, n.Name),
			Interfaces:     info.subnets,
			InterfaceNames: info.interfaces,
		}
		_, en.ExcludedFromLB = n.Labels[corev1.LabelNodeExcludeBalancers]
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeNetworkUnavailable && c.Status == corev1.ConditionTrue {
				en.NetworkUnavailable = true
			}
		}
		in.nodes = append(in.nodes, en)
	}
	return in, nil
}

// joinPeers hands the peers with a fresh Lease to the joiner. Joining dials
// each peer (a dead one until its Lease expires: a 1 s timeout), so it must
// never run inside a reconcile, where it would delay every failover.
func (s *Speaker) joinPeers(peers []string) {
	s.mu.Lock()
	s.peers = peers
	s.mu.Unlock()
}

// joiner asks the gossip to join the current peers every resync: members
// already alive are skipped, and after a partition heals this is how the two
// sides find each other again.
func (s *Speaker) joiner(ctx context.Context) {
	t := time.NewTicker(s.opts.Resync)
	defer t.Stop()
	for {
		s.mu.Lock()
		peers := s.peers
		s.mu.Unlock()
		if len(peers) > 0 {
			if n, err := s.gossip.Join(peers); err != nil && n == 0 {
				s.log.V(1).Info("gossip join failed; will retry", "peers", peers, "error", err.Error())
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Speaker) ours(svc *corev1.Service) bool {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false
	}
	if s.opts.LoadBalancerClass == "" {
		return svc.Spec.LoadBalancerClass == nil
	}
	return svc.Spec.LoadBalancerClass != nil && *svc.Spec.LoadBalancerClass == s.opts.LoadBalancerClass
}

// elect returns the addresses this node announces, and the addresses no
// node can announce with the Services that hold them.
func (s *Speaker) elect(in *inputs) (map[netip.Addr]ownership, map[netip.Addr][]*corev1.Service) {
	want := map[netip.Addr]ownership{}
	orphans := map[netip.Addr][]*corev1.Service{}
	if !in.announce {
		s.log.V(1).Info("this speaker sees a minority of its peers alive: announcing nothing until it rejoins")
		return want, nil
	}
	ready := readyNodes(in.slices)
	// Services sharing an address are elected together, over the nodes that
	// are candidates for all of them, so one address never has two owners.
	type claim struct {
		svcs      []*corev1.Service
		cands     []string
		preferred []string
		ifaces    map[string][]string
	}
	claims := map[netip.Addr]*claim{}
	var order []netip.Addr
	for i := range in.services {
		svc := &in.services[i]
		if !s.ours(svc) {
			continue
		}
		key := svc.Namespace + "/" + svc.Name
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			ip, err := netip.ParseAddr(ing.IP)
			if err != nil {
				continue
			}
			pool := poolOf(in.cfg, ip)
			if pool == "" {
				continue
			}
			ads := advertisementsFor(in.cfg, pool, svc.Labels)
			if len(ads) == 0 {
				continue // not advertised over layer 2
			}
			info := election.ServiceInfo{
				IP:                      ip,
				LocalTrafficPolicy:      svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal,
				NodesWithReadyEndpoints: ready[key],
			}
			cands, preferred, ifaces := election.Candidates(info, ads, in.nodes)
			c := claims[ip]
			if c == nil {
				claims[ip] = &claim{svcs: []*corev1.Service{svc}, cands: cands, preferred: preferred, ifaces: ifaces}
				order = append(order, ip)
				continue
			}
			c.svcs = append(c.svcs, svc)
			c.cands = slices.DeleteFunc(c.cands, func(n string) bool { return !slices.Contains(cands, n) })
		}
	}
	for _, ip := range order {
		c := claims[ip]
		owner, ok := election.Owner(ip, c.cands, c.preferred)
		if !ok {
			orphans[ip] = c.svcs
			continue
		}
		if owner != s.opts.NodeName {
			continue
		}
		o := ownership{interfaces: c.ifaces[owner]}
		for _, svc := range c.svcs {
			o.services = append(o.services, svc.Namespace+"/"+svc.Name)
		}
		slices.Sort(o.services)
		want[ip] = o
	}
	return want, orphans
}

// readyNodes maps namespace/service to the nodes that have a ready endpoint.
func readyNodes(eps []discoveryv1.EndpointSlice) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for _, es := range eps {
		svc := es.Labels[discoveryv1.LabelServiceName]
		if svc == "" {
			continue
		}
		key := es.Namespace + "/" + svc
		for _, e := range es.Endpoints {
			if e.NodeName == nil || (e.Conditions.Ready != nil && !*e.Conditions.Ready) {
				continue
			}
			if out[key] == nil {
				out[key] = map[string]bool{}
			}
			out[key][*e.NodeName] = true
		}
	}
	return out
}

// poolOf names the accepted pool that contains ip, or "".
func poolOf(cfg *model.Config, ip netip.Addr) string {
	for name, p := range cfg.Pools {
		for _, r := range p.Ranges {
			if r.First.Compare(ip) <= 0 && ip.Compare(r.Last) <= 0 {
				return name
			}
		}
	}
	return ""
}

// advertisementsFor lists the L2Advertisements covering pool that select a
// Service with the given labels.
func advertisementsFor(cfg *model.Config, pool string, svcLabels map[string]string) []election.Advertisement {
	var out []election.Advertisement
	for _, a := range cfg.L2Advertisements {
		if !slices.Contains(a.Pools, pool) || !model.AnyMatches(a.ServiceSelectors, svcLabels) {
			continue
		}
		ea := election.Advertisement{Name: a.Name, NodeSelectors: a.NodeSelectors}
		if a.L2 != nil {
			ea.Interfaces, ea.PreferredNodes = a.L2.Interfaces, a.L2.PreferredNodes
		}
		out = append(out, ea)
	}
	return out
}

// handover runs once ctx has ended: see Run.
func (s *Speaker) handover() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.HandoverTimeout+2*time.Second)
	defer cancel()
	if err := s.dropLease(ctx); err != nil {
		s.log.Error(err, "withdrawing the speaker Lease")
	}
	if s.gossip != nil {
		if err := s.gossip.Leave(500 * time.Millisecond); err != nil {
			s.log.Error(err, "leaving the gossip")
		}
	}
	s.mu.Lock()
	owned := s.owned
	s.mu.Unlock()
	wctx, wcancel := context.WithTimeout(ctx, s.opts.HandoverTimeout)
	var wg sync.WaitGroup
	for ip := range owned {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.announcer.WaitAnnouncedByOther(wctx, ip); err != nil {
				s.log.Info("no new owner announced before the handover timeout", "ip", ip.String())
			}
		}()
	}
	wg.Wait()
	wcancel()
	err := s.announcer.Close()
	s.deleteAnnouncements(ctx, nil)
	return err
}

func joinIPs(ips []netip.Addr) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ", ")
}
