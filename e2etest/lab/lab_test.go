package lab

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldlb/herald/internal/bgprouter"
)

// childEnv makes the test binary act as a lab that gets SIGKILLed.
const childEnv = "HERALD_LAB_CRASH_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		cfg, err := DefaultConfig()
		if err == nil {
			// With routers, when installed: their daemons must not outlive
			// a crashed lab either.
			cfg.Nodes, cfg.Routers = 2, len(bgprouter.Missing()) == 0
			_, err = Up(context.Background(), cfg)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "child lab:", err)
			os.Exit(1)
		}
		_ = os.WriteFile(filepath.Join(cfg.Dir, "ready"), []byte(fmt.Sprint(os.Getpid())), 0o644)
		select {} // until killed
	}
	os.Exit(m.Run())
}

func needRoot(t *testing.T) Config {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root (network namespaces)")
	}
	cfg, err := DefaultConfig()
	if err != nil {
		t.Fatal(err)
	}
	if pid := Running(cfg.Dir); pid != 0 {
		t.Fatalf("a lab is running (pid %d); stop it with make lab-down before running the tests", pid)
	}
	return cfg
}

func hostLinks(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			names = append(names, strings.TrimSuffix(f[1], ":"))
		}
	}
	slices.Sort(names)
	return names
}

func TestDownLeavesNothingBehind(t *testing.T) {
	cfg := needRoot(t)
	cfg.Nodes = 2
	linksBefore := hostLinks(t)
	l, err := Up(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	// A running pod adds a namespace and a veth pair that Down must remove.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}},
	}
	if _, err := l.Client.CoreV1().Pods("default").Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		l.Down()
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		p, err := l.Client.CoreV1().Pods("default").Get(context.Background(), "p", metav1.GetOptions{})
		if err == nil && p.Status.PodIP != "" {
			break
		}
		if time.Now().After(deadline) {
			l.Down()
			t.Fatal("pod never got an IP")
		}
		time.Sleep(50 * time.Millisecond)
	}
	during, _ := FindLeftovers(cfg.Dir, cfg.BinDir)
	if len(during.Namespaces) != 2+2+1 || len(during.Processes) < 5 {
		t.Errorf("while up: %s; want lan, client, 2 nodes, 1 pod namespace and >= 5 processes", during)
	}
	l.Down()
	left, err := FindLeftovers(cfg.Dir, cfg.BinDir)
	if err != nil {
		t.Fatal(err)
	}
	if !left.Empty() {
		t.Errorf("after Down: %s", left)
	}
	if after := hostLinks(t); !slices.Equal(linksBefore, after) {
		t.Errorf("links in the machine's namespace changed: before %v, after %v", linksBefore, after)
	}
	for _, f := range stateFiles {
		if _, err := os.Stat(filepath.Join(cfg.Dir, f)); err == nil {
			t.Errorf("state file %s left in %s", f, cfg.Dir)
		}
	}
}

