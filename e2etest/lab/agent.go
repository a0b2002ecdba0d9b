package lab

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

// ReadyAnnotation, set to "false" on a Pod, makes the agent report the pod not
// Ready while it keeps serving, as a failing readiness probe would.
const ReadyAnnotation = "lab.herald.dev/ready"

// heartbeatPeriod is how often the agent renews each node's Lease and Ready
// condition; KCM's node lifecycle controller marks a node NotReady after 40 s
// without renewals.
const heartbeatPeriod = 10 * time.Second

// statusReportPeriod is how often the agent rewrites an unchanged node
// status: the kubelet's default nodeStatusReportFrequency.
const statusReportPeriod = 5 * time.Minute

// agent plays kubelet (and scheduler) for the lab nodes: it binds pending pods
// to lab nodes, runs each pod as a network namespace serving HTTP on its
// container ports, and reports pod IPs and readiness, so the real Deployment
// and EndpointSlice controllers work on the lab.
type agent struct {
	client  kubernetes.Interface
	nodes   map[string]*agentNode
	pods    corelisters.PodLister
	nodeLst corelisters.NodeLister
	queue   workqueue.TypedRateLimitingInterface[string]
	factory informers.SharedInformerFactory

	mu      sync.Mutex
	running map[string]*runningPod // by namespace/name
	boundTo map[types.UID]binding  // pods bound by the agent, for spreading before the informer sees them
}

type agentNode struct {
	Node
	heartbeat atomic.Bool
	slots     [podSlots]types.UID
}

type runningPod struct {
	uid        types.UID
	node       *agentNode
	netns      string // "" for hostNetwork pods
	slot       int
	ipv4, ipv6 netip.Addr
	servers    []*http.Server
}

func newAgent(client kubernetes.Interface, nodes []Node) *agent {
	a := &agent{
		client:  client,
		nodes:   map[string]*agentNode{},
		queue:   workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		running: map[string]*runningPod{},
		boundTo: map[types.UID]binding{},
		factory: informers.NewSharedInformerFactory(client, 0),
	}
	for _, n := range nodes {
		an := &agentNode{Node: n}
		an.heartbeat.Store(true)
		a.nodes[n.Name] = an
	}
	podInf := a.factory.Core().V1().Pods()
	a.pods = podInf.Lister()
	a.nodeLst = a.factory.Core().V1().Nodes().Lister()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			a.queue.Add(key)
		}
	}
	_, _ = podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	})
	return a
}

// registerNodes creates the Node objects with their addresses and pod CIDRs.
func (a *agent) registerNodes(ctx context.Context) error {
	for _, n := range a.sortedNodes() {
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{
				"kubernetes.io/hostname": n.Name,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     "amd64",
			}},
		}
		if !n.SpeakerOnly {
			node.Spec = corev1.NodeSpec{PodCIDR: n.PodCIDRv4.String(), PodCIDRs: []string{n.PodCIDRv4.String(), n.PodCIDRv6.String()}}
		}
		created, err := a.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("register node %s: %w", n.Name, err)
		}
		created.Status = a.nodeStatus(n)
		if _, err := a.client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("node %s status: %w", n.Name, err)
		}
		if err := a.renewLease(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

func (a *agent) nodeStatus(n *agentNode) corev1.NodeStatus {
	now := metav1.Now()
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("2"),
		corev1.ResourceMemory: resource.MustParse("8Gi"),
		corev1.ResourcePods:   resource.MustParse(strconv.Itoa(podSlots)),
	}
	return corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity,
		Phase:       corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{
			cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady"),
			cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory"),
			cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure"),
			cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID"),
		},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: n.IPv4.String()},
			{Type: corev1.NodeInternalIP, Address: n.IPv6.String()},
			{Type: corev1.NodeHostName, Address: n.Name},
		},
		NodeInfo: corev1.NodeSystemInfo{
			KubeletVersion: "v1.37.2-herald-lab", OperatingSystem: "linux", Architecture: "amd64",
			ContainerRuntimeVersion: "lab://netns",
		},
	}
}

