package e2etest

// BGP as users meet it: the lab's FRR and BIRD routers peer with every
// node's speaker, the BGP client behind FRR curls the EXTERNAL-IP, and the
// routers' tables and kernels show which nodes announce it.

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/e2etest/herald"
	"github.com/heraldlb/herald/e2etest/lab"
	"github.com/heraldlb/herald/e2etest/traffic"
	"github.com/heraldlb/herald/internal/bgprouter"
)

// nodesASN is the lab nodes' AS: eBGP to both routers.
const nodesASN = 64600

// bgpSeq makes the names of each bgpSetup's objects unique.
var bgpSeq atomic.Int32

func needRouters(t *testing.T) {
	t.Helper()
	if theLab.FRR == nil || theLab.BIRD == nil {
		t.Skip("the lab runs without BGP routers (FRR and BIRD: Debian packages frr, bird2)")
	}
}

// podNodes are the lab's nodes that run pods, by name.
func podNodes() []lab.Node {
	var out []lab.Node
	for _, n := range theLab.Nodes {
		if !n.SpeakerOnly {
			out = append(out, n)
		}
	}
	return out
}

func create(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := crClient.Create(context.Background(), o); err != nil {
			t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
		t.Cleanup(func() { _ = crClient.Delete(context.Background(), o) })
	}
}

// bgpSetup makes the namespace's pool, a BGPPeer to the router at addr
// (AS peerASN) from every node, and a BGPAdvertisement of the pool to it.
// It returns the peer's name.
func bgpSetup(t *testing.T, ns string, addrs []string, addr string, peerASN uint32, peer func(*v1alpha1.BGPPeerSpec), adv func(*v1alpha1.BGPAdvertisementSpec)) string {
	t.Helper()
	base := fmt.Sprintf("%s-%d", ns, bgpSeq.Add(1))
	pool := newPool(t, base+"-bgp", ns, addrs)
	p := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: base + "-peer"}, Spec: v1alpha1.BGPPeerSpec{
		MyASN: nodesASN, PeerASN: peerASN, PeerAddress: addr, HoldTime: &metav1.Duration{Duration: 9 * time.Second},
		ConnectTime: &metav1.Duration{Duration: time.Second},
	}}
	if peer != nil {
		peer(&p.Spec)
	}
	a := &v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: base + "-adv"}, Spec: v1alpha1.BGPAdvertisementSpec{
		IPAddressPools: []string{pool.Name}, Peers: []string{p.Name},
	}}
	if adv != nil {
		adv(&a.Spec)
	}
	create(t, p, a)
	return p.Name
}

// bgpSessions waits until every pod node's BGPSession for peer satisfies ok.
func bgpSessions(t *testing.T, peer string, timeout time.Duration, what string, ok func(v1alpha1.BGPSessionStatus) bool) map[string]v1alpha1.BGPSession {
	t.Helper()
	got := map[string]v1alpha1.BGPSession{}
	var seen []string
	eventually(t, timeout, "BGPSessions of "+peer+": "+what, func(ctx context.Context) (bool, error) {
		var list v1alpha1.BGPSessionList
		if err := crClient.List(ctx, &list); err != nil {
			return false, err
		}
		clear(got)
		seen = seen[:0]
		for _, s := range list.Items {
			if s.Spec.Peer != peer {
				continue
			}
			seen = append(seen, fmt.Sprintf("%s: %s %q", s.Spec.Node, s.Status.State, s.Status.Reason))
			if ok(s.Status) {
				got[s.Spec.Node] = s
			}
		}
		if len(got) == len(theLab.Nodes) {
			return true, nil
		}
		return false, fmt.Errorf("last seen %v", seen)
	})
	return got
}

func established(s v1alpha1.BGPSessionStatus) bool { return s.State == "Established" }

