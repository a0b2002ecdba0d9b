package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/e2etest/benchkit"
	"github.com/heraldlb/herald/e2etest/lab"
)

const (
	nodesNS  = "fifty"
	lanPool4 = "198.51.100.64/27"
)

// nodesPart: o.nodes speaker-only nodes.
func nodesPart(ctx context.Context, o options, r *benchkit.Report) error {
	e, err := up(ctx, o, lab.Config{SpeakerNodes: o.nodes, ProxyMode: "none"})
	if err != nil {
		return err
	}
	defer e.down()
	l, c := e.lab, e.c
	if err := gossipCounters(l.Nodes); err != nil {
		return err
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nodesNS}}); err != nil {
		return err
	}
	if err := pool(ctx, c, "v4", lanPool4); err != nil {
		return err
	}
	if err := pool(ctx, c, "v6", lanPool6); err != nil {
		return err
	}
	v4n := 32
	if err := benchkit.CreateAll(ctx, c, "IPv4 Services", v4n, 8, benchkit.Prefixed(os.Stderr, "scalebench: "), func(i int) []client.Object {
		return []client.Object{lbService(nodesNS, fmt.Sprintf("a%02d", i), "v4", corev1.IPv4Protocol)}
	}); err != nil {
		return err
	}
	if err := benchkit.CreateAll(ctx, c, "IPv6 Services", o.spreadIPs, 16, benchkit.Prefixed(os.Stderr, "scalebench: "), func(i int) []client.Object {
		return []client.Object{lbService(nodesNS, fmt.Sprintf("b%04d", i), "v6", corev1.IPv6Protocol)}
	}); err != nil {
		return err
	}
	total := v4n + o.spreadIPs
	var owner map[netip.Addr]string
	if err := benchkit.WaitFor(ctx, 10*time.Minute, 3*time.Second, func() bool {
		owner, _, err = announced(ctx, c)
		return err == nil && len(owner) == total
	}); err != nil {
		return fmt.Errorf("%d of %d addresses announced: %w", len(owner), total, err)
	}
	time.Sleep(10 * time.Second)
	owner, _, err = announced(ctx, c)
	if err != nil {
		return err
	}

	// Spread of the IPv6 addresses over the nodes.
	counts := perNode(owner, func(ip netip.Addr) bool { return ip.Is6() })
	var per []float64
	for _, n := range l.Nodes {
		per = append(per, float64(counts[n.Name]))
	}
	meanPer := float64(o.spreadIPs) / float64(len(l.Nodes))
	r.Add(fmt.Sprintf("ownership_spread_%d", len(l.Nodes)), slices.Max(per)/meanPer, "max/mean", fmt.Sprintf("%d IPv6 addresses over %d nodes (Announcements): max %.0f, min %.0f, mean %.1f per node", o.spreadIPs, len(l.Nodes), slices.Max(per), slices.Min(per), meanPer))

	// Gossip and CPU at rest.
	cpu0 := cpuAll(e.h, l.Nodes)
	g0, err := gossipBytes(l.Nodes)
	if err != nil {
		return err
	}
	from := time.Now()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(o.idle):
	}
	g1, err := gossipBytes(l.Nodes)
	if err != nil {
		return err
	}
	cpu1 := cpuAll(e.h, l.Nodes)
	el := time.Since(from).Seconds()
	var sent, recv, cpu []float64
	for _, n := range l.Nodes {
		sent = append(sent, (g1[n.Name][1]-g0[n.Name][1])/el)
		recv = append(recv, (g1[n.Name][0]-g0[n.Name][0])/el)
		cpu = append(cpu, 100*(cpu1[n.Name]-cpu0[n.Name])/el)
	}
	r.Add("gossip_bytes_per_node", mean(sent), "B/s", fmt.Sprintf("gossip (TCP+UDP port 7947) sent per node, mean over %d nodes at rest over %.0fs, nft counters; max sent %.0f, mean received %.0f B/s", len(l.Nodes), el, slices.Max(sent), mean(recv)))
	r.Add(fmt.Sprintf("speaker_idle_cpu_%dnodes", len(l.Nodes)), mean(cpu), "%", fmt.Sprintf("mean CPU %% of a core per speaker at rest, %d nodes, %d addresses; max %.2f", len(l.Nodes), total, slices.Max(cpu)))

	w, err := newWire()
	if err != nil {
		return err
	}
	defer w.close()
	var v4 []netip.Addr
	for ip := range owner {
		if ip.Is4() {
			v4 = append(v4, ip)
		}
	}
	slices.SortFunc(v4, func(a, b netip.Addr) int { return a.Compare(b) })
	if err := failovers(ctx, e, w, v4, o.failovers, r); err != nil {
		return err
	}
	owner, _, err = announced(ctx, c)
	if err != nil {
		return err
	}
	return rollingRestart(ctx, e, w, owner, r)
}

