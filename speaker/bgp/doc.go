// Package bgp is the speaker's BGP output: it runs an embedded GoBGP v4
// server (github.com/osrg/gobgp/v4) that opens one session per BGPPeer
// matching this node and announces the routes the plan gives it.
//
// It has two parts:
//
//   - a pure translation (Sessions, ResetReasons): from this node's view of
//     the accepted configuration to the desired sessions, and which changes
//     of a session need a reset;
//   - Output, the thin shell around GoBGP with a declarative API:
//     SetSessions(desired), SetRoutes(routes), State() and Close().
//
// What Output guarantees, whatever the peers send:
//
//   - it imports nothing: a global import policy rejects every route that
//     does not originate here, so a router's routes are never installed in
//     the node (GoBGP runs without zebra and never touches the kernel's
//     routing table) nor re-advertised;
//   - it listens on no TCP port (GoBGP's ListenPort -1): sessions are only
//     dialled out. BFD's UDP port 3784 (RFC 5881) is open only while some
//     session runs BFD;
//   - a route goes only to the peers it names: per-peer prefix sets in one
//     global export policy, whose default is reject.
package bgp
