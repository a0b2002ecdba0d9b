package ipam_test

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/heraldlb/herald/controller/ipam"
)

func TestLowestFreeAddressOfTheFirstPoolIsAssigned(t *testing.T) {
	a := newAllocator(t, pool("default", "203.0.113.10-203.0.113.12", "203.0.113.1"))
	wantAssigned(t, assign(t, a, v4("ns/a")), "default", "203.0.113.1")
	wantAssigned(t, assign(t, a, v4("ns/b")), "default", "203.0.113.10")
	wantAssigned(t, assign(t, a, v4("ns/c")), "default", "203.0.113.11")
	a.Release(key("ns/b"))
	wantAssigned(t, assign(t, a, v4("ns/d")), "default", "203.0.113.10")
}

func TestPoolsAreTriedInPriorityOrderThenByName(t *testing.T) {
	a := newAllocator(t,
		pool("beta", "203.0.113.1"),
		withPriority(pool("zeta", "203.0.113.2"), 1),
		withPriority(pool("alpha", "203.0.113.3"), 2),
		pool("aardvark", "203.0.113.4"),
		withPriority(pool("gamma", "203.0.113.5"), 1),
		withPriority(pool("first", "203.0.113.6"), -3),
		withPriority(pool("zero", "203.0.113.7"), 0),
	)
	// A pool with a priority, even 0, beats every pool without one.
	for i, want := range []string{"first", "zero", "gamma", "zeta", "alpha", "aardvark", "beta"} {
		got := assign(t, a, v4(fmt.Sprintf("ns/s%d", i)))
		if got.Pool != want {
			t.Fatalf("service %d went to pool %s, want %s", i, got.Pool, want)
		}
	}
}

func TestAssignedAddressStaysWhenAnotherPoolGainsPriority(t *testing.T) {
	a := newAllocator(t, withPriority(pool("old", "203.0.113.0/28"), 1), withPriority(pool("new", "198.51.100.0/28"), 2))
	wantAssigned(t, assign(t, a, v4("ns/web")), "old", "203.0.113.0")
	setPools(t, a, withPriority(pool("old", "203.0.113.0/28"), 2), withPriority(pool("new", "198.51.100.0/28"), 1))
	wantAssigned(t, assign(t, a, v4("ns/web")), "old", "203.0.113.0")
	wantAssigned(t, assign(t, a, v4("ns/other")), "new", "198.51.100.0")
}

func TestAssignIsIdempotent(t *testing.T) {
	a := newAllocator(t, pool("dual", "203.0.113.0/24", "2001:db8::/64"))
	for _, r := range []ipam.Request{
		v4("ns/a"),
		dual("ns/b", ipam.RequireDualStack, ipam.IPv6, ipam.IPv4),
		asking(v4("ns/c"), "203.0.113.77"),
		sharing(v4("ns/d"), "k", tcp(80)),
		sharing(v4("ns/e"), "k", tcp(81)),
	} {
		first := assign(t, a, r)
		for range 3 {
			again := assign(t, a, r)
			if again.Pool != first.Pool || !slices.Equal(again.IPs, first.IPs) {
				t.Fatalf("%s: %v then %v", r.Key, first, again)
			}
		}
	}
}

func TestAutoAssignFalsePoolServesOnlyServicesThatAskForIt(t *testing.T) {
	a := newAllocator(t, withPriority(manual(pool("reserved", "203.0.113.0/28")), 1), pool("general", "198.51.100.0/28"))
	wantAssigned(t, assign(t, a, v4("ns/plain")), "general", "198.51.100.0")

	byName := v4("ns/by-name")
	byName.Pool = "reserved"
	wantAssigned(t, assign(t, a, byName), "reserved", "203.0.113.0")
	wantAssigned(t, assign(t, a, asking(v4("ns/by-ip"), "203.0.113.9")), "reserved", "203.0.113.9")

	only := newAllocator(t, manual(pool("reserved", "203.0.113.0/28")))
	_, err := only.Assign(v4("ns/plain"))
	wantError(t, err, key("ns/plain"), ipam.ReasonNoMatchingPool, "no pool serving this service has autoAssign; ask for a pool by name or for a specific address")
}

func TestAvoidBuggyIPsSkipsAddressesEndingInZeroAnd255(t *testing.T) {
	buggy := pool("edge", "10.0.0.254-10.0.1.2", "2001:db8::fe-2001:db8::100")
	buggy.AvoidBuggyIPs = true
	a := newAllocator(t, buggy)
	if u, _ := a.Usage("edge", ipam.IPv4); u.Available != 3 {
		t.Fatalf("IPv4 available %d, want 3 (10.0.0.254, 10.0.1.1, 10.0.1.2)", u.Available)
	}
	for i, want := range []string{"10.0.0.254", "10.0.1.1", "10.0.1.2"} {
		wantAssigned(t, assign(t, a, v4(fmt.Sprintf("ns/v4-%d", i))), "edge", want)
	}
	_, err := a.Assign(v4("ns/more"))
	wantError(t, err, key("ns/more"), ipam.ReasonPoolExhausted, `"edge" (IPv4 3 assigned, 0 free)`)

	_, err = a.Assign(asking(v4("ns/asks"), "10.0.1.0"))
	wantError(t, err, key("ns/asks"), ipam.ReasonOutsidePools, `requested address 10.0.1.0 is excluded from pool "edge" by avoidBuggyIPs`)

	// IPv6 has no broadcast address; ::ff and ::100 are ordinary.
	for i, want := range []string{"2001:db8::fe", "2001:db8::ff", "2001:db8::100"} {
		wantAssigned(t, assign(t, a, v6(fmt.Sprintf("ns/v6-%d", i))), "edge", want)
	}

	plain := newAllocator(t, pool("edge", "10.0.0.254-10.0.1.0"))
	for i, want := range []string{"10.0.0.254", "10.0.0.255", "10.0.1.0"} {
		wantAssigned(t, assign(t, plain, v4(fmt.Sprintf("ns/v4-%d", i))), "edge", want)
	}
}

