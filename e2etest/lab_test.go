package e2etest

// Tests that prove the lab is real: RBAC is enforced, controllers run, pods
// get addresses on their nodes, and kube-proxy forwards NodePort traffic.

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/heraldlb/herald/e2etest/lab"
)

func TestAPIServerRefusesUnprivilegedToken(t *testing.T) {
	cfg := rest.CopyConfig(theLab.RESTConfig)
	cfg.BearerToken = lab.UnprivilegedToken
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.CoreV1().Secrets("kube-system").List(context.Background(), metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("listing secrets with an unbound token: got %v, want 403 Forbidden from RBAC", err)
	}
	if _, err := theLab.Client.CoreV1().Secrets("kube-system").List(context.Background(), metav1.ListOptions{}); err != nil {
		t.Fatalf("admin listing secrets: %v", err)
	}
	cfg.BearerToken = "not-a-token"
	c, _ = kubernetes.NewForConfig(cfg)
	if _, err = c.CoreV1().Namespaces().List(context.Background(), metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
		t.Fatalf("unknown token: got %v, want 401 Unauthorized", err)
	}
}

func TestDeploymentPodsBecomeReadyOnEveryNode(t *testing.T) {
	ns := newNamespace(t)
	createWeb(t, ns, "web", 3)
	pods := readyPods(t, ns, "app=web", 3)
	nodes := map[string]bool{}
	for _, p := range pods {
		nodes[p.Spec.NodeName] = true
		if len(p.Status.PodIPs) != 2 {
			t.Errorf("pod %s: podIPs %v, want one IPv4 and one IPv6", p.Name, p.Status.PodIPs)
		}
		// The address really is the pod's: it answers there, from the client's LAN.
		if _, err := curl(lab.ClientNetns, "http://"+p.Status.PodIP+"/"); err == nil {
			t.Errorf("client reached pod %s directly at %s; pod CIDRs should be routed only between nodes", p.Name, p.Status.PodIP)
		}
	}
	if len(nodes) != len(theLab.Nodes) {
		t.Errorf("3 replicas landed on %d nodes %v, want one on each of %d", len(nodes), nodes, len(theLab.Nodes))
	}
	// From a node, every pod answers on its own IPs with its own name.
	for _, p := range pods {
		for _, ip := range p.Status.PodIPs {
			url := "http://" + bracket(ip.IP) + "/"
			// A pod reported Ready can refuse for a moment after the
			// stand-in replaced the previous test's pod at the same
			// address (seen after the layer-2 cases): ask for up to 10 s.
			var out string
			var err error
			start := time.Now()
			for out, err = curl(theLab.Nodes[0].Netns, url); err != nil && time.Since(start) < 10*time.Second; out, err = curl(theLab.Nodes[0].Netns, url) {
				time.Sleep(200 * time.Millisecond)
			}
			if err != nil {
				t.Fatalf("pod %s: %v", p.Name, err)
			}
			if d := time.Since(start); d > time.Second {
				t.Logf("pod %s answered at %s only %.1fs after it was Ready", p.Name, url, d.Seconds())
			}
			a, err := lab.ParseAnswer(out)
			if err != nil || a.Pod != p.Name || a.Node != p.Spec.NodeName {
				t.Errorf("%s answered %q (%v), want pod=%s node=%s", url, out, err, p.Name, p.Spec.NodeName)
			}
		}
	}
}

func TestEndpointSliceFollowsPodReadiness(t *testing.T) {
	ns := newNamespace(t)
	createWeb(t, ns, "web", 2)
	pods := readyPods(t, ns, "app=web", 2)
	svc := webService(t, ns, corev1.ServiceTypeClusterIP)
	readyEndpoints := func(ctx context.Context) (map[string]bool, error) {
		slices, err := theLab.Client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + svc.Name})
		if err != nil {
			return nil, err
		}
		ready := map[string]bool{}
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				if e.Conditions.Ready != nil && *e.Conditions.Ready && e.TargetRef != nil {
					ready[e.TargetRef.Name] = true
				}
			}
		}
		return ready, nil
	}
	eventually(t, 30*time.Second, "EndpointSlice listing both pods", func(ctx context.Context) (bool, error) {
		r, err := readyEndpoints(ctx)
		return len(r) == 2 && r[pods[0].Name] && r[pods[1].Name], err
	})
	// Mark one pod not ready, as a failing readiness probe would.
	p := pods[0].DeepCopy()
	metav1.SetMetaDataAnnotation(&p.ObjectMeta, lab.ReadyAnnotation, "false")
	if _, err := theLab.Client.CoreV1().Pods(ns).Update(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "EndpointSlice dropping the unready pod", func(ctx context.Context) (bool, error) {
		r, err := readyEndpoints(ctx)
		return len(r) == 1 && r[pods[1].Name], err
	})
}