// heartbeats keeps every node's Lease fresh and its Ready condition true, as
// a kubelet does, except for nodes whose heartbeat a test has stopped. Like a
// kubelet (nodeStatusReportFrequency), it writes a node's status only when
// Ready must change or statusReportPeriod has passed: the Lease is the
// heartbeat, and a Node object rewritten every 10 s would wake every Node
// watcher (speakers included) far more often than a real cluster does.
func (a *agent) heartbeats(ctx context.Context) {
	lastReport := map[string]time.Time{}
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		for _, n := range a.sortedNodes() {
			if !n.heartbeat.Load() {
				continue
			}
			if err := a.renewLease(ctx, n); err != nil && ctx.Err() == nil {
				klog.Errorf("lab agent: lease of %s: %v", n.Name, err)
			}
			cached, err := a.nodeLst.Get(n.Name)
			if err != nil {
				continue
			}
			ready := false
			for _, c := range cached.Status.Conditions {
				ready = ready || (c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue)
			}
			if ready && time.Since(lastReport[n.Name]) < statusReportPeriod {
				continue
			}
			node := cached.DeepCopy()
			now := metav1.Now()
			for i := range node.Status.Conditions {
				node.Status.Conditions[i].LastHeartbeatTime = now
				if node.Status.Conditions[i].Type == corev1.NodeReady && node.Status.Conditions[i].Status != corev1.ConditionTrue {
					node.Status.Conditions[i].Status = corev1.ConditionTrue
					node.Status.Conditions[i].Reason = "KubeletReady"
					node.Status.Conditions[i].LastTransitionTime = now
				}
			}
			if _, err := a.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err == nil {
				lastReport[n.Name] = time.Now()
			}
		}
	}, heartbeatPeriod)
}

func (a *agent) renewLease(ctx context.Context, n *agentNode) error {
	leases := a.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	dur := int32(40)
	l, err := leases.Get(ctx, n.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: n.Name},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: &n.Name, LeaseDurationSeconds: &dur, RenewTime: &now},
		}, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	l.Spec.RenewTime = &now
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}

func (a *agent) run(ctx context.Context) {
	a.factory.Start(ctx.Done())
	a.factory.WaitForCacheSync(ctx.Done())
	go a.heartbeats(ctx)
	for range 4 {
		go func() {
			for a.processNext(ctx) {
			}
		}()
	}
	<-ctx.Done()
	a.queue.ShutDown()
}

func (a *agent) processNext(ctx context.Context) bool {
	key, quit := a.queue.Get()
	if quit {
		return false
	}
	defer a.queue.Done(key)
	if err := a.sync(ctx, key); err != nil {
		if ctx.Err() == nil {
			klog.Errorf("lab agent: pod %s: %v", key, err)
		}
		a.queue.AddRateLimited(key)
		return true
	}
	a.queue.Forget(key)
	return true
}

func (a *agent) sync(ctx context.Context, key string) error {
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	pod, err := a.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		a.stopPod(key, "")
		return nil
	}
	if err != nil {
		return err
	}
	if pod.Spec.NodeName == "" {
		if pod.Spec.SchedulerName != corev1.DefaultSchedulerName || pod.DeletionTimestamp != nil {
			return nil
		}
		return a.bind(ctx, pod)
	}
	node, ours := a.nodes[pod.Spec.NodeName]
	if !ours || node.SpeakerOnly {
		return nil // speaker-only nodes run no pods (hostNetwork ones neither)
	}
	if pod.DeletionTimestamp != nil {
		a.stopPod(key, "")
		// The kubelet's last word on a pod: its final delete.
		err := a.client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{
			GracePeriodSeconds: new(int64),
			Preconditions:      &metav1.Preconditions{UID: &pod.UID},
		})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil
		}
		return err
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		a.stopPod(key, "")
		return nil
	}
	a.stopPod(key, pod.UID) // a pod recreated under the same name
	rp, err := a.startPod(key, pod, node)
	if err != nil {
		return err
	}
	return a.writeStatus(ctx, pod, rp)
}

// binding is where the agent put a pod, and the pod's controller (a
// ReplicaSet), so that the replicas of one spread over the nodes.
type binding struct {
	node  string
	owner types.UID
}

func controllerUID(pod *corev1.Pod) types.UID {
	if ref := metav1.GetControllerOf(pod); ref != nil {
		return ref.UID
	}
	return ""
}