func TestTurningOnAvoidBuggyIPsReleasesDotZeroAndDot255(t *testing.T) {
	a := newAllocator(t, pool("edge", "10.0.0.254-10.0.1.1"))
	for i := range 4 {
		assign(t, a, v4(fmt.Sprintf("ns/s%d", i)))
	}
	edge := pool("edge", "10.0.0.254-10.0.1.1")
	edge.AvoidBuggyIPs = true
	if got := setPools(t, a, edge); !slices.Equal(got, keys("ns/s1", "ns/s2")) {
		t.Fatalf("evicted %v, want the holders of 10.0.0.255 and 10.0.1.0", got)
	}
	wantHolds(t, a, "ns/s0", "edge", "10.0.0.254")
	wantHolds(t, a, "ns/s3", "edge", "10.0.1.1")
}

func TestRequestedAddressMustBeFreeAndInsideAnEligiblePool(t *testing.T) {
	pools := []ipam.Pool{
		pool("lan", "203.0.113.0/24", "2001:db8::/64"),
		pool("dmz", "198.51.100.0/24"),
		pool("v6", "2001:db8:1::/64"),
	}
	for _, tc := range []struct {
		name   string
		req    ipam.Request
		pool   string
		ips    []string
		reason ipam.Reason
		msg    string
	}{
		{name: "free address in a pool", req: asking(v4("ns/x"), "203.0.113.50"), pool: "lan", ips: []string{"203.0.113.50"}},
		{name: "dual-stack pair returned in family order", req: asking(dual("ns/x", ipam.RequireDualStack, ipam.IPv4, ipam.IPv6), "2001:db8::5", "203.0.113.5"),
			pool: "lan", ips: []string{"203.0.113.5", "2001:db8::5"}},
		{name: "outside every pool", req: asking(v4("ns/x"), "192.0.2.1"),
			reason: ipam.ReasonOutsidePools, msg: "requested address 192.0.2.1 is outside every pool"},
		{name: "owned by another service", req: asking(v4("ns/x"), "203.0.113.1"),
			reason: ipam.ReasonOwnedByOther, msg: "address 203.0.113.1 is owned by ns/owner"},
		{name: "in a pool the service may not use", req: func() ipam.Request {
			r := asking(v4("ns/x"), "198.51.100.7")
			r.Eligible = only("lan")
			return r
		}(), reason: ipam.ReasonNoMatchingPool, msg: `requested address 198.51.100.7 is in pool "dmz", which does not serve this service`},
		{name: "in another pool than the one named", req: func() ipam.Request {
			r := asking(v4("ns/x"), "198.51.100.7")
			r.Pool = "lan"
			return r
		}(), reason: ipam.ReasonNoMatchingPool, msg: `requested address 198.51.100.7 is in pool "dmz", not in the requested pool "lan"`},
		{name: "addresses in two pools", req: asking(dual("ns/x", ipam.RequireDualStack, ipam.IPv4, ipam.IPv6), "203.0.113.5", "2001:db8:1::5"),
			reason: ipam.ReasonNoMatchingPool, msg: `are in different pools ("lan" and "v6")`},
		{name: "address of a family the service lacks", req: asking(v4("ns/x"), "2001:db8::5"),
			reason: ipam.ReasonInvalidRequest, msg: "requested address 2001:db8::5 is IPv6, but the service has IPv4 only"},
		{name: "two addresses of one family", req: asking(dual("ns/x", ipam.PreferDualStack, ipam.IPv4, ipam.IPv6), "203.0.113.5", "203.0.113.6"),
			reason: ipam.ReasonInvalidRequest, msg: "are both IPv4; ask for at most one per family"},
		{name: "one address for RequireDualStack", req: asking(dual("ns/x", ipam.RequireDualStack, ipam.IPv4, ipam.IPv6), "203.0.113.5"),
			reason: ipam.ReasonInvalidRequest, msg: "RequireDualStack needs an IPv4 and an IPv6 address, but only 203.0.113.5 is requested"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAllocator(t, pools...)
			assign(t, a, asking(v4("ns/owner"), "203.0.113.1"))
			got, err := a.Assign(tc.req)
			if tc.reason != "" {
				wantError(t, err, tc.req.Key, tc.reason, tc.msg)
				wantNothing(t, a, tc.req.Key)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			wantAssigned(t, got, tc.pool, tc.ips...)
		})
	}
}

func TestPoolNamedByTheServiceIsUsedEvenWhenAnotherRanksFirst(t *testing.T) {
	a := newAllocator(t, withPriority(pool("fast", "203.0.113.0/28"), 1), pool("slow", "198.51.100.0/28"))
	r := v4("ns/web")
	r.Pool = "slow"
	wantAssigned(t, assign(t, a, r), "slow", "198.51.100.0")

	r = v4("ns/typo")
	r.Pool = "slwo"
	_, err := a.Assign(r)
	wantError(t, err, key("ns/typo"), ipam.ReasonNoMatchingPool, `address pool "slwo" does not exist`)

	r = v4("ns/elsewhere")
	r.Pool, r.Eligible = "slow", only("fast")
	_, err = a.Assign(r)
	wantError(t, err, key("ns/elsewhere"), ipam.ReasonNoMatchingPool, `address pool "slow" does not serve this service`)
}

