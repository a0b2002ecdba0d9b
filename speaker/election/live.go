package election

import "slices"

// Peers is what one speaker knows about the liveness of all speakers.
type Peers struct {
	// Self is this speaker's node name.
	Self string
	// K8sLive: speakers whose Lease is fresh according to the API server
	// (Self included when its own Lease is).
	K8sLive []string
	// WithoutGossip: speakers whose Lease says they run without gossip, as
	// the API server shows it. Self's own flag decides its mode; count it only
	// once it has been visible for a few seconds, to cover the other speakers'
	// watch lag.
	WithoutGossip []string
	// GossipHealthy: memberlist runs on this speaker (membership.Healthy).
	// The speaker publishes !GossipHealthy as its flag.
	GossipHealthy bool
	// GossipAlive: speakers memberlist considers alive (membership.Alive);
	// ignored when GossipHealthy is false.
	GossipAlive map[string]bool
}

// Live applies the partition rule described in the package doc. live (sorted)
// is the speakers this one holds live (set Node.SpeakerLive from it); announce
// is false
// when this speaker must announce nothing at all, whatever live says, because
// its peers may take its addresses over (it is cut off from most of them, on
// the losing half of an even split, or its lack of gossip is not yet known to
// them).
func Live(p Peers) (live []string, announce bool) {
	k8s := sortedSet(p.K8sLive)
	without := make(map[string]bool, len(p.WithoutGossip))
	for _, n := range p.WithoutGossip {
		without[n] = true
	}

	if without[p.Self] || !p.GossipHealthy {
		// The Kubernetes view. Safe only once every other speaker keeps this
		// one on the Kubernetes view too, which it does once the API shows
		// this speaker in WithoutGossip; until then, announce nothing.
		return k8s, without[p.Self] && slices.Contains(k8s, p.Self)
	}

	var quorum, seen int
	smallestSeen := false // whether the smallest name of the quorum is on our side
	for _, n := range k8s {
		alive := n == p.Self || p.GossipAlive[n]
		if alive || without[n] {
			live = append(live, n)
		}
		if without[n] {
			continue // not gossiping: no say in the quorum
		}
		if quorum == 0 {
			smallestSeen = alive
		}
		quorum++
		if alive {
			seen++
		}
	}
	switch {
	case 2*seen > quorum:
		announce = true
	case 2*seen < quorum:
		announce = false
	default: // even split
		announce = smallestSeen
	}
	return live, announce && slices.Contains(live, p.Self)
}

func sortedSet(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}
