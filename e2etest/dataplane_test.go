package e2etest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/e2etest/lab"
)

// The dataplane cases: Herald's own forwarding (nftables by default,
// iptables) with the lab's real kube-proxy running beside it.

// inNode runs a command in a lab node's namespace and returns its output.
func inNode(t *testing.T, node string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", nodeByName(t, node).Netns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s on %s: %v: %s", strings.Join(args, " "), node, err, out)
	}
	return string(out)
}

// heraldRules is what Herald programmed on a node: its nftables table and
// its iptables chains, "" when none.
func heraldRules(t *testing.T, node string) string {
	t.Helper()
	var b strings.Builder
	if out, err := exec.Command("ip", "netns", "exec", nodeByName(t, node).Netns, "nft", "list", "table", "inet", "herald").CombinedOutput(); err == nil {
		b.Write(out)
	}
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		for _, l := range strings.Split(inNode(t, node, save), "\n") {
			if strings.Contains(l, "HERALD") {
				b.WriteString(l + "\n")
			}
		}
	}
	return b.String()
}

var (
	nftCounters = regexp.MustCompile(`counter packets \d+ bytes \d+`)
	iptCounters = regexp.MustCompile(`\[\d+:\d+\]`)
)

// foreignRules is what a node has of other people's rules that the test
// can hold still: a canary table and chain the test adds (standing for the
// host's own rules), the jumps every table's base chains make, and
// kube-proxy's rules for the test's own namespace. (The rest of kube-proxy's
// rules change with the other tests' Services, which are deleted in the
// background.) Sorted, without counters, so that two snapshots compare
// equal when nobody else changed anything.
func foreignRules(t *testing.T, node, ns string) string {
	t.Helper()
	var lines []string
	keep := func(l string) bool {
		return strings.Contains(l, "lab-canary") || strings.Contains(l, ns+"/") ||
			strings.HasPrefix(l, "-A PREROUTING") || strings.HasPrefix(l, "-A OUTPUT") ||
			strings.HasPrefix(l, "-A POSTROUTING") || strings.HasPrefix(l, "-A INPUT") || strings.HasPrefix(l, "-A FORWARD")
	}
	inCanary := false
	for _, l := range strings.Split(inNode(t, node, "nft", "list", "ruleset"), "\n") {
		switch {
		case strings.HasPrefix(l, "table inet lab-canary "):
			inCanary = true
		case inCanary && l == "}":
			inCanary = false
		}
		if inCanary {
			lines = append(lines, nftCounters.ReplaceAllString(l, ""))
		}
	}
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		for _, l := range strings.Split(inNode(t, node, save), "\n") {
			if keep(l) && !strings.Contains(l, "HERALD") {
				lines = append(lines, save+": "+iptCounters.ReplaceAllString(l, ""))
			}
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// addCanaryRules gives a node rules of its own in nftables and iptables,
// which Herald must never touch.
func addCanaryRules(t *testing.T, node string) {
	t.Helper()
	inNode(t, node, "sh", "-c", `nft add table inet lab-canary && nft add chain inet lab-canary input '{ type filter hook input priority 0 ; }' &&
nft add rule inet lab-canary input tcp dport 9 counter accept &&
(iptables -N lab-canary 2>/dev/null || true) && iptables -F lab-canary && iptables -A lab-canary -p tcp --dport 9 -j ACCEPT &&
(iptables -C INPUT -j lab-canary 2>/dev/null || iptables -A INPUT -j lab-canary)`)
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "exec", nodeByName(t, node).Netns, "sh", "-c",
			"nft delete table inet lab-canary; iptables -D INPUT -j lab-canary; iptables -F lab-canary; iptables -X lab-canary").Run()
	})
}