// gossipCounters adds, in each node, nftables counters of gossip traffic
// (TCP and UDP to or from port 7947) in and out.
func gossipCounters(nodes []lab.Node) error {
	rules := `table inet hlbench {
	chain in { type filter hook input priority -300; meta l4proto { tcp, udp } th dport 7947 counter; meta l4proto { tcp, udp } th sport 7947 th dport != 7947 counter; }
	chain out { type filter hook output priority -300; meta l4proto { tcp, udp } th dport 7947 counter; meta l4proto { tcp, udp } th sport 7947 th dport != 7947 counter; }
}`
	for _, n := range nodes {
		cmd := exec.Command("ip", "netns", "exec", n.Netns, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(rules)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("nft in %s: %w: %s", n.Netns, err, out)
		}
	}
	return nil
}

// gossipBytes reads each node's gossip counters: [received, sent] bytes.
func gossipBytes(nodes []lab.Node) (map[string][2]float64, error) {
	out := map[string][2]float64{}
	for _, n := range nodes {
		b, err := exec.Command("ip", "netns", "exec", n.Netns, "nft", "list", "table", "inet", "hlbench").Output()
		if err != nil {
			return nil, fmt.Errorf("nft list in %s: %w", n.Netns, err)
		}
		var v [2]float64
		chain := -1
		for _, line := range strings.Split(string(b), "\n") {
			switch {
			case strings.Contains(line, "chain in"):
				chain = 0
			case strings.Contains(line, "chain out"):
				chain = 1
			}
			f := strings.Fields(line)
			for i := 0; i+1 < len(f); i++ {
				if f[i] == "bytes" && chain >= 0 {
					x, _ := strconv.ParseFloat(f[i+1], 64)
					v[chain] += x
				}
			}
		}
		out[n.Name] = v
	}
	return out, nil
}

