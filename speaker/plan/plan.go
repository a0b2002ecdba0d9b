// Package plan decides what a node's speaker does, from a typed snapshot of
// the cluster: for every LoadBalancer address an L2Advertisement covers, the
// node that answers ARP/NDP for it and on which interfaces. BGP routes per
// peer and the dataplane's service map are the plan's next outputs; they
// derive from the same per-address decision, so "which Services does this
// node serve" is answered once.
//
// It is pure: no clients, no clocks, no sockets. The Planner is incremental
// in the manner of kube-proxy's change tracker: a Service change re-decides
// only the addresses that Service holds (and held), a World change (nodes,
// liveness, configuration) re-decides every address. Both give the same
// result as deciding everything from scratch, which the property tests check.
//
// Every speaker plans the whole cluster, not only its own addresses: the
// owner of an address is the same on every speaker given the same inputs
// (see package election), and Self only says which decisions are this node's.
package plan

import (
	"cmp"
	"iter"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/internal/model"
	"github.com/heraldlb/herald/speaker/dataplane"
	"github.com/heraldlb/herald/speaker/election"
)

// Service is what the planner reads of one LoadBalancer Service the speaker
// handles (its type and class already checked).
type Service struct {
	Key types.NamespacedName
	// IPs are the addresses in status.loadBalancer.ingress.
	IPs    []netip.Addr
	Labels map[string]string
	// LocalTrafficPolicy: externalTrafficPolicy Local.
	LocalTrafficPolicy bool
	// ReadyNodes are the nodes running a ready endpoint, sorted.
	ReadyNodes []string
	// ProxyMode: an ingress entry has ipMode Proxy, so only nodes whose
	// speaker forwards may receive its traffic (election.ServiceInfo).
	ProxyMode bool

	// What the dataplane forwards (see dataplane.Service).
	Ports     []dataplane.Port
	NodePorts bool
	Affinity  time.Duration
	Scheduler string
}

// World is everything a decision reads besides the Services.
type World struct {
	Config *model.Config
	// Nodes with SpeakerLive set from election.Live.
	Nodes []election.Node
	// Self is the node this speaker runs on, which BGP routes are planned for.
	Self string
	// Peers are Self's BGP sessions (BGPPeer names), sorted: an
	// advertisement that names no peers goes to all of them.
	Peers []string
}

// L2 is the layer-2 decision for one address.
type L2 struct {
	// Owner answers for the address; "" when no node can (the Services are
	// advertised, but no live node qualifies).
	Owner string
	// Interfaces of the owner to answer on, sorted.
	Interfaces []string
	// Services holding the address that an L2Advertisement covers, sorted.
	Services []types.NamespacedName
}

// Planned reports whether the address is in the plan at all: some Service
// holds it and an L2Advertisement covers it.
func (d L2) Planned() bool { return len(d.Services) > 0 }

func (d L2) equal(o L2) bool {
	return d.Owner == o.Owner && slices.Equal(d.Interfaces, o.Interfaces) && slices.Equal(d.Services, o.Services)
}

// Change is one address whose layer-2 decision changed in a Plan call. Old
// or New is the zero L2 when the address was or is no longer planned.
type Change struct {
	IP       netip.Addr
	Old, New L2
}

// BGPChange is one address whose BGP decision changed in a Plan call.
type BGPChange struct {
	IP       netip.Addr
	Old, New BGP
}

// Diff is what one Plan call changed: layer-2 decisions, Self's BGP
// decisions and Self's routes, and the Services whose forwarding on Self
// may have changed (see Forwarding), each sorted.
type Diff struct {
	L2        []Change
	BGP       []BGPChange
	Routes    []RouteChange
	Dataplane []types.NamespacedName
}

