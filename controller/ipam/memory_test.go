package ipam_test

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/heraldlb/herald/controller/ipam"
)

// TestIPv6Slash64PoolCostsNoMoreThanASmallPool: configuring a pool and
// assigning from it costs the same whether the pool has 256 addresses or 2^80.
func TestIPv6Slash64PoolCostsNoMoreThanASmallPool(t *testing.T) {
	keys := serviceKeys(10)
	build := func(cidr string) func() {
		pools := []ipam.Pool{pool("v6", cidr)}
		return func() {
			var a ipam.Allocator
			if _, err := a.SetPools(pools); err != nil {
				panic(err)
			}
			for _, k := range keys {
				if _, err := a.Assign(v6(k)); err != nil {
					panic(err)
				}
			}
		}
	}
	cost := func(cidr string) (allocs float64, bytes uint64) {
		f := build(cidr)
		allocs = testing.AllocsPerRun(50, f)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range 50 {
			f()
		}
		runtime.ReadMemStats(&after)
		return allocs, (after.TotalAlloc - before.TotalAlloc) / 50
	}
	smallAllocs, smallBytes := cost("2001:db8::/120")
	for _, cidr := range []string{"2001:db8::/64", "2001:db8::/48"} {
		allocs, bytes := cost(cidr)
		t.Logf("10 services: /120 %v allocs %d bytes, %s %v allocs %d bytes", smallAllocs, smallBytes, cidr, allocs, bytes)
		if allocs != smallAllocs || bytes > smallBytes+smallBytes/10 {
			t.Errorf("%s costs %v allocs and %d bytes, /120 costs %v and %d", cidr, allocs, bytes, smallAllocs, smallBytes)
		}
	}
}

func TestHundredThousandServicesFromASlash64UseLittleMemory(t *testing.T) {
	const n = 100_000
	perService := func(cidr string) float64 {
		keys := serviceKeys(n)
		a := newAllocator(t, pool("v6", cidr))
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		var last ipam.Assignment
		for _, k := range keys {
			last = assign(t, a, v6(k))
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		// Lowest free first: the 100,000th service gets the 100,000th address.
		wantAssigned(t, last, "v6", "2001:db8::1:869f")
		if u, _ := a.Usage("v6", ipam.IPv6); u.Assigned != n {
			t.Fatalf("usage %+v", u)
		}
		runtime.KeepAlive(a)
		return float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
	}
	big := perService("2001:db8::/64")
	small := perService("2001:db8::/100") // 2^28 addresses, the smallest that fits the test comfortably
	t.Logf("heap per service: /64 %.0f bytes, /100 %.0f bytes", big, small)
	// What a Service costs is its own records (key, addresses, sharing); the
	// pool's size must not show.
	if big > 1024 || big > small*1.2+64 {
		t.Errorf("heap per service: /64 %.0f bytes, /100 %.0f bytes", big, small)
	}
}

func serviceKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("ns/svc-%d", i)
	}
	return keys
}
