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

// realNodeEnv opts in to the real-node tests: they need the real node's
// binaries (e2etest/tools/build.sh realnode), runc and the CNI plugins,
// which make test's e2e target (and hack/realnode.sh) provide before
// setting it.
const realNodeEnv = "HERALD_REALNODE"

// TestRealKubeletRunsPods runs a real kubelet and containerd in a network
// namespace against a real API server, and proves what the lab's node
// stand-in only pretends: the Node turns Ready, a hostNetwork pod and a
// pod on the CNI bridge, with an image imported without a registry, turn
// Running and Ready through their readiness probes and answer HTTP,
// deleting them ends their containers, and the node leaves neither cgroups
// nor changed kernel settings behind.
func TestRealKubeletRunsPods(t *testing.T) {
	c := startRealNodeCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	admin, rn, image := c.admin, c.node, c.image
	node, netns, nodeIP, podCIDR := rn.Name, rn.Netns, rn.NodeIP, rn.PodCIDR

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
			var err error
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

	c.stopAndCheck(t)
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
