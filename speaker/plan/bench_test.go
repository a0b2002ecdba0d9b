package plan_test

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/internal/model"
	"github.com/heraldlb/herald/speaker/election"
	"github.com/heraldlb/herald/speaker/plan"
)

// benchPlanner has n Services, each with its own address of a /18 pool on
// the nodes' LAN, and the given number of nodes. The pool is advertised over
// layer 2 and, with bgp, over BGP too, to three peers.
func benchPlanner(b *testing.B, services, nodes int, bgp bool) (*plan.Planner, plan.World) {
	b.Helper()
	lan := netip.MustParsePrefix("10.0.0.0/16")
	var ns []election.Node
	for i := range nodes {
		n := node(fmt.Sprintf("node-%02d", i))
		n.Interfaces = map[netip.Prefix][]string{lan: {"eth0"}}
		ns = append(ns, n)
	}
	in := model.Input{L2Advertisements: []v1alpha1.L2Advertisement{ad("all", v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{"lan"}})}}
	if bgp {
		in.BGPAdvertisements = []v1alpha1.BGPAdvertisement{bgpAd("all", v1alpha1.BGPAdvertisementSpec{Communities: []string{"64512:1"}})}
	}
	w := plan.World{Config: build(map[string][]string{"lan": {"10.0.0.0/18"}}, in), Nodes: ns, Self: "node-01", Peers: peerNames}
	p := plan.New()
	p.SetWorld(w)
	for i := range services {
		p.SetService(&plan.Service{Key: key(fmt.Sprint("s", i)), IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})}})
	}
	p.Plan()
	return p, w
}

// A node dies and comes back: every address is re-decided, from cached
// rankings and candidate classes.
func BenchmarkFullReplan(b *testing.B) {
	for _, bgp := range []bool{false, true} {
		for _, nodes := range []int{3, 50} {
			b.Run(fmt.Sprintf("services=10000/nodes=%d/bgp=%v", nodes, bgp), func(b *testing.B) {
				p, w := benchPlanner(b, 10000, nodes, bgp)
				dead := w
				dead.Nodes = append([]election.Node(nil), w.Nodes...)
				dead.Nodes[0].SpeakerLive = false
				moved := 0
				b.ResetTimer()
				for i := range b.N {
					if i%2 == 0 {
						p.SetWorld(dead)
					} else {
						p.SetWorld(w)
					}
					moved += len(p.Plan().L2)
				}
				b.ReportMetric(float64(moved)/float64(b.N), "moved/op")
			})
		}
	}
}

// One Service's address changes among 10,000.
func BenchmarkServiceChange(b *testing.B) {
	for _, bgp := range []bool{false, true} {
		b.Run(fmt.Sprintf("bgp=%v", bgp), func(b *testing.B) {
			p, _ := benchPlanner(b, 10000, 3, bgp)
			routes := 0
			b.ResetTimer()
			for i := range b.N {
				p.SetService(&plan.Service{Key: key("s7"), IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 0, 60, byte(i % 2)})}})
				d := p.Plan()
				if len(d.L2) != 2 {
					b.Fatal("an address change is two changes")
				}
				routes += len(d.Routes)
			}
			b.ReportMetric(float64(routes)/float64(b.N), "routes/op")
		})
	}
}
