package main

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/e2etest/benchkit"
	"github.com/heraldlb/herald/e2etest/herald"
	"github.com/heraldlb/herald/e2etest/lab"
	"github.com/heraldlb/herald/speaker/dataplane"
)

// backends the kernel here has; ipvs is not in it (see ../shared/LAB.md).
var backends = []string{"nftables", "iptables"}

func run(ctx context.Context, o options, r *benchkit.Report) error {
	e, err := up(ctx, o)
	if err != nil {
		return err
	}
	defer e.down()
	r.Note(fmt.Sprintf("3 pod nodes, kube-proxy in %s mode on each; the one L2Advertisement selects %s alone, so %s receives and forwards every LB address and its speaker syncs all %d Services (%d real, backed by lab pods; the rest IPv6, NodePorts allocated, 2 fake endpoints on the other nodes)",
		o.proxyMode, e.owner.Name, e.owner.Name, o.services+realCount, realCount))

	// A scenario that fails is reported as skipped, with why, and the
	// others still run.
	try := func(name string, f func() error) {
		if err := f(); err != nil {
			if ctx.Err() != nil {
				return
			}
			r.Skip(name, err.Error())
		}
	}
	if o.runs("first-packet") {
		for _, b := range backends {
			try("first_packet_"+b, func() error {
				if err := e.useBackend(ctx, b); err != nil {
					return err
				}
				return e.firstPacket(ctx, r)
			})
		}
		if err := e.useBackend(ctx, "nftables"); err != nil {
			return err
		}
	}

	start := time.Now()
	if err := e.createFakes(ctx, o.services); err != nil {
		return err
	}
	if _, err := e.waitAssigned(ctx, e.total()); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "dpbench: %d Services assigned %.0fs after the first create\n", e.total(), time.Since(start).Seconds())
	if err := e.waitProgrammed(ctx, 15*time.Minute); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "dpbench: %s programs all %d virtual services %.0fs after the first create\n", e.owner.Name, e.total(), time.Since(start).Seconds())
	e.quiet(ctx)
	if rss, err := herald.RSSMiB(e.h.Speaker(e.owner.Name).PID()); err == nil {
		r.Add(fmt.Sprintf("speaker_rss_dataplane_%d", o.services), rss, "MiB",
			fmt.Sprintf("VmRSS of %s's speaker forwarding all %d Services with nftables", e.owner.Name, e.total()))
	}

	for _, b := range backends {
		// The full sync restarts the speaker with b anyway.
		if o.runs("full-sync") {
			try("dataplane_full_sync_"+b, func() error { return e.fullSync(ctx, b, r) })
		}
		if err := e.useBackend(ctx, b); err != nil {
			return err
		}
		if o.runs("first-packet") {
			try("first_packet_"+b, func() error { return e.firstPacket(ctx, r) })
		}
		if o.runs("change") {
			try("dataplane_change"+suffix(b), func() error { return e.changes(ctx, r) })
		}
		if o.runs("throughput") {
			try("dataplane_throughput_ratio"+suffix(b), func() error { return e.throughput(ctx, r) })
		}
		// kube-proxy's full sync while Herald's rules are in their own
		// nftables table, not in the ip6tables nat table kube-proxy rewrites.
		if b == "nftables" && o.runs("full-sync") {
			try("kubeproxy_full_sync_ms", func() error { return e.kubeProxyFullSync(ctx, r) })
		}
	}
	if o.runs("full-sync") {
		r.Skip("dataplane_full_sync_ipvs", "IPVS is not in this kernel (CONFIG_IP_VS unset, no /proc/net/ip_vs); the ipvs backend runs only in the QEMU VM test")
		ratios(r)
	}
	return ctx.Err()
}

// quiet waits (up to 1 min) until the machine is at least half idle over
// 2 s, so that a timed scenario does not run in the middle of the
// kube-proxies' syncs, and returns the idle share it measured last.
func (e *env) quiet(ctx context.Context) float64 {
	start := time.Now()
	var idle float64
	for time.Since(start) < time.Minute && ctx.Err() == nil {
		a := cpuTimes()
		time.Sleep(2 * time.Second)
		b := cpuTimes()
		if b[1] > a[1] {
			idle = float64(b[0]-a[0]) / float64(b[1]-a[1])
		}
		if idle >= 0.5 {
			break
		}
	}
	fmt.Fprintf(os.Stderr, "dpbench: machine %.0f%% idle after waiting %.0fs\n", 100*idle, time.Since(start).Seconds())
	return idle
}