func TestNodePortSpreadsRequestsOverPodsOnDifferentNodes(t *testing.T) {
	ns := newNamespace(t)
	createWeb(t, ns, "web", 3)
	readyPods(t, ns, "app=web", 3)
	svc := webService(t, ns, corev1.ServiceTypeNodePort)
	port := svc.Spec.Ports[0].NodePort
	for _, n := range theLab.Nodes {
		url := fmt.Sprintf("http://%s:%d/", n.IPv4, port)
		eventually(t, 20*time.Second, "kube-proxy to program "+url, func(context.Context) (bool, error) {
			_, err := curl(lab.ClientNetns, url)
			return err == nil, err
		})
		pods, nodes := map[string]bool{}, map[string]bool{}
		for range 30 {
			out, err := curl(lab.ClientNetns, url)
			if err != nil {
				t.Fatal(err)
			}
			a, err := lab.ParseAnswer(out)
			if err != nil {
				t.Fatal(err)
			}
			pods[a.Pod], nodes[a.Node] = true, true
		}
		if len(pods) < 2 || len(nodes) < 2 {
			t.Errorf("30 requests to %s reached pods %v on nodes %v; kube-proxy should spread them over pods on different nodes", url, pods, nodes)
		}
	}
}

func TestNamespaceDeletionCompletes(t *testing.T) {
	ns := newNamespace(t)
	createWeb(t, ns, "web", 2)
	pods := readyPods(t, ns, "app=web", 2)
	if err := theLab.Client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "namespace "+ns+" to be gone", func(ctx context.Context) (bool, error) {
		_, err := theLab.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	// The agent tore the pods' network namespaces down with them.
	for _, p := range pods {
		netns := "hl-p-" + string(p.UID)[:10]
		if err := exec.Command("ip", "netns", "pids", netns).Run(); err == nil {
			t.Errorf("pod %s's network namespace %s still exists", p.Name, netns)
		}
	}
}

// TestPodsKeepTheirPathsWhenOtherPodsGo scales the lab's pods down: the
// pods that stay answer every node at once, on both families. A pod's
// gateway is its node's bridge; if the bridge took its MAC from its ports
// (a Linux bridge does unless told otherwise), tearing a pod down changed
// it under the other pods, whose neighbour entries kept the old one: in a
// chaos run, 70 % of the connections from the other nodes to one node's
// pod timed out for 25 s after an earlier test's namespace went away.
func TestPodsKeepTheirPathsWhenOtherPodsGo(t *testing.T) {
	ns := newNamespace(t)
	nodes := theLab.PodNodes()
	createWeb(t, ns, "web", int32(2*len(nodes)))
	readyPods(t, ns, "app=web", 2*len(nodes))
	patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, len(nodes))
	if _, err := theLab.Client.AppsV1().Deployments(ns).Patch(context.Background(), "web", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := readyPods(t, ns, "app=web", len(nodes))
	for _, n := range nodes {
		out, err := exec.Command("ip", "-n", n.Netns, "-br", "link", "show", "cbr0").CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v: %s", n.Name, err, out)
		}
		if f := strings.Fields(string(out)); len(f) < 3 || f[2] != n.BridgeMAC {
			t.Errorf("%s: cbr0 is %q; want its fixed MAC %s", n.Name, strings.TrimSpace(string(out)), n.BridgeMAC)
		}
	}
	for _, n := range nodes {
		for _, p := range pods {
			for _, ip := range p.Status.PodIPs {
				if _, err := curl(n.Netns, "http://"+bracket(ip.IP)+"/"); err != nil {
					t.Errorf("%s -> pod %s on %s at %s: %v", n.Name, p.Name, p.Spec.NodeName, ip.IP, err)
				}
			}
		}
	}
}

// webService exposes app=web on port 80.
func webService(t *testing.T, ns string, typ corev1.ServiceType) *corev1.Service {
	t.Helper()
	svc, err := theLab.Client.CoreV1().Services(ns).Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{
			Type:     typ,
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func bracket(ip string) string {
	if strings.Contains(ip, ":") {
		return "[" + ip + "]"
	}
	return ip
}