// failovers cuts, run after run, the node that answers for an IPv4 address
// off the LAN while the client asks for the address every 10 ms; the
// failover is the time from the cut to the first answer from another node.
// Then the node comes back; failback is the time from its return to its
// first answer again.
func failovers(ctx context.Context, e *env, w *wire, ips []netip.Addr, runs int, r *benchkit.Report) error {
	byMAC := macNode(e.lab.Nodes)
	var fo, fb []float64
	doubles := 0
	for i := range runs {
		ip := ips[i%len(ips)]
		w.reset()
		// Who answers now.
		var ownerMAC string
		if err := benchkit.WaitFor(ctx, 20*time.Second, 20*time.Millisecond, func() bool {
			w.probe(ip)
			time.Sleep(20 * time.Millisecond)
			_, mac, ok := w.firstNotFrom(ip, "", time.Time{})
			ownerMAC = mac
			return ok
		}); err != nil {
			return fmt.Errorf("run %d: nobody answers for %s: %w", i, ip, err)
		}
		node := byMAC[ownerMAC]
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(10 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					w.probe(ip)
				}
			}
		}()
		time.Sleep(300 * time.Millisecond)
		cut := time.Now()
		if err := e.lab.SetNodeLink(node, false); err != nil {
			close(stop)
			wg.Wait()
			return err
		}
		var newAt time.Time
		var newMAC string
		err := benchkit.WaitFor(ctx, 15*time.Second, 5*time.Millisecond, func() bool {
			var ok bool
			newAt, newMAC, ok = w.firstNotFrom(ip, ownerMAC, cut)
			return ok
		})
		if err != nil {
			close(stop)
			wg.Wait()
			_ = e.lab.SetNodeLink(node, true)
			return fmt.Errorf("run %d: no other node answered for %s within 15s of cutting %s", i, ip, node)
		}
		back := time.Now()
		if err := e.lab.SetNodeLink(node, true); err != nil {
			close(stop)
			wg.Wait()
			return err
		}
		var backAt time.Time
		err = benchkit.WaitFor(ctx, 30*time.Second, 5*time.Millisecond, func() bool {
			var ok bool
			backAt, ok = w.firstFrom(ip, ownerMAC, back, false)
			return ok
		})
		time.Sleep(2 * time.Second)
		close(stop)
		wg.Wait()
		_, ds := w.doubles()
		doubles += len(ds)
		fo = append(fo, float64(newAt.Sub(cut).Microseconds())/1000)
		line := fmt.Sprintf("scalebench: failover run %2d: cut %s answering %s: %s answered %.0f ms later", i+1, node, ip, byMAC[newMAC], fo[len(fo)-1])
		if err == nil {
			fb = append(fb, float64(backAt.Sub(back).Microseconds())/1000)
			line += fmt.Sprintf("; back on the LAN, %s answered again %.0f ms later", node, fb[len(fb)-1])
		} else {
			line += "; " + node + " did not answer again within 30s of coming back"
		}
		fmt.Fprintf(os.Stderr, "%s; probes answered by two nodes: %d\n", line, len(ds))
		time.Sleep(2 * time.Second)
	}
	slices.Sort(fo)
	how := fmt.Sprintf("%d runs at %d nodes: LAN cut of the node answering an IPv4 address -> first ARP reply from another node, client probing every 10 ms", len(fo), len(e.lab.Nodes))
	nn := len(e.lab.Nodes)
	r.Add(fmt.Sprintf("failover_%d_median", nn), fo[len(fo)/2], "ms", how)
	r.Add(fmt.Sprintf("failover_%d_max", nn), fo[len(fo)-1], "ms", how)
	if len(fb) > 0 {
		slices.Sort(fb)
		r.Add(fmt.Sprintf("failback_%d_median", nn), fb[len(fb)/2], "ms", fmt.Sprintf("%d runs: the cut node back on the LAN -> its first ARP reply for the address again", len(fb)))
		r.Add(fmt.Sprintf("failback_%d_max", nn), fb[len(fb)-1], "ms", "as failback_median")
	}
	r.Add(fmt.Sprintf("failover_%d_double_answers", nn), float64(doubles), "probes", "probes answered by two nodes during the failover runs (cut and failback)")
	return nil
}

