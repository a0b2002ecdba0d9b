package e2etest

// Layer 2 as users meet it: the client on the LAN curls the EXTERNAL-IP, and
// exactly one node's MAC answers ARP/NDP for it.

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/e2etest/lab"
)

// nodeMAC is the fixed MAC of a lab node's LAN interface.
func nodeMAC(n lab.Node) string { return fmt.Sprintf("02:00:00:00:01:%02x", n.Index) }

func nodeByName(t *testing.T, name string) lab.Node {
	t.Helper()
	for _, n := range theLab.Nodes {
		if n.Name == name {
			return n
		}
	}
	t.Fatalf("no lab node %q", name)
	return lab.Node{}
}

func nodeByMAC(mac string) string {
	for _, n := range theLab.Nodes {
		if strings.EqualFold(nodeMAC(n), mac) {
			return n.Name
		}
	}
	return "unknown MAC " + mac
}

var macRE = regexp.MustCompile(`(?i)([0-9a-f]{2}(:[0-9a-f]{2}){5})`)

// arpingNodes sends ARP requests for ip from the client with the real arping
// and returns the nodes whose MACs answered (every reply, duplicates included).
func arpingNodes(ip string) []string {
	out, _ := exec.Command("ip", "netns", "exec", lab.ClientNetns, "arping", "-c", "3", "-w", "3", "-I", "eth0", ip).CombinedOutput()
	return repliers(string(out), "bytes from")
}

// ndiscNodes solicits ip from the client with the real ndisc6, waiting for
// every answer (-m), and returns the nodes whose MACs answered.
func ndiscNodes(ip string) []string {
	out, _ := exec.Command("ip", "netns", "exec", lab.ClientNetns, "ndisc6", "-m", "-r", "2", "-w", "500", ip, "eth0").CombinedOutput()
	return repliers(string(out), "Target link-layer address")
}

func repliers(out, marker string) []string {
	seen := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, marker) {
			if m := macRE.FindString(line); m != "" {
				seen[nodeByMAC(m)] = true
			}
		}
	}
	var nodes []string
	for n := range seen {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	return nodes
}

// clientNeighbourNode returns the node whose MAC the client's neighbour table holds for ip.
func clientNeighbourNode(ip string) string {
	out, _ := exec.Command("ip", "-n", lab.ClientNetns, "neigh", "show", ip).CombinedOutput()
	if m := macRE.FindString(string(out)); m != "" {
		return nodeByMAC(m)
	}
	return ""
}

// announcer waits until exactly one layer-2 Announcement names the Service
// and returns its node and interfaces.
func announcer(t *testing.T, ns, svc string) (string, []string) {
	t.Helper()
	var node string
	var ifaces []string
	eventually(t, 20*time.Second, "one Announcement for "+ns+"/"+svc, func(ctx context.Context) (bool, error) {
		var list v1alpha1.AnnouncementList
		if err := crClient.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return false, err
		}
		var mine []v1alpha1.Announcement
		for _, a := range list.Items {
			if a.Spec.Service == svc && a.Spec.Mode == "layer2" {
				mine = append(mine, a)
			}
		}
		if len(mine) != 1 {
			return false, nil
		}
		node, ifaces = mine[0].Spec.Node, mine[0].Spec.Interfaces
		return true, nil
	})
	return node, ifaces
}

// l2Setup makes a LAN pool for the test namespace and an L2Advertisement
// for it, with optional changes to the advertisement.
func l2Setup(t *testing.T, ns string, addrs []string, mutate ...func(*v1alpha1.L2Advertisement)) {
	t.Helper()
	pool := newPool(t, ns+"-lan", ns, addrs)
	adv := &v1alpha1.L2Advertisement{
		ObjectMeta: metav1.ObjectMeta{Name: ns + "-l2"},
		Spec:       v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{pool.Name}},
	}
	for _, m := range mutate {
		m(adv)
	}
	if err := crClient.Create(context.Background(), adv); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = crClient.Delete(context.Background(), adv) })
}

// curlOK waits until curl from the client to url gets a pod's answer.
func curlOK(t *testing.T, url string) lab.Answer {
	t.Helper()
	var a lab.Answer
	eventually(t, 20*time.Second, "curl "+url+" from the client", func(context.Context) (bool, error) {
		out, err := curl(lab.ClientNetns, url)
		if err != nil {
			return false, err
		}
		a, err = lab.ParseAnswer(out)
		return err == nil, err
	})
	return a
}