// bind picks the lab node, among those that the pod's node selector, the
// node's taints and cordon allow, with the fewest pods of the pod's
// controller, then the fewest pods (as the default scheduler spreads a
// ReplicaSet: pods of other tests still going away do not skew it), and
// binds the pod there.
func (a *agent) bind(ctx context.Context, pod *corev1.Pod) error {
	// Choose and reserve under one lock, so pods bound at the same moment by
	// different workers still spread.
	a.mu.Lock()
	owner := controllerUID(pod)
	load, siblings := map[string]int{}, map[string]int{}
	for _, b := range a.boundTo {
		load[b.node]++
		if owner != "" && b.owner == owner {
			siblings[b.node]++
		}
	}
	best := ""
	for _, n := range a.sortedNodes() {
		if n.SpeakerOnly {
			continue
		}
		obj, err := a.nodeLst.Get(n.Name)
		if err != nil || obj.Spec.Unschedulable || !labels.SelectorFromSet(pod.Spec.NodeSelector).Matches(labels.Set(obj.Labels)) || !tolerates(pod, obj) {
			continue
		}
		if best == "" || siblings[n.Name] < siblings[best] || siblings[n.Name] == siblings[best] && load[n.Name] < load[best] {
			best = n.Name
		}
	}
	if best != "" {
		a.boundTo[pod.UID] = binding{best, owner}
	}
	a.mu.Unlock()
	if best == "" {
		return fmt.Errorf("no lab node fits pod %s/%s", pod.Namespace, pod.Name)
	}
	err := a.client.CoreV1().Pods(pod.Namespace).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: best},
	}, metav1.CreateOptions{})
	if err != nil {
		a.mu.Lock()
		delete(a.boundTo, pod.UID)
		a.mu.Unlock()
	}
	return err
}

func tolerates(pod *corev1.Pod, node *corev1.Node) bool {
	for i := range node.Spec.Taints {
		t := &node.Spec.Taints[i]
		if t.Effect == corev1.TaintEffectPreferNoSchedule {
			continue
		}
		ok := false
		for j := range pod.Spec.Tolerations {
			if pod.Spec.Tolerations[j].ToleratesTaint(klog.Background(), t, false) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// startPod gives the pod a network namespace on its node's pod bridge and
// serves HTTP on its TCP container ports (80 when it declares none). It is a
// no-op for a pod that is already running.
func (a *agent) startPod(key string, pod *corev1.Pod, node *agentNode) (*runningPod, error) {
	a.mu.Lock()
	if rp, ok := a.running[key]; ok {
		a.mu.Unlock()
		return rp, nil
	}
	a.boundTo[pod.UID] = binding{node.Name, controllerUID(pod)}
	rp := &runningPod{uid: pod.UID, node: node, slot: -1}
	if pod.Spec.HostNetwork {
		rp.ipv4, rp.ipv6 = node.IPv4, node.IPv6
		a.running[key] = rp
		a.mu.Unlock()
		return rp, nil
	}
	for i, s := range node.slots {
		if s == "" {
			rp.slot = i
			node.slots[i] = pod.UID
			break
		}
	}
	a.mu.Unlock()
	if rp.slot < 0 {
		return nil, fmt.Errorf("node %s has no free pod address", node.Name)
	}
	rp.ipv4, rp.ipv6 = podAddr(node.PodCIDRv4, rp.slot), podAddr(node.PodCIDRv6, rp.slot)
	id := string(pod.UID)
	if len(id) > 10 {
		id = id[:10]
	}
	rp.netns = nsPrefix + "p-" + id
	veth := "vp" + id
	err := run("ip", "netns", "add", rp.netns)
	if err == nil {
		// A neighbour entry of the node may still name the MAC of an
		// earlier pod at this address (the pod's address is added without
		// DAD, so no announcement replaces it): forget it.
		err = ipBatch(node.Netns,
			fmt.Sprintf("neigh flush to %s dev cbr0", rp.ipv4),
			fmt.Sprintf("neigh flush to %s dev cbr0", rp.ipv6),
			fmt.Sprintf("link add %s type veth peer name eth0 netns %s", veth, rp.netns),
			fmt.Sprintf("link set %s master cbr0", veth),
			fmt.Sprintf("link set %s up", veth))
	}
	if err == nil {
		err = ipBatch(rp.netns,
			"link set lo up",
			"link set eth0 up",
			fmt.Sprintf("addr add %s/%d dev eth0", rp.ipv4, node.PodCIDRv4.Bits()),
			fmt.Sprintf("addr add %s/%d dev eth0 nodad", rp.ipv6, node.PodCIDRv6.Bits()),
			fmt.Sprintf("route add default via %s", podGateway(node.PodCIDRv4)),
			fmt.Sprintf("route add default via %s", podGateway(node.PodCIDRv6)))
	}
	if err == nil {
		err = rp.serve(pod, node.Name)
	}
	if err != nil {
		a.teardown(rp)
		return nil, err
	}
	a.mu.Lock()
	a.running[key] = rp
	a.mu.Unlock()
	return rp, nil
}

// serve answers every request with the pod's name, its node and the client's
// source address, so a test can tell which pod answered and whether the
// client address survived the path.
func (rp *runningPod) serve(pod *corev1.Pod, nodeName string) error {
	ports := map[int32]bool{}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
				ports[p.ContainerPort] = true
			}
		}
	}
	if len(ports) == 0 {
		ports[80] = true
	}
	podName := pod.Name
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "pod=%s node=%s client=%s\n", podName, nodeName, r.RemoteAddr)
	})
	for port := range ports {
		ln, err := listenIn(rp.netns, fmt.Sprintf(":%d", port))
		if err != nil {
			return fmt.Errorf("pod %s/%s port %d: %w", pod.Namespace, pod.Name, port, err)
		}
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
		rp.servers = append(rp.servers, srv)
		go func() { _ = srv.Serve(ln) }()
	}
	return nil
}

