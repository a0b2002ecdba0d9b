package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/e2etest/benchkit"
	"github.com/heraldlb/herald/e2etest/herald"
	"github.com/heraldlb/herald/e2etest/lab"
)

const (
	svcNS      = "scale"
	lanPool6   = "2001:db8:1::1:0/112"
	extraRange = "2001:db8:1::2:0/120" // added to and removed from the pool to force full re-plans
)

// servicesPart: o.services Services on 3 speaker-only nodes.
func servicesPart(ctx context.Context, o options, r *benchkit.Report) error {
	e, err := up(ctx, o, lab.Config{SpeakerNodes: 3, ProxyMode: "none", AuditWrites: true})
	if err != nil {
		return err
	}
	defer e.down()
	l, c := e.lab, e.c
	nodes := l.Nodes
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: svcNS}}); err != nil {
		return err
	}
	if err := pool(ctx, c, "scale", lanPool6); err != nil {
		return err
	}
	n := o.services
	name := func(i int) string { return fmt.Sprintf("s%05d", i) }
	start := time.Now()
	if err := benchkit.CreateAll(ctx, c, "Services with an EndpointSlice", n, 32, benchkit.Prefixed(os.Stderr, "scalebench: "), func(i int) []client.Object {
		return []client.Object{lbService(svcNS, name(i), "scale", corev1.IPv6Protocol), endpointSlice(svcNS, name(i), nodes[i%len(nodes)].Name, i)}
	}); err != nil {
		return err
	}
	var ips map[string]netip.Addr
	if err := benchkit.WaitFor(ctx, 10*time.Minute, 5*time.Second, func() bool {
		ips, err = assigned(ctx, c, svcNS)
		return err == nil && len(ips) == n
	}); err != nil {
		return fmt.Errorf("%d of %d Services got an address: %w", len(ips), n, err)
	}
	fmt.Fprintf(os.Stderr, "scalebench: %d Services assigned %.0fs after the first create\n", n, time.Since(start).Seconds())

	// Settled: every address announced, by the speakers' own count when
	// they export it, else by the Announcements.
	settle := time.Now()
	var owner map[netip.Addr]string
	if err := benchkit.WaitFor(ctx, 15*time.Minute, 5*time.Second, func() bool {
		if byNode, ok := ownedByMetrics(ctx, nodes); ok && sum(byNode) < n {
			return false
		}
		owner, _, err = announced(ctx, c)
		return err == nil && len(owner) == n
	}); err != nil {
		return fmt.Errorf("%d of %d addresses announced: %w", len(owner), n, err)
	}
	fmt.Fprintf(os.Stderr, "scalebench: every address announced %.0fs after the last was assigned\n", time.Since(settle).Seconds())
	r.Add("speaker_announcements_settled", time.Since(settle).Seconds(), "s", fmt.Sprintf("%d Services: last address assigned -> every address has its Announcement", n))
	time.Sleep(20 * time.Second) // let the last writes and GC pass

	// At rest.
	idle, err := atRest(ctx, e, o, r)
	if err != nil {
		return err
	}
	if err := profileAtRest(nodes[0]); err != nil {
		return fmt.Errorf("profiles of %s's speaker: %w", nodes[0].Name, err)
	}
	if err := serviceChanges(ctx, e, o, idle, r); err != nil {
		return err
	}
	if err := fullReplans(ctx, e, o, idle, r); err != nil {
		return err
	}
	if err := startToAnnounced(ctx, e, owner, r); err != nil {
		return err
	}
	return nodeFailure(ctx, e, n, r)
}

// countLines counts the lines of a file that contain s.
func countLines(path, s string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return strings.Count(string(b), s)
}

func sum(m map[string]int) int {
	t := 0
	for _, v := range m {
		t += v
	}
	return t
}

