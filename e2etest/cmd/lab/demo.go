package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/heraldlb/herald/e2etest/lab"
)

// demo does what a user would: apply the sample layer-2 pool, create a
// Deployment, expose it as a LoadBalancer, and curl its EXTERNAL-IP from the
// LAN's client host, showing which pods answered.
func demo(l *lab.Lab) error {
	repo, err := lab.RepoDir()
	if err != nil {
		return err
	}
	kubectl := func(args ...string) (string, error) {
		fmt.Printf("$ kubectl %s\n", strings.Join(args, " "))
		cmd := exec.Command(l.BinDir+"/kubectl", args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+l.Kubeconfig)
		out, err := cmd.CombinedOutput()
		fmt.Print(string(out))
		if err != nil {
			return "", fmt.Errorf("kubectl %s: %w", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out)), nil
	}
	steps := [][]string{
		{"apply", "-f", filepath.Join(repo, "config/samples/l2-pool.yaml")},
		{"create", "deployment", "web", "--image=registry.k8s.io/e2e-test-images/agnhost:2.53", "--replicas=3", "--port=80"},
		{"expose", "deployment", "web", "--type=LoadBalancer", "--port=80"},
		{"rollout", "status", "deployment/web", "--timeout=60s"},
		{"wait", "--for=jsonpath={.status.loadBalancer.ingress[0].ip}", "svc/web", "--timeout=30s"},
		{"get", "svc", "web"},
		{"get", "announcements"},
	}
	for _, s := range steps {
		if _, err := kubectl(s...); err != nil {
			return err
		}
	}
	ip, err := kubectl("get", "svc", "web", "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}")
	if err != nil {
		return err
	}
	// The traffic goes through Herald's dataplane on the announcing node:
	// ipMode Proxy keeps kube-proxy out, and the node's nftables map has
	// the address.
	mode, err := kubectl("get", "svc", "web", "-o", "jsonpath={.status.loadBalancer.ingress[0].ipMode}")
	if err != nil {
		return err
	}
	if mode != "Proxy" {
		return fmt.Errorf("demo: ipMode %q, want Proxy: the chart's default dataplane forwards the traffic", mode)
	}
	owner, err := kubectl("get", "announcements", "-o", "jsonpath={.items[?(@.spec.mode==\"layer2\")].spec.node}")
	if err != nil {
		return err
	}
	n, ok := l.Node(owner)
	if !ok {
		return fmt.Errorf("demo: no lab node %q announces %s", owner, ip)
	}
	fmt.Printf("%s$ nft list map inet herald services-ip4\n", owner)
	out, err := exec.Command("ip", "netns", "exec", n.Netns, "nft", "list", "map", "inet", "herald", "services-ip4").CombinedOutput()
	fmt.Print(string(out))
	if err != nil || !strings.Contains(string(out), ip) {
		return fmt.Errorf("demo: %s's Herald nftables map has no %s: %v", owner, ip, err)
	}
	fmt.Println()
	url := fmt.Sprintf("http://%s/", ip)
	pods, err := curlLoop(context.Background(), url, 12)
	if err != nil {
		return err
	}
	if len(pods) < 2 {
		return fmt.Errorf("demo: only %v answered %s; Herald's dataplane should spread requests over the pods", pods, url)
	}
	fmt.Printf("\n%d different pods answered through the EXTERNAL-IP %s: %s\n", len(pods), ip, strings.Join(pods, ", "))
	return nil
}

// curlLoop curls url n times from the client host with the real curl and
// returns the distinct pods that answered. Like a user, it retries the first
// request for a few seconds: kube-proxy programs a new Service asynchronously.
func curlLoop(ctx context.Context, url string, n int) ([]string, error) {
	seen := map[string]bool{}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if exec.CommandContext(ctx, "ip", "netns", "exec", lab.ClientNetns, "curl", "-sf", "--max-time", "1", url).Run() == nil {
			break
		}
	}
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", lab.ClientNetns, "curl", "-sS", "--max-time", "3", url).CombinedOutput()
		cancel()
		fmt.Printf("client$ curl %s  ->  %s", url, out)
		if err != nil {
			return nil, fmt.Errorf("curl %s from the client: %w", url, err)
		}
		for _, f := range strings.Fields(string(out)) {
			if p, ok := strings.CutPrefix(f, "pod="); ok {
				seen[p] = true
			}
		}
	}
	var pods []string
	for p := range seen {
		pods = append(pods, p)
	}
	sort.Strings(pods)
	return pods, nil
}