func TestLayer2ClientReachesExternalIPThroughTheOneAnnouncingNode(t *testing.T) {
	ns := newNamespace(t)
	l2Setup(t, ns, []string{"198.51.100.64/30"})
	createWeb(t, ns, "web", 3)
	readyPods(t, ns, "app=web", 3)
	lbService(t, ns, "web")
	ip := externalIPs(t, ns, "web", 1)[0]
	owner, ifaces := announcer(t, ns, "web")
	if !slices.Equal(ifaces, []string{"eth0"}) {
		t.Errorf("announced on %v, want [eth0] (the node's LAN macvlan, not its pod bridge or veths)", ifaces)
	}
	curlOK(t, "http://"+ip+"/")
	if got := clientNeighbourNode(ip); got != owner {
		t.Errorf("the client's neighbour table resolves %s to %s, but %s announces it", ip, got, owner)
	}
	if got := arpingNodes(ip); !slices.Equal(got, []string{owner}) {
		t.Errorf("arping %s: answered by %v, want exactly [%s]", ip, got, owner)
	}
	// What a user runs to find the owner.
	out, err := kubectl("get", "announcements", "-n", ns)
	if err != nil || !strings.Contains(out, owner) || !strings.Contains(out, ip) {
		t.Errorf("kubectl get announcements does not show %s on %s:\n%s", ip, owner, out)
	}
	eventually(t, 10*time.Second, "an Announcing event", func(context.Context) (bool, error) {
		for _, e := range events(t, ns, "web") {
			if strings.HasPrefix(e, "Announcing: "+owner+" announces "+ip) {
				return true, nil
			}
		}
		return false, nil
	})
	// Deleting the Service stops the replies.
	if err := crClient.Delete(context.Background(), &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "no ARP reply for "+ip+" after the Service is gone", func(context.Context) (bool, error) {
		return len(arpingNodes(ip)) == 0, nil
	})
}

func TestLayer2IPv6ClientReachesExternalIPAndOneNodeAnswersNDP(t *testing.T) {
	ns := newNamespace(t)
	l2Setup(t, ns, []string{"2001:db8:1::1:0/126"})
	createWeb(t, ns, "web", 2)
	readyPods(t, ns, "app=web", 2)
	single := corev1.IPFamilyPolicySingleStack
	lbService(t, ns, "web", func(s *corev1.Service) {
		s.Spec.IPFamilyPolicy = &single
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
	})
	ip := externalIPs(t, ns, "web", 1)[0]
	owner, _ := announcer(t, ns, "web")
	curlOK(t, "http://["+ip+"]/")
	if got := ndiscNodes(ip); !slices.Equal(got, []string{owner}) {
		t.Errorf("ndisc6 %s: answered by %v, want exactly [%s]", ip, got, owner)
	}
	if got := clientNeighbourNode(ip); got != owner {
		t.Errorf("client neighbour entry for %s points at %s, want %s", ip, got, owner)
	}
}

func TestLayer2NodeSelectorsAndPreferredNodesChooseTheAnnouncer(t *testing.T) {
	ns := newNamespace(t)
	l2Setup(t, ns, []string{"198.51.100.68/30"}, func(a *v1alpha1.L2Advertisement) {
		a.Spec.NodeSelectors = []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{{
			Key: "kubernetes.io/hostname", Operator: metav1.LabelSelectorOpIn, Values: []string{"node-2", "node-3"}}}}}
		a.Spec.PreferredNodes = []string{"node-3", "node-2"}
	})
	lbService(t, ns, "web")
	ip := externalIPs(t, ns, "web", 1)[0]
	if owner, _ := announcer(t, ns, "web"); owner != "node-3" {
		t.Errorf("announcer %s, want node-3: selected by nodeSelectors and first in preferredNodes", owner)
	}
	if got := arpingNodes(ip); !slices.Equal(got, []string{"node-3"}) {
		t.Errorf("arping %s answered by %v, want [node-3]", ip, got)
	}
}

func TestLayer2UnknownInterfaceLeavesTheAddressUnannouncedWithAReason(t *testing.T) {
	ns := newNamespace(t)
	l2Setup(t, ns, []string{"198.51.100.72/30"}, func(a *v1alpha1.L2Advertisement) {
		a.Spec.Interfaces = []string{"bond7"}
	})
	lbService(t, ns, "web")
	ip := externalIPs(t, ns, "web", 1)[0]
	eventually(t, 15*time.Second, "an AnnounceFailed event", func(context.Context) (bool, error) {
		for _, e := range events(t, ns, "web") {
			if strings.HasPrefix(e, "AnnounceFailed: no node can announce "+ip) {
				return true, nil
			}
		}
		return false, nil
	})
	if got := arpingNodes(ip); len(got) != 0 {
		t.Errorf("arping %s answered by %v; no node has interface bond7", ip, got)
	}
}

