package runner

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"testing"

	"k8s.io/apimachinery/pkg/types"
	"pgregory.net/rapid"

	"github.com/heraldlb/herald/speaker/dataplane"
)

// The RuleSet the forwarder keeps up to date Service by Service is the one
// gathering every Service's virtual services and merging them gives, also
// when Services claim the same address and port, come, change and go,
// several between two syncs.
func TestForwarderRuleSetIsEveryServiceMerged(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		dp := &fakeDataplane{}
		f := newForwarder(dp, "node", false, nil)
		services := rapid.SliceOfNDistinct(rapid.IntRange(0, 5), 1, 6, rapid.ID).Draw(t, "services")
		for range rapid.IntRange(1, 8).Draw(t, "syncs") {
			for range rapid.IntRange(0, 4).Draw(t, "changes") {
				i := rapid.SampledFrom(services).Draw(t, "service")
				k := types.NamespacedName{Namespace: "ns", Name: fmt.Sprint("svc-", i)}
				var vs []dataplane.VirtualService
				for p := range rapid.IntRange(0, 3).Draw(t, "ports") {
					// Few addresses and ports: Services often claim the same.
					vs = append(vs, dataplane.VirtualService{
						Key: dataplane.Key{
							IP:       netip.AddrFrom4([4]byte{198, 51, 100, byte(rapid.IntRange(1, 3).Draw(t, "ip"))}),
							Protocol: dataplane.TCP, Port: uint16(80 + rapid.IntRange(0, 2).Draw(t, "port")),
						},
						Service: k, PortName: fmt.Sprint("p", p),
						Destinations: []dataplane.Destination{{
							Addr: netip.MustParseAddr("203.0.113.1"), Port: uint16(rapid.IntRange(8080, 8082).Draw(t, "dest")),
						}},
					})
				}
				if len(vs) == 0 {
					vs = nil
				}
				f.set(k, vs)
			}
			if _, err := f.sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			var every []dataplane.VirtualService
			for _, vs := range f.vs {
				every = append(every, vs...)
			}
			want, _ := dataplane.Merge(every)
			if got := dp.last; !reflect.DeepEqual(got.Services, want.Services) && (len(got.Services) > 0 || len(want.Services) > 0) {
				t.Fatalf("synced:\n%v\nwant:\n%v", got.Services, want.Services)
			}
		}
	})
}