func TestNextUpCleansUpAfterACrashedLab(t *testing.T) {
	cfg := needRoot(t)
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), childEnv+"=1")
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for Running(cfg.Dir) != child.Process.Pid {
		if time.Now().After(deadline) {
			_ = child.Process.Kill()
			t.Fatal("child lab never became ready")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	crashed, _ := FindLeftovers(cfg.Dir, cfg.BinDir)
	if len(crashed.Namespaces) == 0 {
		t.Fatalf("a SIGKILLed lab left no namespaces; the test does not test anything")
	}
	t.Logf("a crashed lab left %s", crashed)
	routers := filepath.Join(cfg.Dir, "routers")
	if len(bgprouter.Missing()) == 0 && !slices.Contains(crashed.Namespaces, FRRNetns) {
		t.Errorf("the crashed lab ran no routers (namespaces %v); the test does not test their clean-up", crashed.Namespaces)
	}

	cfg.Nodes = 1
	l, err := Up(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Up after a crash: %v", err)
	}
	if _, err := l.Client.CoreV1().Nodes().Get(context.Background(), "node-2", metav1.GetOptions{}); err == nil {
		t.Errorf("the crashed lab's node-2 survived into the new lab's API server")
	}
	l.Down()
	if left, _ := FindLeftovers(cfg.Dir, cfg.BinDir); !left.Empty() {
		t.Errorf("after Down: %s", left)
	}
	if procs := processesNaming(routers); len(procs) > 0 {
		t.Errorf("the crashed lab's router processes survived: %v", procs)
	}
}

func TestUpRefusesRangesTheMachineUses(t *testing.T) {
	for _, tc := range []struct {
		out  string
		want []string
	}{
		{"2: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0", []string{"192.0.2.2/24", "192.0.2.255"}},
		{"default via 192.0.2.1 dev eth0\n198.51.100.0/24 dev br0 proto kernel", []string{"192.0.2.1", "198.51.100.0/24"}},
		{"2: eth0    inet6 fd00::2/64 scope global", []string{"fd00::2/64"}},
	} {
		if got := prefixesIn(tc.out); !slices.Equal(got, tc.want) {
			t.Errorf("prefixesIn(%q) = %v, want %v", tc.out, got, tc.want)
		}
	}
	for _, tc := range []struct {
		host    []string
		refuses bool
	}{
		{[]string{"192.0.2.2/24", "fd00::2/64", "0.0.0.0/0", "::/0"}, false},
		{[]string{"198.51.100.7"}, true},
		{[]string{"203.0.0.0/16"}, true},
		{[]string{"2001:db8:1::/48"}, true},
		{[]string{"2001:db9::1"}, false},
	} {
		if err := overlapsLab(tc.host); (err != nil) != tc.refuses {
			t.Errorf("host %v: overlapsLab = %v, want refusal %v", tc.host, err, tc.refuses)
		}
	}
}

func TestAddressPlanHoldsMaxNodesInDocumentationRanges(t *testing.T) {
	doc := []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8::/32")}
	inDoc := func(a netip.Addr) bool {
		for _, p := range doc {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	lan4, lan6 := netip.MustParsePrefix(LANv4Prefix), netip.MustParsePrefix(LANv6Prefix)
	// What the tests take from the LAN: the routers, the client and the
	// layer-2 pool range. No node may sit on any of them.
	reserved := map[netip.Addr]string{
		netip.MustParseAddr(ClientIPv4): "client", netip.MustParseAddr(ClientIPv6): "client",
		netip.MustParseAddr(FRRIPv6): "routers", netip.MustParseAddr(BIRDIPv6): "routers",
	}
	for _, a := range []string{FRRIPv4, BIRDIPv4} {
		if reserved[netip.MustParseAddr(a)] = "routers"; !lan4.Contains(netip.MustParseAddr(a)) {
			t.Errorf("router %s is not on the LAN", a)
		}
	}
	// The BGP client's link is its own: in the documentation ranges, apart
	// from the LAN, the pods' and the Services' ranges.
	for _, link := range []string{BGPClientLinkV4, BGPClientLinkV6} {
		lp := netip.MustParsePrefix(link)
		if !inDoc(lp.Addr()) {
			t.Errorf("BGP client link %s is outside the documentation ranges", lp)
		}
		for _, other := range []string{LANv4Prefix, LANv6Prefix, PodCIDRv4, PodCIDRv6, ServiceCIDRv4, ServiceCIDRv6, "2001:db8:4::/48"} {
			if lp.Overlaps(netip.MustParsePrefix(other)) {
				t.Errorf("BGP client link %s overlaps %s", lp, other)
			}
		}
	}
	for i := 1; i <= 9; i++ {
		reserved[netip.MustParseAddr(fmt.Sprintf("198.51.100.%d", i))] = "routers"
	}
	for i := 64; i <= 99; i++ {
		reserved[netip.MustParseAddr(fmt.Sprintf("198.51.100.%d", i))] = "layer-2 pools"
	}
	pools6 := netip.MustParsePrefix("2001:db8:1::1:0/112")
	for _, split := range [][2]int{{MaxPodNodes, MaxNodes - MaxPodNodes}, {3, MaxNodes - 3}, {0, MaxNodes}} {
		nodes, err := planNodes(split[0], split[1])
		if err != nil {
			t.Fatalf("%d pod + %d speaker-only nodes: %v", split[0], split[1], err)
		}
		if len(nodes) != MaxNodes {
			t.Fatalf("planned %d nodes, want %d", len(nodes), MaxNodes)
		}
		seen := map[netip.Addr]string{}
		macs := map[string]string{ClientMAC: "client", FRRMAC: "FRR", BIRDMAC: "BIRD"}
		for _, n := range nodes {
			addrs := []netip.Addr{n.IPv4, n.IPv6}
			if !lan4.Contains(n.IPv4) || !lan6.Contains(n.IPv6) || pools6.Contains(n.IPv6) {
				t.Errorf("%s at %s, %s: not on the LAN or inside the pool range", n.Name, n.IPv4, n.IPv6)
			}
			if n.SpeakerOnly != (n.Index > split[0]) || n.SpeakerOnly == n.PodCIDRv4.IsValid() {
				t.Errorf("%s: speaker-only %v with pod CIDR %s, in a lab of %d pod nodes", n.Name, n.SpeakerOnly, n.PodCIDRv4, split[0])
			}
			if !n.SpeakerOnly {
				addrs = append(addrs, podGateway(n.PodCIDRv4), podGateway(n.PodCIDRv6))
				for s := range podSlots {
					addrs = append(addrs, podAddr(n.PodCIDRv4, s), podAddr(n.PodCIDRv6, s))
				}
				// The last slot is the /28's last host, just below its broadcast address.
				if last := podAddr(n.PodCIDRv4, podSlots-1); !n.PodCIDRv4.Contains(last) || last.As4()[3]%16 != 14 {
					t.Errorf("%s: last pod address %s is not the last host of %s", n.Name, last, n.PodCIDRv4)
				}
			}
			for _, a := range addrs {
				if !inDoc(a) {
					t.Errorf("%s uses %s, outside the documentation ranges", n.Name, a)
				}
				if other, dup := seen[a]; dup {
					t.Errorf("%s used by %s and %s", a, n.Name, other)
				}
				if what, ok := reserved[a]; ok {
					t.Errorf("%s uses %s, reserved for the %s", n.Name, a, what)
				}
				seen[a] = n.Name
			}
			for _, mac := range []string{n.MAC, n.BridgeMAC} {
				if mac == "" {
					continue
				}
				if other, dup := macs[mac]; dup {
					t.Errorf("MAC %s used by %s and %s", mac, n.Name, other)
				}
				macs[mac] = n.Name
			}
			if n.SpeakerOnly != (n.BridgeMAC == "") {
				t.Errorf("%s: speaker-only %v with pod bridge MAC %q", n.Name, n.SpeakerOnly, n.BridgeMAC)
			}
		}
	}
	for _, bad := range [][2]int{{MaxPodNodes + 1, 0}, {3, MaxNodes - 2}, {0, 0}, {-1, 4}} {
		if _, err := planNodes(bad[0], bad[1]); err == nil {
			t.Errorf("%d pod + %d speaker-only nodes: planned, want a refusal", bad[0], bad[1])
		}
	}
}

// TestSpeakerOnlyNodesJoinTheLANWithoutPods brings up a lab of one pod node
// and MaxNodes-1 speaker-only nodes: every node is Ready, reaches the client
// over the LAN and the API server through its forwarder; speaker-only nodes
// have no pod CIDR, kube-proxy or pod bridge, and pods land on the pod node.
// A node-death cut takes a node off the LAN and away from the API server.
func TestSpeakerOnlyNodesJoinTheLANWithoutPods(t *testing.T) {
	cfg := needRoot(t)
	cfg.Nodes, cfg.SpeakerNodes, cfg.ProxyMode = 1, MaxNodes-1, "none"
	ctx := context.Background()
	l, err := Up(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Down()
	nodes, err := l.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != MaxNodes {
		t.Fatalf("%d Node objects, want %d", len(nodes.Items), MaxNodes)
	}
	for _, n := range nodes.Items {
		ln, _ := l.Node(n.Name)
		if !NodeReady(&n) || (ln.SpeakerOnly != (n.Spec.PodCIDR == "")) {
			t.Errorf("node %s: Ready %v, pod CIDR %q, speaker-only %v", n.Name, NodeReady(&n), n.Spec.PodCIDR, ln.SpeakerOnly)
		}
	}
	for _, n := range []Node{l.Nodes[1], l.Nodes[len(l.Nodes)-1]} {
		if out, err := exec.Command("ip", "netns", "exec", n.Netns, "arping", "-c1", "-w2", "-I", "eth0", ClientIPv4).CombinedOutput(); err != nil {
			t.Errorf("%s cannot reach the client: %v %s", n.Name, err, out)
		}
		if out, _ := exec.Command("ip", "-n", n.Netns, "-o", "link", "show", "cbr0").CombinedOutput(); !strings.Contains(string(out), "does not exist") {
			t.Errorf("speaker-only %s has a pod bridge: %s", n.Name, out)
		}
		if !l.nodeReachesAPI(n) {
			t.Errorf("%s does not reach the API server", n.Name)
		}
	}
	// Pods go to the one pod node only.
	for i := range 3 {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i), Namespace: "default"},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}},
		}
		if _, err := l.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		pods, err := l.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		running := 0
		for _, p := range pods.Items {
			if p.Spec.NodeName != "" && p.Spec.NodeName != l.Nodes[0].Name {
				t.Fatalf("pod %s bound to speaker-only %s", p.Name, p.Spec.NodeName)
			}
			if p.Status.PodIP != "" {
				running++
			}
		}
		if err == nil && running == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 3 pods running on %s", running, l.Nodes[0].Name)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The prober sees which node answers an address, in both families: here
	// the kernel of the last node, which holds the two addresses.
	owner := l.Nodes[len(l.Nodes)-1]
	v4, v6 := netip.MustParseAddr("198.51.100.120"), netip.MustParseAddr("2001:db8:1::1:120")
	if err := ipBatch(owner.Netns, "addr add "+v4.String()+"/32 dev eth0", "addr add "+v6.String()+"/128 dev eth0 nodad"); err != nil {
		t.Fatal(err)
	}
	answers := make(chan L2Answer, 16)
	pr, err := NewL2Prober(ClientNetns, func(a L2Answer) { answers <- a })
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range []netip.Addr{v4, v6} {
		if err := pr.Probe(ip); err != nil {
			t.Fatal(err)
		}
		select {
		case a := <-answers:
			if a.IP != ip || a.MAC != owner.MAC || a.Unsolicited {
				t.Errorf("probe %s: answer %+v, want a solicited answer from %s", ip, a, owner.MAC)
			}
		case <-time.After(2 * time.Second):
			t.Errorf("probe %s: no answer", ip)
		}
	}
	pr.Close()
	// Node death: off the LAN and away from the API server; then back.
	dead := l.Nodes[len(l.Nodes)-1]
	if err := l.SetNodeDead(dead.Name, true); err != nil {
		t.Fatal(err)
	}
	if l.nodeReachesAPI(dead) {
		t.Errorf("dead %s still reaches the API server", dead.Name)
	}
	if err := exec.Command("ip", "netns", "exec", dead.Netns, "arping", "-c1", "-w1", "-I", "eth0", ClientIPv4).Run(); err == nil {
		t.Errorf("dead %s still reaches the client", dead.Name)
	}
	if err := l.SetNodeDead(dead.Name, false); err != nil {
		t.Fatal(err)
	}
	if !l.nodeReachesAPI(dead) {
		t.Errorf("%s does not reach the API server after coming back", dead.Name)
	}
	if out, err := exec.Command("ip", "netns", "exec", dead.Netns, "arping", "-c1", "-w2", "-I", "eth0", ClientIPv4).CombinedOutput(); err != nil {
		t.Errorf("%s cannot reach the client after coming back: %v %s", dead.Name, err, out)
	}
}

