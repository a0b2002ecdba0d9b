package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

// The real-node cluster's address plan, within the lab's (addr.go): it is
// a lab of its own, holding the machine's lab lock, so it may reuse the
// lab's LAN numbers; its namespaces carry the lab's prefix, so a crashed
// run's go with the next lab's cleanup (and the uplink with them).
//
//	203.0.113.240/30  the uplink: the machine's end (hl-rn1-up, .241: the
//	                  API server binds there) and the node's eth0 (.242,
//	                  its node IP)
//	203.0.113.224/28  the node's pod CIDR; the machine routes it via .242,
//	                  so the API server reaches the pods (webhooks)
//	198.51.100.0/25   the node's LAN: its eth1 (.11) and the client's eth0
//	                  (.100), macvlans on a veth in the client's namespace;
//	                  198.51.100.64/29 is the layer-2 pool
const (
	realNodeName     = "realnode-1"
	realNodeNetns    = nsPrefix + "rn1"
	realClientNetns  = nsPrefix + "rn1-client"
	realNodeUplink   = nsPrefix + "rn1-up"
	realNodeLANMAC   = "02:00:00:00:05:01"
	realNodeClientIP = ClientIPv4
	realNodePool     = "198.51.100.64/29"
)

var (
	realNodeHostIP  = netip.MustParseAddr("203.0.113.241")
	realNodeIP      = netip.MustParseAddr("203.0.113.242")
	realNodePodCIDR = netip.MustParsePrefix("203.0.113.224/28")
	realNodeLANIP   = netip.MustParsePrefix("198.51.100.11/25")
)

// realNodeCluster is a cluster of its own (etcd, kube-apiserver,
// kube-controller-manager on this machine) with one node, a real kubelet
// and containerd with kube-proxy beside them, and a client on the node's
// LAN. It holds the lab lock: no lab runs beside it.
type realNodeCluster struct {
	dir            string
	binDir         string // the lab's binaries (kubectl among them)
	admin          kubernetes.Interface
	adminKC        string // the admin's kubeconfig
	node           *RealNode
	image          string // the lab's pod image (labpod), imported into the node
	archive        string // that image's archive
	machineSysctls map[string]string
}

// startRealNodeCluster starts the cluster and waits until the Node is Ready
// and the default ServiceAccount exists. It skips unless HERALD_REALNODE=1
// and root; everything goes at the test's end.
func startRealNodeCluster(t *testing.T) *realNodeCluster {
	t.Helper()
	if os.Getenv(realNodeEnv) != "1" {
		t.Skipf("set %s=1 to run a real kubelet (hack/realnode.sh)", realNodeEnv)
	}
	if os.Geteuid() != 0 {
		t.Skip("a real node needs root")
	}
	cfg, err := DefaultConfig()
	if err != nil {
		t.Fatal(err)
	}
	lock, err := lockMachine(cfg.Dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() })
	if err := checkHostRanges(); err != nil {
		t.Fatal(err)
	}
	// Short: containerd's shim sockets live under it.
	dir, err := os.MkdirTemp("", "hk-rn-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs kept in %s", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	c := &realNodeCluster{dir: dir, binDir: cfg.BinDir, machineSysctls: map[string]string{}}
	// The kubelet must leave the machine's kernel settings alone.
	for k := range kernelDefaults {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			t.Fatal(err)
		}
		c.machineSysctls[k] = strings.TrimSpace(string(b))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	startRealNodeNetwork(t)
	startRealNodeControlPlane(t, cfg.BinDir, dir)
	c.adminKC = filepath.Join(dir, "kubeconfigs", "admin")
	c.admin = realNodeClient(t, c.adminKC)

	c.image = "lab.invalid/labpod:1"
	c.archive = buildLabpodImage(t, dir, c.image)

	start := time.Now()
	rn, err := StartRealNode(ctx, RealNodeConfig{
		Name: realNodeName, Netns: realNodeNetns, NodeIP: realNodeIP, PodCIDR: realNodePodCIDR,
		Dir:          filepath.Join(dir, "node"),
		BinDir:       realNodeBinDir(cfg),
		Kubeconfig:   filepath.Join(dir, "kubeconfigs", "kubelet"),
		SandboxImage: c.image,
		Runtime:      os.Getenv("REALNODE_RUNTIME"),
		Log:          testWriter{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	c.node = rn
	t.Cleanup(rn.Stop)
	if err := rn.ImportImage(ctx, c.archive); err != nil {
		t.Fatal(err)
	}
	t.Logf("containerd up and image imported in %.1fs", time.Since(start).Seconds())

	// kube-proxy in the node's namespace: pods reach the API server at the
	// kubernetes Service's ClusterIP through it, as on any node.
	proxy, err := startProcess(context.Background(), "kube-proxy", realNodeNetns, filepath.Join(dir, "logs", "kube-proxy.log"),
		kubeProxyArgv(filepath.Join(cfg.BinDir, "kube-proxy"), filepath.Join(dir, "kubeconfigs", "kube-proxy"), realNodeName, "iptables", realNodePodCIDR.String())...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.stop(5 * time.Second) })

	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := rn.Exited(); err != nil {
			return false, err
		}
		n, err := c.admin.CoreV1().Nodes().Get(ctx, realNodeName, metav1.GetOptions{})
		return err == nil && NodeReady(n), nil
	}); err != nil {
		t.Fatalf("node %s not Ready: %v (kubelet log: %s)", realNodeName, err, rn.path("logs", "kubelet.log"))
	}
	t.Logf("Node %s Ready %.1fs after the kubelet started", realNodeName, time.Since(rn.KubeletStarted).Seconds())
	// The default ServiceAccount comes from kube-controller-manager.
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := c.admin.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		t.Fatalf("no default ServiceAccount: %v", err)
	}
	return c
}