// ipModeOf waits until the Service's first ingress entry has an ipMode and returns it.
func ipModeOf(t *testing.T, ns, name string) corev1.LoadBalancerIPMode {
	t.Helper()
	var mode corev1.LoadBalancerIPMode
	eventually(t, 20*time.Second, "an ipMode on "+ns+"/"+name, func(ctx context.Context) (bool, error) {
		var svc corev1.Service
		if err := crClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &svc); err != nil {
			return false, err
		}
		if in := svc.Status.LoadBalancer.Ingress; len(in) > 0 && in[0].IPMode != nil {
			mode = *in[0].IPMode
			return true, nil
		}
		return false, nil
	})
	return mode
}

// answers curls url n times from the client, each a new connection.
func answers(t *testing.T, url string, n int) []lab.Answer {
	t.Helper()
	var out []lab.Answer
	for range n {
		s, err := curl(lab.ClientNetns, url)
		if err != nil {
			t.Fatal(err)
		}
		a, err := lab.ParseAnswer(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

func distinct(as []lab.Answer, field func(lab.Answer) string) map[string]int {
	out := map[string]int{}
	for _, a := range as {
		out[field(a)]++
	}
	return out
}

// waitNodePorts waits until kube-proxy serves the Service's NodePort on
// every node: Herald's dataplane sends part of a new Service's connections
// to other nodes' NodePorts, which refuse them until their kube-proxy has
// synced (about a second after the Service appears, longer under load). A
// fault case that starts its prober before that counts kube-proxy's lag as
// the fault's (the rolling restart did: 2-10 refused of 240).
func waitNodePorts(t *testing.T, ns, name string) {
	t.Helper()
	var svc corev1.Service
	if err := crClient.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &svc); err != nil {
		t.Fatal(err)
	}
	for _, n := range theLab.Nodes {
		if n.SpeakerOnly {
			continue // no kube-proxy there
		}
		for _, fam := range svc.Spec.IPFamilies {
			addr := n.IPv4 // a single-stack Service's NodePort listens on its family's node addresses only
			if fam == corev1.IPv6Protocol {
				addr = n.IPv6
			}
			for _, p := range svc.Spec.Ports {
				curlOK(t, "http://"+netip.AddrPortFrom(addr, uint16(p.NodePort)).String()+"/")
			}
		}
	}
}

// layer2Announcers lists the nodes with a layer-2 Announcement of the Service.
func layer2Announcers(ctx context.Context, ns, svc string) ([]string, error) {
	var list v1alpha1.AnnouncementList
	if err := crClient.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	var out []string
	for _, a := range list.Items {
		if a.Spec.Service == svc && a.Spec.Mode == "layer2" {
			out = append(out, a.Spec.Node)
		}
	}
	slices.Sort(out)
	return out, nil
}

// waitRulesFor waits until node's Herald rules mention ip.
func waitRulesFor(t *testing.T, node, ip string) {
	t.Helper()
	eventually(t, 20*time.Second, "Herald's rules for "+ip+" on "+node, func(context.Context) (bool, error) {
		return strings.Contains(heraldRules(t, node), ip), nil
	})
}

// forwardedWeb exposes ns's web pods as the LoadBalancer Service "web" and
// waits until its announcing node has Herald's rules for its address and
// every node's kube-proxy serves its NodePort; it returns the address and
// that node.
func forwardedWeb(t *testing.T, ns string) (ip, owner string) {
	t.Helper()
	lbService(t, ns, "web")
	ip = externalIPs(t, ns, "web", 1)[0]
	owner, _ = announcer(t, ns, "web")
	waitRulesFor(t, owner, ip)
	waitNodePorts(t, ns, "web")
	return ip, owner
}

func TestDataplaneNftablesSpreadsOverPodsOnSeveralNodesWithIPModeProxy(t *testing.T) {
	useDataplane(t, "nftables")
	ns := newNamespace(t)
	l2Setup(t, ns, []string{"198.51.100.104/30"})
	createWeb(t, ns, "web", 3)
	pods := readyPods(t, ns, "app=web", 3)
	podNodes := map[string]bool{}
	for _, p := range pods {
		podNodes[p.Spec.NodeName] = true
	}
	ip, owner := forwardedWeb(t, ns)
	if mode := ipModeOf(t, ns, "web"); mode != corev1.LoadBalancerIPModeProxy {
		t.Errorf("ipMode %s, want Proxy: Herald's dataplane forwards, kube-proxy stays out", mode)
	}
	got := answers(t, "http://"+ip+"/", 40)
	nodes := distinct(got, func(a lab.Answer) string { return a.Node })
	if len(nodes) != len(podNodes) {
		t.Errorf("40 connections reached pods on %v, want every node with a pod %v", nodes, podNodes)
	}
	// Only the owner forwards: the others have no rule for the address.
	for _, n := range theLab.Nodes {
		if n.Name != owner && strings.Contains(heraldRules(t, n.Name), ip) {
			t.Errorf("%s, which does not receive %s, has rules for it", n.Name, ip)
		}
	}
}

func TestDataplaneLocalKeepsTheClientAddressAndAffinitySticks(t *testing.T) {
	useDataplane(t, "nftables")
	ns := newNamespace(t)
	l2Setup(t, ns, []string{"198.51.100.108/30"})
	createWeb(t, ns, "web", 3)
	readyPods(t, ns, "app=web", 3)
	lbService(t, ns, "local", func(s *corev1.Service) {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	})
	lbService(t, ns, "sticky", func(s *corev1.Service) {
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptrTo[int32](60)}}
	})
	local, sticky := externalIPs(t, ns, "local", 1)[0], externalIPs(t, ns, "sticky", 1)[0]
	owner, _ := announcer(t, ns, "local")
	waitRulesFor(t, owner, local)
	curlOK(t, "http://"+local+"/")
	for _, a := range answers(t, "http://"+local+"/", 10) {
		if host, _, _ := net.SplitHostPort(a.Client); host != lab.ClientIPv4 || a.Node != owner {
			t.Errorf("Local: pod %s on %s saw client %s; want the client's own %s, on the announcing node %s", a.Pod, a.Node, a.Client, lab.ClientIPv4, owner)
		}
	}
	stickyOwner, _ := announcer(t, ns, "sticky")
	waitRulesFor(t, stickyOwner, sticky)
	curlOK(t, "http://"+sticky+"/")
	if pods := distinct(answers(t, "http://"+sticky+"/", 15), func(a lab.Answer) string { return a.Pod }); len(pods) != 1 {
		t.Errorf("ClientIP affinity: 15 connections from one client reached %v, want one pod", pods)
	}
}