// atRest measures CPU, RSS and API writes over o.idle with nothing changing,
// and returns each speaker's CPU rate at rest (CPU seconds per second).
func atRest(ctx context.Context, e *env, o options, r *benchkit.Report) (map[string]float64, error) {
	nodes := e.lab.Nodes
	from := time.Now()
	cpu0 := cpuAll(e.h, nodes)
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(o.idle):
	}
	cpu1 := cpuAll(e.h, nodes)
	to := time.Now()
	el := to.Sub(from).Seconds()
	idle := map[string]float64{}
	var rates, rss, anon, file []float64
	for _, n := range nodes {
		idle[n.Name] = (cpu1[n.Name] - cpu0[n.Name]) / el
		rates = append(rates, 100*idle[n.Name])
		if m, err := herald.StatusMiB(e.h.Speaker(n.Name).PID(), "VmRSS", "RssAnon", "RssFile"); err == nil {
			rss, anon, file = append(rss, m[0]), append(anon, m[1]), append(file, m[2])
		}
	}
	r.Add("speaker_idle_cpu_"+scaleName(o.services), slices.Max(rates), "%", fmt.Sprintf("max over %d speakers of CPU %% of a core over %.0fs at rest (all: %s)", len(nodes), el, fmtList(rates, "%.2f")))
	r.Add("speaker_rss_"+scaleName(o.services), slices.Max(rss), "MiB", fmt.Sprintf("max VmRSS over %d speakers at rest (all: %s)", len(nodes), fmtList(rss, "%.1f")))
	if len(rss) == len(nodes) {
		r.Add("speaker_rss_anon_"+scaleName(o.services), slices.Max(anon), "MiB", fmt.Sprintf("of it, max RssAnon (heap, stacks) (all: %s)", fmtList(anon, "%.1f")))
		r.Add("speaker_rss_file_"+scaleName(o.services), slices.Max(file), "MiB", fmt.Sprintf("of it, max RssFile (the mapped binary; this kernel maps it in 2 MiB pages) (all: %s)", fmtList(file, "%.1f")))
	}
	ws, err := e.lab.Writes(from, to, isSpeaker)
	if err != nil {
		return nil, err
	}
	r.Add("speaker_writes_per_min_at_rest", float64(len(ws))/to.Sub(from).Minutes(), "writes/min", fmt.Sprintf("all %d speakers together, from the API server's audit log over %.0fs: %s", len(nodes), el, writesBy(ws)))
	return idle, nil
}

// profileAtRest takes a heap profile and a 30 s CPU profile of n's speaker
// at rest, keeps them in a directory of their own (printed) and prints
// pprof's top entries: what the goals on RSS and idle CPU are up against.
func profileAtRest(n lab.Node) error {
	dir, err := os.MkdirTemp("", "scalebench-profiles-")
	if err != nil {
		return err
	}
	c := herald.SpeakerHTTPClient(n)
	c.Timeout = time.Minute
	base := "http://" + herald.SpeakerPprof + "/debug/pprof/"
	heap, cpu := filepath.Join(dir, "heap.pb.gz"), filepath.Join(dir, "cpu.pb.gz")
	if err := benchkit.SaveProfile(c, base+"heap?gc=1", heap); err != nil {
		return err
	}
	if err := benchkit.SaveProfile(c, base+"profile?seconds=30", cpu); err != nil {
		return err
	}
	for _, p := range []struct{ file, index, what string }{
		{heap, "inuse_space", "heap in use at rest"},
		{heap, "alloc_space", "allocated since start"},
		{cpu, "cpu", "CPU over 30 s at rest"},
	} {
		top, err := benchkit.PprofTop(p.file, p.index, 25)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "scalebench: %s's speaker, %s (go tool pprof -sample_index=%s %s):\n%s\n", n.Name, p.what, p.index, p.file, top)
	}
	return nil
}

// profileStart takes a CPU profile of n's speaker from as soon as its
// profiler answers (the manager starts it before the caches sync) for 20 s,
// and prints pprof's top entries: what a start spends its time on.
func profileStart(n lab.Node) <-chan error {
	done := make(chan error, 1)
	go func() {
		dir, err := os.MkdirTemp("", "scalebench-profiles-")
		if err != nil {
			done <- err
			return
		}
		file := filepath.Join(dir, "cpu-start.pb.gz")
		c := herald.SpeakerHTTPClient(n)
		c.Timeout = time.Minute
		deadline := time.Now().Add(30 * time.Second)
		for {
			err = benchkit.SaveProfile(c, "http://"+herald.SpeakerPprof+"/debug/pprof/profile?seconds=20", file)
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			done <- err
			return
		}
		top, err := benchkit.PprofTop(file, "cpu", 30)
		if err == nil {
			fmt.Fprintf(os.Stderr, "scalebench: %s's speaker, CPU over its first 20 s (go tool pprof -top -cum %s for the callers):\n%s\n", n.Name, file, top)
		}
		done <- err
	}()
	return done
}