func TestEligibilityDecidesWhichPoolsAServiceMayUse(t *testing.T) {
	a := newAllocator(t, withPriority(pool("team-a", "203.0.113.0/28"), 1), pool("shared", "198.51.100.0/28"))
	r := v4("ns/web")
	r.Eligible = only("shared")
	wantAssigned(t, assign(t, a, r), "shared", "198.51.100.0")

	// A Service that no longer matches its pool's serviceAllocation moves.
	r.Eligible = only("team-a")
	wantAssigned(t, assign(t, a, r), "team-a", "203.0.113.0")
	if got := a.Owners(ip("198.51.100.0")); len(got) != 0 {
		t.Fatalf("old address still owned by %v", got)
	}

	r.Eligible = only()
	_, err := a.Assign(r)
	wantError(t, err, key("ns/web"), ipam.ReasonNoMatchingPool, "no address pool serves this service")
}

func TestSharedIPRequiresSameKeyAndNoPortClash(t *testing.T) {
	local := func(r ipam.Request, selector string) ipam.Request {
		r.Sharing.LocalTrafficPolicy, r.Sharing.Selector = true, selector
		return r
	}
	const addr = "203.0.113.1"
	for _, tc := range []struct {
		name          string
		owner, second ipam.Request
		reason        ipam.Reason
		msg           string
	}{
		{name: "same key, other ports",
			owner: sharing(v4("ns/dns-tcp"), "dns", tcp(53)), second: sharing(v4("ns/dns-udp"), "dns", udp(53))},
		{name: "same key, Local with the same selector",
			owner:  local(sharing(v4("ns/dns-tcp"), "dns", tcp(53)), "app=dns"),
			second: local(sharing(v4("ns/dns-udp"), "dns", udp(53)), "app=dns")},
		{name: "same key, same port",
			owner: sharing(v4("ns/dns-tcp"), "dns", tcp(53), tcp(853)), second: sharing(v4("ns/dns-udp"), "dns", udp(53), tcp(853)),
			reason: ipam.ReasonSharingConflict, msg: "address 203.0.113.1 is shared with ns/dns-tcp, which also uses TCP port 853"},
		{name: "same key, Cluster and Local",
			owner: sharing(v4("ns/dns-tcp"), "dns", tcp(53)), second: local(sharing(v4("ns/dns-udp"), "dns", udp(53)), "app=dns"),
			reason: ipam.ReasonSharingConflict, msg: "whose externalTrafficPolicy is Cluster, not Local"},
		{name: "same key, Local with other pods",
			owner:  local(sharing(v4("ns/dns-tcp"), "dns", tcp(53)), "app=dns"),
			second: local(sharing(v4("ns/dns-udp"), "dns", udp(53)), "app=other"),
			reason: ipam.ReasonSharingConflict, msg: "which selects other pods"},
		{name: "different keys",
			owner: sharing(v4("ns/dns-tcp"), "dns", tcp(53)), second: sharing(v4("ns/dns-udp"), "ntp", udp(123)),
			reason: ipam.ReasonOwnedByOther, msg: `address 203.0.113.1 is owned by ns/dns-tcp, whose sharing key is "dns", not "ntp"`},
		{name: "no key on the second",
			owner: sharing(v4("ns/dns-tcp"), "dns", tcp(53)), second: v4("ns/dns-udp"),
			reason: ipam.ReasonOwnedByOther, msg: "owned by ns/dns-tcp; services share an address only when both set the same sharing key"},
		{name: "no key on the owner",
			owner: v4("ns/dns-tcp"), second: sharing(v4("ns/dns-udp"), "dns", udp(53)),
			reason: ipam.ReasonOwnedByOther, msg: "owned by ns/dns-tcp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAllocator(t, pool("lan", "203.0.113.0/24"))
			assign(t, a, asking(tc.owner, addr))
			_, err := a.Assign(asking(tc.second, addr))
			if tc.reason != "" {
				wantError(t, err, tc.second.Key, tc.reason, tc.msg)
				if got := a.Owners(ip(addr)); !slices.Equal(got, []ipam.Key{tc.owner.Key}) {
					t.Fatalf("owners %v", got)
				}
				// Asking for no address in particular gives another one.
				if got := assign(t, a, tc.second); got.IPs[0] == ip(addr) {
					t.Fatalf("auto assignment joined an address it may not share")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := a.Owners(ip(addr)); !slices.Equal(got, []ipam.Key{tc.owner.Key, tc.second.Key}) {
				t.Fatalf("owners %v, want both services", got)
			}
			if u, _ := a.Usage("lan", ipam.IPv4); u.Assigned != 1 {
				t.Fatalf("a shared address counts %d times", u.Assigned)
			}
		})
	}
}

func TestServiceWithSharingKeyJoinsItsKeysAddress(t *testing.T) {
	a := newAllocator(t, withPriority(pool("small", "203.0.113.1"), 1), pool("big", "198.51.100.0/24"))
	wantAssigned(t, assign(t, a, v4("ns/filler")), "small", "203.0.113.1")
	wantAssigned(t, assign(t, a, sharing(v4("ns/dns-tcp"), "dns", tcp(53))), "big", "198.51.100.0")
	wantAssigned(t, assign(t, a, v4("ns/other")), "big", "198.51.100.1")
	a.Release(key("ns/filler"))

	// Free addresses in a better pool and lower in the same pool do not beat
	// joining the key's address.
	wantAssigned(t, assign(t, a, sharing(v4("ns/dns-udp"), "dns", udp(53))), "big", "198.51.100.0")
	// A clash gives a fresh address instead.
	wantAssigned(t, assign(t, a, sharing(v4("ns/dns-tcp2"), "dns", tcp(53))), "small", "203.0.113.1")

	// A sharing Service whose ports change to clash moves; its partner stays.
	wantAssigned(t, assign(t, a, sharing(v4("ns/dns-udp"), "dns", udp(53), tcp(53))), "big", "198.51.100.2")
	wantHolds(t, a, "ns/dns-tcp", "big", "198.51.100.0")
}

func TestDualStackFollowsTheFamilyPolicy(t *testing.T) {
	dualPool := withPriority(pool("dual", "203.0.113.0/24", "2001:db8::/64"), 2)
	v4Pool := withPriority(pool("v4", "198.51.100.0/24"), 1)
	v6Pool := withPriority(pool("v6", "2001:db8:1::/64"), 1)
	full := withPriority(pool("full", "203.0.113.0/24", "2001:db8:2::1"), 1) // its one IPv6 address is taken below
	for _, tc := range []struct {
		name   string
		pools  []ipam.Pool
		req    ipam.Request
		pool   string
		ips    []string
		reason ipam.Reason
		msg    string
	}{
		{name: "RequireDualStack from one pool", pools: []ipam.Pool{v4Pool, v6Pool, dualPool},
			req: dual("ns/x", ipam.RequireDualStack, ipam.IPv4, ipam.IPv6), pool: "dual", ips: []string{"203.0.113.0", "2001:db8::"}},
		{name: "RequireDualStack keeps the primary family first", pools: []ipam.Pool{dualPool},
			req: dual("ns/x", ipam.RequireDualStack, ipam.IPv6, ipam.IPv4), pool: "dual", ips: []string{"2001:db8::", "203.0.113.0"}},
		{name: "RequireDualStack never splits across pools", pools: []ipam.Pool{v4Pool, v6Pool},
			req:    dual("ns/x", ipam.RequireDualStack, ipam.IPv4, ipam.IPv6),
			reason: ipam.ReasonFamilyUnavailable, msg: "no pool serving this service has both IPv4 and IPv6 addresses, which RequireDualStack needs"},
		{name: "RequireDualStack with a full family", pools: []ipam.Pool{full},
			req:    dual("ns/x", ipam.RequireDualStack, ipam.IPv4, ipam.IPv6),
			reason: ipam.ReasonPoolExhausted, msg: `"full" (IPv4 0 assigned, 256 free; IPv6 1 assigned, 0 free)`},
		{name: "PreferDualStack prefers a pool with both families over priority", pools: []ipam.Pool{v4Pool, dualPool},
			req: dual("ns/x", ipam.PreferDualStack, ipam.IPv4, ipam.IPv6), pool: "dual", ips: []string{"203.0.113.0", "2001:db8::"}},
		{name: "PreferDualStack settles for the primary family", pools: []ipam.Pool{v4Pool, v6Pool},
			req: dual("ns/x", ipam.PreferDualStack, ipam.IPv6, ipam.IPv4), pool: "v6", ips: []string{"2001:db8:1::"}},
		{name: "PreferDualStack settles for the secondary family", pools: []ipam.Pool{v4Pool},
			req: dual("ns/x", ipam.PreferDualStack, ipam.IPv6, ipam.IPv4), pool: "v4", ips: []string{"198.51.100.0"}},
		{name: "PreferDualStack when a family is full", pools: []ipam.Pool{full},
			req: dual("ns/x", ipam.PreferDualStack, ipam.IPv4, ipam.IPv6), pool: "full", ips: []string{"203.0.113.0"}},
		{name: "PreferDualStack with neither family", pools: []ipam.Pool{pool("empty")},
			req:    dual("ns/x", ipam.PreferDualStack, ipam.IPv4, ipam.IPv6),
			reason: ipam.ReasonFamilyUnavailable, msg: "no pool serving this service has IPv4 or IPv6 addresses"},
		{name: "RequireDualStack in a named single-family pool", pools: []ipam.Pool{v4Pool, dualPool},
			req: func() ipam.Request {
				r := dual("ns/x", ipam.RequireDualStack, ipam.IPv4, ipam.IPv6)
				r.Pool = "v4"
				return r
			}(),
			reason: ipam.ReasonFamilyUnavailable, msg: `pool "v4" does not have both IPv4 and IPv6 addresses, which RequireDualStack needs`},
		{name: "SingleStack takes the first family only", pools: []ipam.Pool{dualPool},
			req: dual("ns/x", ipam.SingleStack, ipam.IPv6, ipam.IPv4), pool: "dual", ips: []string{"2001:db8::"}},
		{name: "SingleStack IPv6 without IPv6 pools", pools: []ipam.Pool{v4Pool},
			req:    v6("ns/x"),
			reason: ipam.ReasonFamilyUnavailable, msg: "no pool serving this service has IPv6 addresses"},
		{name: "SingleStack IPv6 in a named IPv4 pool", pools: []ipam.Pool{v4Pool},
			req:    func() ipam.Request { r := v6("ns/x"); r.Pool = "v4"; return r }(),
			reason: ipam.ReasonFamilyUnavailable, msg: `pool "v4" has no IPv6 addresses`},
		{name: "RequireDualStack with one family listed", pools: []ipam.Pool{dualPool},
			req:    dual("ns/x", ipam.RequireDualStack, ipam.IPv4),
			reason: ipam.ReasonInvalidRequest, msg: "RequireDualStack needs IP families IPv4 and IPv6, not [IPv4]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAllocator(t, tc.pools...)
			if slices.ContainsFunc(tc.pools, func(p ipam.Pool) bool { return p.Name == "full" }) {
				assign(t, a, v6("ns/takes-the-ipv6"))
			}
			got, err := a.Assign(tc.req)
			if tc.reason != "" {
				wantError(t, err, tc.req.Key, tc.reason, tc.msg)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			wantAssigned(t, got, tc.pool, tc.ips...)
		})
	}
}

func TestPreferDualStackGainsTheSecondFamilyWhenItsPoolGrows(t *testing.T) {
	a := newAllocator(t, pool("lan", "203.0.113.0/24"), pool("other", "2001:db8:1::/64"))
	r := dual("ns/web", ipam.PreferDualStack, ipam.IPv4, ipam.IPv6)
	wantAssigned(t, assign(t, a, r), "lan", "203.0.113.0")
	setPools(t, a, pool("lan", "203.0.113.0/24", "2001:db8::/64"), pool("other", "2001:db8:1::/64"))
	wantAssigned(t, assign(t, a, r), "lan", "203.0.113.0", "2001:db8::")

	// Going single-stack keeps the primary address and frees the other.
	r.FamilyPolicy = ipam.SingleStack
	wantAssigned(t, assign(t, a, r), "lan", "203.0.113.0")
	if got := a.Owners(ip("2001:db8::")); len(got) != 0 {
		t.Fatalf("IPv6 address still owned by %v", got)
	}
}

func TestRequireDualStackMovesWhenItsPoolCannotAddTheSecondFamily(t *testing.T) {
	a := newAllocator(t, withPriority(pool("v4", "198.51.100.0/24"), 1), pool("dual", "203.0.113.0/24", "2001:db8::/64"))
	r := v4("ns/web")
	wantAssigned(t, assign(t, a, r), "v4", "198.51.100.0")
	r.Families, r.FamilyPolicy = []ipam.Family{ipam.IPv4, ipam.IPv6}, ipam.RequireDualStack
	wantAssigned(t, assign(t, a, r), "dual", "203.0.113.0", "2001:db8::")
}

func TestExhaustedPoolAssignsAgainAfterARelease(t *testing.T) {
	a := newAllocator(t, pool("tiny", "203.0.113.1-203.0.113.2"), manual(pool("spare", "198.51.100.0/24")))
	assign(t, a, v4("ns/a"))
	assign(t, a, v4("ns/b"))
	_, err := a.Assign(v4("ns/c"))
	wantError(t, err, key("ns/c"), ipam.ReasonPoolExhausted, `no pool serving this service has a free IPv4 address: "tiny" (IPv4 2 assigned, 0 free)`)
	wantNothing(t, a, key("ns/c"))
	named := v4("ns/c")
	named.Pool = "tiny"
	_, err = a.Assign(named)
	wantError(t, err, key("ns/c"), ipam.ReasonPoolExhausted, `pool "tiny" has no free IPv4 address (IPv4 2 assigned, 0 free)`)
	a.Release(key("ns/a"))
	wantAssigned(t, assign(t, a, v4("ns/c")), "tiny", "203.0.113.1")
}

func TestFailedReassignmentKeepsThePreviousAddress(t *testing.T) {
	a := newAllocator(t, pool("lan", "203.0.113.0/24"))
	assign(t, a, v4("ns/owner"))
	wantAssigned(t, assign(t, a, v4("ns/web")), "lan", "203.0.113.1")
	_, err := a.Assign(asking(v4("ns/web"), "203.0.113.0"))
	wantError(t, err, key("ns/web"), ipam.ReasonOwnedByOther, "address 203.0.113.0 is owned by ns/owner")
	wantHolds(t, a, "ns/web", "lan", "203.0.113.1")

	// Dropping the request for a specific address keeps the address.
	wantAssigned(t, assign(t, a, asking(v4("ns/web"), "203.0.113.9")), "lan", "203.0.113.9")
	wantAssigned(t, assign(t, a, v4("ns/web")), "lan", "203.0.113.9")
}

func TestShrinkingOrDeletingAPoolEvictsOnlyServicesOutsideIt(t *testing.T) {
	a := newAllocator(t, withPriority(pool("a", "10.0.0.1-10.0.0.4", "2001:db8::1-2001:db8::2"), 1), manual(pool("b", "10.0.1.1-10.0.1.2")))
	for _, k := range []string{"ns/a1", "ns/a2", "ns/a3"} {
		assign(t, a, v4(k))
	}
	assign(t, a, dual("ns/a4", ipam.RequireDualStack, ipam.IPv4, ipam.IPv6)) // 10.0.0.4, 2001:db8::1
	assign(t, a, dual("ns/a5", ipam.PreferDualStack, ipam.IPv6, ipam.IPv4))  // 2001:db8::2 and nothing: IPv4 is full
	wantHolds(t, a, "ns/a5", "a", "2001:db8::2")
	b1 := v4("ns/b1")
	b1.Pool = "b"
	assign(t, a, b1)

	evicted := setPools(t, a, withPriority(pool("a", "10.0.0.1-10.0.0.2", "2001:db8::1"), 1), manual(pool("b", "10.0.1.1-10.0.1.2")))
	if !slices.Equal(evicted, keys("ns/a3", "ns/a4", "ns/a5")) {
		t.Fatalf("evicted %v", evicted)
	}
	wantHolds(t, a, "ns/a1", "a", "10.0.0.1")
	wantHolds(t, a, "ns/a2", "a", "10.0.0.2")
	wantNothing(t, a, key("ns/a3"))
	wantHolds(t, a, "ns/a4", "a", "2001:db8::1") // lost only its IPv4 address
	wantNothing(t, a, key("ns/a5"))
	wantHolds(t, a, "ns/b1", "b", "10.0.1.1")

	// Reconciling the evicted Services reassigns what is left.
	_, err := a.Assign(v4("ns/a3"))
	wantError(t, err, key("ns/a3"), ipam.ReasonPoolExhausted, `"a" (IPv4 2 assigned, 0 free)`)
	_, err = a.Assign(dual("ns/a4", ipam.RequireDualStack, ipam.IPv4, ipam.IPv6))
	wantError(t, err, key("ns/a4"), ipam.ReasonPoolExhausted, `no pool serving this service has free IPv4 and IPv6 addresses: "a" (IPv4 2 assigned, 0 free; IPv6 1 assigned, 0 free)`)
	wantHolds(t, a, "ns/a4", "a", "2001:db8::1")
	a.Release(key("ns/a1"))
	wantAssigned(t, assign(t, a, dual("ns/a4", ipam.RequireDualStack, ipam.IPv4, ipam.IPv6)), "a", "10.0.0.1", "2001:db8::1")

	if got := setPools(t, a, withPriority(pool("a", "10.0.0.1-10.0.0.2", "2001:db8::1"), 1)); !slices.Equal(got, keys("ns/b1")) {
		t.Fatalf("deleting pool b evicted %v", got)
	}
}

func TestRenamedPoolKeepsItsAddresses(t *testing.T) {
	a := newAllocator(t, pool("old", "203.0.113.0/24"))
	assign(t, a, v4("ns/web"))
	if got := setPools(t, a, pool("new", "203.0.113.0/24")); len(got) != 0 {
		t.Fatalf("evicted %v", got)
	}
	wantHolds(t, a, "ns/web", "new", "203.0.113.0")
}

func TestSetPoolsRefusesInvalidPoolsAndKeepsTheOldOnes(t *testing.T) {
	a := newAllocator(t, pool("a", "203.0.113.0/24"))
	assign(t, a, v4("ns/web"))
	_, err := a.SetPools([]ipam.Pool{pool("a", "203.0.113.0/24"), pool("b", "203.0.113.128/25")})
	if err == nil || err.Error() != `pools "a" and "b" overlap: 203.0.113.0/24 and 203.0.113.128/25` {
		t.Fatalf("error %v", err)
	}
	wantHolds(t, a, "ns/web", "a", "203.0.113.0")
	wantAssigned(t, assign(t, a, v4("ns/next")), "a", "203.0.113.1")
}

// TestRestartKeepsEveryAddressAfterPoolEdits plays a controller restart: a new
// Allocator, the pools as they are now, then Restore from Service status.
func TestRestartKeepsEveryAddressAfterPoolEdits(t *testing.T) {
	before := []ipam.Pool{withPriority(pool("a", "203.0.113.0/24"), 1), withPriority(pool("b", "198.51.100.0/24", "2001:db8::/64"), 2)}
	a := newAllocator(t, before...)
	reqs := []ipam.Request{
		v4("ns/web"),
		asking(v4("ns/pinned"), "198.51.100.77"),
		dual("ns/dual", ipam.RequireDualStack, ipam.IPv4, ipam.IPv6),
		sharing(v4("ns/dns-tcp"), "dns", tcp(53)),
		sharing(v4("ns/dns-udp"), "dns", udp(53)),
		v4("ns/doomed"),
	}
	status := map[ipam.Key]ipam.Assignment{}
	for _, r := range reqs {
		status[r.Key] = assign(t, a, r)
	}

	// While the controller was down: priorities swapped, autoAssign turned off
	// for a, and a shrank so that ns/doomed's address left it.
	doomed := status[key("ns/doomed")].IPs[0]
	after := []ipam.Pool{manual(withPriority(pool("a", "203.0.113.0/31"), 2)), withPriority(pool("b", "198.51.100.0/24", "2001:db8::/64"), 1)}
	if doomed != ip("203.0.113.2") {
		t.Fatalf("test setup: ns/doomed got %v", doomed)
	}
	b := newAllocator(t, after...)
	for _, r := range reqs {
		err := b.Restore(r.Key, status[r.Key].IPs, r.Sharing)
		if r.Key == key("ns/doomed") {
			wantError(t, err, key("ns/doomed"), ipam.ReasonOutsidePools, "address 203.0.113.2 is outside every pool")
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range reqs {
		if r.Key == key("ns/doomed") {
			wantNothing(t, b, r.Key)
			continue
		}
		got := assign(t, b, r)
		if !slices.Equal(got.IPs, status[r.Key].IPs) {
			t.Fatalf("%s had %v before the restart, %v after", r.Key, status[r.Key].IPs, got.IPs)
		}
	}
	wantAssigned(t, assign(t, b, v4("ns/doomed")), "b", "198.51.100.1")
}

func TestRestoreRefusesAnAddressTakenByAnotherService(t *testing.T) {
	a := newAllocator(t, pool("lan", "203.0.113.0/24", "2001:db8::/64"), pool("v6", "2001:db8:1::/64"))
	if err := a.Restore(key("ns/first"), addrs("203.0.113.5"), ipam.Sharing{}); err != nil {
		t.Fatal(err)
	}
	err := a.Restore(key("ns/second"), addrs("203.0.113.5", "2001:db8::5"), ipam.Sharing{})
	wantError(t, err, key("ns/second"), ipam.ReasonOwnedByOther, "address 203.0.113.5 is owned by ns/first; services share an address only when both set the same sharing key")
	wantHolds(t, a, "ns/second", "lan", "2001:db8::5")

	err = a.Restore(key("ns/split"), addrs("203.0.113.6", "2001:db8:1::6"), ipam.Sharing{})
	wantError(t, err, key("ns/split"), ipam.ReasonNoMatchingPool, `address 2001:db8:1::6 is in pool "v6", but 203.0.113.6 is in pool "lan"`)
	wantHolds(t, a, "ns/split", "lan", "203.0.113.6")
}

func TestUsageCountsEachFamilyAndSaturates(t *testing.T) {
	a := newAllocator(t, pool("lan", "203.0.113.0/24", "2001:db8::/64"), pool("huge", "2001:db8:1::/48"), pool("v4", "198.51.100.0/24"))
	assign(t, a, dual("ns/a", ipam.RequireDualStack, ipam.IPv4, ipam.IPv6))
	for _, tc := range []struct {
		pool string
		f    ipam.Family
		want ipam.Usage
	}{
		{"lan", ipam.IPv4, ipam.Usage{Assigned: 1, Available: 255}},
		{"lan", ipam.IPv6, ipam.Usage{Assigned: 1, Available: math.MaxUint64}}, // 2^64 - 1, exactly
		{"huge", ipam.IPv6, ipam.Usage{Assigned: 0, Available: math.MaxUint64}},
		{"v4", ipam.IPv6, ipam.Usage{}},
	} {
		got, ok := a.Usage(tc.pool, tc.f)
		if !ok || got != tc.want {
			t.Errorf("%s %v: %+v, want %+v", tc.pool, tc.f, got, tc.want)
		}
	}
	if _, ok := a.Usage("nope", ipam.IPv4); ok {
		t.Error("usage of an unknown pool")
	}
}

func TestRequestsWithoutPoolsOrKeySayWhy(t *testing.T) {
	var a ipam.Allocator
	_, err := a.Assign(v4("ns/web"))
	wantError(t, err, key("ns/web"), ipam.ReasonNoMatchingPool, "no address pool is configured")
	_, err = a.Assign(ipam.Request{})
	wantError(t, err, key(""), ipam.ReasonInvalidRequest, "request without a service key")
	_, err = a.Assign(ipam.Request{Key: key("ns/web"), Families: []ipam.Family{ipam.IPv4, ipam.IPv4}})
	wantError(t, err, key("ns/web"), ipam.ReasonInvalidRequest, "IP family IPv4 listed twice")
}

func TestRestoreReportsEveryAddressItDrops(t *testing.T) {
	a := newAllocator(t, pool("lan", "203.0.113.0/24"))
	err := a.Restore(key("ns/web"), addrs("192.0.2.1", "2001:db8::1"), ipam.Sharing{})
	if err == nil || !strings.Contains(err.Error(), "192.0.2.1 is outside every pool") || !strings.Contains(err.Error(), "2001:db8::1 is outside every pool") {
		t.Fatalf("error %v", err)
	}
	wantError(t, err, key("ns/web"), ipam.ReasonOutsidePools, "192.0.2.1")
	wantNothing(t, a, key("ns/web"))
}

func TestConcurrentCallsAreSafe(t *testing.T) {
	a := newAllocator(t, pool("lan", "10.0.0.0/16"))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				k := fmt.Sprintf("ns/g%d-%d", g, i)
				if _, err := a.Assign(v4(k)); err != nil {
					t.Error(err)
					return
				}
				if i%2 == 0 {
					a.Release(key(k))
				}
			}
		})
	}
	wg.Wait()
	if u, _ := a.Usage("lan", ipam.IPv4); u.Assigned != 8*100 {
		t.Fatalf("assigned %d, want 800", u.Assigned)
	}
}

