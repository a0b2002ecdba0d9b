package e2etest

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// diagnosePaths logs what a case's failed requests leave to look at: from
// each pod node, direct connections to each pod of ns's web Deployment
// (the lab's path between nodes, without Herald's rules), and each node's
// conntrack and TCP counters and the kernel's last messages.
func diagnosePaths(t *testing.T, ns string) {
	t.Helper()
	pods, err := theLab.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Logf("diagnosis: listing the pods: %v", err)
		return
	}
	const tries = 20
	var b strings.Builder
	for _, n := range theLab.PodNodes() {
		for _, p := range pods.Items {
			for _, ip := range p.Status.PodIPs {
				url := "http://" + bracket(ip.IP) + "/"
				failed := 0
				var last string
				for range tries {
					if _, err := curl(n.Netns, url); err != nil {
						failed++
						last = err.Error()
					}
				}
				fmt.Fprintf(&b, "%s -> pod %s on %s (%s): %d of %d failed %s\n", n.Name, p.Name, p.Spec.NodeName, ip.IP, failed, tries, strings.TrimSpace(last))
			}
		}
	}
	for _, n := range theLab.PodNodes() {
		fmt.Fprintf(&b, "--- %s\n", n.Name)
		for _, argv := range [][]string{
			{"conntrack", "-C"},
			{"sh", "-c", "conntrack -S | tr ' ' '\\n' | grep -E '^(drop|early_drop|insert_failed|invalid|error|search_restart|clash_resolve)=' | awk -F= '{s[$1]+=$2} END {for (k in s) printf \"%s=%d \", k, s[k]}'"},
			{"sh", "-c", "nstat -az | grep -E 'TcpExtTW|PAWS|TcpExtListen|TcpAttemptFails|TcpRetransSegs|TcpOutRsts|Ip6InNoRoutes|Ip6OutNoRoutes|Ip6InDiscards|Ip6OutDiscards|Icmp6OutDestUnreachs|Icmp6InDestUnreachs|TcpExtTCPTimeouts'"},
			{"ip", "-6", "neigh"},
		} {
			out, _ := exec.Command("ip", append([]string{"netns", "exec", n.Netns}, argv...)...).CombinedOutput()
			fmt.Fprintf(&b, "$ %s\n%s\n", strings.Join(argv, " "), strings.TrimSpace(string(out)))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "sh", "-c", "dmesg | tail -n 20").CombinedOutput()
	fmt.Fprintf(&b, "--- dmesg\n%s\n", out)
	t.Logf("diagnosis:\n%s", b.String())
}
