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
}

// liveness is the verdict of the partition rule.
type liveness struct {
	Live     []string // sorted
	Announce bool
	// Peers are the gossip addresses of the other speakers with a fresh
	// Lease, for the joiner.
	Peers []string
	// Next is when the verdict can change without any event: the earliest
	// expiry of a fresh Lease, or the end of this speaker's gossipless
	// grace. Zero: never.
	Next time.Time
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
	for node, info := range in.Leases {
		if !info.Fresh(in.Now) {
			continue
		}
		soonest(info.Expiry())
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
