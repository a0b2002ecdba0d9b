// Package bgp is the speaker's BGP output: it runs an embedded GoBGP v4
// server (github.com/osrg/gobgp/v4) that opens one session per BGPPeer
// matching this node and announces the routes the plan gives it.
//
// It has two parts:
//
//   - a pure translation (Sessions, ResetReasons, ParseCommunities): from
//     this node's view of the accepted configuration to the desired
//     sessions, and which changes of a session need a reset;
//   - Output, the thin shell around GoBGP with a declarative API:
//     SetSessions(desired), SetRoutes(routes), State(), and Close() (withdraw
//     everything) or Detach() (stop, leaving graceful-restart peers our
//     routes while the next speaker starts).
//
// What Output guarantees, whatever the peers send:
//
//   - it imports nothing: a global import policy accepts only paths this
//     node originates, so a router's routes stay rejected in GoBGP's
//     Adj-RIB-In, are never re-advertised, and never reach the kernel
//     (GoBGP runs without zebra and never touches the routing table);
//   - it listens on no TCP port (GoBGP's ListenPort -1): sessions are only
//     dialled out. BFD's UDP port 3784 (RFC 5881) is open only while some
//     session runs BFD;
//   - a route goes only to the peers it names, with each peer's next hop for
//     its family: per-peer neighbour and prefix sets in one global export
//     policy, whose default is reject (GoBGP has per-peer policies only for
//     route-server clients).
//
// BFD runs on a session from the moment BGP is Established (see
// Output.armBFD for why not earlier). GoBGP v4's BFD is single-hop
// asynchronous mode only: no echo, no passive mode, no multi-hop.
//
// The package's tests run the Output against FRR and BIRD in network
// namespaces, each Output in a process of its own inside the speaker's
// namespace (see helper_test.go for why a locked thread is not enough).
package bgp
