package runner

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/heraldlb/herald/speaker/dataplane"
)

// What the forwarder adds to a partial sync of one Service among 10,000,
// before the backend's own diff: bringing the RuleSet of every Service's
// virtual services up to date (the backend here only records it).
func BenchmarkForwarderSyncOneOf10k(b *testing.B) {
	dp := &fakeDataplane{}
	f := newForwarder(dp, "node", false, nil)
	service := func(i, nodePort int) []dataplane.VirtualService {
		k := types.NamespacedName{Namespace: "bench", Name: fmt.Sprint("svc-", i)}
		return []dataplane.VirtualService{{
			Key:     dataplane.Key{IP: netip.AddrFrom4([4]byte{198, 51, byte(100 + i/25600), byte(i / 100)}), Protocol: dataplane.TCP, Port: uint16(1000 + i%100)},
			Service: k, PortName: "http",
			Destinations: []dataplane.Destination{
				{Addr: netip.AddrFrom4([4]byte{203, 0, 113, 1 + byte(i%200)}), Port: 8080},
				{Addr: netip.MustParseAddr("203.0.113.221"), Port: uint16(nodePort)},
			},
			Masquerade: true,
		}}
	}
	for i := range 10000 {
		f.set(types.NamespacedName{Namespace: "bench", Name: fmt.Sprint("svc-", i)}, service(i, 30000+i%2000))
	}
	ctx := context.Background()
	if _, err := f.sync(ctx); err != nil {
		b.Fatal(err)
	}
	one := types.NamespacedName{Namespace: "bench", Name: "svc-5000"}
	for i := 0; b.Loop(); i++ {
		f.set(one, service(5000, 32000+i%2)) // never its first NodePort, 31000
		if st, err := f.sync(ctx); err != nil || st == nil || st.Services != 10000 {
			b.Fatalf("sync: %+v, %v", st, err)
		}
	}
}
