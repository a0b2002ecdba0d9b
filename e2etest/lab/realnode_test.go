package lab

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/heraldlb/herald/internal/imagebuild"
)

// realNodeEnv opts in to TestRealKubeletRunsPods: it needs the real node's
// binaries (e2etest/tools/build.sh realnode), runc and the CNI plugins, and
// is not part of CI yet. hack/realnode.sh sets it.
const realNodeEnv = "HERALD_REALNODE"

// TestRealKubeletRunsPods runs a real kubelet and containerd in a network
// namespace against a real API server, and proves what the lab's node
// stand-in only pretends: the Node turns Ready, a hostNetwork pod and a
// pod on the CNI bridge, with an image imported without a registry, turn
// Running and Ready through their readiness probes and answer HTTP,
// deleting them ends their containers, and the node leaves neither cgroups
// nor changed kernel settings behind.
func TestRealKubeletRunsPods(t *testing.T) {
	if os.Getenv(realNodeEnv) != "1" {
		t.Skipf("set %s=1 to run a real kubelet (hack/realnode.sh)", realNodeEnv)
	}
	if os.Geteuid() != 0 {
		t.Skip("a real node needs root")
	}
	if err := checkHostRanges(); err != nil {
		t.Fatal(err)
	}
	cfg, err := DefaultConfig()
	if err != nil {
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
	// The kubelet must leave the machine's kernel settings alone.
	machineSysctls := map[string]string{}
	for k := range kernelDefaults {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			t.Fatal(err)
		}
		machineSysctls[k] = strings.TrimSpace(string(b))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	apiPort := startRealNodeControlPlane(t, cfg.BinDir, dir)
	admin := realNodeClient(t, filepath.Join(dir, "kubeconfigs", "admin"))

	const node, netns = "realnode-1", "hk-rn1"
	nodeIP := netip.MustParseAddr("198.51.100.11")
	podCIDR := netip.MustParsePrefix("198.51.100.144/28")
	_ = exec.Command("ip", "netns", "del", netns).Run() // a crashed run's
	if err := run("ip", "netns", "add", netns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = run("ip", "netns", "del", netns) })
	// The kubelet wants its node IP on a link: a veth pair inside the node.
	if err := ipBatch(netns,
		"link set lo up",
		"link add eth0 type veth peer name eth0-peer",
		"link set eth0-peer up",
		"link set eth0 up",
		fmt.Sprintf("addr add %s/25 dev eth0", nodeIP),
	); err != nil {
		t.Fatal(err)
	}
	fwd, err := startForwarder(netns, fmt.Sprintf("127.0.0.1:%d", nodeAPIPort), fmt.Sprintf("127.0.0.1:%d", apiPort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fwd.close)

	const image = "lab.invalid/labpod:1"
	archive := buildLabpodImage(t, dir, image)

	start := time.Now()
	rn, err := StartRealNode(ctx, RealNodeConfig{
		Name: node, Netns: netns, NodeIP: nodeIP, PodCIDR: podCIDR,
		Dir:          filepath.Join(dir, "node"),
		BinDir:       realNodeBinDir(cfg),
		Kubeconfig:   filepath.Join(dir, "kubeconfigs", "kubelet"),
		SandboxImage: image,
		Runtime:      os.Getenv("REALNODE_RUNTIME"),
		Log:          testWriter{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rn.Stop)
	if err := rn.ImportImage(ctx, archive); err != nil {
		t.Fatal(err)
	}
	t.Logf("containerd up and image imported in %.1fs", time.Since(start).Seconds())

	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := rn.Exited(); err != nil {
			return false, err
		}
		n, err := admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		return err == nil && NodeReady(n), nil
	}); err != nil {
		t.Fatalf("node %s not Ready: %v (kubelet log: %s)", node, err, rn.path("logs", "kubelet.log"))
	}
	t.Logf("Node %s Ready %.1fs after the kubelet started", node, time.Since(rn.KubeletStarted).Seconds())

	// Without a scheduler in the lab, pods name their node.
	pod := func(name string, hostNetwork bool, port int32) *corev1.Pod {
		addr := fmt.Sprintf(":%d", port)
		if hostNetwork {
			addr = fmt.Sprintf("%s:%d", nodeIP, port)
		}
		grace := int64(5)
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: corev1.PodSpec{
				NodeName:                      node,
				HostNetwork:                   hostNetwork,
				TerminationGracePeriodSeconds: &grace,
				Containers: []corev1.Container{{
					Name: "serve", Image: image, ImagePullPolicy: corev1.PullNever,
					Args:  []string{"serve", addr},
					Ports: []corev1.ContainerPort{{ContainerPort: port}},
					ReadinessProbe: &corev1.Probe{
						ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(port)}},
						PeriodSeconds: 1,
					},
				}},
			},
		}
	}
	// The default ServiceAccount comes from kube-controller-manager.
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := admin.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		t.Fatalf("no default ServiceAccount: %v", err)
	}
	pods := []*corev1.Pod{pod("hostnet", true, 18080), pod("bridged", false, 8080)}
	podStart := time.Now()
	for _, p := range pods {
		if _, err := admin.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range pods {
		var got *corev1.Pod
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			got, err = admin.CoreV1().Pods("default").Get(ctx, p.Name, metav1.GetOptions{})
			return err == nil && got.Status.Phase == corev1.PodRunning && podReady(got), nil
		})
		if err != nil {
			t.Fatalf("pod %s not Running and Ready: %v; status %+v", p.Name, err, got.Status)
		}
		t.Logf("pod %s Running and Ready %.1fs after create, IP %s", p.Name, time.Since(podStart).Seconds(), got.Status.PodIP)
		port := p.Spec.Containers[0].Ports[0].ContainerPort
		body := getIn(t, netns, fmt.Sprintf("http://%s/", net.JoinHostPort(got.Status.PodIP, fmt.Sprint(port))))
		if p.Spec.HostNetwork {
			// A hostNetwork pod shares the node's UTS namespace too: it
			// answers the machine's hostname, which the lab does not set.
			if host, _ := os.Hostname(); body != host {
				t.Errorf("hostNetwork pod answered %q, want the node's hostname %q", body, host)
			}
			if got.Status.PodIP != nodeIP.String() {
				t.Errorf("hostNetwork pod IP %s, want the node IP %s", got.Status.PodIP, nodeIP)
			}
			continue
		}
		if body != p.Name {
			t.Errorf("pod %s answered %q, want its hostname", p.Name, body)
		}
		if ip := netip.MustParseAddr(got.Status.PodIP); !podCIDR.Contains(ip) {
			t.Errorf("pod %s IP %s outside the node's pod CIDR %s", p.Name, ip, podCIDR)
		}
	}

	delStart := time.Now()
	for _, p := range pods {
		if err := admin.CoreV1().Pods("default").Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range pods {
		// The kubelet removes the object once the containers have stopped.
		if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			_, err := admin.CoreV1().Pods("default").Get(ctx, p.Name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		}); err != nil {
			t.Fatalf("pod %s not gone after delete: %v", p.Name, err)
		}
	}
	t.Logf("both pods gone %.1fs after delete", time.Since(delStart).Seconds())

	rn.Stop()
	for _, d := range rn.cgroups {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("cgroup %s left after Stop", d)
		}
	}
	for k, v := range machineSysctls {
		if b, _ := os.ReadFile("/proc/sys/" + k); strings.TrimSpace(string(b)) != v {
			t.Errorf("the machine's %s changed from %s to %s", k, v, b)
		}
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// getIn GETs url from inside namespace ns and returns the trimmed body.
func getIn(t *testing.T, ns, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: DialContextIn(ns)}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s in %s: %v", url, ns, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

// realNodeBinDir is where the kubelet and containerd are: $REALNODE_BIN
// when set, else the lab's bin directory (build.sh realnode puts them there).
func realNodeBinDir(cfg Config) string {
	if d := os.Getenv("REALNODE_BIN"); d != "" {
		return d
	}
	return cfg.BinDir
}

// buildLabpodImage builds e2etest/cmd/labpod static and writes it as image
// name (entrypoint labpod, default argument pause: the pod sandbox).
func buildLabpodImage(t *testing.T, dir, name string) string {
	t.Helper()
	repo, err := RepoDir()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "labpod")
	cmd := exec.Command("go", "build", "-o", bin, "./e2etest/cmd/labpod")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build labpod: %v: %s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	spec := imagebuild.Spec{Name: "labpod", Path: "/labpod", Args: []string{"pause"}, User: imagebuild.RootUser}
	if err := WriteImage(&buf, name, spec, b); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "labpod.tar")
	if err := os.WriteFile(archive, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return archive
}

