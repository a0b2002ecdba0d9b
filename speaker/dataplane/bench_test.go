package dataplane

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/knftables"
)

// benchRuleSet is n virtual services as a node of a large cluster has them:
// each with an endpoint on this node and the NodePorts of two other nodes.
// Addresses: 198.51.100.0/24 and 203.0.113.0/24 times ports, so that even
// 10,000 stay in documentation ranges.
func benchRuleSet(n int) RuleSet {
	var rs RuleSet
	for i := range n {
		ip := netip.AddrFrom4([4]byte{198, 51, 100, byte(i / 100)})
		if i/100 > 255 {
			ip = netip.AddrFrom4([4]byte{203, 0, 113, byte(i/100 - 256)})
		}
		port := uint16(1000 + i%100)
		rs.Services = append(rs.Services, VirtualService{
			Key:      Key{IP: ip, Protocol: TCP, Port: port},
			Service:  types.NamespacedName{Namespace: "bench", Name: fmt.Sprintf("svc-%d", i)},
			PortName: "http",
			Destinations: []Destination{
				{Addr: netip.AddrFrom4([4]byte{203, 0, 113, 1 + byte(i%200)}), Port: 8080},
				{Addr: netip.MustParseAddr("203.0.113.221"), Port: 30000 + uint16(i%2000)},
				{Addr: netip.MustParseAddr("203.0.113.222"), Port: 30000 + uint16(i%2000)},
			},
			Masquerade: true, Scheduler: Random,
		})
	}
	return rs
}

// oneChanged is rs with the destinations of one virtual service changed.
func oneChanged(rs RuleSet) RuleSet {
	out := RuleSet{Services: append([]VirtualService(nil), rs.Services...)}
	vs := &out.Services[len(out.Services)/2]
	vs.Destinations = append([]Destination(nil), vs.Destinations[:2]...)
	return out
}

func BenchmarkNFTablesRenderFull10k(b *testing.B) {
	rs := benchRuleSet(10000)
	for b.Loop() {
		_ = RenderNFTables(NFTablesOptions{}, rs)
	}
	// After the loop: b.Loop resets the timer, which drops metrics.
	b.ReportMetric(float64((nftRenderer{}).count(rs)), "rules")
}

func BenchmarkIPTablesRenderFull10k(b *testing.B) {
	rs := benchRuleSet(10000)
	for b.Loop() {
		_ = RenderIPTables(IPTablesOptions{}, true, rs)
		_ = RenderIPTables(IPTablesOptions{}, false, rs)
	}
	b.ReportMetric(float64((iptRenderer{}).count(rs)), "rules")
}

// The partial renders include finding what changed among the 10,000.
func BenchmarkNFTablesRenderPartial1of10k(b *testing.B) {
	rs := benchRuleSet(10000)
	applied, next := index(rs), oneChanged(rs)
	r := nftRenderer{opts: NFTablesOptions{}.withDefaults()}
	nft := knftables.NewFake(knftables.InetFamily, "herald")
	for b.Loop() {
		tx := nft.NewTransaction()
		r.partial(tx, diff(applied, next))
		_ = tx.String()
	}
}

func BenchmarkIPTablesRenderPartial1of10k(b *testing.B) {
	rs := benchRuleSet(10000)
	applied, next := index(rs), oneChanged(rs)
	r := iptRenderer{opts: IPTablesOptions{}.withDefaults()}
	for b.Loop() {
		changes := diff(applied, next)
		_ = r.partial(true, applied, next, changes)
		_ = r.partial(false, applied, next, changes)
	}
}

// The kernel benchmarks program 10,000 virtual services into a fresh
// namespace: one full sync (what a restart costs), then partial syncs of one
// (an endpoint of one Service gone, then back: kernelPartials of them; their
// median and max, and the median of their CPU time: see syncCPU). Root only:
//
//	go test ./speaker/dataplane -run '^$' -bench KernelSync10k -benchtime=1x -timeout 30m
//
// (iptables-nft alone takes about 11 minutes; see iptables.go.)

const kernelPartials = 21

func benchKernel(b *testing.B, tools []string, newBackend func() (Backend, error)) {
	needRoot(b, tools...)
	ns := emptyNS(b, "bench")
	var be Backend
	if err := inNS(ns, func() (err error) { be, err = newBackend(); return err }); err != nil {
		b.Fatal(err)
	}
	rs := benchRuleSet(10000)
	next := oneChanged(rs)
	ctx := context.Background()
	var full time.Duration
	var partials, partialsCPU []time.Duration
	var st Stats
	for b.Loop() {
		err := inNS(ns, func() error {
			if err := be.Cleanup(ctx); err != nil {
				return err
			}
			start := time.Now()
			var err error
			if st, err = be.Sync(ctx, rs); err != nil {
				return err
			}
			full += time.Since(start)
			for i := range kernelPartials {
				to := next
				if i%2 == 1 {
					to = rs
				}
				start, startCPU := time.Now(), syncCPU()
				if _, err := be.Sync(ctx, to); err != nil {
					return err
				}
				partials = append(partials, time.Since(start))
				partialsCPU = append(partialsCPU, syncCPU()-startCPU)
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	slices.Sort(partials)
	slices.Sort(partialsCPU)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(float64(full.Milliseconds())/float64(b.N), "full-sync-ms")
	b.ReportMetric(ms(partials[len(partials)/2]), "partial-sync-median-ms")
	b.ReportMetric(ms(partials[len(partials)-1]), "partial-sync-max-ms")
	b.ReportMetric(ms(partialsCPU[len(partialsCPU)/2]), "partial-sync-cpu-median-ms")
	b.ReportMetric(float64(st.Rules), "rules")
}

// syncCPU is the CPU time of the calling thread (a backend's Sync runs on
// the benchmark's locked thread, the kernel's work in its system calls
// included) and of the commands it ran (nft, iptables-restore): what a
// partial sync costs whatever else the machine runs, unlike its wall time.
func syncCPU() time.Duration {
	var total time.Duration
	for _, who := range []int{unix.RUSAGE_THREAD, unix.RUSAGE_CHILDREN} {
		var ru unix.Rusage
		if err := unix.Getrusage(who, &ru); err != nil {
			panic(err)
		}
		total += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return total
}

func BenchmarkNFTablesKernelSync10k(b *testing.B) {
	benchKernel(b, []string{"nft"}, func() (Backend, error) { return NewNFTables(NFTablesOptions{}) })
}

// The same with every partial sync through nft, as before the netlink path.
func BenchmarkNFTablesKernelSync10kPartialViaNft(b *testing.B) {
	benchKernel(b, []string{"nft"}, func() (Backend, error) {
		n, err := NewNFTables(NFTablesOptions{})
		if n != nil {
			n.partialViaNft = true
		}
		return n, err
	})
}

func BenchmarkIPTablesLegacyKernelSync10k(b *testing.B) {
	benchKernel(b, []string{"iptables-legacy-restore"}, func() (Backend, error) { return NewIPTables(IPTablesOptions{Binary: "iptables-legacy"}) })
}

func BenchmarkIPTablesNFTKernelSync10k(b *testing.B) {
	benchKernel(b, []string{"iptables-nft-restore"}, func() (Backend, error) { return NewIPTables(IPTablesOptions{Binary: "iptables-nft"}) })
}
