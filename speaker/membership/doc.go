// Package membership tells a speaker which other speakers are alive, fast: a
// dead speaker is noticed in about half a second on a small LAN (under 2 s at
// 1,000 nodes), so the layer 2 addresses of a dead node move on long before
// Kubernetes marks the node NotReady or its speaker's Lease expires (tens of
// seconds). It runs github.com/hashicorp/memberlist (SWIM with Lifeguard:
// direct UDP probes, indirect probes through other members, suspicion with
// refutation, gossip dissemination), tuned for one LAN, encrypted and
// authenticated with AES-GCM under a key the speaker reads from a Kubernetes
// Secret, and labelled "herald" so that it never merges with another
// memberlist cluster on the same port.
//
// Why memberlist and not a heartbeat of our own: a full-mesh heartbeat costs
// N² packets per interval and a central one is a single point of failure;
// SWIM costs a constant number of packets per node whatever N, indirect
// probes keep one lossy link from killing a healthy node, and suspicion with
// refutation keeps a slow node from being declared dead. It is the library
// MetalLB and Consul use, and it is well kept.
//
// The speaker calls Join with the addresses of the other speakers (from the
// API server) every few seconds; addresses of members already alive are
// skipped, so this costs nothing once the cluster has formed and heals it
// after a partition. It feeds Alive and Healthy to election.Live, and
// recomputes on every signal of Changes. On SIGTERM it calls Leave: the
// others drop it within a gossip interval or two (measured: 50-100 ms,
// the call included).
//
// # Isolation
//
// A speaker cut off from its peers but still on the LAN (a firewall dropping
// its gossip, a broken switch port) must stop announcing before its peers take
// its addresses over. memberlist alone would not do that in time: the cut-off
// speaker suspects its peers one probe at a time and, hearing no
// confirmation, waits out the longest suspicion timeout. So a watchdog reports
// the speaker alone (Alive is only itself; election.Live then sees a strict
// minority and announces nothing) once it has had peers but no packet from
// any of them (probe, ack, nack, indirect probe request, gossip) for 2 probe
// intervals less than its peers need to declare it dead: 300 ms up to 9
// speakers, while its peers need at least 500 ms. Measured over loopback: the
// cut-off speaker stood down after 302 ms, its peers dropped it after 551 ms;
// the longest silence seen by a healthy speaker while peers were dying was
// 200 ms. TCP fallback pings are off so that memberlist and the watchdog
// judge the same (UDP) path. The watchdog ignores silences during which this
// process itself did not run (GC pause, CPU starvation).
//
// # False suspicions
//
// On a lossy LAN a peer can suspect a live speaker. memberlist refutes at
// once, but if the refutation is lost the suspector declares the speaker
// dead when its suspicion times out and takes its addresses over, while
// the speaker hears of that only a gossip round or more later: two owners
// meanwhile. So when the speaker refutes a suspicion (Suspicion) its
// layer 2 answers nothing for memberlist's longest suspicion timeout plus
// two gossip rounds (1.3 s up to 10 speakers), without giving up what it
// owns (no Announcement changes; the clients' neighbour entries keep the
// traffic coming); after a refuted dead declaration it stands down until
// each peer has heard from it again (DeclaredDead).
// memberlist reports both only in its log; the log bridge reads them.
//
// # Hostile input
//
// Every packet and stream must authenticate under the key
// (GossipVerifyIncoming): memberlist would otherwise take an undecryptable
// packet for one in clear, and anyone on the LAN could announce a member or
// the death of one. What memberlist refuses (another key or none, another
// label, truncated or undecodable bytes) changes no view; the speaker counts
// it in herald_speaker_gossip_refused_packets_total by reason (decrypt,
// unencrypted, label, malformed) and logs it once per reason per 30 s with
// the senders, not once per packet: a key mismatch between speakers shows on
// both sides, and a flood cannot fill the log. A replayed packet
// authenticates, but its news is old: memberlist remembers a dead or departed
// speaker's incarnation for 30 s (GossipToTheDeadTime), past the 15 s of its
// Lease; a replay after that revives a member that election.Live ignores (its
// Lease has expired) and that the next probes kill again.
//
// # Tuning
//
//	ProbeInterval            100 ms  each member probes one other per interval
//	ProbeTimeout              50 ms  LAN RTT is well under 1 ms; 50 ms absorbs
//	                                 scheduling and GC hiccups before going indirect
//	IndirectChecks             3     peers asked to probe for us when direct fails
//	SuspicionMult              4     suspicion lasts 4 × max(1, log10 N) probe intervals
//	SuspicionMaxTimeoutMult    3     without confirmations from others, 3 × that
//	GossipInterval            50 ms  gossip rounds, only when there is news
//	GossipNodes                3     fan-out per round
//	RetransmitMult             4     each piece of news is forwarded 4 × ceil(log10(N+1)) times
//	PushPullInterval          15 s   full state sync with one member over TCP
//	                                 (memberlist stretches it beyond 32 members)
//	TCPTimeout                 1 s   joins and state syncs, on a LAN
//
// SuspicionMult 3 would detect about 100 ms sooner (measured median 450 ms on
// 3 nodes) but leave the isolation watchdog 50 ms of margin instead of 150 ms;
// the extra 100 ms also gives a briefly overloaded node room to refute.
//
// Measured over loopback (go test, -race, 6 runs each, time until every
// survivor drops a speaker whose memberlist was shut down without a word):
//
//	 3 speakers  median 550-650 ms (over several test runs), max 657 ms
//	 5 speakers  median 795 ms, max 802 ms
//	10 speakers  median 648 ms, max 799 ms
//	20 speakers  median 753 ms, max 845 ms
//
// # Cost
//
// Steady state, measured: every member sends 20 UDP packets a second (10
// probes, 10 acks to the probes it receives) of 80 bytes (encrypted payload;
// 108 bytes on the wire), about 2.2 kB/s out and as much in, whatever N.
// Gossip sends nothing when nothing changes.
//
//	                               100 nodes               1,000 nodes
//	probes per node                10/s out, ~10/s in      10/s out, ~10/s in
//	probe traffic per node         ~4.3 kB/s in+out        ~4.3 kB/s in+out
//	probe packets on the LAN       2,000/s (~0.2 MB/s)     20,000/s (~2.2 MB/s), unicast
//	state sync (push/pull), per    every 45 s, ~8 kB       every 90 s, ~80 kB
//	node, initiated + received     ~0.7 kB/s in+out        ~3.6 kB/s in+out
//	news (a death, a leave)        ≤ 12 sends per node,    ≤ 16 sends per node,
//	                               ~1,200 in the cluster   ~16,000 in the cluster,
//	                               mostly piggybacked on probes
//	a failed probe                 +9 packets (3 indirect requests, 3 pings, 3 nacks)
//	first probe of the dead node   ~0.1 s                  ~0.1 s
//	failed probe, then suspect     0.1 s                   0.1 s
//	suspicion timeout              0.8 s                   1.2 s
//	detected by the first peer     ≈ 1.0 s                 ≈ 1.4 s
//	dissemination, log4 N + tail   ~5 rounds ≈ 0.25 s      ~8 rounds ≈ 0.4 s
//	  gossip rounds of 50 ms
//	detected everywhere            ≈ 1.25 s                ≈ 1.8 s
//	isolation watchdog             0.7 s                   1.1 s
//
// The first probe of a dead node comes quickly at scale because about one
// member probes any given node per interval. The 2 confirmations suspicion
// wants (k = SuspicionMult − 2) come from the next probers within about 2
// intervals, so the timeout ends at its minimum. Detection grows with log N
// on purpose: the suspected node needs time to hear it is suspected and
// refute. On the LANs Herald serves (tens of nodes) it stays under a second;
// beyond that it stays under 2 s, within the failover goal.
package membership
