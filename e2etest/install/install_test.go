// Package install proves the install path end to end: the ONESHOT demo as a
// person runs it, and helm install / upgrade / uninstall in a lab leaving
// nothing behind. Each test brings up its own lab.
package install

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"

	"github.com/heraldlb/herald/e2etest/lab"
)

func needRoot(t *testing.T) (lab.Config, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root (network namespaces)")
	}
	cfg, err := lab.DefaultConfig()
	if err != nil {
		t.Fatal(err)
	}
	repo, err := lab.RepoDir()
	if err != nil {
		t.Fatal(err)
	}
	return cfg, repo
}

// TestOneshotDemoCurlsTheExternalIP runs `make lab`'s demo as a person would
// with ONESHOT=1: it must exit 0 after curling the LoadBalancer's EXTERNAL-IP
// and hearing from several pods, and leave nothing behind.
func TestOneshotDemoCurlsTheExternalIP(t *testing.T) {
	cfg, repo := needRoot(t)
	cmd := exec.Command("go", "run", "./e2etest/cmd/lab", "demo")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "ONESHOT=1", "LAB_DIR="+cfg.Dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ONESHOT=1 lab demo: %v\n%s", err, out)
	}
	s := string(out)
	m := regexp.MustCompile(`(\d+) different pods answered through the EXTERNAL-IP (198\.51\.100\.\d+)`).FindStringSubmatch(s)
	if m == nil || m[1] == "1" {
		t.Fatalf("the demo did not show several pods answering on the EXTERNAL-IP:\n%s", s)
	}
	if !regexp.MustCompile(`web\s+LoadBalancer\s+\S+\s+` + regexp.QuoteMeta(m[2])).MatchString(s) {
		t.Errorf("kubectl get svc did not show the EXTERNAL-IP %s:\n%s", m[2], s)
	}
	if left, _ := lab.FindLeftovers(cfg.Dir, cfg.BinDir); !left.Empty() {
		t.Errorf("the demo left %s", left)
	}
}

// TestHelmInstallUpgradeUninstallLeaveNoOrphans installs the chart into a
// real API server, dry-runs several value sets server-side, upgrades with
// changed values, uninstalls, and checks that no object of the release
// remains but the CRDs, which the chart keeps on purpose.
func TestHelmInstallUpgradeUninstallLeaveNoOrphans(t *testing.T) {
	cfg, repo := needRoot(t)
	cfg.Nodes, cfg.ProxyMode = 1, "none"
	l, err := lab.Up(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Down()
	helm := func(args ...string) string {
		t.Helper()
		defer func(start time.Time) { t.Logf("helm %s: %.1fs", args[0], time.Since(start).Seconds()) }(time.Now())
		cmd := exec.Command(filepath.Join(repo, "bin", "helm"), args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+l.Kubeconfig)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	kubectl := func(stdin string, args ...string) (string, error) {
		cmd := exec.Command(filepath.Join(l.BinDir, "kubectl"), args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+l.Kubeconfig)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	chart := filepath.Join(repo, "charts/herald")
	// Defaults: the CRDs are kept on uninstall (helm.sh/resource-policy:
	// keep), so uninstalling never deletes every pool of a cluster.
	helm("install", "herald", chart, "-n", "herald-system", "--create-namespace", "-f", filepath.Join(repo, "e2etest/herald/lab-values.yaml"))
	// Other value sets, rendered offline (helm then assumes Kubernetes 1.20:
	// tell it the lab's version) and judged by the real API server.
	for name, set := range map[string][]string{
		"class":        {"--set", "loadBalancerClass=example.com/herald"},
		"rbac-off":     {"--set", "rbac.create=false"},
		"no-crds":      {"--set", "crds.install=false"},
		"two-replicas": {"--set", "controller.replicas=2"},
		"no-metrics":   {"--set", "metrics.enabled=false"},
	} {
		manifest := helm(append([]string{"template", "herald", chart, "-n", "herald-system", "--kube-version", "1.37.2"}, set...)...)
		// No -n: every namespaced object names its namespace, and one
		// (the Role that reads kube-proxy's ConfigMap) is in kube-system.
		if out, err := kubectl(manifest, "apply", "--dry-run=server", "-f", "-"); err != nil {
			t.Errorf("value set %s: server-side dry run refused:\n%s", name, out)
		}
	}
	helm("upgrade", "herald", chart, "-n", "herald-system", "--reuse-values", "--set", "logLevel=debug")
	if out := helm("history", "herald", "-n", "herald-system"); !strings.Contains(out, "deployed") || strings.Count(out, "\n") < 3 {
		t.Errorf("helm history after upgrade:\n%s", out)
	}
	helm("uninstall", "herald", "-n", "herald-system", "--wait")

	// Nothing labelled as the release's may remain, in any namespace, of any kind.
	dc, err := discovery.NewDiscoveryClientForConfig(l.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(l.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	lists, _ := dc.ServerPreferredResources()
	deadline := time.Now().Add(60 * time.Second)
	kept := 0
	for {
		var left []string
		kept = 0
		for _, rl := range lists {
			gv, _ := schema.ParseGroupVersion(rl.GroupVersion)
			for _, r := range rl.APIResources {
				if !strings.Contains(strings.Join(r.Verbs, ","), "list") || strings.Contains(r.Name, "/") {
					continue
				}
				items, err := dyn.Resource(gv.WithResource(r.Name)).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=herald"})
				if err != nil {
					continue
				}
				for _, it := range items.Items {
					if r.Name == "customresourcedefinitions" && it.GetAnnotations()["helm.sh/resource-policy"] == "keep" {
						kept++
						continue
					}
					left = append(left, r.Name+" "+it.GetNamespace()+"/"+it.GetName())
				}
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after helm uninstall, left behind: %v", left)
		}
		time.Sleep(500 * time.Millisecond)
	}
	crds, err := filepath.Glob("../../charts/herald/files/crds/*.yaml")
	if err != nil || len(crds) == 0 {
		t.Fatalf("the chart's CRDs: %v %v", crds, err)
	}
	if kept != len(crds) {
		t.Errorf("after uninstall %d CRDs kept with helm.sh/resource-policy: keep, want all %d", kept, len(crds))
	}
}