// cpuTimes is the machine's idle and total CPU time from /proc/stat.
func cpuTimes() [2]uint64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return [2]uint64{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	var out [2]uint64
	for i, f := range strings.Fields(line)[1:] {
		var v uint64
		fmt.Sscan(f, &v)
		out[1] += v
		if i == 3 || i == 4 { // idle, iowait
			out[0] += v
		}
	}
	return out
}

// suffix names a figure's backend: nftables has the names, the
// others a suffix.
func suffix(backend string) string {
	if backend == "nftables" {
		return ""
	}
	return "_" + backend
}

// useBackend restarts the owner's speaker with backend unless it already
// runs it, and waits until it programs every Service.
func (e *env) useBackend(ctx context.Context, backend string) error {
	if e.backend == backend {
		return nil
	}
	if err := e.h.RestartSpeaker(e.owner, backend); err != nil {
		return err
	}
	e.backend = backend
	fmt.Fprintf(os.Stderr, "dpbench: %s's speaker runs --dataplane=%s\n", e.owner.Name, backend)
	return e.waitProgrammed(ctx, 5*time.Minute)
}

// firstPacket times TCP handshakes to the local Service (its one pod is on
// the owner, so only Herald's rules are on the path).
func (e *env) firstPacket(ctx context.Context, r *benchkit.Report) error {
	idle := e.quiet(ctx)
	ds, err := handshakes(netip.AddrPortFrom(e.localIP, 80).String(), e.o.conns)
	if err != nil {
		return err
	}
	us := make([]float64, len(ds))
	for i, d := range ds {
		us[i] = float64(d.Nanoseconds()) / 1000
	}
	slices.Sort(us)
	r.Add(fmt.Sprintf("dataplane_first_packet_%d_us%s", e.scale(), suffix(e.backend)), benchkit.Median(us), "us",
		fmt.Sprintf("%s: median TCP handshake client -> [%s]:80 (a pod on %s, last of %d virtual services) over %d new connections; p90 %.0f, max %.0f; machine %.0f%% idle before",
			e.backend, e.localIP, e.owner.Name, e.total(), len(us), us[len(us)*9/10], us[len(us)-1], 100*idle))
	return nil
}