// startRealNodeControlPlane runs etcd, kube-apiserver (Node and RBAC
// authorization, NodeRestriction) and kube-controller-manager on free
// loopback ports, apart from any lab, and writes kubeconfigs for the admin
// (dir/kubeconfigs/admin, machine's namespace) and the kubelet
// (dir/kubeconfigs/kubelet, inside the node through its forwarder). It
// returns the API server's port.
func startRealNodeControlPlane(t *testing.T, binDir, dir string) int {
	t.Helper()
	p, err := newPKI(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	ports := freeLoopbackPorts(t, 3)
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(strings.Join([]string{
		`admin-token,admin,1,"system:masters"`,
		`kcm-token,system:kube-controller-manager,4`,
		`kubelet-token,system:node:realnode-1,10,"system:nodes"`,
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
		"--bind-address", "127.0.0.1",
		"--secure-port", fmt.Sprint(ports[2]),
		"--advertise-address", "198.51.100.1",
		"--tls-cert-file", p.ServingCert, "--tls-private-key-file", p.ServingKey,
		"--client-ca-file", p.CACert,
		"--token-auth-file", tokens,
		"--authorization-mode", "Node,RBAC",
		"--enable-admission-plugins", "NodeRestriction",
		"--service-account-key-file", p.SAPub,
		"--service-account-signing-key-file", p.SAKey,
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range", ServiceCIDRv4,
		"--enable-priority-and-fairness=false", "--profiling=false")
	for _, k := range []struct{ name, server, token string }{
		{"admin", fmt.Sprintf("https://127.0.0.1:%d", ports[2]), "admin-token"},
		{"kcm", fmt.Sprintf("https://127.0.0.1:%d", ports[2]), "kcm-token"},
		{"kubelet", fmt.Sprintf("https://127.0.0.1:%d", nodeAPIPort), "kubelet-token"},
	} {
		path := filepath.Join(dir, "kubeconfigs", k.name)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(kubeconfig(k.server, p.CACert, k.token)), 0o600); err != nil {
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
	return ports[2]
}

func realNodeClient(t *testing.T, kubeconfig string) kubernetes.Interface {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// freeLoopbackPorts finds n free loopback ports, held open together so
// they differ.
func freeLoopbackPorts(t *testing.T, n int) []int {
	t.Helper()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out
}

// testWriter sends progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}
