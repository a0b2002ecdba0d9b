package runner

import (
	"cmp"
	"context"
	"net/netip"
	"reflect"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/speaker/bgp"
	"github.com/heraldlb/herald/speaker/election"
	"github.com/heraldlb/herald/speaker/plan"
	"github.com/heraldlb/herald/speaker/status"
)

// BGP is the BGP output (speaker/bgp.Output).
type BGP interface {
	SetSessions(desired []bgp.Session) error
	// UpdateRoutes changes the routes of the given prefixes; nil withdraws.
	UpdateRoutes(delta map[netip.Prefix]*bgp.Route) error
	// Detach stops without withdrawing, for peers with graceful restart.
	Detach()
}

// setSessions brings the BGP sessions in line with the configuration, this
// node's labels and addresses, and the password Secrets. It returns the
// names of the sessions, which the planner sends routes to.
func (r *Runner) setSessions(ctx context.Context) ([]string, error) {
	if r.bgp == nil || r.cfg == nil {
		return nil, nil
	}
	node := bgp.Node{Name: r.opts.NodeName}
	if i, ok := slices.BinarySearchFunc(r.nodes, r.opts.NodeName, func(n election.Node, name string) int { return cmp.Compare(n.Name, name) }); ok {
		node.Labels = r.nodes[i].Labels
	}
	addrs, err := r.tracker.NodeAddresses(ctx, r.opts.NodeName)
	if err != nil {
		return nil, err
	}
	node.Addresses = addrs
	sessions := bgp.Sessions(node, r.cfg, r.passwords(ctx))
	if !reflect.DeepEqual(sessions, r.sessions) {
		if err := r.bgp.SetSessions(sessions); err != nil {
			// What could run runs; the rest shows in the sessions' state.
			r.log.Error(err, "BGP sessions")
		}
		r.sessions = sessions
	}
	names := make([]string, len(sessions))
	for i, s := range sessions {
		names[i] = s.Name
	}
	return names, nil
}

// passwords reads the Secret keys the BGPPeers name, from Herald's
// namespace; a missing one is left out, and Sessions blocks its peer.
func (r *Runner) passwords(ctx context.Context) map[bgp.SecretKey]string {
	out := map[bgp.SecretKey]string{}
	for _, p := range r.cfg.BGPPeers {
		ref := p.Spec.PasswordSecret
		if ref == nil {
			continue
		}
		k := bgp.SecretKey{Name: ref.Name, Key: cmp.Or(ref.Key, "password")}
		var s corev1.Secret
		if err := r.cache.Get(ctx, types.NamespacedName{Namespace: r.opts.Namespace, Name: k.Name}, &s); err != nil {
			if client.IgnoreNotFound(err) != nil {
				r.log.Error(err, "reading a BGP password Secret", "secret", k.Name)
			}
			continue
		}
		if v, ok := s.Data[k.Key]; ok {
			out[k] = string(v)
		}
	}
	return out
}

// applyRoutes hands the BGP output the routes the plan changed.
func (r *Runner) applyRoutes(changes []plan.RouteChange) {
	if r.bgp == nil || len(changes) == 0 {
		return
	}
	delta := make(map[netip.Prefix]*bgp.Route, len(changes))
	for _, c := range changes {
		if c.Route == nil {
			delta[c.Prefix] = nil
			continue
		}
		// The CRD's validation admits only communities ParseCommunities reads.
		std, large, err := bgp.ParseCommunities(c.Route.Communities)
		if err != nil {
			r.log.Error(err, "BGP communities", "prefix", c.Prefix.String())
		}
		delta[c.Prefix] = &bgp.Route{Prefix: c.Prefix, Peers: c.Route.Peers, LocalPref: c.Route.LocalPref, Communities: std, LargeCommunities: large}
	}
	if err := r.bgp.UpdateRoutes(delta); err != nil {
		r.log.Error(err, "BGP routes")
	}
}

// reportBGP hands the status queue what this node announces over BGP for
// the Services whose BGP decision or routes changed.
func (r *Runner) reportBGP(diff plan.Diff) {
	touched := map[types.NamespacedName]bool{}
	for _, c := range diff.Routes {
		for _, ip := range r.planner.IPsOf(c.Prefix) {
			for _, k := range r.planner.BGP(ip).Services {
				touched[k] = true
			}
		}
	}
	for _, c := range diff.BGP {
		for _, k := range c.Old.Services {
			touched[k] = true
		}
		for _, k := range c.New.Services {
			touched[k] = true
		}
	}
	for k := range touched {
		svc := r.planner.Service(k)
		var a status.Announcement
		if svc != nil {
			for _, ip := range svc.IPs {
				if d := r.planner.BGP(ip); d.Announced() && slices.Contains(d.Services, k) {
					a.IPs = append(a.IPs, ip)
					a.Peers = append(a.Peers, r.planner.PeersOf(ip)...)
				}
			}
		}
		if len(a.IPs) == 0 {
			r.status.SetBGP(k, nil)
			continue
		}
		slices.SortFunc(a.IPs, netip.Addr.Compare)
		a.Peers = slices.Compact(slices.Sorted(slices.Values(a.Peers)))
		r.status.SetBGP(k, &a)
	}
}
