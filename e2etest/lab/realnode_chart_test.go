package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/yaml"
)

// TestChartOnRealNode installs the chart as a user would, with the images
// `make images` builds (imported into the node's containerd under the
// chart's default references, so nothing is pulled), on a real kubelet,
// and proves its pod specs there: the speaker's DaemonSet pod and the
// controller's Deployment pod turn Running and Ready through their probes;
// their processes run as the chart says (user, capabilities, seccomp, no
// new privileges, read-only root; the speaker in the node's network
// namespace); the controller's webhook, reached by the API server through
// its Service, refuses a bad pool; a LoadBalancer Service gets an address
// that the client on the node's LAN curls, the speaker pod answering ARP
// for it and forwarding it with its nftables dataplane (the chart's
// default: nft runs inside the speaker's image), the Service's ipMode
// Proxy; uninstalling removes the pods.
func TestChartOnRealNode(t *testing.T) {
	c := startRealNodeCluster(t)
	repo, err := RepoDir()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	start := time.Now()
	for _, archive := range chartImages(t, repo, c.dir) {
		if err := c.node.ImportImage(ctx, archive); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("images built (make images, linux/amd64) and imported in %.1fs", time.Since(start).Seconds())

	stopBinding := c.bindPods(t)
	defer stopBinding()
	const ns = "herald-system"
	helm := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, filepath.Join(repo, "bin", "helm"), append(args, "--kubeconfig", c.adminKC)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helm %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	start = time.Now()
	helm("install", "herald", filepath.Join(repo, "charts", "herald"), "-n", ns, "--create-namespace")
	pods := map[string]*corev1.Pod{}
	for _, component := range []string{"controller", "speaker"} {
		pods[component] = waitPodReady(ctx, t, c, ns, "app.kubernetes.io/instance=herald,app.kubernetes.io/component="+component)
		t.Logf("%s pod %s Running and Ready %.1fs after helm install", component, pods[component].Name, time.Since(start).Seconds())
	}

	// The processes the kubelet started, as the chart's pod specs say.
	nodeNet := inode(t, "/run/netns/"+realNodeNetns)
	for _, want := range []struct {
		binary, uid string
		caps        uint64
		hostNet     bool
	}{
		{"/controller", "65532", 0, false},
		// NET_ADMIN (12) and NET_RAW (13).
		{"/speaker", "0", 1<<12 | 1<<13, true},
	} {
		pid := containerProcess(t, c.node, want.binary)
		st := procStatus(t, pid)
		if st["Uid"][0] != want.uid {
			t.Errorf("%s runs as user %s, want %s", want.binary, st["Uid"][0], want.uid)
		}
		for _, set := range []string{"CapEff", "CapPrm", "CapBnd"} {
			if got, _ := strconv.ParseUint(st[set][0], 16, 64); got != want.caps {
				t.Errorf("%s: %s %#x, want %#x", want.binary, set, got, want.caps)
			}
		}
		if st["Seccomp"][0] != "2" {
			t.Errorf("%s: seccomp mode %s, want 2 (filter: RuntimeDefault)", want.binary, st["Seccomp"][0])
		}
		if st["NoNewPrivs"][0] != "1" {
			t.Errorf("%s: no_new_privs %s, want 1 (allowPrivilegeEscalation: false)", want.binary, st["NoNewPrivs"][0])
		}
		if !rootReadOnly(t, pid) {
			t.Errorf("%s: root filesystem writable, want read-only", want.binary)
		}
		hostNet := inode(t, fmt.Sprintf("/proc/%d/ns/net", pid)) == nodeNet
		if hostNet != want.hostNet {
			t.Errorf("%s: in the node's network namespace %v, want %v", want.binary, hostNet, want.hostNet)
		}
		t.Logf("%s: pid %d, uid %s, CapEff %s, seccomp %s, no_new_privs %s, root read-only %v, node's network namespace %v",
			want.binary, pid, st["Uid"][0], st["CapEff"][0], st["Seccomp"][0], st["NoNewPrivs"][0], rootReadOnly(t, pid), hostNet)
	}

	kubectl := func(stdin string, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, "kubectl"), append([]string{"--kubeconfig", c.adminKC}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	pool := fmt.Sprintf(`apiVersion: herald.dev/v1alpha1
kind: IPAddressPool
metadata: {name: lan}
spec: {addresses: [%q]}
---
apiVersion: herald.dev/v1alpha1
kind: L2Advertisement
metadata: {name: lan}
spec: {ipAddressPools: [lan]}
`, realNodePool)
	if out, err := kubectl(pool, "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply the pool: %v: %s", err, out)
	}
	// Only the webhook knows of other pools: the API server called the
	// controller pod through its Service.
	overlapping := fmt.Sprintf("apiVersion: herald.dev/v1alpha1\nkind: IPAddressPool\nmetadata: {name: overlapping}\nspec: {addresses: [%q]}\n", realNodePool)
	out, err := kubectl(overlapping, "apply", "-f", "-")
	if err == nil || !strings.Contains(out, "denied the request") {
		t.Errorf("an overlapping pool: err %v, output %q; want the webhook's refusal", err, out)
	} else {
		t.Logf("the webhook refused an overlapping pool: %s", strings.TrimSpace(out))
	}

	demo := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "default", Labels: map[string]string{"app": "demo"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "serve", Image: c.image, ImagePullPolicy: corev1.PullNever,
			Args:           []string{"serve", ":8080"},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1},
		}}},
	}
	if _, err := c.admin.CoreV1().Pods("default").Create(ctx, demo, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "default"},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": "demo"},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	start = time.Now()
	if _, err := c.admin.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var ip string
	var mode *corev1.LoadBalancerIPMode
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		s, err := c.admin.CoreV1().Services("default").Get(ctx, "demo", metav1.GetOptions{})
		if err == nil && len(s.Status.LoadBalancer.Ingress) > 0 {
			ip, mode = s.Status.LoadBalancer.Ingress[0].IP, s.Status.LoadBalancer.Ingress[0].IPMode
		}
		return ip != "", nil
	}); err != nil {
		t.Fatalf("the Service got no address: %v", err)
	}
	t.Logf("the Service got %s %.1fs after create", ip, time.Since(start).Seconds())
	// Every speaker forwards, so kube-proxy is to keep out of the address.
	if mode == nil || *mode != corev1.LoadBalancerIPModeProxy {
		t.Errorf("the Service's ipMode %v, want Proxy: the speaker's nftables dataplane forwards", mode)
	}
	var body string
	if err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", realClientNetns, "curl", "-sS", "--max-time", "2", "http://"+ip+"/").CombinedOutput()
		body = strings.TrimSpace(string(out))
		return err == nil, nil
	}); err != nil {
		for _, cmd := range [][]string{
			{"ip", "-n", realClientNetns, "neigh"},
			{"ip", "-n", realNodeNetns, "-br", "addr"},
			{"ip", "netns", "exec", realNodeNetns, "sh", "-c", "iptables-save | grep -F " + ip},
			{"ip", "netns", "exec", realNodeNetns, "nft", "list", "table", "inet", "herald"},
			{filepath.Join(c.binDir, "kubectl"), "--kubeconfig", c.adminKC, "get", "announcements,leases", "-A", "-o", "yaml"},
			{"ip", "netns", "exec", realClientNetns, "curl", "-v", "--max-time", "2", "http://" + ip + "/"},
		} {
			out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput()
			t.Logf("%s (%v):\n%s", strings.Join(cmd, " "), err, out)
		}
		t.Fatalf("curl http://%s/ from the client: %v: last %q", ip, err, body)
	}
	if body != "demo" {
		t.Errorf("curl http://%s/ answered %q, want the demo pod's name", ip, body)
	}
	t.Logf("the client curled http://%s/ %.1fs after the Service was created: %q", ip, time.Since(start).Seconds(), body)
	// The speaker's nft wrote the node's rules for the address.
	if rules, err := exec.Command("ip", "netns", "exec", realNodeNetns, "nft", "list", "table", "inet", "herald").CombinedOutput(); err != nil || !strings.Contains(string(rules), ip) {
		t.Errorf("the node's nftables table inet herald (%v) does not name %s:\n%s", err, ip, rules)
	}
	neigh, err := exec.Command("ip", "-n", realClientNetns, "neigh", "show", ip).CombinedOutput()
	if err != nil || !strings.Contains(string(neigh), realNodeLANMAC) {
		t.Errorf("the client's neighbour entry for %s: %q (%v); want the node's MAC %s, answered by the speaker pod", ip, neigh, err, realNodeLANMAC)
	}

	if err := c.admin.CoreV1().Services("default").Delete(ctx, "demo", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.admin.CoreV1().Pods("default").Delete(ctx, "demo", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	helm("uninstall", "herald", "-n", ns, "--wait", "--timeout", "2m")
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, p := range pods {
			if _, err := c.admin.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		t.Fatalf("Herald's pods not gone after helm uninstall: %v", err)
	}
	for _, b := range []string{"/controller", "/speaker"} {
		if pids := containerProcesses(t, c.node, b); len(pids) > 0 {
			t.Errorf("%s still running (pids %v) after its pod went", b, pids)
		}
	}
	// The speaker took its rules with it as it stopped.
	if out, err := exec.Command("ip", "netns", "exec", realNodeNetns, "nft", "list", "table", "inet", "herald").CombinedOutput(); err == nil {
		t.Errorf("the node's table inet herald outlived the speaker:\n%s", out)
	}
	t.Logf("Herald's pods and processes gone %.1fs after helm uninstall", time.Since(start).Seconds())
	stopBinding()
	c.stopAndCheck(t)
}

// chartImages builds Herald's images with hack/images (make images) for
// this machine's architecture and writes each as an archive containerd
// imports, named as the chart's default values name it
// (REPOSITORY:appVersion).
func chartImages(t *testing.T, repo, dir string) []string {
	t.Helper()
	out := filepath.Join(dir, "images")
	cmd := exec.Command("go", "run", "./hack/images", "-out", out, "-platforms", "linux/amd64")
	cmd.Dir = repo
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hack/images: %v: %s", err, b)
	} else {
		t.Logf("hack/images: %s", bytes.TrimSpace(b))
	}
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	type image struct {
		Image struct {
			Repository string `json:"repository"`
		} `json:"image"`
	}
	var values struct {
		Controller image `json:"controller"`
		Speaker    image `json:"speaker"`
	}
	for f, v := range map[string]any{"Chart.yaml": &chart, "values.yaml": &values} {
		b, err := os.ReadFile(filepath.Join(repo, "charts", "herald", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	var archives []string
	for component, repository := range map[string]string{"controller": values.Controller.Image.Repository, "speaker": values.Speaker.Image.Repository} {
		ref := repository + ":" + chart.AppVersion
		tag, err := name.NewTag(ref, name.StrictValidation)
		if err != nil {
			t.Fatalf("the chart's %s image %q: %v", component, ref, err)
		}
		img := layoutImage(t, filepath.Join(out, "herald-"+component), v1.Platform{OS: "linux", Architecture: "amd64"})
		archive := filepath.Join(dir, component+".tar")
		f, err := os.Create(archive)
		if err != nil {
			t.Fatal(err)
		}
		if err := tarball.Write(tag, img, f); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		archives = append(archives, archive)
	}
	return archives
}

// layoutImage returns platform's image of the multi-platform index an OCI
// layout written by hack/images holds.
func layoutImage(t *testing.T, dir string, platform v1.Platform) v1.Image {
	t.Helper()
	l, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	top, err := l.IndexManifest()
	if err != nil || len(top.Manifests) != 1 {
		t.Fatalf("%s: want one index, got %v (%v)", dir, top, err)
	}
	idx, err := l.ImageIndex(top.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range m.Manifests {
		if d.Platform != nil && d.Platform.Satisfies(platform) {
			img, err := idx.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			return img
		}
	}
	t.Fatalf("%s: no image for %s", dir, platform)
	return nil
}

// waitPodReady waits for the one pod selector names in ns to be Running and
// Ready.
func waitPodReady(ctx context.Context, t *testing.T, c *realNodeCluster, ns, selector string) *corev1.Pod {
	t.Helper()
	var got *corev1.Pod
	var seen string
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := c.node.Exited(); err != nil {
			return false, err
		}
		l, err := c.admin.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil || len(l.Items) != 1 {
			return false, nil
		}
		got = &l.Items[0]
		seen = fmt.Sprintf("phase %s, conditions %v, containers %v", got.Status.Phase, got.Status.Conditions, got.Status.ContainerStatuses)
		return got.Status.Phase == corev1.PodRunning && podReady(got), nil
	}); err != nil {
		t.Fatalf("no Running and Ready pod %s in %s: %v; last seen: %s (kubelet log: %s)", selector, ns, err, seen, c.node.path("logs", "kubelet.log"))
	}
	return got
}

// containerProcesses lists the processes in the node's cgroups whose
// command is binary.
func containerProcesses(t *testing.T, n *RealNode, binary string) []int {
	t.Helper()
	pids, err := pidsWhere(func(pid int) bool {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		cgroup, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		first, _, _ := bytes.Cut(cmdline, []byte{0})
		return string(first) == binary && strings.Contains(string(cgroup), n.cgroupRoot()+"/")
	})
	if err != nil {
		t.Fatal(err)
	}
	return pids
}

// containerProcess is the one process of binary in the node's containers.
func containerProcess(t *testing.T, n *RealNode, binary string) int {
	t.Helper()
	pids := containerProcesses(t, n, binary)
	if len(pids) != 1 {
		t.Fatalf("%d processes of %s in node %s's cgroups, want 1", len(pids), binary, n.Name)
	}
	return pids[0]
}

// procStatus reads /proc/PID/status into its fields' words.
func procStatus(t *testing.T, pid int) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	st := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			st[k] = append(strings.Fields(v), "") // never empty: [0] always reads
		}
	}
	return st
}

// rootReadOnly reports whether the process's root mount is read-only.
func rootReadOnly(t *testing.T, pid int) bool {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ...
		f := strings.Fields(line)
		if len(f) > 5 && f[4] == "/" {
			return strings.HasPrefix(f[5], "ro")
		}
	}
	t.Fatalf("pid %d: no root mount in its mountinfo", pid)
	return false
}

// inode is the inode of path, followed: two namespaces are the same when
// theirs are.
func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}
