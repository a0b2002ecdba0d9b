package runner

import (
	"slices"
	"time"

	"github.com/heraldlb/herald/speaker/election"
	"github.com/heraldlb/herald/speaker/lease"
)

// gossiplessGrace is how long a speaker without gossip waits before it counts
// itself as such: long enough for every peer's watch to see its Lease say so,
// so no peer still expects gossip from it and takes its addresses over.
const gossiplessGrace = 3 * time.Second

// livenessInput is what the partition rule reads, at one moment.
type livenessInput struct {
	Self    string
	Leases  map[string]lease.Info
	Now     time.Time
	Started time.Time // when this speaker started
	// Gossip: whether memberlist runs here, and whom it sees alive.
	GossipHealthy bool
	GossipAlive   map[string]bool
	// APIUnreachable: the speakers gossip holds alive, this one included,
	// that say they do not reach the API server.
	APIUnreachable map[string]bool
	// Renewed: when this speaker last renewed its Lease.
	Renewed time.Time
	// Outage: the API server outage in force before this decision.
	Outage outage
	// Grace: how long an outage's view of the Leases outlives the outage
	// (the Lease duration), so every speaker renews before it ends.
	Grace time.Duration
}

// outage is an API server outage that most speakers share (they say so in
// their gossip). While it lasts, and for a grace after it, a Lease counts
// as fresh if it was fresh when the outage began: no speaker can renew, yet
// each keeps what it announces, and gossip alone tells who died. A speaker
// cut off from the API server alone gets no such grace: its Lease expires
// for the others, who take its addresses over, so it stands down.
type outage struct {
	Since time.Time // zero: none
	Until time.Time // zero while it lasts; then the end of its grace
}

// nextOutage decides the outage in force at in.Now.
func nextOutage(in livenessInput) outage {
	prev := in.Outage
	alive, down := 0, 0
	if in.GossipHealthy {
		for n := range in.GossipAlive {
			alive++
			if in.APIUnreachable[n] {
				down++
			}
		}
	}
	switch shared := 2*down > alive; {
	case shared && (prev.Since.IsZero() || !prev.Until.IsZero() && !in.Now.Before(prev.Until)):
		// The Leases as this speaker last renewed its own: every peer that
		// was renewing then is fresh at that moment.
		since := in.Now
		if !in.Renewed.IsZero() && in.Renewed.Before(since) {
			since = in.Renewed
		}
		return outage{Since: since}
	case shared:
		return outage{Since: prev.Since}
	case prev.Since.IsZero():
		return outage{}
	case prev.Until.IsZero():
		return outage{Since: prev.Since, Until: in.Now.Add(in.Grace)}
	case in.Now.Before(prev.Until):
		return prev
	}
	return outage{}
}

// fresh reports whether a Lease counts as fresh under the outage o.
func (in livenessInput) fresh(info lease.Info, o outage) bool {
	return info.Fresh(in.Now) || !o.Since.IsZero() && info.Fresh(o.Since)
}

// liveness is the verdict of the partition rule.
type liveness struct {
	Live     []string // sorted
	Announce bool
	// Peers are the gossip addresses of the other speakers with a fresh
	// Lease, for the joiner.
	Peers []string
	// Next is when the verdict can change without any event: the earliest
	// expiry of a fresh Lease, the end of this speaker's gossipless grace or
	// of an outage's grace. Zero: never.
	Next time.Time
	// Outage is the API server outage in force (nextOutage).
	Outage outage
}

// decideLiveness applies election.Live to the speakers' Leases and the gossip view.
func decideLiveness(in livenessInput) liveness {
	var out liveness
	var k8sLive, withoutGossip []string
	soonest := func(t time.Time) {
		if out.Next.IsZero() || t.Before(out.Next) {
			out.Next = t
		}
	}
	out.Outage = nextOutage(in)
	if !out.Outage.Until.IsZero() {
		soonest(out.Outage.Until)
	}
	for node, info := range in.Leases {
		if !in.fresh(info, out.Outage) {
			continue
		}
		if info.Fresh(in.Now) {
			soonest(info.Expiry())
		}
		k8sLive = append(k8sLive, node)
		if !info.Gossip.IsValid() {
			// A speaker without gossip: its own flag counts once the others
			// have had time to see it.
			if node != in.Self || in.Now.Sub(in.Started) > gossiplessGrace {
				withoutGossip = append(withoutGossip, node)
			} else {
				soonest(in.Started.Add(gossiplessGrace + time.Millisecond))
			}
		} else if node != in.Self {
			out.Peers = append(out.Peers, info.Gossip.String())
		}
	}
	slices.Sort(out.Peers)
	out.Live, out.Announce = election.Live(election.Peers{
		Self: in.Self, K8sLive: k8sLive, WithoutGossip: withoutGossip,
		GossipHealthy: in.GossipHealthy, GossipAlive: in.GossipAlive,
	})
	return out
}

// worldNodes completes the Nodes from the API with what the speakers'
// Leases say: liveness and interfaces.
func worldNodes(nodes []election.Node, leases map[string]lease.Info, live []string) []election.Node {
	out := make([]election.Node, len(nodes))
	for i, n := range nodes {
		info := leases[n.Name]
		n.SpeakerLive = slices.Contains(live, n.Name)
		n.Interfaces, n.InterfaceNames, n.Forwards = info.Subnets, info.Interfaces, info.Forwards()
		out[i] = n
	}
	return out
}