// stopAndCheck stops the node and checks it left neither cgroups nor
// changed kernel settings behind.
func (c *realNodeCluster) stopAndCheck(t *testing.T) {
	t.Helper()
	c.node.Stop()
	for _, d := range c.node.cgroups {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("cgroup %s left after Stop", d)
		}
	}
	for k, v := range c.machineSysctls {
		if b, _ := os.ReadFile("/proc/sys/" + k); strings.TrimSpace(string(b)) != v {
			t.Errorf("the machine's %s changed from %s to %s", k, v, b)
		}
	}
}

// startRealNodeNetwork creates the node's and the client's namespaces, the
// uplink from the machine and the LAN; all go at the test's end.
func startRealNodeNetwork(t *testing.T) {
	t.Helper()
	for _, ns := range []string{realNodeNetns, realClientNetns} {
		_ = exec.Command("ip", "netns", "del", ns).Run() // a crashed run's
		if err := run("ip", "netns", "add", ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = run("ip", "netns", "del", ns) })
	}
	_ = exec.Command("ip", "link", "del", realNodeUplink).Run()
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", realNodeUplink).Run() })
	if err := ipBatch("",
		fmt.Sprintf("link add %s type veth peer name eth0 netns %s", realNodeUplink, realNodeNetns),
		fmt.Sprintf("addr add %s/30 dev %s", realNodeHostIP, realNodeUplink),
		fmt.Sprintf("link set %s up", realNodeUplink),
		fmt.Sprintf("route add %s via %s dev %s", realNodePodCIDR, realNodeIP, realNodeUplink),
	); err != nil {
		t.Fatal(err)
	}
	if err := ipBatch(realNodeNetns,
		"link set lo up",
		fmt.Sprintf("addr add %s/30 dev eth0", realNodeIP),
		"link set eth0 up",
		// The Service CIDR, which kube-proxy rewrites, needs a route to
		// be rewritten; nothing else leaves the node for the machine.
		fmt.Sprintf("route add %s via %s", ServiceCIDRv4, realNodeHostIP),
	); err != nil {
		t.Fatal(err)
	}
	// The LAN is a veth's end in the client's namespace; the node's NIC and
	// the client's are macvlans on it, as in the lab (a veth of the node's
	// own would not be a LAN interface to the speaker).
	if err := ipBatch(realClientNetns,
		"link set lo up",
		"link add lan0 type veth peer name lan1",
		"link set lan0 up",
		"link set lan1 up",
		fmt.Sprintf("link add eth1 link lan0 address %s type macvlan mode bridge", realNodeLANMAC),
		"link set eth1 netns "+realNodeNetns,
		"link add eth0 link lan0 address "+ClientMAC+" type macvlan mode bridge",
		fmt.Sprintf("addr add %s/25 dev eth0", realNodeClientIP),
		"link set eth0 up",
	); err != nil {
		t.Fatal(err)
	}
	if err := ipBatch(realNodeNetns,
		fmt.Sprintf("addr add %s dev eth1", realNodeLANIP),
		"link set eth1 up",
	); err != nil {
		t.Fatal(err)
	}
}