// Answer is one response of a lab pod's HTTP server (see serve).
type Answer struct{ Pod, Node, Client string }

// ParseAnswer reads a lab pod's response.
func ParseAnswer(s string) (Answer, error) {
	var a Answer
	for _, f := range strings.Fields(s) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "pod":
			a.Pod = v
		case "node":
			a.Node = v
		case "client":
			a.Client = v
		}
	}
	if a.Pod == "" {
		return a, fmt.Errorf("not an answer of a lab pod: %q", s)
	}
	return a, nil
}

// stopPod tears down the running pod under key, unless it is the one with uid keep.
func (a *agent) stopPod(key string, keep types.UID) {
	a.mu.Lock()
	rp, ok := a.running[key]
	if !ok || rp.uid == keep {
		a.mu.Unlock()
		return
	}
	delete(a.running, key)
	delete(a.boundTo, rp.uid)
	a.mu.Unlock()
	a.teardown(rp)
}

func (a *agent) teardown(rp *runningPod) {
	for _, s := range rp.servers {
		_ = s.Close()
	}
	if rp.netns != "" {
		// Deleting the namespace removes the pod's veth pair too.
		_ = run("ip", "netns", "delete", rp.netns)
	}
	a.mu.Lock()
	if rp.slot >= 0 && rp.node.slots[rp.slot] == rp.uid {
		rp.node.slots[rp.slot] = ""
	}
	a.mu.Unlock()
}

func (a *agent) stopAll() {
	a.mu.Lock()
	pods := make([]*runningPod, 0, len(a.running))
	for k, rp := range a.running {
		pods = append(pods, rp)
		delete(a.running, k)
	}
	a.mu.Unlock()
	for _, rp := range pods {
		a.teardown(rp)
	}
}

// writeStatus reports the pod Running with its IPs, Ready unless the test
// annotation says otherwise. It writes only when something changed.
func (a *agent) writeStatus(ctx context.Context, pod *corev1.Pod, rp *runningPod) error {
	ready := pod.Annotations[ReadyAnnotation] != "false"
	st := pod.Status.DeepCopy()
	st.Phase = corev1.PodRunning
	st.HostIP = rp.node.IPv4.String()
	st.HostIPs = []corev1.HostIP{{IP: rp.node.IPv4.String()}, {IP: rp.node.IPv6.String()}}
	st.PodIP = rp.ipv4.String()
	st.PodIPs = []corev1.PodIP{{IP: rp.ipv4.String()}, {IP: rp.ipv6.String()}}
	if st.StartTime == nil {
		t := metav1.Now()
		st.StartTime = &t
	}
	setCond := func(t corev1.PodConditionType, ok bool) {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
		}
		for i := range st.Conditions {
			if st.Conditions[i].Type == t {
				if st.Conditions[i].Status != s {
					st.Conditions[i].Status = s
					st.Conditions[i].LastTransitionTime = metav1.Now()
				}
				return
			}
		}
		st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: s, LastTransitionTime: metav1.Now()})
	}
	setCond(corev1.PodScheduled, true)
	setCond(corev1.PodInitialized, true)
	setCond(corev1.ContainersReady, ready)
	setCond(corev1.PodReady, ready)
	var cs []corev1.ContainerStatus
	for _, c := range pod.Spec.Containers {
		started := true
		var at metav1.Time
		for _, old := range pod.Status.ContainerStatuses {
			if old.Name == c.Name && old.State.Running != nil {
				at = old.State.Running.StartedAt
			}
		}
		if at.IsZero() {
			at = metav1.Now()
		}
		cs = append(cs, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: ready, Started: &started,
			ContainerID: fmt.Sprintf("lab://%s/%s", pod.UID, c.Name),
			State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: at}},
		})
	}
	st.ContainerStatuses = cs
	if apiequality.Semantic.DeepEqual(&pod.Status, st) {
		return nil
	}
	upd := pod.DeepCopy()
	upd.Status = *st
	_, err := a.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil // a newer version is queued already
	}
	return err
}

func (a *agent) sortedNodes() []*agentNode {
	out := make([]*agentNode, 0, len(a.nodes))
	for _, n := range a.nodes {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out
}