// fullSync restarts the owner's speaker with backend (SIGTERM removes
// its rules, so the start programs everything anew) and reads its syncs
// from its histogram, sampled every 10 ms meanwhile: the start's sync is
// scope=full, but it holds only what the speaker serves at that moment
// (before its Lease and the gossip make it live, little or nothing), and
// the rest come in partial syncs. The figure is all of them: the time
// spent programming every Service from nothing.
func (e *env) fullSync(ctx context.Context, backend string, r *benchkit.Report) error {
	e.quiet(ctx)
	e.h.Speaker(e.owner.Name).Stop()
	e.backend = backend
	type sample struct {
		at                     time.Time
		full, partial, vs, sum float64
	}
	var samples []sample
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if m, err := e.speakerMetrics(ctx); err == nil {
				var s sample
				s.at = time.Now()
				s.full, _ = m.Get(mSyncDuration+"_count", `scope="full"`)
				s.sum, _ = m.Get(mSyncDuration+"_sum", `scope="full"`)
				s.partial, _ = m.Get(mSyncDuration+"_count", `scope="partial"`)
				s.vs, _ = m.Get(mVirtualServices)
				samples = append(samples, s)
			}
		}
	}()
	start := time.Now()
	err := e.h.RestartSpeaker(e.owner, e.backend)
	if err == nil {
		err = e.waitProgrammed(ctx, 5*time.Minute)
	}
	time.Sleep(time.Second)
	close(stop)
	<-stopped
	if err != nil {
		return err
	}
	m, err := e.speakerMetrics(ctx)
	if err != nil {
		return err
	}
	count, _ := m.Get(mSyncDuration+"_count", `scope="full"`)
	sum, _ := m.Get(mSyncDuration+"_sum", `scope="full"`)
	partials, _ := m.Get(mSyncDuration+"_count", `scope="partial"`)
	partialSum, _ := m.Get(mSyncDuration+"_sum", `scope="partial"`)
	vs, _ := m.Get(mVirtualServices)
	rules, _ := m.Get(mRules)
	errs, _ := m.Get(mSyncErrors)
	if count < 1 {
		return fmt.Errorf("%s's speaker reports no full sync after its start", e.owner.Name)
	}
	inFull, allAt := "unknown (no sample between it and the first partial sync)", time.Duration(0)
	for _, s := range samples {
		if s.full >= 1 && s.partial == 0 && s.sum > 0 && strings.HasPrefix(inFull, "unknown") {
			inFull = fmt.Sprintf("%.0f", s.vs)
		}
		if allAt == 0 && s.full >= 1 && s.vs == float64(e.total()) {
			allAt = s.at.Sub(start)
		}
	}
	how := fmt.Sprintf("%s's speaker restarted with --dataplane=%s: %s sum of the new process until all %d virtual services were programmed: %.0f full sync(s) %.1f ms (%s virtual services in it) + %.0f partial syncs %.1f ms; %.0f sync errors",
		e.owner.Name, e.backend, mSyncDuration, e.total(), count, 1000*sum, inFull, partials, 1000*partialSum, errs)
	r.Add("dataplane_full_sync_"+e.backend, 1000*(sum+partialSum), "ms", how)
	r.Add("dataplane_full_sync_"+e.backend+"_scope_full", 1000*sum/count, "ms",
		fmt.Sprintf("%s{scope=full} alone (sum/count, %.0f sync(s)), which held %s of the %d virtual services", mSyncDuration, count, inFull, e.total()))
	if allAt > 0 {
		r.Add("dataplane_restart_programmed_"+e.backend, float64(allAt.Milliseconds()), "ms",
			fmt.Sprintf("wall time from the speaker's start to %s = %d (sampled every 10 ms), Lease and gossip included", mVirtualServices, e.total()))
	}
	r.Add("dataplane_rules_"+e.backend, rules, "objects", mRules+" with every Service programmed (rules, chains, set and map elements)")
	r.Add("dataplane_virtual_services_"+e.backend, vs, "services", mVirtualServices+" with every Service programmed")
	return nil
}

// kubeProxyFullSync restarts kube-proxy on the owner and reads its full
// syncs of the same Services (IPv6: all of them; IPv4: the lab's own).
func (e *env) kubeProxyFullSync(ctx context.Context, r *benchkit.Report) error {
	e.quiet(ctx)
	if err := e.lab.RestartKubeProxy(ctx, e.owner.Name); err != nil {
		return err
	}
	const name = "kubeproxy_sync_full_proxy_rules_duration_seconds"
	v6 := `ip_family="IPv6"`
	var count, sum float64
	var m herald.Metrics
	// At 10,000 Services kube-proxy's first sync after a restart took
	// more than 2 minutes in an earlier run.
	if err := benchkit.WaitFor(ctx, 10*time.Minute, 500*time.Millisecond, func() bool {
		var err error
		if m, err = e.kubeProxyMetrics(ctx); err != nil {
			return false
		}
		count, _ = m.Get(name+"_count", v6)
		sum, _ = m.Get(name+"_sum", v6)
		return count >= 1
	}); err != nil {
		return fmt.Errorf("kube-proxy on %s: no IPv6 full sync: %w", e.owner.Name, err)
	}
	r.Add("kubeproxy_full_sync_ms", 1000*sum/count, "ms", fmt.Sprintf("kube-proxy (%s mode) on %s restarted: %s{ip_family=IPv6} sum/count (%.0f sync(s)) for the same %d IPv6 Services (ClusterIP, NodePort, endpoints)", e.o.proxyMode, e.owner.Name, name, count, e.total()))
	if n, ok := m.Get("kubeproxy_sync_proxy_rules_iptables_total", v6); ok {
		r.Add("kubeproxy_rules", n, "rules", "kubeproxy_sync_proxy_rules_iptables_total{ip_family=IPv6}, all tables")
	}
	return nil
}

