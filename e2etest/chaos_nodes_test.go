package e2etest

// Chaos cases around the cluster's own objects: a second controller replica
// taking over from a killed leader, and Nodes that go NotReady, are cordoned,
// deleted and added while their addresses carry traffic.

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/util/retry"

	"github.com/heraldlb/herald/e2etest/chaos"
	"github.com/heraldlb/herald/e2etest/herald"
	"github.com/heraldlb/herald/e2etest/lab"
)

// TestChaosControllerFailover runs two controller replicas and SIGKILLs the
// leader: the standby takes the leader Lease over once it expires and
// assigns a new Service; no address changes or is held twice.
func TestChaosControllerFailover(t *testing.T) {
	keepRunning(t)
	ns := newNamespace(t)
	newPool(t, ns+"-failover", ns, []string{"2001:db8:4:fd::/120"}) // allocation only: nobody announces it
	single := corev1.IPFamilyPolicySingleStack
	v6 := func(s *corev1.Service) {
		s.Spec.IPFamilyPolicy = &single
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
	}
	lbService(t, ns, "before", v6)
	externalIPs(t, ns, "before", 1)
	standby, err := hd.StartStandbyController()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if standby.Running() {
			standby.Stop()
		}
	}()
	replicas := []struct {
		metrics string
		proc    func() *herald.Process
		start   func() error
	}{
		{herald.ControllerMetrics, hd.Controller, func() error { return hd.StartController() }},
		{herald.StandbyMetrics, func() *herald.Process { return standby }, func() (err error) { standby, err = hd.StartStandbyController(); return err }},
	}
	// The leader is the replica whose leader-election gauge says so.
	leader := func(ctx context.Context) (int, error) {
		for i, r := range replicas {
			m, err := herald.Scrape(ctx, http.DefaultClient, "http://"+r.metrics+"/metrics")
			if err != nil {
				continue // a replica being restarted
			}
			if v, ok := m.Get("leader_election_master_status", `name="herald-controller"`); ok && v == 1 {
				return i, nil
			}
		}
		return -1, fmt.Errorf("neither replica reports leader_election_master_status 1")
	}
	before := snapshot(t, ns)
	start := time.Now()
	rounds := chaos.Pick(2, 5)
	var worst time.Duration
	for round := range rounds {
		var lead int
		eventually(t, 30*time.Second, "a leader among the two replicas", func(ctx context.Context) (ok bool, err error) {
			lead, err = leader(ctx)
			return err == nil, err
		})
		replicas[lead].proc().Kill()
		killed := time.Now()
		name := fmt.Sprintf("after%d", round)
		lbService(t, ns, name, v6)
		externalIPs(t, ns, name, 1)
		took := time.Since(killed)
		worst = max(worst, took)
		t.Logf("round %d: leader %s killed; the standby assigned %s %s later", round, replicas[lead].metrics, name, took.Round(time.Millisecond))
		if err := replicas[lead].start(); err != nil {
			t.Fatal(err)
		}
	}
	after := snapshot(t, ns)
	kept := chaos.Snapshot{}
	for k := range before {
		kept[k] = after[k]
	}
	res := chaos.Result{Case: "controller_failover", Duration: time.Since(start), ChangedIPs: chaos.Changed(before, kept), DuplicateIPs: chaos.Duplicates(after)}
	res.Extra = append(res.Extra,
		chaos.Figure{Name: "takeover_ms", Value: float64(worst.Milliseconds()), Unit: "ms"},
		chaos.Figure{Name: "lease_ms", Value: float64(herald.ControllerLeaseDuration.Milliseconds()), Unit: "ms"},
		chaos.Figure{Name: "rounds", Value: float64(rounds), Unit: "count"})
	reportChaos(t, res)
	// The killed leader never releases its Lease: the standby sees it
	// unchanged up to a retry period late, waits it out, takes it at its
	// next try, then rebuilds its state from the Services' status.
	if limit := herald.ControllerLeaseDuration + 2*herald.ControllerRetryPeriod + 4*time.Second; worst > limit {
		t.Errorf("the standby took %s to assign a Service after the leader was killed; want under %s", worst, limit)
	}
}