// Planner holds the last decisions and what they were made from.
type Planner struct {
	world    World
	services map[types.NamespacedName]*Service
	byIP     map[netip.Addr][]types.NamespacedName // sorted
	l2       map[netip.Addr]L2
	dirty    map[netip.Addr]bool
	full     bool
	// Services whose forwarding on Self may have changed since the last Plan.
	dpDirty map[types.NamespacedName]bool

	// Self's BGP decisions, and the routes they make.
	bgp        map[netip.Addr]BGP
	prefixIPs  map[netip.Prefix][]netip.Addr // announced addresses per prefix, sorted
	ipPrefixes map[netip.Addr][]netip.Prefix // the prefixes of each announced address
	routes     map[netip.Prefix]*Route

	// Caches, valid for one World.
	ads      map[string]election.Advertisement // accepted L2Advertisements by name
	prefixes []netip.Prefix                    // every distinct node subnet
	classes  map[classKey]*class
	// Rankings depend only on the address and the node names, so they
	// survive liveness changes: rankNames is the name set they index into.
	rankNames  []string
	rankings   map[netip.Addr][]uint16
	bgpAds     map[string]*bgpAd
	bgpAdNames []string // sorted
	bgpStale   bool     // bgpAds changed: re-derive every prefix and route
	self       *election.Node
}

// New returns a planner with an empty world: nothing is planned until
// SetWorld gives it a configuration.
func New() *Planner {
	return &Planner{
		services:   map[types.NamespacedName]*Service{},
		byIP:       map[netip.Addr][]types.NamespacedName{},
		l2:         map[netip.Addr]L2{},
		dirty:      map[netip.Addr]bool{},
		dpDirty:    map[types.NamespacedName]bool{},
		rankings:   map[netip.Addr][]uint16{},
		bgp:        map[netip.Addr]BGP{},
		prefixIPs:  map[netip.Prefix][]netip.Addr{},
		ipPrefixes: map[netip.Addr][]netip.Prefix{},
		routes:     map[netip.Prefix]*Route{},
	}
}

// SetWorld replaces the world; the next Plan re-decides every address.
func (p *Planner) SetWorld(w World) {
	p.world = w
	p.full = true
	p.classes = map[classKey]*class{}
	p.ads = map[string]election.Advertisement{}
	p.prefixes = p.prefixes[:0]
	if w.Config != nil {
		for _, a := range w.Config.L2Advertisements {
			ea := election.Advertisement{Name: a.Name, NodeSelectors: a.NodeSelectors}
			if a.L2 != nil {
				ea.Interfaces, ea.PreferredNodes = a.L2.Interfaces, a.L2.PreferredNodes
			}
			p.ads[a.Name] = ea
		}
	}
	names := make([]string, 0, len(w.Nodes))
	for _, n := range w.Nodes {
		names = append(names, n.Name)
		for pfx := range n.Interfaces {
			if !slices.Contains(p.prefixes, pfx) {
				p.prefixes = append(p.prefixes, pfx)
			}
		}
	}
	slices.SortFunc(p.prefixes, comparePrefixes)
	slices.Sort(names)
	names = slices.Compact(names)
	if !slices.Equal(names, p.rankNames) {
		p.rankNames = names
		clear(p.rankings)
	}
	p.setBGPWorld(w)
}

// SetService adds or replaces a Service; the next Plan re-decides the
// addresses it holds and held.
func (p *Planner) SetService(s *Service) {
	old := p.services[s.Key]
	if old != nil && old.equal(s) {
		return
	}
	p.DeleteService(s.Key)
	p.services[s.Key] = s
	p.dpDirty[s.Key] = true
	for _, ip := range s.IPs {
		keys := p.byIP[ip]
		i, found := slices.BinarySearchFunc(keys, s.Key, compareKeys)
		if !found {
			p.byIP[ip] = slices.Insert(keys, i, s.Key)
		}
		p.dirty[ip] = true
	}
}

// DeleteService removes a Service; the next Plan re-decides its addresses.
func (p *Planner) DeleteService(key types.NamespacedName) {
	old := p.services[key]
	if old == nil {
		return
	}
	delete(p.services, key)
	p.dpDirty[key] = true
	for _, ip := range old.IPs {
		keys := p.byIP[ip]
		if i, found := slices.BinarySearchFunc(keys, key, compareKeys); found {
			keys = slices.Delete(keys, i, i+1)
		}
		if len(keys) == 0 {
			delete(p.byIP, ip)
			delete(p.rankings, ip)
		} else {
			p.byIP[ip] = keys
		}
		p.dirty[ip] = true
	}
}