// rollingRestart restarts every speaker in turn (SIGTERM, wait for the
// handover and exit, start, wait ready) while the client asks for every
// IPv4 address every 50 ms, for every IPv6 address every 2 s, and for the
// restarting node's own addresses every 20 ms from its stop until 2 s after
// it is ready again. A probe answered by two MACs is a double owner.
func rollingRestart(ctx context.Context, e *env, w *wire, owner map[netip.Addr]string, r *benchkit.Report) error {
	w.reset()
	var v4, v6 []netip.Addr
	mine := map[string][]netip.Addr{}
	for ip, n := range owner {
		if ip.Is4() {
			v4 = append(v4, ip)
		} else {
			v6 = append(v6, ip)
		}
		mine[n] = append(mine[n], ip)
	}
	var focus struct {
		sync.Mutex
		ips []netip.Addr
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	sweep := func(every time.Duration, ips func() []netip.Addr) {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				list := ips()
				if len(list) == 0 {
					continue
				}
				gap := every / time.Duration(len(list)+1)
				for _, ip := range list {
					w.probe(ip)
					time.Sleep(gap)
				}
			}
		}
	}
	wg.Add(3)
	go sweep(50*time.Millisecond, func() []netip.Addr { return v4 })
	go sweep(2*time.Second, func() []netip.Addr { return v6 })
	go sweep(20*time.Millisecond, func() []netip.Addr { focus.Lock(); defer focus.Unlock(); return focus.ips })
	start := time.Now()
	// When each node's speaker was told to stop, had exited, and was ready
	// again: a double owner is charged to the phase it falls in.
	type phases struct{ stop, exited, ready time.Time }
	at := map[string]phases{}
	var restartErr error
	for _, n := range e.lab.Nodes {
		if ctx.Err() != nil {
			restartErr = ctx.Err()
			break
		}
		focus.Lock()
		focus.ips = mine[n.Name]
		focus.Unlock()
		ph := phases{stop: time.Now()}
		e.h.Speaker(n.Name).Stop()
		ph.exited = time.Now()
		err := e.h.StartSpeaker(n)
		ph.ready = time.Now()
		at[n.Name] = ph
		if err != nil {
			restartErr = err
			break
		}
		time.Sleep(2 * time.Second)
	}
	focus.Lock()
	focus.ips = nil
	focus.Unlock()
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	probes, ds := w.doubles()
	byMAC := macNode(e.lab.Nodes)
	// Which restart a double falls in: the handover (stop sent, old process
	// still running), the return (new process started, up to 2 s after
	// ready), or neither.
	phase := func(d double) (string, string) {
		for _, n := range e.lab.Nodes {
			ph, ok := at[n.Name]
			if !ok {
				continue
			}
			switch {
			case !d.at.Before(ph.stop) && d.at.Before(ph.exited):
				return "handover", n.Name
			case !d.at.Before(ph.exited) && d.at.Before(ph.ready.Add(2*time.Second)):
				return "return", n.Name
			}
		}
		return "other", ""
	}
	byPhase := map[string]int{}
	for i, d := range ds {
		p, node := phase(d)
		byPhase[p]++
		if i >= 10 {
			continue
		}
		var names []string
		for _, m := range d.macs {
			names = append(names, byMAC[m])
		}
		fmt.Fprintf(os.Stderr, "scalebench: double owner: %s (owner %s) answered by %v at +%.3fs, during the %s of %s (stop at +%.3fs)\n",
			d.ip, owner[d.ip], names, d.at.Sub(start).Seconds(), p, node, at[node].stop.Sub(start).Seconds())
	}
	if len(ds) > 10 {
		fmt.Fprintf(os.Stderr, "scalebench: ... %d more double owners\n", len(ds)-10)
	}
	r.Add("double_owners", float64(len(ds)), "count", fmt.Sprintf("probes answered by more than one MAC through a rolling restart of all %d speakers (%.0fs, %d probes: every IPv4 address every 50 ms, IPv6 every 2 s, the restarting node's addresses every 20 ms): %d while a stopping speaker hands over (SIGTERM to exit), %d while a restarted one takes its addresses back (start to 2 s after ready), %d otherwise",
		len(e.lab.Nodes), time.Since(start).Seconds(), probes, byPhase["handover"], byPhase["return"], byPhase["other"]))
	r.Add("double_owners_handover", float64(byPhase["handover"]), "count", "double_owners while a stopping speaker hands over")
	r.Add("double_owners_return", float64(byPhase["return"]), "count", "double_owners while a restarted speaker takes its addresses back")
	return restartErr
}
