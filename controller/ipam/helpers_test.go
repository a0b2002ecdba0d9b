package ipam_test

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/heraldlb/herald/controller/ipam"
	"github.com/heraldlb/herald/internal/iprange"
)

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = ip(s)
	}
	return out
}

// pool builds an autoAssign pool, as the CRD's default.
func pool(name string, ranges ...string) ipam.Pool {
	p := ipam.Pool{Name: name, AutoAssign: true}
	for _, s := range ranges {
		r, err := iprange.Parse(s)
		if err != nil {
			panic(err)
		}
		p.Ranges = append(p.Ranges, r)
	}
	return p
}

func prio(n int32) *int32 { return &n }

func withPriority(p ipam.Pool, n int32) ipam.Pool { p.Priority = prio(n); return p }

func manual(p ipam.Pool) ipam.Pool { p.AutoAssign = false; return p }

func newAllocator(t testing.TB, pools ...ipam.Pool) *ipam.Allocator {
	t.Helper()
	a := &ipam.Allocator{}
	setPools(t, a, pools...)
	return a
}

func setPools(t testing.TB, a *ipam.Allocator, pools ...ipam.Pool) (evicted []ipam.Key) {
	t.Helper()
	evicted, err := a.SetPools(pools)
	if err != nil {
		t.Fatal(err)
	}
	return evicted
}

// key reads "namespace/name".
func key(s string) ipam.Key {
	ns, name, _ := strings.Cut(s, "/")
	return ipam.Key{Namespace: ns, Name: name}
}

func keys(ss ...string) []ipam.Key {
	out := make([]ipam.Key, len(ss))
	for i, s := range ss {
		out[i] = key(s)
	}
	return out
}

func v4(k string) ipam.Request { return ipam.Request{Key: key(k), Families: []ipam.Family{ipam.IPv4}} }
func v6(k string) ipam.Request { return ipam.Request{Key: key(k), Families: []ipam.Family{ipam.IPv6}} }

func dual(k string, policy ipam.FamilyPolicy, fams ...ipam.Family) ipam.Request {
	return ipam.Request{Key: key(k), Families: fams, FamilyPolicy: policy}
}

func asking(r ipam.Request, ss ...string) ipam.Request { r.IPs = addrs(ss...); return r }

func sharing(r ipam.Request, key string, ports ...ipam.Port) ipam.Request {
	r.Sharing.Key = key
	r.Sharing.Ports = ports
	return r
}

func tcp(n int32) ipam.Port { return ipam.Port{Protocol: "TCP", Port: n} }
func udp(n int32) ipam.Port { return ipam.Port{Protocol: "UDP", Port: n} }

func only(names ...string) func(string) bool {
	return func(p string) bool { return slices.Contains(names, p) }
}

func assign(t testing.TB, a *ipam.Allocator, r ipam.Request) ipam.Assignment {
	t.Helper()
	as, err := a.Assign(r)
	if err != nil {
		t.Fatal(err)
	}
	return as
}

// wantAssigned checks the pool and addresses a user would see in the status.
func wantAssigned(t testing.TB, got ipam.Assignment, pool string, ss ...string) {
	t.Helper()
	if got.Pool != pool || !slices.Equal(got.IPs, addrs(ss...)) {
		t.Fatalf("assigned %s %v, want %s %v", got.Pool, got.IPs, pool, ss)
	}
}

func wantHolds(t testing.TB, a *ipam.Allocator, k, pool string, ss ...string) {
	t.Helper()
	key := key(k)
	got, ok := a.Assigned(key)
	if !ok {
		t.Fatalf("%s holds nothing, want %s %v", key, pool, ss)
	}
	wantAssigned(t, got, pool, ss...)
}

func wantNothing(t testing.TB, a *ipam.Allocator, key ipam.Key) {
	t.Helper()
	if got, ok := a.Assigned(key); ok {
		t.Fatalf("%s holds %v", key, got)
	}
}

// wantError checks the reason the controller would report and that the
// message names the Service and says what failed.
func wantError(t testing.TB, err error, key ipam.Key, reason ipam.Reason, msg string) {
	t.Helper()
	var ae *ipam.AllocationError
	if !errors.As(err, &ae) {
		t.Fatalf("error %v is not an *AllocationError", err)
	}
	if ae.Reason != reason || ae.Key != key {
		t.Fatalf("error %q: reason %s key %q, want %s %q", err, ae.Reason, ae.Key, reason, key)
	}
	prefix := "service " + key.String() + ": "
	if key.Name == "" {
		prefix = ""
	}
	if !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), msg) {
		t.Fatalf("error %q, want it to name %s and say %q", err, key, msg)
	}
}