// Plan re-decides what changed since the last call and returns what changed.
func (p *Planner) Plan() Diff {
	ips := p.dirty
	if p.full {
		ips = make(map[netip.Addr]bool, len(p.byIP)+len(p.l2)+len(p.bgp))
		for ip := range p.byIP {
			ips[ip] = true
		}
		for ip := range p.l2 {
			ips[ip] = true
		}
		for ip := range p.bgp {
			ips[ip] = true
		}
	}
	var diff Diff
	touched := map[netip.Prefix]bool{}
	for ip := range ips {
		d, b := p.decide(ip)
		if wasServed, served := p.served(p.l2[ip], p.bgp[ip]), p.served(d, b); wasServed != served {
			for _, k := range p.l2[ip].Services {
				p.dpDirty[k] = true
			}
			for _, k := range p.bgp[ip].Services {
				p.dpDirty[k] = true
			}
			for _, k := range p.byIP[ip] {
				p.dpDirty[k] = true
			}
		}
		if old := p.l2[ip]; !d.equal(old) {
			if d.Planned() {
				p.l2[ip] = d
			} else {
				delete(p.l2, ip)
			}
			diff.L2 = append(diff.L2, Change{IP: ip, Old: old, New: d})
		}
		// When the advertisements changed, the same decision may announce
		// the address as another aggregate, so its prefixes are refreshed.
		if old := p.bgp[ip]; !b.equal(old) {
			p.setBGP(ip, b, touched)
			diff.BGP = append(diff.BGP, BGPChange{IP: ip, Old: old, New: b})
		} else if p.bgpStale {
			p.setBGP(ip, b, touched)
		}
	}
	diff.Routes = p.planRoutes(touched, p.bgpStale)
	diff.Dataplane = slices.SortedFunc(maps.Keys(p.dpDirty), compareKeys)
	clear(p.dpDirty)
	p.dirty = map[netip.Addr]bool{}
	p.full, p.bgpStale = false, false
	slices.SortFunc(diff.L2, func(a, b Change) int { return a.IP.Compare(b.IP) })
	slices.SortFunc(diff.BGP, func(a, b BGPChange) int { return a.IP.Compare(b.IP) })
	return diff
}

// L2 is the current decision for ip (the zero L2 when it is not planned).
func (p *Planner) L2(ip netip.Addr) L2 { return p.l2[ip] }

// Addresses iterates over every planned address and its decision.
func (p *Planner) Addresses() iter.Seq2[netip.Addr, L2] { return maps.All(p.l2) }

// served reports whether Self receives the traffic of an address: it owns
// it on layer 2, or announces it over BGP.
func (p *Planner) served(d L2, b BGP) bool {
	return d.Owner == p.world.Self && d.Owner != "" || b.Announced()
}

// Forwarding is what Self's dataplane forwards of a Service: the Service's
// addresses whose traffic Self receives, with its ports and settings; false
// when Self receives none of it (or the Service is gone).
func (p *Planner) Forwarding(key types.NamespacedName) (dataplane.Service, bool) {
	s := p.services[key]
	if s == nil {
		return dataplane.Service{}, false
	}
	out := dataplane.Service{
		Key: key, Ports: s.Ports, Local: s.LocalTrafficPolicy, NodePorts: s.NodePorts,
		Affinity: s.Affinity, Scheduler: s.Scheduler,
	}
	for _, ip := range s.IPs {
		l2, bgp := p.l2[ip], p.bgp[ip]
		if p.served(l2, bgp) && (slices.Contains(l2.Services, key) || slices.Contains(bgp.Services, key)) {
			out.IPs = append(out.IPs, ip)
		}
	}
	return out, len(out.IPs) > 0
}

// Service returns the Service as last set, or nil.
func (p *Planner) Service(key types.NamespacedName) *Service { return p.services[key] }

func compareKeys(a, b types.NamespacedName) int {
	return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
}

func (s *Service) equal(o *Service) bool {
	return s.Key == o.Key && slices.Equal(s.IPs, o.IPs) && maps.Equal(s.Labels, o.Labels) &&
		s.LocalTrafficPolicy == o.LocalTrafficPolicy && slices.Equal(s.ReadyNodes, o.ReadyNodes) &&
		s.ProxyMode == o.ProxyMode && s.NodePorts == o.NodePorts && s.Affinity == o.Affinity && s.Scheduler == o.Scheduler &&
		slices.EqualFunc(s.Ports, o.Ports, func(a, b dataplane.Port) bool {
			return a.Name == b.Name && a.Protocol == b.Protocol && a.Port == b.Port && a.NodePort == b.NodePort &&
				slices.Equal(a.Endpoints, b.Endpoints)
		})
}
