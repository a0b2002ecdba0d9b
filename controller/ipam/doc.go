// Package ipam assigns LoadBalancer addresses to Services from address pools.
//
// It is the pure core of Herald's controller: it sees pools (address ranges with
// autoAssign, avoidBuggyIPs and a priority) and requests (a Service's key, the
// families it wants, the addresses or pool it asks for, the pools it is eligible
// for and how it may share an address) and answers with addresses or a typed
// error saying why not. It imports nothing from Kubernetes, keeps no clock and
// starts no goroutine, so every rule is covered by table and property tests.
//
// The rules, in the order Assign applies them:
//
//   - A Service that already holds addresses keeps them while they still satisfy
//     its request, whatever happened to pool priorities since; a missing family
//     of a dual-stack Service is filled from the same pool.
//   - A Service asking for specific addresses gets exactly those, or an error
//     naming the owner, the pool, or that they are outside every pool.
//   - Otherwise the pools it may use (the named pool, or every eligible pool with
//     autoAssign) are tried in priority order, then by name, and the lowest free
//     address of the first pool that can serve every wanted family is taken. All
//     addresses of one Service come from one pool.
//   - Services with the same sharing key join an address of that key before
//     taking a free one, and two Services hold one address only when they may
//     share it (see [Sharing]).
//   - A request that fails leaves the Service what it held only as far as the
//     request still allows it: an address of a pool it may no longer use, or
//     that it may no longer share with its other holders, is released (see
//     [Allocator.Retain]), so that asking for something impossible never
//     keeps an address the pools' rules refuse.
//
// Free addresses are found in an interval set per pool and family, so a /64 or a
// /48 pool costs as little memory as a /29, and picking an address does not
// scan the pool.
//
// At startup the controller calls [Allocator.SetPools], then [Allocator.Restore]
// for every Service that has addresses in its status, and only then Assign, so
// no address changes across restarts.
package ipam