// Two Services share an address but are selected by different
// L2Advertisements that prefer different nodes. Every speaker must decide
// the same owner, whatever order its cache lists the Services in: by the
// merge rule (speaker/plan), the preferred nodes of the advertisements in
// the order of their names, so the one named "a-..." wins.
func TestLayer2SharingServicesUnderDifferentAdvertisementsAnswerFromOneNode(t *testing.T) {
	ns := newNamespace(t)
	pool := newPool(t, ns+"-lan", ns, []string{"198.51.100.76/30"})
	for _, a := range []struct{ name, team, prefer string }{{ns + "-a-first", "a", "node-2"}, {ns + "-b-second", "b", "node-3"}} {
		adv := &v1alpha1.L2Advertisement{
			ObjectMeta: metav1.ObjectMeta{Name: a.name},
			Spec: v1alpha1.L2AdvertisementSpec{
				IPAddressPools:   []string{pool.Name},
				ServiceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"team": a.team}}},
				PreferredNodes:   []string{a.prefer},
			},
		}
		if err := crClient.Create(context.Background(), adv); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = crClient.Delete(context.Background(), adv) })
	}
	// s0 (team b, preferring node-3) first, so a speaker that took the
	// preferences of the first Service it saw would often pick node-3.
	for i, team := range []string{"b", "a"} {
		lbService(t, ns, fmt.Sprintf("s%d", i), func(s *corev1.Service) {
			s.Labels = map[string]string{"team": team}
			s.Annotations = map[string]string{v1alpha1.AnnotationAllowSharedIP: "k"}
			s.Spec.Ports[0].Port = int32(80 + i)
		})
	}
	a, b := externalIPs(t, ns, "s0", 1)[0], externalIPs(t, ns, "s1", 1)[0]
	if a != b {
		t.Fatalf("sharing Services got %s and %s", a, b)
	}
	// s0 alone may be announced from node-3 for a moment, until s1 arrives.
	eventually(t, 20*time.Second, "s0 and s1 announced by node-2 alone (preferred by the advertisement first by name)", func(ctx context.Context) (bool, error) {
		var list v1alpha1.AnnouncementList
		if err := crClient.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return false, err
		}
		by := map[string][]string{}
		for _, a := range list.Items {
			if a.Spec.Mode == "layer2" {
				by[a.Spec.Service] = append(by[a.Spec.Service], a.Spec.Node)
			}
		}
		if !slices.Equal(by["s0"], []string{"node-2"}) || !slices.Equal(by["s1"], []string{"node-2"}) {
			return false, fmt.Errorf("announced by %v", by)
		}
		return true, nil
	})
	// An Announcement is written after its node decided, and one that a
	// node withdrew before writing it is never written: the list can show
	// node-2 alone while node-3, which announced s0 for a moment, is still
	// about to stop. So wait for the answers to settle, then hold.
	eventually(t, 15*time.Second, "node-2 alone to answer ARP for "+a, func(context.Context) (bool, error) {
		return slices.Equal(arpingNodes(a), []string{"node-2"}), nil
	})
	for range 3 {
		if got := arpingNodes(a); !slices.Equal(got, []string{"node-2"}) {
			t.Errorf("arping %s answered by %v, want [node-2]", a, got)
		}
	}
}

func TestLayer2LocalTrafficPolicyAnnouncesFromTheEndpointsNodeAndFollowsIt(t *testing.T) {
	ns := newNamespace(t)
	l2Setup(t, ns, []string{"198.51.100.80/30"})
	d := createWeb(t, ns, "web", 1)
	pod := readyPods(t, ns, "app=web", 1)[0]
	lbService(t, ns, "web", func(s *corev1.Service) {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	})
	ip := externalIPs(t, ns, "web", 1)[0]
	if owner, _ := announcer(t, ns, "web"); owner != pod.Spec.NodeName {
		t.Fatalf("Local policy: announced by %s, but the only endpoint is on %s", owner, pod.Spec.NodeName)
	}
	a := curlOK(t, "http://"+ip+"/")
	if !strings.HasPrefix(a.Client, lab.ClientIPv4+":") {
		t.Errorf("Local policy should keep the client's address; the pod saw %s", a.Client)
	}
	// Move the pod to another node: the announcement follows.
	target := "node-1"
	if pod.Spec.NodeName == "node-1" {
		target = "node-2"
	}
	if err := crClient.Get(context.Background(), client.ObjectKeyFromObject(d), d); err != nil {
		t.Fatal(err)
	}
	d.Spec.Template.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": target}
	if err := crClient.Update(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the announcement to follow the pod to "+target, func(ctx context.Context) (bool, error) {
		var list v1alpha1.AnnouncementList
		if err := crClient.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return false, err
		}
		return len(list.Items) == 1 && list.Items[0].Spec.Node == target, nil
	})
	curlOK(t, "http://"+ip+"/")
	if got := arpingNodes(ip); !slices.Equal(got, []string{target}) {
		t.Errorf("arping %s answered by %v, want [%s]", ip, got, target)
	}
}