// scaleName names figures by their Service count: 10k for the issue's
// 10,000 (the names tools read), the plain count for other runs.
func scaleName(n int) string {
	if n == 10000 {
		return "10k"
	}
	return fmt.Sprint(n)
}

func fmtList(v []float64, f string) string {
	s := ""
	for i, x := range v {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf(f, x)
	}
	return s
}

// syncStats reads the speakers' sync histograms for scope.
func syncStats(ctx context.Context, nodes []lab.Node, scope string) (count, seconds, syncs float64, ok bool) {
	for _, n := range nodes {
		m, err := scrape(ctx, n)
		if err != nil {
			return 0, 0, 0, false
		}
		c, ok1 := m.Get(mSyncDuration+"_count", `scope="`+scope+`"`)
		s, _ := m.Get(mSyncDuration+"_sum", `scope="`+scope+`"`)
		t, _ := m.Get(mSyncs, `scope="`+scope+`"`)
		if !ok1 {
			return 0, 0, 0, false
		}
		count, seconds, syncs = count+c, seconds+s, syncs+t
	}
	return count, seconds, syncs, true
}

// changeRate is how many Service changes a second serviceChanges makes: fast
// enough that the changes' CPU stands well above the noise of the rate at
// rest, slow enough that each is its own event.
const changeRate = 50

// serviceChanges edits o.changes Services one at a time (the port, as a
// user editing a Service would) and charges each speaker's CPU above its
// rate at rest to them.
func serviceChanges(ctx context.Context, e *env, o options, idle map[string]float64, r *benchkit.Report) error {
	nodes := e.lab.Nodes
	c0, s0, _, okM := syncStats(ctx, nodes, "partial")
	cpu0 := cpuAll(e.h, nodes)
	from := time.Now()
	for i := range o.changes {
		port := 81 + i%2
		patch := fmt.Sprintf(`[{"op":"replace","path":"/spec/ports/0/port","value":%d}]`, port)
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: svcNS, Name: fmt.Sprintf("s%05d", (i*7919)%o.services)}}
		if err := e.c.Patch(ctx, svc, client.RawPatch(types.JSONPatchType, []byte(patch))); err != nil {
			return fmt.Errorf("change %d: %w", i, err)
		}
		time.Sleep(time.Until(from.Add(time.Duration(i+1) * time.Second / changeRate)))
	}
	time.Sleep(5 * time.Second)
	cpu1 := cpuAll(e.h, nodes)
	el := time.Since(from).Seconds()
	var per []float64
	for _, n := range nodes {
		extra := cpu1[n.Name] - cpu0[n.Name] - idle[n.Name]*el
		per = append(per, 1000*extra/float64(o.changes))
	}
	r.Add("speaker_change_cpu", mean(per), "ms", fmt.Sprintf("speaker CPU above its rate at rest per Service change (port edit), mean over %d speakers of %d changes at %d/s (each: %s)", len(nodes), o.changes, changeRate, fmtList(per, "%.3f")))
	if c1, s1, _, ok := syncStats(ctx, nodes, "partial"); ok && okM && c1 > c0 {
		r.Add("speaker_partial_sync_ms", 1000*(s1-s0)/(c1-c0), "ms", fmt.Sprintf("%s{scope=partial}: mean wall time of one plan+apply pass, %0.f passes for %d changes on %d speakers", mSyncDuration, c1-c0, o.changes, len(nodes)))
	} else {
		r.Skip("speaker_partial_sync_ms", "the speaker does not export "+mSyncDuration+`{scope="partial"} (old core) or made no partial sync`)
	}
	return nil
}