// ratios sets Herald's full syncs beside kube-proxy's.
func ratios(r *benchkit.Report) {
	kp, ok := r.Value("kubeproxy_full_sync_ms")
	if !ok || kp <= 0 {
		return
	}
	for _, b := range backends {
		if v, ok := r.Value("dataplane_full_sync_" + b); ok {
			r.Add("dataplane_full_sync_ratio_"+b, v/kp, "ratio", "dataplane_full_sync_"+b+" / kubeproxy_full_sync_ms (below 1: Herald's is faster)")
		}
	}
}

// changes edits e.o.changes fake Services' EndpointSlices, one at a time:
// the first endpoint is replaced by a new address on the owner, which the
// owner forwards to directly. Each is timed from the API write to the
// kernel's announcement of the new destination (nft monitor: its DNAT
// rule, with either backend), and the virtual service's chain
// is then checked to go there.
func (e *env) changes(ctx context.Context, r *benchkit.Report) error {
	idle := e.quiet(ctx)
	mon, err := startChainMonitor(e.owner.Netns)
	if err != nil {
		return err
	}
	defer mon.stop()
	var ms []float64
	for i := range e.o.changes {
		k := (i*7919 + 13) % e.fakes
		svcIP, err := e.serviceIP(ctx, fakeName(k))
		if err != nil {
			return err
		}
		var s discoveryv1.EndpointSlice
		if err := e.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: fakeName(k) + "-1"}, &s); err != nil {
			return err
		}
		// A new address each time, never used before by any backend's run.
		seq := 0x20000 + i
		if e.backend != "nftables" {
			seq += 0x1000
		}
		addr := fakeEndpoint(e.owner, seq)
		s.Endpoints[0].Addresses = []string{addr.String()}
		s.Endpoints[0].NodeName = &e.owner.Name
		rule, inRules := e.kernelHas(svcIP, addr)
		mon.forget()
		start := time.Now()
		if err := e.c.Update(ctx, &s); err != nil {
			return fmt.Errorf("change %d (%s): %w", i, s.Name, err)
		}
		var at time.Time
		if err := benchkit.WaitFor(ctx, 2*time.Minute, time.Millisecond, func() bool {
			var ok bool
			at, ok = mon.created(rule, start)
			return ok
		}); err != nil {
			return fmt.Errorf("change %d: no rule %q appeared on %s (%s) for %s: %w", i, rule, e.owner.Name, e.backend, svcIP, err)
		}
		if err := benchkit.WaitFor(ctx, 10*time.Second, 10*time.Millisecond, inRules); err != nil {
			return fmt.Errorf("change %d: a rule %q appeared on %s but %s's chain does not hold it: %w", i, rule, e.owner.Name, svcIP, err)
		}
		ms = append(ms, float64(at.Sub(start).Microseconds())/1000)
		time.Sleep(200 * time.Millisecond)
	}
	how := fmt.Sprintf("%s: EndpointSlice update (an endpoint replaced by one on %s) -> the kernel announces the new destination on %s (nft monitor), over %d changes with %d Services; each checked afterwards in %s; machine %.0f%% idle before",
		e.backend, e.owner.Name, e.owner.Name, len(ms), e.total(), pollTool(e.backend), 100*idle)
	r.Add("dataplane_change_median"+suffix(e.backend), benchkit.Median(ms), "ms", how)
	r.Add("dataplane_change_max"+suffix(e.backend), slices.Max(ms), "ms", how)
	return nil
}

func pollTool(backend string) string {
	if backend == "nftables" {
		return "`nft list chain inet herald <service chain>`"
	}
	return "`ip6tables -t nat -S <address block chain>`"
}

// serviceIP is the LB address of Service name.
func (e *env) serviceIP(ctx context.Context, name string) (netip.Addr, error) {
	s := lbService(name)
	if err := e.c.Get(ctx, client.ObjectKeyFromObject(s), s); err != nil {
		return netip.Addr{}, err
	}
	if in := s.Status.LoadBalancer.Ingress; len(in) > 0 {
		return netip.ParseAddr(in[0].IP)
	}
	return netip.Addr{}, fmt.Errorf("service %s/%s has no address", ns, name)
}

