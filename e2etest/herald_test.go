package e2etest

// Herald in the lab, installed from the chart and running under the chart's
// ServiceAccounts (package herald).

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/e2etest/herald"
	"github.com/heraldlb/herald/e2etest/lab"
	heraldscheme "github.com/heraldlb/herald/internal/scheme"
)

var (
	// crClient reads and writes Herald's kinds and core objects as the admin.
	crClient client.Client
	// hd is the Herald every test shares; tests that restart a component
	// leave one running.
	hd *herald.Herald
)

// setupHerald installs Herald into the lab.
func setupHerald(ctx context.Context, l *lab.Lab) error {
	scheme := heraldscheme.New()
	var err error
	if crClient, err = client.New(l.RESTConfig, client.Options{Scheme: scheme}); err != nil {
		return err
	}
	hd, err = herald.Install(ctx, l, func(f string, a ...any) { fmt.Printf("e2e: "+f+"\n", a...) })
	return err
}

// kubectl runs the lab's real kubectl as the admin.
func kubectl(args ...string) (string, error) {
	return kubectlIn("", args...)
}

// kubectlIn runs kubectl with stdin.
func kubectlIn(stdin string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(theLab.BinDir, "kubectl"), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+theLab.Kubeconfig)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// keepRunning makes sure, when the test ends however it ends, that the
// controller and every speaker run again, so one failing test cannot take
// the components away from the tests after it.
func keepRunning(t *testing.T) {
	t.Cleanup(func() {
		if !hd.Controller().Running() {
			if err := hd.StartController(); err != nil {
				t.Errorf("restarting the controller after the test: %v", err)
			}
		}
		for _, n := range theLab.Nodes {
			if p := hd.Speaker(n.Name); p == nil || !p.Running() {
				if err := hd.StartSpeaker(n); err != nil {
					t.Errorf("restarting the speaker of %s after the test: %v", n.Name, err)
				}
			}
		}
	})
}

// restartController replaces the controller, killing it when crash is set.
func restartController(t *testing.T, crash bool) {
	t.Helper()
	keepRunning(t)
	if crash {
		hd.Controller().Kill()
	} else {
		hd.Controller().Stop()
	}
	if err := hd.StartController(); err != nil {
		t.Fatal(err)
	}
}

// metric reads one sample from the controller's Prometheus endpoint.
func metric(t *testing.T, name string) string {
	t.Helper()
	resp, err := http.Get("http://" + herald.ControllerMetrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, name+" ") {
			return strings.TrimPrefix(line, name+" ")
		}
	}
	return ""
}
