// Package election decides which node announces each layer 2 address. It is
// pure: no clients, no clocks, no sockets. Every speaker feeds it the same
// inputs (from the API server and from gossip) and gets the same answer, so the
// speakers agree without talking to each other.
//
// Three steps, one function each:
//
//  1. Live: which speakers count as alive, and whether this speaker may
//     announce at all (the partition rule below).
//  2. Candidates: which of the live nodes may announce a given Service's
//     address: the node's speaker is live; the node is not labelled
//     node.kubernetes.io/exclude-from-external-load-balancers nor
//     NetworkUnavailable; an L2Advertisement's nodeSelectors match it (no
//     selectors match every node); it has a qualifying interface (one of the
//     advertisement's interfaces, else one with an address in a subnet that
//     contains the IP); and, for externalTrafficPolicy: Local, it runs a ready
//     endpoint of the Service.
//  3. Owner: the one candidate that announces the address: the first of the
//     advertisements' preferredNodes that is a candidate, else the candidate
//     with the highest rendezvous hash of (node, IP). Removing a candidate
//     moves only the addresses it owned; adding one takes from each other node
//     only the addresses it now hashes highest for.
//
// Elect once per address, not once per Service: Services sharing an address
// then land on one node by construction. If sharing Services disagree on the
// candidates (advertisements selecting them differently, endpoints on
// different nodes under Local), elect over the intersection of their
// candidate sets.
//
// # The hash
//
// The weight of node n for address ip is the first 8 bytes, big-endian, of
// SHA-256(ip as 16 bytes || n). IPv4-mapped IPv6 addresses count as IPv4 and
// zones are ignored. SHA-256 is fixed by FIPS 180-4, so every process on every
// architecture computes the same weights, and it mixes well enough that the
// addresses of a pool spread evenly over the nodes (FNV-1a, cheaper, mixes too
// little for rendezvous hashing without an extra finaliser). Equal weights, which would need a 64-bit
// collision, go to the smaller name.
//
// # Partitions: the rule of Live
//
// Liveness has two sources. The Kubernetes view (each speaker renews a Lease)
// is authoritative but slow: a dead node is noticed only when its Lease
// expires. Gossip (package speaker/membership, memberlist) notices a dead peer
// in well under a second, but each speaker only sees its own side of the
// network. A speaker must never announce an address that another speaker also
// believes it owns; two owners is the failure users fear most, more than a
// short outage. Live keeps one invariant: any two speakers that announce count
// each other as live. Then no address can have two owners: each would have to
// outweigh the other in the hash (or come before it in preferredNodes). It
// assumes memberlist's view is transitive, which its indirect probes make it in
// practice: when a link between two speakers fails, each still sees the other
// alive through a third.
//
// Gossip mode (memberlist runs here and this speaker is not in WithoutGossip):
//
//	live = K8sLive ∩ (GossipAlive ∪ {Self} ∪ WithoutGossip)
//
// and the speaker checks that it is on the majority side. The quorum is taken
// over the gossiping speakers, Q = K8sLive \ WithoutGossip; the speaker sees
// A = |Q ∩ (GossipAlive ∪ {Self})| of them.
//
//   - 2A > |Q|: majority, announce.
//   - 2A < |Q|: this speaker is cut off from most of its peers. They will
//     declare it dead and take its addresses over, so it announces nothing
//     (announce=false) to never be a second owner.
//   - 2A = |Q|: an even split. The half that contains the smallest name of Q
//     announces; the other half does not. Both halves compute the same answer.
//
// The cases:
//
//   - Node death (power, kernel panic, SIGKILL of the speaker): the others see
//     the peer dead in gossip within about half a second, drop it from live
//     and, being the majority, take its addresses over (they re-run Owner with
//     one candidate fewer, so only its addresses move).
//   - Isolated speaker still on the LAN (its gossip is cut, by a firewall, a
//     one-way link, a broken switch port that still passes client traffic):
//     it sees itself alone, a strict minority, and stops announcing. Package
//     membership reports it alone after 300 ms without a packet from any peer
//     (longer in clusters of 10 nodes and more), sooner than its peers can
//     declare it dead (500 ms), so the address never has two owners; for a
//     moment it has none.
//   - Even split (two nodes, or 2+2): only the half holding the smallest name
//     announces. In a two-node cluster, losing the node with the larger name
//     fails over fast; losing the smaller one fails over when its Lease
//     expires, because from one side the death of the peer and its own
//     isolation look the same.
//   - Gossip down on this speaker (memberlist failed to start, no key): the
//     others cannot see it in gossip and will drop it from their live sets.
//     It announces nothing and publishes in its Lease that it runs without
//     gossip. Once the API shows it in WithoutGossip, everyone keeps it on the
//     Kubernetes view and it uses the Kubernetes view itself (live = K8sLive,
//     announce): slower detection but safe, because its live set is a
//     superset of every other speaker's and it is in all of them, so any
//     address it owns by its view it also owns by theirs. (The converse does
//     not hold: an address the others give it but its view gives a dead node
//     stays dark until that node's Lease expires.) Its published flag,
//     not its memberlist, decides its mode, so the switch back happens when
//     the API shows the flag cleared. When gossip is down everywhere (every
//     speaker in WithoutGossip), all speakers use the Kubernetes view: one
//     consistent view, failover at Lease expiry.
//   - Gossip blocked everywhere while memberlist runs (a firewall rule added
//     on every node): each speaker is alone, in a minority, and nobody
//     announces. Safe but an outage: the speaker reports it (its readiness and
//     an event), and the cure is to open the gossip port.
//
// A speaker whose Lease is not fresh in the API is in no one's live set,
// itself included, so a speaker that cannot renew its Lease owns nothing;
// except when most speakers cannot (the API server or etcd is down): each
// says so in its gossip, and the speakers then count the Leases as they were
// when it went down, gossip alone telling who died (speaker/runner's
// outage). The K8sLive a caller passes is that view.
package election