// TestFailedAssignReleasesWhatTheServiceMayNoLongerHold: a failed Assign
// keeps the Service's address while its request still allows it to hold it
// (it asked for another address or pool, say), but not once it may no longer
// use the address's pool or share it with the address's other holders: a
// Service could otherwise keep, by also asking for something it cannot get,
// an address its pool's serviceAllocation refuses it, or share a port of
// another Service's address.
func TestFailedAssignReleasesWhatTheServiceMayNoLongerHold(t *testing.T) {
	const addr = "203.0.113.1"
	local := func(r ipam.Request) ipam.Request {
		r.Sharing.LocalTrafficPolicy, r.Sharing.Selector = true, "app=b"
		return r
	}
	for _, tc := range []struct {
		name string
		// then is b's new request; it holds addr with a (sharing key k,
		// TCP 80) or, when alone, by itself (TCP 81).
		then     ipam.Request
		alone    bool
		reason   ipam.Reason
		msg      string
		released string // why addr was released; empty when b keeps it
	}{
		{name: "no longer eligible for its pool", alone: true,
			then:   func() ipam.Request { r := sharing(v4("ns/b"), "k", tcp(81)); r.Eligible = only(); return r }(),
			reason: ipam.ReasonNoMatchingPool, msg: "no address pool serves this service",
			released: `pool "lan" does not serve this service (see the pool's serviceAllocation)`},
		{name: "no longer eligible, asking for its own address", alone: true,
			then: func() ipam.Request {
				r := asking(sharing(v4("ns/b"), "k", tcp(81)), addr)
				r.Eligible = only()
				return r
			}(),
			reason: ipam.ReasonNoMatchingPool, msg: `requested address 203.0.113.1 is in pool "lan", which does not serve this service`,
			released: `pool "lan" does not serve this service`},
		{name: "ports now clash with its partner's",
			then:   sharing(v4("ns/b"), "k", tcp(80)),
			reason: ipam.ReasonPoolExhausted, msg: `sharing key "k" does not help: address 203.0.113.1 is shared with ns/a, which also uses TCP port 80`,
			released: "address 203.0.113.1 is shared with ns/a, which also uses TCP port 80"},
		{name: "sharing key dropped",
			then:   sharing(v4("ns/b"), "", tcp(81)),
			reason: ipam.ReasonPoolExhausted, msg: `no pool serving this service has a free IPv4 address`,
			released: "address 203.0.113.1 is owned by ns/a; services share an address only when both set the same sharing key"},
		{name: "sharing key changed",
			then:   sharing(v4("ns/b"), "other", tcp(81)),
			reason: ipam.ReasonPoolExhausted, msg: `no pool serving this service has a free IPv4 address`,
			released: `address 203.0.113.1 is owned by ns/a, whose sharing key is "k", not "other"`},
		{name: "traffic policy changed to Local",
			then:   local(sharing(v4("ns/b"), "k", tcp(81))),
			reason: ipam.ReasonPoolExhausted, msg: `no pool serving this service has a free IPv4 address`,
			released: "whose externalTrafficPolicy is Cluster, not Local"},
		{name: "clashing and asking for its own address",
			then:   asking(sharing(v4("ns/b"), "k", tcp(80)), addr),
			reason: ipam.ReasonSharingConflict, msg: "address 203.0.113.1 is shared with ns/a, which also uses TCP port 80",
			released: "which also uses TCP port 80"},
		{name: "clashing and asking for something invalid",
			then:   asking(sharing(v4("ns/b"), "k", tcp(80)), "2001:db8::1"),
			reason: ipam.ReasonInvalidRequest, msg: "requested address 2001:db8::1 is IPv6, but the service has IPv4 only",
			released: "which also uses TCP port 80"},
		{name: "asking for a pool that does not exist keeps the address",
			then:   func() ipam.Request { r := sharing(v4("ns/b"), "k", tcp(81)); r.Pool = "nope"; return r }(),
			reason: ipam.ReasonNoMatchingPool, msg: `address pool "nope" does not exist`},
		{name: "asking for an address outside every pool keeps the address",
			then:   asking(sharing(v4("ns/b"), "k", tcp(81)), "192.0.2.1"),
			reason: ipam.ReasonOutsidePools, msg: "requested address 192.0.2.1 is outside every pool"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAllocator(t, pool("lan", addr))
			if !tc.alone {
				assign(t, a, sharing(v4("ns/a"), "k", tcp(80)))
			}
			assign(t, a, sharing(v4("ns/b"), "k", tcp(81)))
			_, err := a.Assign(tc.then)
			wantError(t, err, key("ns/b"), tc.reason, tc.msg)
			var ae *ipam.AllocationError
			errors.As(err, &ae)
			partner := []ipam.Key{}
			if !tc.alone {
				partner = keys("ns/a")
			}
			if tc.released == "" {
				if len(ae.Released) != 0 {
					t.Fatalf("released %v (%s), want the address kept", ae.Released, ae.ReleaseReason)
				}
				wantHolds(t, a, "ns/b", "lan", addr)
				return
			}
			if !slices.Equal(ae.Released, addrs(addr)) || !strings.Contains(ae.ReleaseReason, tc.released) {
				t.Fatalf("released %v (%q), want %s (%q)", ae.Released, ae.ReleaseReason, addr, tc.released)
			}
			wantNothing(t, a, key("ns/b"))
			if got := a.Owners(ip(addr)); !slices.Equal(got, partner) {
				t.Fatalf("owners %v, want %v", got, partner)
			}
		})
	}
}