// startRealNodeControlPlane runs etcd, kube-apiserver (Node and RBAC
// authorization, NodeRestriction; serving on the uplink's machine end) and
// kube-controller-manager, and writes kubeconfigs in dir/kubeconfigs for
// the admin, the kubelet and kube-proxy.
//
// The API server calls webhooks at their Service's endpoints (aggregator
// routing): this machine has no kube-proxy, the node has.
func startRealNodeControlPlane(t *testing.T, binDir, dir string) {
	t.Helper()
	p, err := newPKI(filepath.Join(dir, "pki"), net.IP(realNodeHostIP.AsSlice()))
	if err != nil {
		t.Fatal(err)
	}
	ports := freeLoopbackPorts(t, 3)
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(strings.Join([]string{
		`admin-token,admin,1,"system:masters"`,
		`kcm-token,system:kube-controller-manager,4`,
		`kube-proxy-token,system:kube-proxy,3`,
		`kubelet-token,system:node:` + realNodeName + `,10,"system:nodes"`,
	}, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	var procs []*process
	t.Cleanup(func() {
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].stop(5 * time.Second)
		}
	})
	spawn := func(name string, argv ...string) {
		pr, err := startProcess(context.Background(), name, "", filepath.Join(dir, "logs", name+".log"), argv...)
		if err != nil {
			t.Fatal(err)
		}
		procs = append(procs, pr)
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	spawn("etcd", filepath.Join(binDir, "etcd"),
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL, "--unsafe-no-fsync")
	spawn("kube-apiserver", filepath.Join(binDir, "kube-apiserver"),
		"--etcd-servers", etcdURL,
		"--bind-address", realNodeHostIP.String(),
		"--secure-port", fmt.Sprint(ports[2]),
		"--advertise-address", realNodeHostIP.String(),
		"--tls-cert-file", p.ServingCert, "--tls-private-key-file", p.ServingKey,
		"--client-ca-file", p.CACert,
		"--token-auth-file", tokens,
		"--authorization-mode", "Node,RBAC",
		"--enable-admission-plugins", "NodeRestriction",
		"--enable-aggregator-routing=true",
		"--service-account-key-file", p.SAPub,
		"--service-account-signing-key-file", p.SAKey,
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range", ServiceCIDRv4,
		"--enable-priority-and-fairness=false", "--profiling=false")
	server := fmt.Sprintf("https://%s", net.JoinHostPort(realNodeHostIP.String(), fmt.Sprint(ports[2])))
	for _, k := range []struct{ name, token string }{
		{"admin", "admin-token"}, {"kcm", "kcm-token"}, {"kubelet", "kubelet-token"}, {"kube-proxy", "kube-proxy-token"},
	} {
		path := filepath.Join(dir, "kubeconfigs", k.name)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(kubeconfig(server, p.CACert, k.token)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	admin := realNodeClient(t, filepath.Join(dir, "kubeconfigs", "admin"))
	if err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		for _, pr := range procs {
			if pr.exited() {
				return false, fmt.Errorf("%s exited: %v (log in %s)", pr.name, pr.err, filepath.Join(dir, "logs"))
			}
		}
		_, err := admin.Discovery().ServerVersion()
		return err == nil, nil
	}); err != nil {
		t.Fatalf("kube-apiserver not answering: %v", err)
	}
	kcm := filepath.Join(dir, "kubeconfigs", "kcm")
	spawn("kube-controller-manager", filepath.Join(binDir, "kube-controller-manager"),
		"--kubeconfig", kcm, "--authentication-kubeconfig", kcm, "--authorization-kubeconfig", kcm,
		"--bind-address", "127.0.0.1", "--secure-port", "0",
		"--controllers", "*,-nodeipam",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file", p.SAKey,
		"--root-ca-file", p.CACert,
		"--cluster-signing-cert-file", p.CACert, "--cluster-signing-key-file", p.CAKey,
		"--service-cluster-ip-range", ServiceCIDRv4,
		"--leader-elect=false")
}

// bindPods plays the scheduler until the returned stop is called: the
// cluster has one node, so every pod without one is bound to it.
// Deployments and DaemonSets (whose pods the scheduler places too) need it.
func (c *realNodeCluster) bindPods(t *testing.T) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			time.Sleep(200 * time.Millisecond)
			pods, err := c.admin.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName="})
			if err != nil {
				continue
			}
			for _, p := range pods.Items {
				b := &corev1.Binding{
					ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID},
					Target:     corev1.ObjectReference{Kind: "Node", Name: realNodeName},
				}
				if err := c.admin.CoreV1().Pods(p.Namespace).Bind(ctx, b, metav1.CreateOptions{}); err == nil {
					t.Logf("bound pod %s/%s to %s", p.Namespace, p.Name, realNodeName)
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}