// routerNextHops waits until the router's table holds prefix with exactly
// the next hops of the given nodes (none: the prefix is gone) and returns
// the route.
func routerNextHops(t *testing.T, r interface {
	Route(context.Context, netip.Prefix) (*bgprouter.Route, error)
}, prefix netip.Prefix, nodes []lab.Node, v6 bool, timeout time.Duration) *bgprouter.Route {
	t.Helper()
	var want []netip.Addr
	for _, n := range nodes {
		if v6 {
			want = append(want, n.IPv6)
		} else {
			want = append(want, n.IPv4)
		}
	}
	slices.SortFunc(want, netip.Addr.Compare)
	var route *bgprouter.Route
	var last []netip.Addr
	eventually(t, timeout, fmt.Sprintf("%s at the router with next hops %v", prefix, want), func(ctx context.Context) (bool, error) {
		var err error
		if route, err = r.Route(ctx, prefix); err != nil {
			return false, err
		}
		last = nil
		if route != nil {
			for _, nh := range route.NextHops() {
				if !nh.IsLinkLocalUnicast() {
					last = append(last, nh)
				}
			}
		}
		slices.SortFunc(last, netip.Addr.Compare)
		last = slices.Compact(last)
		if !slices.Equal(last, want) {
			return false, fmt.Errorf("next hops %v", last)
		}
		return true, nil
	})
	return route
}

// ingressNode names the node a request entered the cluster through: with
// externalTrafficPolicy Cluster, kube-proxy masquerades it to that node's
// address (its pod gateway when the pod is local, its LAN address if not).
func ingressNode(a lab.Answer) string {
	ap, err := netip.ParseAddrPort(a.Client)
	if err != nil {
		return "unparsed " + a.Client
	}
	ip := ap.Addr().Unmap()
	for _, n := range theLab.Nodes {
		if ip == n.IPv4 || ip == n.IPv6 || (n.PodCIDRv4.IsValid() && n.PodCIDRv4.Contains(ip)) || (n.PodCIDRv6.IsValid() && n.PodCIDRv6.Contains(ip)) {
			return n.Name
		}
	}
	return "unknown " + a.Client
}

// TestBGPClusterServiceReachesTheClientThroughFRRFromEveryNode: eBGP to FRR
// with BFD and communities; every node announces the address, FRR installs
// an ECMP route over all of them, the BGP client's requests enter through
// every node, kubectl shows the sessions, and deleting the Service withdraws
// the route.
func TestBGPClusterServiceReachesTheClientThroughFRRFromEveryNode(t *testing.T) {
	needRouters(t)
	ns := newNamespace(t)
	create(t, &v1alpha1.BFDProfile{ObjectMeta: metav1.ObjectMeta{Name: ns + "-bfd"}})
	peer := bgpSetup(t, ns, []string{"203.0.113.128/30"}, lab.FRRIPv4, lab.FRRASN,
		func(p *v1alpha1.BGPPeerSpec) { p.BFDProfile = ns + "-bfd" },
		func(a *v1alpha1.BGPAdvertisementSpec) {
			a.Communities = []string{"64600:7", "large:64600:1:2", "no-export"}
		})
	createWeb(t, ns, "web", 3)
	readyPods(t, ns, "app=web", 3)
	lbService(t, ns, "web")
	ip := externalIPs(t, ns, "web", 1)[0]
	prefix := netip.PrefixFrom(netip.MustParseAddr(ip), 32)
	nodes := podNodes()

	sessions := bgpSessions(t, peer, 30*time.Second, "Established with BFD Up and one prefix", func(s v1alpha1.BGPSessionStatus) bool {
		return established(s) && s.BFD == "Up" && s.PrefixesAdvertised == 1 && s.PeerASN == lab.FRRASN
	})
	route := routerNextHops(t, theLab.FRR, prefix, nodes, false, 20*time.Second)
	for _, p := range route.Paths {
		if !slices.Contains(p.Communities, "64600:7") || !slices.Contains(p.Communities, "65535:65281") || !slices.Contains(p.LargeCommunities, "64600:1:2") {
			t.Errorf("path from %s carries communities %v and large %v, want 64600:7, no-export (65535:65281) and 64600:1:2", p.From, p.Communities, p.LargeCommunities)
		}
	}
	eventually(t, 10*time.Second, "an ECMP route to "+ip+" in FRR's kernel over every node", func(ctx context.Context) (bool, error) {
		kr, err := bgprouter.KernelRouteIn(ctx, lab.FRRNetns, prefix)
		return err == nil && kr != nil && len(kr.NextHops) == len(nodes), err
	})

	// Requests from behind the router enter through every node.
	entered := map[string]int{}
	for range 60 {
		out, err := curl(lab.BGPClientNetns, "http://"+ip+"/")
		if err != nil {
			t.Fatalf("curl from the BGP client: %v", err)
		}
		a, err := lab.ParseAnswer(out)
		if err != nil {
			t.Fatal(err)
		}
		entered[ingressNode(a)]++
	}
	t.Logf("60 requests from the BGP client entered through %v", entered)
	for _, n := range nodes {
		if entered[n.Name] == 0 {
			t.Errorf("no request entered through %s: %v (the router's ECMP should spread new connections)", n.Name, entered)
		}
	}

	// What a user runs.
	out, err := kubectl("get", "bgpsessions")
	if err != nil || strings.Count(out, "Established") < len(sessions) {
		t.Errorf("kubectl get bgpsessions does not show %d Established sessions:\n%s", len(sessions), out)
	}
	if err := crClient.Delete(context.Background(), &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}}); err != nil {
		t.Fatal(err)
	}
	routerNextHops(t, theLab.FRR, prefix, nil, false, 10*time.Second)
}