// TestAddressKeptByAFailedAssignIsSharedUnderTheNewPorts: a Service whose
// Assign fails keeps its shared address under the ports it has now, so a
// third Service cannot join on one of them.
func TestAddressKeptByAFailedAssignIsSharedUnderTheNewPorts(t *testing.T) {
	const addr = "203.0.113.1"
	a := newAllocator(t, pool("lan", "203.0.113.0/24"))
	assign(t, a, asking(sharing(v4("ns/a"), "k", tcp(80)), addr))
	assign(t, a, asking(sharing(v4("ns/b"), "k", tcp(81)), addr))
	moved := sharing(v4("ns/b"), "k", tcp(82))
	moved.Pool = "nope"
	if _, err := a.Assign(moved); err == nil {
		t.Fatal("a request for a missing pool succeeded")
	}
	wantHolds(t, a, "ns/b", "lan", addr)
	_, err := a.Assign(asking(sharing(v4("ns/c"), "k", tcp(82)), addr))
	wantError(t, err, key("ns/c"), ipam.ReasonSharingConflict, "address 203.0.113.1 is shared with ns/b, which also uses TCP port 82")
	wantAssigned(t, assign(t, a, asking(sharing(v4("ns/c"), "k", tcp(81)), addr)), "lan", addr)
}