func TestDataplaneFollowsAnAddedPortAndMovedEndpoints(t *testing.T) {
	useDataplane(t, "nftables")
	ns := newNamespace(t)
	l2Setup(t, ns, []string{"198.51.100.112/30"})
	createWeb(t, ns, "web", 1)
	first := readyPods(t, ns, "app=web", 1)[0]
	lbService(t, ns, "web")
	ip := externalIPs(t, ns, "web", 1)[0]
	owner, _ := announcer(t, ns, "web")
	waitRulesFor(t, owner, ip)
	if a := curlOK(t, "http://"+ip+"/"); a.Pod != first.Name {
		t.Fatalf("answered by %s, want %s", a.Pod, first.Name)
	}
	// A port added to the Service.
	var svc corev1.Service
	if err := crClient.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "web"}, &svc); err != nil {
		t.Fatal(err)
	}
	svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "alt", Port: 8080, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP})
	if err := crClient.Update(context.Background(), &svc); err != nil {
		t.Fatal(err)
	}
	curlOK(t, "http://"+ip+":8080/")
	// The endpoint moves: its pod is replaced.
	if err := theLab.Client.CoreV1().Pods(ns).Delete(context.Background(), first.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the replacement pod to answer", func(context.Context) (bool, error) {
		s, err := curl(lab.ClientNetns, "http://"+ip+"/")
		if err != nil {
			return false, nil
		}
		a, err := lab.ParseAnswer(s)
		return err == nil && a.Pod != first.Name, nil
	})
}