// TestBGPLocalServiceIsAnnouncedOnlyWhereItsPodRunsAndFollowsIt: an IPv6
// Service with externalTrafficPolicy Local over an IPv6 session to BIRD is
// announced by the one node running its pod, and by the next one when the
// pod moves.
func TestBGPLocalServiceIsAnnouncedOnlyWhereItsPodRunsAndFollowsIt(t *testing.T) {
	needRouters(t)
	ns := newNamespace(t)
	bgpSetup(t, ns, []string{"2001:db8:4::10/126"}, lab.BIRDIPv6, lab.BIRDASN, nil, nil)
	nodes := podNodes()
	createWeb(t, ns, "web", 1, func(d *appsv1.Deployment) {
		d.Spec.Template.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": nodes[0].Name}
	})
	readyPods(t, ns, "app=web", 1)
	single := corev1.IPFamilyPolicySingleStack
	lbService(t, ns, "web", func(s *corev1.Service) {
		s.Spec.IPFamilyPolicy = &single
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	})
	ip := externalIPs(t, ns, "web", 1)[0]
	prefix := netip.PrefixFrom(netip.MustParseAddr(ip), 128)
	routerNextHops(t, theLab.BIRD, prefix, nodes[:1], true, 30*time.Second)

	// The pod moves to the second node.
	d, err := theLab.Client.AppsV1().Deployments(ns).Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d.Spec.Template.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": nodes[1].Name}
	if _, err := theLab.Client.AppsV1().Deployments(ns).Update(context.Background(), d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	routerNextHops(t, theLab.BIRD, prefix, nodes[1:2], true, 30*time.Second)
}

// TestBGPBadPeersStayDownWithTheReasonAndOneEventAndHarmNothing: a wrong
// TCP MD5 password and an AS mismatch keep the sessions down, each
// BGPSession says why, the BGPPeer gets one event per node, and a good
// session (IPv4 routes over IPv6) works meanwhile.
func TestBGPBadPeersStayDownWithTheReasonAndOneEventAndHarmNothing(t *testing.T) {
	needRouters(t)
	ns := newNamespace(t)
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: herald.Namespace, Name: ns + "-md5"}, Data: map[string][]byte{"password": []byte("not-the-routers")}})
	// FRR has no password for the lab nodes: a signed SYN goes unanswered.
	md5 := bgpSetup(t, ns, []string{"203.0.113.132/30"}, lab.FRRIPv4, lab.FRRASN,
		func(p *v1alpha1.BGPPeerSpec) { p.PasswordSecret = &v1alpha1.SecretKeyReference{Name: ns + "-md5"} }, nil)
	// BIRD is AS 64513, not 64999: its OPEN is refused.
	asPeer := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: ns + "-as"}, Spec: v1alpha1.BGPPeerSpec{
		MyASN: nodesASN, PeerASN: 64999, PeerAddress: lab.BIRDIPv4, ConnectTime: &metav1.Duration{Duration: time.Second}}}
	create(t, asPeer)

	down := func(s v1alpha1.BGPSessionStatus) bool {
		return !established(s) && s.Reason != "" && s.Reason != "connecting"
	}
	for name, s := range bgpSessions(t, md5, 40*time.Second, "down with a reason", down) {
		t.Logf("%s to FRR with a wrong password: %s: %s", name, s.Status.State, s.Status.Reason)
	}
	for name, s := range bgpSessions(t, asPeer.Name, 40*time.Second, "down with a reason", down) {
		t.Logf("%s to BIRD with the wrong AS: %s: %s", name, s.Status.State, s.Status.Reason)
		if !strings.Contains(strings.ToLower(s.Status.Reason), "as") {
			t.Errorf("%s: the reason %q does not speak of the AS", name, s.Status.Reason)
		}
	}
	// Meanwhile a good session works: IPv4 routes over an IPv6 session to
	// BIRD (MP-BGP), with each node's IPv4 address as the next hop.
	bgpSetup(t, ns, []string{"203.0.113.148/30"}, lab.BIRDIPv6, lab.BIRDASN, nil, nil)
	createWeb(t, ns, "web", 1)
	lbService(t, ns, "web", func(s *corev1.Service) {
		s.Annotations = map[string]string{v1alpha1.AnnotationLoadBalancerIPs: "203.0.113.148"}
	})
	externalIPs(t, ns, "web", 1)
	routerNextHops(t, theLab.BIRD, netip.MustParsePrefix("203.0.113.148/32"), podNodes(), false, 30*time.Second)

	// One SessionDown event per node and peer, however long it stays down.
	time.Sleep(5 * time.Second)
	for _, peer := range []string{md5, asPeer.Name} {
		n := 0
		for _, e := range clusterEvents(t, "BGPPeer", peer) {
			if strings.HasPrefix(e, "SessionDown") {
				n++
			}
		}
		if n != len(theLab.Nodes) {
			t.Errorf("BGPPeer %s has %d SessionDown events, want one per node (%d)", peer, n, len(theLab.Nodes))
		}
	}
}