// TestRetainReleasesWhatAnInvalidRequestMayNoLongerHold: the controller
// calls Retain when it cannot build a Service's request at all; what the
// Service may still hold stays.
func TestRetainReleasesWhatAnInvalidRequestMayNoLongerHold(t *testing.T) {
	const addr = "203.0.113.1"
	a := newAllocator(t, pool("lan", addr))
	assign(t, a, sharing(v4("ns/a"), "k", tcp(80)))
	assign(t, a, sharing(v4("ns/b"), "k", tcp(81)))
	if got, why := a.Retain(sharing(v4("ns/b"), "k", tcp(81))); len(got) != 0 {
		t.Fatalf("released %v (%s) of an allowed holding", got, why)
	}
	wantHolds(t, a, "ns/b", "lan", addr)
	got, why := a.Retain(sharing(v4("ns/b"), "k", tcp(80)))
	if !slices.Equal(got, addrs(addr)) || !strings.Contains(why, "which also uses TCP port 80") {
		t.Fatalf("released %v (%q), want %s for the port clash", got, why, addr)
	}
	wantNothing(t, a, key("ns/b"))
	wantHolds(t, a, "ns/a", "lan", addr)
}

func TestHoldersListsTheServicesOfAPool(t *testing.T) {
	a := newAllocator(t, pool("lan", "203.0.113.0/24"), pool("dmz", "198.51.100.0/24"))
	assign(t, a, asking(v4("ns/b"), "203.0.113.1"))
	assign(t, a, asking(v4("ns/a"), "203.0.113.2"))
	assign(t, a, asking(v4("ns/c"), "198.51.100.1"))
	assign(t, a, asking(v4("other/d"), "198.51.100.2"))
	for _, tc := range []struct {
		pool, namespace string
		want            []ipam.Key
	}{
		{"lan", "", keys("ns/a", "ns/b")},
		{"dmz", "", keys("ns/c", "other/d")},
		{"", "ns", keys("ns/a", "ns/b", "ns/c")},
		{"dmz", "other", keys("other/d")},
		{"none", "", nil},
	} {
		if got := a.Holders(tc.pool, tc.namespace); !slices.Equal(got, tc.want) {
			t.Errorf("holders of pool %q in namespace %q: %v, want %v", tc.pool, tc.namespace, got, tc.want)
		}
	}
}