func TestDataplaneShutdownRemovesExactlyItsRulesAndARestartAdoptsThem(t *testing.T) {
	useDataplane(t, "nftables")
	ns := newNamespace(t)
	l2Setup(t, ns, []string{"198.51.100.116/30"})
	createWeb(t, ns, "web", 2)
	readyPods(t, ns, "app=web", 2)
	ip, owner := forwardedWeb(t, ns)
	addCanaryRules(t, owner)
	before := foreignRules(t, owner, ns)
	if !strings.Contains(before, "lab-canary") || !strings.Contains(before, ns+"/web") {
		t.Fatalf("the snapshot of other rules on %s lacks the canary or kube-proxy's rules for the Service:\n%s", owner, before)
	}

	keepRunning(t)
	hd.Speaker(owner).Stop()
	if left := heraldRules(t, owner); left != "" {
		t.Errorf("after SIGTERM, %s still has Herald's rules:\n%s", owner, left)
	}
	if without := foreignRules(t, owner, ns); without != before {
		t.Errorf("the speaker's shutdown changed rules that are not Herald's:\nbefore:\n%s\nafter:\n%s", before, without)
	}
	curlOK(t, "http://"+ip+"/") // served by the next owner meanwhile
	if err := hd.StartSpeaker(nodeByName(t, owner)); err != nil {
		t.Fatal(err)
	}
	// The restarted speaker takes its address back and programs it once.
	eventually(t, 20*time.Second, owner+" forwarding "+ip+" again", func(ctx context.Context) (bool, error) {
		nodes, err := layer2Announcers(ctx, ns, "web")
		return err == nil && slices.Equal(nodes, []string{owner}) && strings.Contains(heraldRules(t, owner), ip), err
	})
	if n := strings.Count(heraldRules(t, owner), ip+" . tcp . 80"); n != 1 {
		t.Errorf("%s . tcp . 80 is in Herald's maps %d times after the restart, want 1:\n%s", ip, n, heraldRules(t, owner))
	}
	curlOK(t, "http://"+ip+"/")
	if after := foreignRules(t, owner, ns); after != before {
		t.Errorf("a stop and start of the speaker changed rules that are not Herald's:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// A crash leaves the rules, and the next start adopts them: nothing
	// duplicated, the address still forwarded.
	hd.Speaker(owner).Kill()
	if !strings.Contains(heraldRules(t, owner), ip) {
		t.Errorf("SIGKILL removed the rules; nothing could have")
	}
	if err := hd.StartSpeaker(nodeByName(t, owner)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, owner+" announcing "+ip+" after the crash", func(ctx context.Context) (bool, error) {
		nodes, err := layer2Announcers(ctx, ns, "web")
		t.Logf("announcers %v %v", nodes, err)
		return err == nil && slices.Equal(nodes, []string{owner}), err
	})
	curlOK(t, "http://"+ip+"/")
	if n := strings.Count(heraldRules(t, owner), ip+" . tcp . 80"); n != 1 {
		t.Errorf("after a crash and restart %s . tcp . 80 is in Herald's maps %d times, want 1", ip, n)
	}
}

func TestDataplaneIPTablesForwardsAndLeavesNoNftablesTable(t *testing.T) {
	useDataplane(t, "iptables")
	ns := newNamespace(t)
	l2Setup(t, ns, []string{"198.51.100.120/30"})
	createWeb(t, ns, "web", 3)
	readyPods(t, ns, "app=web", 3)
	ip, owner := forwardedWeb(t, ns)
	rules := heraldRules(t, owner)
	if strings.Contains(rules, "table inet herald") || !strings.Contains(rules, "HERALD-SERVICES") {
		t.Errorf("with --dataplane=iptables, Herald's rules on %s are:\n%s\nwant its iptables chains only", owner, rules)
	}
	curlOK(t, "http://"+ip+"/")
	if nodes := distinct(answers(t, "http://"+ip+"/", 30), func(a lab.Answer) string { return a.Node }); len(nodes) < 2 {
		t.Errorf("30 connections through iptables reached pods on %v only, want several nodes", nodes)
	}
}

func ptrTo[T any](v T) *T { return &v }

// useDataplane runs the test with the speakers' --dataplane set to backend,
// and puts the suite's back afterwards.
func useDataplane(t *testing.T, backend string) {
	t.Helper()
	prev := hd.Dataplane()
	if prev == backend {
		return
	}
	if err := hd.SetDataplane(backend); err != nil {
		t.Fatalf("switching the speakers to --dataplane=%s: %v", backend, err)
	}
	t.Cleanup(func() {
		if err := hd.SetDataplane(prev); err != nil {
			t.Errorf("switching the speakers back to --dataplane=%s: %v", prev, err)
		}
	})
}

// waitIPMode waits until every ingress entry of the Service has ipMode mode.
func waitIPMode(t *testing.T, ns, name string, mode corev1.LoadBalancerIPMode) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("ipMode %s on %s/%s", mode, ns, name), func(ctx context.Context) (bool, error) {
		var svc corev1.Service
		if err := crClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &svc); err != nil {
			return false, err
		}
		for _, in := range svc.Status.LoadBalancer.Ingress {
			if in.IPMode == nil || *in.IPMode != mode {
				return false, nil
			}
		}
		return len(svc.Status.LoadBalancer.Ingress) > 0, nil
	})
}