// TestBGPNodeLinkCutWithBFDWithdrawsItsNextHopWithinASecond: with BFD 300
// ms x 3, FRR drops the next hop of a node whose link is cut in about a
// second, far inside the 9 s hold time, and takes it back when the link
// returns; without BFD, the hold time ends it.
func TestBGPNodeLinkCutWithBFDWithdrawsItsNextHopWithinASecond(t *testing.T) {
	needRouters(t)
	keepRunning(t)
	ns := newNamespace(t)
	create(t, &v1alpha1.BFDProfile{ObjectMeta: metav1.ObjectMeta{Name: ns + "-bfd"}})
	peer := bgpSetup(t, ns, []string{"203.0.113.136/30"}, lab.FRRIPv4, lab.FRRASN,
		func(p *v1alpha1.BGPPeerSpec) { p.BFDProfile = ns + "-bfd" }, nil)
	createWeb(t, ns, "web", 1)
	readyPods(t, ns, "app=web", 1)
	lbService(t, ns, "web")
	ip := externalIPs(t, ns, "web", 1)[0]
	prefix := netip.PrefixFrom(netip.MustParseAddr(ip), 32)
	nodes := podNodes()
	bgpSessions(t, peer, 30*time.Second, "Established with BFD Up", func(s v1alpha1.BGPSessionStatus) bool { return established(s) && s.BFD == "Up" })
	routerNextHops(t, theLab.FRR, prefix, nodes, false, 20*time.Second)

	cut := nodes[len(nodes)-1]
	start := time.Now()
	if err := theLab.SetNodeLink(cut.Name, false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = theLab.SetNodeLink(cut.Name, true) })
	routerNextHops(t, theLab.FRR, prefix, nodes[:len(nodes)-1], false, 5*time.Second)
	took := time.Since(start)
	t.Logf("%s's link cut: its next hop left FRR's table after %s (BFD 300 ms x 3; hold time 9 s)", cut.Name, took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Errorf("withdrawal took %s; BFD should take about 1 s", took)
	}
	if err := theLab.SetNodeLink(cut.Name, true); err != nil {
		t.Fatal(err)
	}
	routerNextHops(t, theLab.FRR, prefix, nodes, false, 30*time.Second)

	// Without BFD, the hold time (9 s) ends the session.
	var p v1alpha1.BGPPeer
	if err := crClient.Get(context.Background(), types.NamespacedName{Name: peer}, &p); err != nil {
		t.Fatal(err)
	}
	p.Spec.BFDProfile = ""
	if err := crClient.Update(context.Background(), &p); err != nil {
		t.Fatal(err)
	}
	bgpSessions(t, peer, 30*time.Second, "Established without BFD", func(s v1alpha1.BGPSessionStatus) bool { return established(s) && s.BFD == "" })
	routerNextHops(t, theLab.FRR, prefix, nodes, false, 20*time.Second)
	start = time.Now()
	if err := theLab.SetNodeLink(cut.Name, false); err != nil {
		t.Fatal(err)
	}
	routerNextHops(t, theLab.FRR, prefix, nodes[:len(nodes)-1], false, 15*time.Second)
	took = time.Since(start)
	t.Logf("without BFD: %s's next hop left FRR's table after %s (hold time 9 s)", cut.Name, took.Round(time.Millisecond))
	if took > 12*time.Second {
		t.Errorf("withdrawal without BFD took %s; the hold time is 9 s", took)
	}
}