// nodeReachesAPI reports whether the API server answers /readyz from inside n.
func (l *Lab) nodeReachesAPI(n Node) bool {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext:     DialContextIn(n.Netns),
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // reachability only
	}}
	resp, err := c.Get(fmt.Sprintf("https://127.0.0.1:%d/readyz", nodeAPIPort))
	if err != nil {
		return false
	}
	resp.Body.Close()
	return true
}

func TestKubeProxyNftablesModeForwardsNodePorts(t *testing.T) {
	cfg := needRoot(t)
	cfg.Nodes, cfg.ProxyMode = 2, "nftables"
	l, err := Up(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Down()
	ctx := context.Background()
	for i := range 2 {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("web-%d", i), Namespace: "default", Labels: map[string]string{"app": "web"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}},
		}
		if _, err := l.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	svc, err := l.Client.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("http://%s:%d/", l.Nodes[1].IPv4, svc.Spec.Ports[0].NodePort)
	seen := map[string]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for len(seen) < 2 && time.Now().Before(deadline) {
		out, err := exec.Command("ip", "netns", "exec", ClientNetns, "curl", "-sf", "--max-time", "1", url).Output()
		if err == nil {
			seen[strings.Fields(string(out))[0]] = true
		} else {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if len(seen) < 2 {
		t.Fatalf("nftables kube-proxy: %s reached %v, want both pods", url, seen)
	}
	// The rules really are nftables': kube-proxy's table exists in the node.
	out, err := exec.Command("ip", "netns", "exec", l.Nodes[1].Netns, "nft", "list", "table", "ip", "kube-proxy").CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprint(svc.Spec.Ports[0].NodePort)) {
		t.Errorf("no kube-proxy nftables table with the NodePort in %s: %v %s", l.Nodes[1].Netns, err, out)
	}
}

func TestASecondLabOnTheMachineIsRefused(t *testing.T) {
	cfg := needRoot(t)
	t.Setenv("HERALD_LAB_WAIT", "") // refused, not queued
	first, err := lockMachine("/first")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dir = t.TempDir() // another checkout: the lock is machine-wide, not per directory
	_, err = Up(context.Background(), cfg)
	first.Close()
	if err == nil || !strings.Contains(err.Error(), "another lab is running") || !strings.Contains(err.Error(), "/first") {
		t.Fatalf("Up while a lab holds the lock: %v, want a refusal naming the running lab", err)
	}
}