// fullReplans edits the pool o.replans times (a configuration change, which
// re-plans every address) and charges each speaker's CPU above rest to them.
func fullReplans(ctx context.Context, e *env, o options, idle map[string]float64, r *benchkit.Report) error {
	nodes := e.lab.Nodes
	c0, s0, _, okM := syncStats(ctx, nodes, "full")
	cpu0 := cpuAll(e.h, nodes)
	from := time.Now()
	for i := range o.replans {
		var p v1alpha1.IPAddressPool
		if err := e.c.Get(ctx, client.ObjectKey{Name: "scale"}, &p); err != nil {
			return err
		}
		if i%2 == 0 {
			p.Spec.Addresses = []string{lanPool6, extraRange}
		} else {
			p.Spec.Addresses = []string{lanPool6}
		}
		if err := e.c.Update(ctx, &p); err != nil {
			return fmt.Errorf("pool edit %d: %w", i, err)
		}
		time.Sleep(3 * time.Second)
	}
	time.Sleep(5 * time.Second)
	cpu1 := cpuAll(e.h, nodes)
	el := time.Since(from).Seconds()
	replans := float64(o.replans)
	how := fmt.Sprintf("%d pool edits, 3s apart", o.replans)
	c1, s1, _, ok := syncStats(ctx, nodes, "full")
	if ok && okM && c1 > c0 {
		replans = (c1 - c0) / float64(len(nodes))
		how += fmt.Sprintf(", %.1f full syncs per speaker counted by %s", replans, mSyncDuration)
		r.Add("speaker_full_sync_ms", 1000*(s1-s0)/(c1-c0), "ms", fmt.Sprintf("%s{scope=full}: mean wall time of one full plan+apply pass at %d Services", mSyncDuration, o.services))
	} else {
		r.Skip("speaker_full_sync_ms", "the speaker does not export "+mSyncDuration+`{scope="full"} (old core); CPU is charged to one re-plan per edit`)
	}
	var per []float64
	for _, n := range nodes {
		extra := cpu1[n.Name] - cpu0[n.Name] - idle[n.Name]*el
		per = append(per, 1000*extra/replans)
	}
	r.Add("speaker_replan_cpu", mean(per), "ms", fmt.Sprintf("speaker CPU above rest per full re-plan at %d Services, mean over %d speakers (%s; each: %s)", o.services, len(nodes), how, fmtList(per, "%.1f")))
	return nil
}

func mean(v []float64) float64 {
	t := 0.0
	for _, x := range v {
		t += x
	}
	return t / float64(len(v))
}

// startToAnnounced restarts the last node's speaker and times, from its
// start, until the client has seen it announce (gratuitous ARP or
// unsolicited NA, or an answer to a probe) every address it owned before.
func startToAnnounced(ctx context.Context, e *env, owner map[netip.Addr]string, r *benchkit.Report) error {
	n := e.lab.Nodes[len(e.lab.Nodes)-1]
	var mine []netip.Addr
	for ip, o := range owner {
		if o == n.Name {
			mine = append(mine, ip)
		}
	}
	w, err := newWire()
	if err != nil {
		return err
	}
	defer w.close()
	e.h.Speaker(n.Name).Stop()
	time.Sleep(5 * time.Second) // the others have taken its addresses over
	w.reset()
	start := time.Now()
	profiled := profileStart(n)
	if err := e.h.StartSpeaker(n); err != nil {
		return err
	}
	ready := time.Since(start)
	// Probe what has not been heard from it yet, a sweep at a time, while
	// listening for its announcements.
	var last time.Time
	var metricsAt time.Duration
	missing := len(mine)
	err = benchkit.WaitFor(ctx, 3*time.Minute, 0, func() bool {
		if metricsAt == 0 {
			if byNode, ok := ownedByMetrics(ctx, []lab.Node{n}); ok && byNode[n.Name] >= len(mine) {
				metricsAt = time.Since(start)
			}
		}
		missing = 0
		for _, ip := range mine {
			at, ok := w.firstFrom(ip, n.MAC, start, false)
			if !ok {
				missing++
				w.probe(ip)
				time.Sleep(200 * time.Microsecond)
				continue
			}
			if at.After(last) {
				last = at
			}
		}
		return missing == 0
	})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	what := fmt.Sprintf("speaker of %s restarted with %d Services in the cluster: process start -> the client has heard it announce (unsolicited, or answering a probe) all %d addresses it owns (ready after %.0f ms)", n.Name, len(owner), len(mine), float64(ready.Milliseconds()))
	if err == nil {
		r.Add("speaker_start_announced", float64(last.Sub(start).Milliseconds()), "ms", what)
	} else {
		why := fmt.Sprintf("%d of the %d addresses %s owns were never heard from it within 3 min of its start", missing, len(mine), n.Name)
		if joins := countLines(e.h.Logs("herald-speaker-"+n.Name), "joining a solicited-node multicast group"); joins > 0 {
			why += fmt.Sprintf("; its log has %d failures joining a solicited-node multicast group (NDP solicitations for those addresses never reach it)", joins)
		}
		r.Skip("speaker_start_announced", why)
		r.Add("speaker_start_unanswered", float64(missing), "addresses", why)
		r.Add("speaker_start_announced_partial", float64(last.Sub(start).Milliseconds()), "ms", fmt.Sprintf("as speaker_start_announced, for the %d addresses that were heard", len(mine)-missing))
	}
	if err := <-profiled; err != nil {
		fmt.Fprintf(os.Stderr, "scalebench: no CPU profile of the start: %v\n", err)
	}
	if metricsAt > 0 {
		r.Add("speaker_start_owned_metric", float64(metricsAt.Milliseconds()), "ms", "process start -> "+mOwned+" reaches the addresses it owned before")
	} else {
		r.Skip("speaker_start_owned_metric", fmt.Sprintf("%s was not read at %d (not exported, or not scraped in time) before the client had heard every address", mOwned, len(mine)))
	}
	return nil
}