// TestBGPRollingRestartWithGracefulRestartLosesNoRequest: with graceful
// restart, FRR keeps each restarting node's route (stale) until its new
// speaker announces it again, so the BGP client's requests never fail.
func TestBGPRollingRestartWithGracefulRestartLosesNoRequest(t *testing.T) {
	needRouters(t)
	keepRunning(t)
	ns := newNamespace(t)
	peer := bgpSetup(t, ns, []string{"203.0.113.140/30"}, lab.FRRIPv4, lab.FRRASN,
		func(p *v1alpha1.BGPPeerSpec) { p.GracefulRestart = true }, nil)
	createWeb(t, ns, "web", 3)
	readyPods(t, ns, "app=web", 3)
	lbService(t, ns, "web")
	ip := externalIPs(t, ns, "web", 1)[0]
	prefix := netip.PrefixFrom(netip.MustParseAddr(ip), 32)
	nodes := podNodes()
	bgpSessions(t, peer, 30*time.Second, "Established", established)
	routerNextHops(t, theLab.FRR, prefix, nodes, false, 20*time.Second)
	waitNodePorts(t, ns, "web")

	p := traffic.Start(lab.BGPClientNetns, "http://"+ip+"/", 20*time.Millisecond)
	for _, n := range theLab.Nodes {
		hd.Speaker(n.Name).Stop()
		if err := hd.StartSpeaker(n); err != nil {
			p.Finish()
			t.Fatal(err)
		}
		bgpSessions(t, peer, 30*time.Second, "Established again", established)
		time.Sleep(time.Second)
	}
	st := p.Finish()
	total, failed, outage := st.Total, st.Failed, st.Outage
	t.Logf("rolling restart with graceful restart: %d requests from behind FRR, %d failed (longest outage %s), errors %v", total, failed, outage, st.Errors)
	if failed != 0 {
		t.Errorf("%d of %d requests failed; want none", failed, total)
	}
	routerNextHops(t, theLab.FRR, prefix, nodes, false, 20*time.Second)
}