// Switching the dataplane off and on again, one speaker at a time as a
// DaemonSet rollout does, keeps the address served throughout: the
// controller follows the speakers' Leases (ipMode VIP as soon as one speaker
// runs without a dataplane, Proxy once all forward again), and an address
// with ipMode Proxy only goes to a node that forwards.
func TestDataplaneSwitchedOffAndOnAtRuntimeKeepsServing(t *testing.T) {
	useDataplane(t, "nftables")
	t.Cleanup(func() {
		if hd.Dataplane() != "nftables" {
			_ = hd.SetDataplane("nftables")
		}
	})
	ns := newNamespace(t)
	l2Setup(t, ns, []string{"198.51.100.124/30"})
	createWeb(t, ns, "web", 3)
	readyPods(t, ns, "app=web", 3)
	ip, _ := forwardedWeb(t, ns)
	waitIPMode(t, ns, "web", corev1.LoadBalancerIPModeProxy)

	p := startProber("http://"+ip+"/", 10*time.Millisecond)
	offAt := time.Now()
	if err := hd.SetDataplane("off"); err != nil {
		p.Finish()
		t.Fatal(err)
	}
	waitIPMode(t, ns, "web", corev1.LoadBalancerIPModeVIP)
	for _, n := range theLab.Nodes {
		if rules := heraldRules(t, n.Name); rules != "" {
			t.Errorf("with --dataplane=off, %s still has Herald's rules:\n%s", n.Name, rules)
		}
	}
	curlOK(t, "http://"+ip+"/") // kube-proxy forwards now
	onAt := time.Now()
	if err := hd.SetDataplane("nftables"); err != nil {
		p.Finish()
		t.Fatal(err)
	}
	waitIPMode(t, ns, "web", corev1.LoadBalancerIPModeProxy)
	// The address may still move once: while the last speaker restarts
	// without a dataplane, the others must take what it owned (an address
	// with ipMode Proxy needs a node that forwards), and it takes it back
	// when it returns with one. Whoever announces it last has the rules.
	eventually(t, 20*time.Second, "the announcing node to have Herald's rules for "+ip, func(context.Context) (bool, error) {
		owner, _ := announcer(t, ns, "web")
		return strings.Contains(heraldRules(t, owner), ip), nil
	})
	time.Sleep(time.Second)
	st := p.Finish()
	total, failed, outage := st.Total, st.Failed, st.Outage
	t.Logf("dataplane off (%s) and on again (%s), one speaker at a time: %d requests, %d failed, longest outage %s; errors %v",
		onAt.Sub(offAt).Round(time.Millisecond), time.Since(onAt).Round(time.Millisecond), total, failed, outage, st.Errors)
	// One kube-proxy sync at most (the lab's kube-proxy syncs within a second).
	if outage > 1500*time.Millisecond {
		t.Errorf("switching the dataplane left a gap of %s", outage)
	}
}