// TestChaosNodeLifecycle changes the owner's Node while traffic runs: a
// NotReady or cordoned node keeps its addresses (its speaker and network
// are fine: nothing moves); a deleted Node's addresses move within a
// failover; a Node added again takes back only what the election gives it,
// with no gap beyond a failover.
func TestChaosNodeLifecycle(t *testing.T) {
	keepRunning(t)
	ns, ips := chaosTargets(t, "2001:db8:1::1:130/126", 3)
	nodes := theLab.Client.CoreV1().Nodes()
	hold := chaos.Pick(10*time.Second, time.Minute)
	steady := func(t *testing.T, name string, fault, undo func(owner string) error) {
		before := snapshot(t, ns)
		owner, _ := announcer(t, ns, "s0")
		run := startChaos(t, name, ips)
		if err := fault(owner); err != nil {
			run.Finish()
			t.Fatal(err)
		}
		time.Sleep(hold)
		if err := undo(owner); err != nil {
			t.Error(err)
		}
		time.Sleep(2 * time.Second)
		res := run.Finish()
		res.ChangedIPs = chaos.Changed(before, snapshot(t, ns))
		reportChaos(t, res)
		if res.Failed != 0 {
			t.Errorf("%d of %d requests failed; want none", res.Failed, res.Requests)
		}
		if len(res.OwnerMoves) != 0 {
			t.Errorf("%d owner moves; want none (the node's speaker and network never failed)", len(res.OwnerMoves))
		}
	}
	t.Run("not_ready", func(t *testing.T) {
		steady(t, "node_not_ready", func(owner string) error {
			theLab.SetNodeHeartbeat(owner, false)
			return setNodeReady(nodes, owner, false)
		}, func(owner string) error {
			theLab.SetNodeHeartbeat(owner, true) // the lab's kubelet reports Ready again
			return waitNodeReady(nodes, owner)
		})
	})
	t.Run("cordoned", func(t *testing.T) {
		cordon := func(on bool) func(string) error {
			return func(owner string) error {
				patch := fmt.Sprintf(`{"spec":{"unschedulable":%v}}`, on)
				_, err := nodes.Patch(context.Background(), owner, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
				return err
			}
		}
		steady(t, "node_cordoned", cordon(true), cordon(false))
	})
	t.Run("deleted_and_added", func(t *testing.T) {
		before := snapshot(t, ns)
		owner, _ := announcer(t, ns, "s0")
		saved, err := nodes.Get(context.Background(), owner, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		run := startChaos(t, "node_deleted_added", ips)
		if err := nodes.Delete(context.Background(), owner, metav1.DeleteOptions{}); err != nil {
			run.Finish()
			t.Fatal(err)
		}
		// Whatever happens below, the next cases get the node back, with
		// its kube-proxy (which exits when its Node is deleted, and which
		// its DaemonSet would start again).
		proxyBack := false
		t.Cleanup(func() {
			if err := recreateNode(nodes, saved); err != nil {
				t.Errorf("adding %s back: %v", owner, err)
			}
			if !proxyBack {
				if err := theLab.RestartKubeProxy(context.Background(), owner); err != nil {
					t.Errorf("kube-proxy of %s: %v", owner, err)
				}
			}
			for i := range ips {
				waitNodePorts(t, ns, fmt.Sprintf("s%d", i))
			}
		})
		deleted := time.Now()
		eventually(t, 10*time.Second, "another node to take "+ips[0].String()+" over from the deleted "+owner, func(context.Context) (bool, error) {
			n, _ := announcer(t, ns, "s0")
			return n != owner, nil
		})
		time.Sleep(3 * time.Second)
		readded := time.Now()
		if err := recreateNode(nodes, saved); err != nil {
			run.Finish()
			t.Fatal(err)
		}
		if err := waitNodeReady(nodes, owner); err != nil {
			t.Error(err)
		}
		if err := theLab.RestartKubeProxy(context.Background(), owner); err != nil {
			t.Error(err)
		}
		proxyBack = true
		time.Sleep(hold)
		res := run.Finish()
		res.ChangedIPs = chaos.Changed(before, snapshot(t, ns))
		var out, back int
		for _, m := range res.OwnerMoves {
			switch {
			case m.At.Before(readded) && m.At.After(deleted):
				out++
			case m.At.After(readded):
				back++
			}
		}
		res.Extra = append(res.Extra,
			chaos.Figure{Name: "moves_after_delete", Value: float64(out), Unit: "count"},
			chaos.Figure{Name: "moves_after_add", Value: float64(back), Unit: "count"})
		reportChaos(t, res)
		if res.LongestGap > 2*time.Second {
			t.Errorf("longest gap %s; a Node deleted or added costs at most a failover (under 2 s)", res.LongestGap)
		}
		if out == 0 {
			t.Errorf("no address moved off the deleted %s", owner)
		}
		// What moved back went to its owner by the election: at most the
		// addresses the node held before, and each at most once.
		if back > len(ips) {
			t.Errorf("%d moves after %s was added back for %d addresses: ownership flapped", back, owner, len(ips))
		}
	})
}

type nodeClient = typedcorev1.NodeInterface

// setNodeReady writes the node's Ready condition, as a kubelet (or the node
// lifecycle controller) would.
func setNodeReady(nodes nodeClient, name string, ready bool) error {
	n, err := nodes.Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	status, reason := corev1.ConditionFalse, "KubeletNotReady"
	if ready {
		status, reason = corev1.ConditionTrue, "KubeletReady"
	}
	for i, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			n.Status.Conditions[i].Status, n.Status.Conditions[i].Reason = status, reason
			n.Status.Conditions[i].LastTransitionTime = metav1.Now()
		}
	}
	_, err = nodes.UpdateStatus(context.Background(), n, metav1.UpdateOptions{})
	return err
}

// waitNodeReady waits up to 30 s for the node to be Ready.
func waitNodeReady(nodes nodeClient, name string) error {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if n, err := nodes.Get(context.Background(), name, metav1.GetOptions{}); err == nil && lab.NodeReady(n) {
			return nil
		}
	}
	return fmt.Errorf("node %s not Ready after 30 s", name)
}

// recreateNode registers a deleted Node again, as a kubelet does when it
// starts on a machine whose Node object is gone.
func recreateNode(nodes nodeClient, saved *corev1.Node) error {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: saved.Name, Labels: saved.Labels, Annotations: saved.Annotations}, Spec: saved.Spec}
	n.Spec.Taints = nil
	if _, err := nodes.Create(context.Background(), n, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	// The node lifecycle controller writes the new Node too (taints).
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := nodes.Get(context.Background(), saved.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Status = saved.Status
		for i := range cur.Status.Conditions {
			cur.Status.Conditions[i].LastHeartbeatTime = metav1.Now()
		}
		_, err = nodes.UpdateStatus(context.Background(), cur, metav1.UpdateOptions{})
		return err
	})
}