// TestBGPPeerChangeThatNeedsNoResetKeepsTheSessionAndRoutesFromTheRouterGoNowhere:
// a new hold time applies at the next OPEN without resetting the session
// (FRR's uptime runs on), and a route FRR sends to the nodes is installed
// nowhere on them.
func TestBGPPeerChangeThatNeedsNoResetKeepsTheSessionAndRoutesFromTheRouterGoNowhere(t *testing.T) {
	needRouters(t)
	ns := newNamespace(t)
	peer := bgpSetup(t, ns, []string{"203.0.113.144/30"}, lab.FRRIPv4, lab.FRRASN, nil, nil)
	bgpSessions(t, peer, 30*time.Second, "Established", established)
	uptime := func() map[netip.Addr]time.Duration {
		ns, err := theLab.FRR.Neighbors(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		out := map[netip.Addr]time.Duration{}
		for _, n := range ns {
			if n.State == "Established" {
				out[n.Address] = n.Uptime
			}
		}
		return out
	}
	before := uptime()
	var p v1alpha1.BGPPeer
	if err := crClient.Get(context.Background(), types.NamespacedName{Name: peer}, &p); err != nil {
		t.Fatal(err)
	}
	p.Spec.HoldTime = &metav1.Duration{Duration: 30 * time.Second}
	if err := crClient.Update(context.Background(), &p); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	after := uptime()
	for _, n := range theLab.Nodes {
		if after[n.IPv4] <= before[n.IPv4] {
			t.Errorf("%s: FRR's uptime went from %s to %s: the hold-time change reset the session", n.Name, before[n.IPv4], after[n.IPv4])
		}
	}

	// A change that needs a reset says so, once per node, on the BGPPeer.
	if err := crClient.Get(context.Background(), types.NamespacedName{Name: peer}, &p); err != nil {
		t.Fatal(err)
	}
	p.Spec.GracefulRestart = true
	if err := crClient.Update(context.Background(), &p); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "a SessionReset event per node naming gracefulRestart", func(context.Context) (bool, error) {
		n := 0
		for _, e := range clusterEvents(t, "BGPPeer", peer) {
			if strings.HasPrefix(e, "SessionReset") && strings.Contains(e, "gracefulRestart changed") {
				n++
			}
		}
		return n == len(theLab.Nodes), nil
	})
	bgpSessions(t, peer, 30*time.Second, "Established again after the reset", established)

	// FRR announces a prefix to the nodes; none of them installs it.
	leak := netip.MustParsePrefix("203.0.113.160/28")
	if err := theLab.FRR.Apply(context.Background(), fmt.Sprintf("ip route %s blackhole\nrouter bgp %d\n address-family ipv4 unicast\n  network %s\n  no neighbor nodes route-map export-nothing out\n exit-address-family\n", leak, lab.FRRASN, leak)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = theLab.ResetRouters(context.Background()) })
	time.Sleep(3 * time.Second)
	for _, n := range theLab.Nodes {
		out, _ := exec.Command("ip", "-n", n.Netns, "route", "show", leak.String()).CombinedOutput()
		if strings.TrimSpace(string(out)) != "" {
			t.Errorf("%s installed FRR's %s: %s", n.Name, leak, out)
		}
	}
}

// clusterEvents lists "Reason: note" of the events about a cluster-scoped
// object, oldest first.
func clusterEvents(t *testing.T, kind, name string) []string {
	t.Helper()
	return eventsMatching(t, metav1.NamespaceAll, "regarding.kind="+kind+",regarding.name="+name)
}

// TestBGPSampleConfigPeersWithTheLabsFRR applies config/samples/bgp.yaml as
// a user would: every node peers with FRR, with BFD, and a Service of the
// sample's pool is reached from behind the router.
func TestBGPSampleConfigPeersWithTheLabsFRR(t *testing.T) {
	needRouters(t)
	const sample = "../config/samples/bgp.yaml"
	if out, err := kubectl("apply", "-f", sample); err != nil {
		t.Fatalf("kubectl apply -f %s: %v\n%s", sample, err, out)
	}
	t.Cleanup(func() { _, _ = kubectl("delete", "-f", sample) })
	bgpSessions(t, "router", 30*time.Second, "Established with BFD Up", func(s v1alpha1.BGPSessionStatus) bool {
		return established(s) && s.BFD == "Up"
	})
	ns := newNamespace(t)
	createWeb(t, ns, "web", 1)
	readyPods(t, ns, "app=web", 1)
	lbService(t, ns, "web", func(s *corev1.Service) {
		s.Annotations = map[string]string{v1alpha1.AnnotationAddressPool: "bgp"}
	})
	ip := externalIPs(t, ns, "web", 1)[0]
	route := routerNextHops(t, theLab.FRR, netip.PrefixFrom(netip.MustParseAddr(ip), 32), podNodes(), false, 20*time.Second)
	if p := route.Paths[0]; !slices.Contains(p.Communities, "64600:100") || !slices.Contains(p.LargeCommunities, "64600:1:100") {
		t.Errorf("FRR's path for %s carries %v and %v, want the sample's 64600:100 and 64600:1:100", ip, p.Communities, p.LargeCommunities)
	}
	eventually(t, 10*time.Second, "curl "+ip+" from behind FRR", func(context.Context) (bool, error) {
		_, err := curl(lab.BGPClientNetns, "http://"+ip+"/")
		return err == nil, err
	})
}