// kernelHas names what nft monitor prints once the owner sends virtual
// service [ip]:80/TCP to [addr]:8080 (a DNAT rule "... to [addr]:8080",
// with either backend: iptables-nft writes nftables rules too), and
// returns a check that its chain holds that rule (reading only that
// chain).
func (e *env) kernelHas(ip, addr netip.Addr) (string, func() bool) {
	dest := dataplane.Destination{Addr: addr, Port: 8080}
	var argv []string
	var want string
	switch e.backend {
	case "nftables":
		// The chain's name as speaker/dataplane/nftables.go makes it; each
		// destination is a rule in it.
		argv = []string{"nft", "list", "chain", "inet", "herald", "svc-" + nftName(ip.String()) + "-tcp-80"}
		want = " to " + dest.String()
	default:
		// The chain of the address's block of 16, named as
		// speaker/dataplane/iptables.go names it.
		block, _ := ip.Prefix(124)
		argv = []string{"ip6tables", "-w", "-t", "nat", "-S", "HERALD-DST-" + iptHash(block.String())}
		want = "--to-destination " + dest.String()
	}
	return " to " + dest.String(), func() bool {
		out, err := exec.Command("ip", append([]string{"netns", "exec", e.owner.Netns}, argv...)...).Output()
		return err == nil && strings.Contains(string(out), want)
	}
}

func nftName(s string) string { return strings.ReplaceAll(s, ":", "_") }

func iptHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(h[:])[:16]
}

// throughput compares HTTP requests/s through the web Service's LB address
// with requests/s straight to its pods, from the same client, with a new
// connection per request and then with keep-alive. The client gets routes
// to the pod CIDRs for the direct runs, removed afterwards.
func (e *env) throughput(ctx context.Context, r *benchkit.Report) error {
	var routes []string
	for _, n := range e.lab.PodNodes() {
		routes = append(routes, fmt.Sprintf("%s via %s", n.PodCIDRv6, n.IPv6))
	}
	for _, rt := range routes {
		if out, err := exec.Command("sh", "-c", "ip -n "+lab.ClientNetns+" -6 route replace "+rt).CombinedOutput(); err != nil {
			return fmt.Errorf("client route %s: %w: %s", rt, err, out)
		}
	}
	defer func() {
		for _, rt := range routes {
			_ = exec.Command("sh", "-c", "ip -n "+lab.ClientNetns+" -6 route del "+rt).Run()
		}
	}()
	lb := []string{netip.AddrPortFrom(e.webIP, 80).String()}
	var direct []string
	for _, p := range e.webPods {
		direct = append(direct, netip.AddrPortFrom(p, 80).String())
	}
	for _, p := range direct {
		if err := get(ctx, "http://"+p+"/"); err != nil {
			return fmt.Errorf("straight to the pod: %w", err)
		}
	}
	for _, ka := range []bool{false, true} {
		name, conn := "dataplane_throughput_ratio", "a new connection per request"
		if ka {
			name, conn = "dataplane_throughput_ratio_keepalive", "keep-alive"
		}
		name += suffix(e.backend)
		// Direct, through, direct, through: the better of each, so a
		// hiccup of the machine does not decide the ratio.
		var via, straight loadResult
		e.quiet(ctx)
		for range 2 {
			if d := load(ctx, direct, e.o.concurrency, e.o.loadFor, ka); d.rate() > straight.rate() || straight.elapsed == 0 {
				straight = d
			}
			if t := load(ctx, lb, e.o.concurrency, e.o.loadFor, ka); t.rate() > via.rate() || via.elapsed == 0 {
				via = t
			}
		}
		if via.ok == 0 || straight.ok == 0 {
			return fmt.Errorf("%s: no answers (through %d ok %d failed, direct %d ok %d failed)", name, via.ok, via.failed, straight.ok, straight.failed)
		}
		how := fmt.Sprintf("%s: GET / through [%s]:80 %.0f req/s (%d failed) / straight to the same %d pods %.0f req/s (%d failed); %s, %d clients, best of 2 runs of %s each, load generator and pods in this process",
			e.backend, e.webIP, via.rate(), via.failed, len(direct), straight.rate(), straight.failed, conn, e.o.concurrency, e.o.loadFor)
		r.Add(name, via.rate()/straight.rate(), "ratio", how)
	}
	return nil
}
