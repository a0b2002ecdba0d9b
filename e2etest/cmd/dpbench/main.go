// Command dpbench measures the speaker's dataplane (issue 10, "Benchmark")
// in a lab of its own: 3 pod nodes with the real kube-proxy (nftables mode
// by default, -kube-proxy-mode),
// the NodePort range widened, and one L2Advertisement whose node selector
// picks node-1 alone, so node-1 receives and forwards every LB address and
// its speaker programs all of them. N LoadBalancer Services (default
// 10,000; IPv6, NodePorts allocated) each have an EndpointSlice of 2 fake
// endpoints on the other nodes; two real Services are backed by the lab's
// HTTP pods for the traffic figures:
//
//   - first-packet: the TCP handshake from the client to a real Service's
//     LB address, median over new connections, with 10 Services and then
//     with N (dataplane_first_packet_<n>_us[_iptables]);
//   - full-sync: node-1's speaker restarted with a backend, its full sync
//     read from herald_speaker_dataplane_sync_duration_seconds{scope=full}
//     (dataplane_full_sync_nftables, dataplane_full_sync_iptables), the
//     rules gauge, and kube-proxy's own full sync on node-1 after a restart;
//   - change: one Service's EndpointSlice edited (an endpoint replaced by
//     one on node-1) -> the new destination in node-1's kernel, polled with
//     nft / ip6tables (dataplane_change_median, dataplane_change_max);
//   - throughput: HTTP requests/s through the LB address over requests/s
//     straight to the same pods from the same client
//     (dataplane_throughput_ratio).
//
// Each figure is printed as `bench: NAME VALUE UNIT`, and in a table with
// how it was measured.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/heraldlb/herald/e2etest/benchkit"
)

type options struct {
	only        string
	services    int
	changes     int
	conns       int
	loadFor     time.Duration
	concurrency int
	labWait     time.Duration
	proxyMode   string
}

// scenarios in the order they run.
var scenarios = []string{"first-packet", "change", "throughput", "full-sync"}

func main() {
	var o options
	flag.StringVar(&o.only, "only", "", "run only these scenarios, comma-separated: "+strings.Join(scenarios, ", ")+" (default: all)")
	flag.IntVar(&o.services, "services", 10000, "LoadBalancer Services with fake endpoints (besides the real ones)")
	flag.IntVar(&o.changes, "changes", 20, "EndpointSlice changes timed per backend")
	flag.IntVar(&o.conns, "conns", 50, "new connections timed for the first-packet latency")
	flag.DurationVar(&o.loadFor, "load-duration", 5*time.Second, "duration of each throughput run")
	flag.IntVar(&o.concurrency, "concurrency", 8, "concurrent clients of each throughput run")
	flag.StringVar(&o.proxyMode, "kube-proxy-mode", "nftables", "the lab's kube-proxy mode: nftables or iptables (with iptables-nft and 10,000 Services, the three kube-proxies' restores took most of the machine and the API server timed out creates)")
	flag.DurationVar(&o.labWait, "lab-wait", 30*time.Minute, "how long to wait for another lab on this machine")
	flag.Parse()
	for _, s := range strings.Split(o.only, ",") {
		if s != "" && !slices.Contains(scenarios, s) {
			fmt.Fprintf(os.Stderr, "dpbench: -only %q: want some of %s\n", s, strings.Join(scenarios, ", "))
			os.Exit(2)
		}
	}
	if o.services < fewServices {
		fmt.Fprintf(os.Stderr, "dpbench: -services %d: want at least %d\n", o.services, fewServices)
		os.Exit(2)
	}
	ctrllog.SetLogger(logr.Discard())
	// The lab's forwarders splice every node's API traffic (three
	// kube-proxies and speakers watching 10,000 Services) through pipes
	// that Go pools and closes only after garbage collections: the 20,000
	// files this machine allows a process ran out mid-run.
	lim := syscall.Rlimit{Cur: 1 << 20, Max: 1 << 20}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Fprintf(os.Stderr, "dpbench: raising the open files limit: %v\n", err)
	}
	// A collection now and then closes the pooled pipes that fell out of use.
	go func() {
		for range time.Tick(30 * time.Second) {
			runtime.GC()
		}
	}()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r := &benchkit.Report{Prefix: "dpbench", Title: "dataplane"}
	start := time.Now()
	err := run(ctx, o, r)
	r.Print(os.Stdout)
	fmt.Fprintf(os.Stderr, "dpbench: wall time %.0fs\n", time.Since(start).Seconds())
	if err != nil {
		fmt.Fprintln(os.Stderr, "dpbench:", err)
		os.Exit(1)
	}
}

func (o options) runs(s string) bool {
	return o.only == "" || slices.Contains(strings.Split(o.only, ","), s)
}