// TestBGPiBGPToBIRDCarriesLocalPrefAndAggregates: BIRD turned iBGP (the
// nodes in its AS) gets the advertisement's LOCAL_PREF, and two Services of
// a /30 pool aggregated to one /30 route.
func TestBGPiBGPToBIRDCarriesLocalPrefAndAggregates(t *testing.T) {
	needRouters(t)
	ctx := context.Background()
	conf := strings.Replace(lab.DefaultBIRDConfig(), "neighbor range "+lab.LANv4Prefix+" external", "neighbor range "+lab.LANv4Prefix+" internal", 1)
	if err := theLab.BIRD.Configure(ctx, conf); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = theLab.ResetRouters(context.Background()) })
	ns := newNamespace(t)
	thirty, pref := int32(30), uint32(250)
	peer := bgpSetup(t, ns, []string{"203.0.113.152/30"}, lab.BIRDIPv4, lab.BIRDASN,
		func(p *v1alpha1.BGPPeerSpec) { p.MyASN = lab.BIRDASN },
		func(a *v1alpha1.BGPAdvertisementSpec) { a.AggregationLength, a.LocalPref = &thirty, &pref })
	bgpSessions(t, peer, 30*time.Second, "Established (iBGP)", func(s v1alpha1.BGPSessionStatus) bool {
		return established(s) && s.PeerASN == lab.BIRDASN
	})
	createWeb(t, ns, "web", 1)
	lbService(t, ns, "web")
	lbService(t, ns, "api")
	externalIPs(t, ns, "web", 1)
	externalIPs(t, ns, "api", 1)
	route := routerNextHops(t, theLab.BIRD, netip.MustParsePrefix("203.0.113.152/30"), podNodes(), false, 20*time.Second)
	for _, p := range route.Paths {
		if p.LocalPref == nil || *p.LocalPref != pref {
			t.Errorf("BIRD's path from %s has LOCAL_PREF %v, want %d", p.From, p.LocalPref, pref)
		}
	}
	for _, ip := range []string{"203.0.113.152/32", "203.0.113.153/32"} {
		if r, err := theLab.BIRD.Route(ctx, netip.MustParsePrefix(ip)); err != nil || r != nil {
			t.Errorf("BIRD holds %s (%v, %v); want only the aggregate", ip, r, err)
		}
	}
}