// nodeFailure kills the last node (off the LAN and the API server) and
// counts the survivors' API writes until the Announcements are right again.
func nodeFailure(ctx context.Context, e *env, n int, r *benchkit.Report) error {
	dead := e.lab.Nodes[len(e.lab.Nodes)-1]
	// The Announcements lag what the speakers decide (their own queue):
	// wait until they agree with the speakers' counts, or stand still.
	var owner map[netip.Addr]string
	prev, still := -1, 0
	err := benchkit.WaitFor(ctx, 5*time.Minute, 2*time.Second, func() bool {
		var err error
		if owner, _, err = announced(ctx, e.c); err != nil || len(owner) != n {
			return false
		}
		c := perNode(owner, nil)[dead.Name]
		if byNode, ok := ownedByMetrics(ctx, []lab.Node{dead}); ok {
			return c == byNode[dead.Name]
		}
		if c == prev {
			still++
		} else {
			prev, still = c, 0
		}
		return still >= 3
	})
	if err != nil {
		return fmt.Errorf("Announcements before the node failure: %w", err)
	}
	moved := perNode(owner, nil)[dead.Name]
	from := time.Now()
	if err := e.lab.SetNodeDead(dead.Name, true); err != nil {
		return err
	}
	defer e.lab.SetNodeDead(dead.Name, false)
	var settled time.Duration
	err = benchkit.WaitFor(ctx, 10*time.Minute, 2*time.Second, func() bool {
		owner, _, err := announced(ctx, e.c)
		if err != nil || len(owner) != n {
			return false
		}
		if perNode(owner, nil)[dead.Name] > 0 {
			return false
		}
		settled = time.Since(from)
		return true
	})
	if err != nil {
		return fmt.Errorf("after %s died, the Announcements never all named live nodes: %w", dead.Name, err)
	}
	time.Sleep(10 * time.Second) // late writes (events, retries)
	ws, err := e.lab.Writes(from, time.Now(), isSpeaker)
	if err != nil {
		return err
	}
	r.Add("speaker_writes_node_failure", float64(len(ws)), "writes", fmt.Sprintf("%s died (LAN and API server cut) owning %d of %d addresses: the surviving speakers' writes until every Announcement names a live node (%.0fs) + 10s: %s", dead.Name, moved, n, settled.Seconds(), writesBy(ws)))
	r.Add("speaker_node_failure_announcements_s", settled.Seconds(), "s", "node death -> every Announcement names a live node")
	return nil
}
