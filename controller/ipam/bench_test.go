package ipam_test

import (
	"fmt"
	"testing"

	"github.com/heraldlb/herald/controller/ipam"
)

// BenchmarkAssign assigns 10,000 Services into an empty allocator per
// operation; ns/service is the cost of one Assign.
func BenchmarkAssign(b *testing.B) {
	const services = 10_000
	keys := serviceKeys(services)
	fifty := make([]ipam.Pool, 50)
	for i := range fifty {
		// 50 /24s, 12,800 addresses: the last Services try ~40 full pools first.
		fifty[i] = withPriority(pool(fmt.Sprintf("pool-%02d", i), fmt.Sprintf("10.%d.0.0/24", i)), int32(i))
	}
	for _, tc := range []struct {
		name  string
		pools []ipam.Pool
		req   func(string) ipam.Request
	}{
		{"ipv6-slash112", []ipam.Pool{pool("v6", "2001:db8::/112")}, v6},
		{"ipv4-slash16", []ipam.Pool{pool("v4", "10.0.0.0/16")}, v4},
		{"ipv4-50-pools", fifty, v4},
		{"ipv4-slash16-shared", []ipam.Pool{pool("v4", "10.0.0.0/16")}, func(k string) ipam.Request {
			// 100 sharing keys, 100 Services each on distinct ports.
			var i int
			fmt.Sscanf(k, "ns/svc-%d", &i)
			return sharing(v4(k), fmt.Sprintf("key-%d", i%100), tcp(int32(i/100)))
		}},
	} {
		reqs := make([]ipam.Request, services)
		for i, k := range keys {
			reqs[i] = tc.req(k)
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var a ipam.Allocator
				if _, err := a.SetPools(tc.pools); err != nil {
					b.Fatal(err)
				}
				for _, r := range reqs {
					if _, err := a.Assign(r); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*services), "ns/service")
		})
	}
}

// BenchmarkAssignInAFragmentedPool measures one Assign and Release when every
// other address of 10,000 is free: 5,000 intervals, the worst case for the
// interval set.
func BenchmarkAssignInAFragmentedPool(b *testing.B) {
	keys := serviceKeys(10_000)
	a := newAllocator(b, pool("v6", "2001:db8::/112"))
	for _, k := range keys {
		assign(b, a, v6(k))
	}
	for i := 0; i < len(keys); i += 2 {
		a.Release(key(keys[i]))
	}
	r := v6("ns/churn")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Assign(r); err != nil {
			b.Fatal(err)
		}
		a.Release(r.Key)
	}
}