// TestBGPMultihopToARouterTwoHopsAway: a BIRD behind FRR, two hops from the
// nodes, peers with them over eBGP multihop and learns the route.
func TestBGPMultihopToARouterTwoHopsAway(t *testing.T) {
	needRouters(t)
	ctx := context.Background()
	far, err := bgprouter.StartBIRD(ctx, bgprouter.Options{Netns: lab.BGPClientNetns, Dir: t.TempDir(), Config: fmt.Sprintf(`router id %s;
protocol device {}
protocol direct { ipv4; }
protocol kernel { ipv4 { import all; export none; }; learn; scan time 1; }
template bgp bgp_nodes {
  local %s as 64514;
  multihop;
  dynamic name "node";
  ipv4 { import all; export none; };
}
protocol bgp nodes4 from bgp_nodes { neighbor range %s external; }
`, lab.BGPClientIPv4, lab.BGPClientIPv4, lab.LANv4Prefix)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(far.Stop)
	ns := newNamespace(t)
	peer := bgpSetup(t, ns, []string{"203.0.113.156/30"}, lab.BGPClientIPv4, 64514,
		func(p *v1alpha1.BGPPeerSpec) { p.EBGPMultiHop = true }, nil)
	bgpSessions(t, peer, 30*time.Second, "Established over two hops", established)
	createWeb(t, ns, "web", 1)
	lbService(t, ns, "web")
	ip := externalIPs(t, ns, "web", 1)[0]
	routerNextHops(t, far, netip.PrefixFrom(netip.MustParseAddr(ip), 32), podNodes(), false, 20*time.Second)
}

// TestBGPAndLayer2TogetherOnOnePool: a LAN pool advertised both ways is
// answered over ARP by exactly one node and routed by FRR to every node;
// the LAN client and the BGP client both reach it.
func TestBGPAndLayer2TogetherOnOnePool(t *testing.T) {
	needRouters(t)
	ns := newNamespace(t)
	pool := newPool(t, ns+"-both", ns, []string{"198.51.100.96/30"})
	p := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: ns + "-frr"}, Spec: v1alpha1.BGPPeerSpec{
		MyASN: nodesASN, PeerASN: lab.FRRASN, PeerAddress: lab.FRRIPv4, ConnectTime: &metav1.Duration{Duration: time.Second}}}
	create(t, p,
		&v1alpha1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: ns + "-l2"}, Spec: v1alpha1.L2AdvertisementSpec{IPAddressPools: []string{pool.Name}}},
		&v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: ns + "-bgp"}, Spec: v1alpha1.BGPAdvertisementSpec{IPAddressPools: []string{pool.Name}, Peers: []string{p.Name}}})
	createWeb(t, ns, "web", 1)
	readyPods(t, ns, "app=web", 1)
	lbService(t, ns, "web")
	ip := externalIPs(t, ns, "web", 1)[0]
	owner, _ := announcer(t, ns, "web")
	routerNextHops(t, theLab.FRR, netip.PrefixFrom(netip.MustParseAddr(ip), 32), podNodes(), false, 30*time.Second)
	curlOK(t, "http://"+ip+"/")
	if got := arpingNodes(ip); !slices.Equal(got, []string{owner}) {
		t.Errorf("arping %s: answered by %v, want exactly the layer-2 owner [%s]", ip, got, owner)
	}
	eventually(t, 10*time.Second, "curl "+ip+" from behind FRR", func(context.Context) (bool, error) {
		_, err := curl(lab.BGPClientNetns, "http://"+ip+"/")
		return err == nil, err
	})
}

// TestBGPPerNodeASNThroughTwoPeersOfOneRouter: node-1 peers with FRR from
// AS 64601, the other nodes from AS 64602, through two BGPPeers with
// different node selectors; FRR sees each path from its node's AS.
func TestBGPPerNodeASNThroughTwoPeersOfOneRouter(t *testing.T) {
	needRouters(t)
	ns := newNamespace(t)
	nodes := podNodes()
	first := nodes[0].Name
	sel := func(op metav1.LabelSelectorOperator) []metav1.LabelSelector {
		return []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: op, Values: []string{first}}}}}
	}
	connect := &metav1.Duration{Duration: time.Second}
	one := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: ns + "-asn1"}, Spec: v1alpha1.BGPPeerSpec{
		MyASN: 64601, PeerASN: lab.FRRASN, PeerAddress: lab.FRRIPv4, ConnectTime: connect, NodeSelectors: sel(metav1.LabelSelectorOpIn)}}
	rest := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: ns + "-asn2"}, Spec: v1alpha1.BGPPeerSpec{
		MyASN: 64602, PeerASN: lab.FRRASN, PeerAddress: lab.FRRIPv4, ConnectTime: connect, NodeSelectors: sel(metav1.LabelSelectorOpNotIn)}}
	pool := newPool(t, ns+"-asn", ns, []string{"203.0.113.160/30"})
	create(t, one, rest, &v1alpha1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: ns + "-asn"}, Spec: v1alpha1.BGPAdvertisementSpec{IPAddressPools: []string{pool.Name}}})
	createWeb(t, ns, "web", 1)
	lbService(t, ns, "web")
	ip := externalIPs(t, ns, "web", 1)[0]
	route := routerNextHops(t, theLab.FRR, netip.PrefixFrom(netip.MustParseAddr(ip), 32), nodes, false, 30*time.Second)
	for _, p := range route.Paths {
		want := "64602"
		if p.From == nodes[0].IPv4 {
			want = "64601"
		}
		if p.ASPath != want {
			t.Errorf("FRR's path from %s has AS path %q, want %s", p.From, p.ASPath, want)
		}
	}
}
