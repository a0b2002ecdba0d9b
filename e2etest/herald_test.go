package e2etest

// Running Herald's components in the lab: CRDs applied with kubectl, the
// controller as a process, as a user would run them.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/e2etest/lab"
)

// heraldNamespace holds Herald's own objects (leader-election lease, webhook Secret).
const heraldNamespace = "herald-system"

// Addresses of the controller's endpoints on the machine's loopback.
const (
	controllerMetrics = "127.0.0.1:17472"
	controllerProbes  = "127.0.0.1:17473"
	webhookPort       = 19443
)

var (
	// crClient reads and writes Herald's kinds and core objects.
	crClient client.Client
	// ctl is the controller every test shares; tests that restart it put a
	// running one back.
	ctl *process
	// binDir holds Herald's binaries built for the suite.
	binDir string
)

// setupHerald builds Herald's binaries, installs the CRDs and starts the controller.
func setupHerald(l *lab.Lab) error {
	repo, err := lab.RepoDir()
	if err != nil {
		return err
	}
	binDir = filepath.Join(l.Dir, "herald-bin")
	build := exec.Command("go", "build", "-o", binDir+"/", "./controller", "./speaker")
	build.Dir, build.Stdout, build.Stderr = repo, os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build herald: %w", err)
	}
	if out, err := kubectl("apply", "--server-side", "-f", filepath.Join(repo, "config/crd/bases")); err != nil {
		return fmt.Errorf("install CRDs: %w: %s", err, out)
	}
	if out, err := kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd", "--all"); err != nil {
		return fmt.Errorf("CRDs not established: %w: %s", err, out)
	}
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = v1alpha1.AddToScheme(scheme)
	if crClient, err = client.New(l.RESTConfig, client.Options{Scheme: scheme}); err != nil {
		return err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: heraldNamespace}}
	if err := crClient.Create(context.Background(), ns); err != nil {
		return err
	}
	if err := installWebhookConfig(filepath.Join(repo, "config/webhook/manifests.yaml")); err != nil {
		return err
	}
	if ctl, err = startController(); err != nil {
		return err
	}
	if err := createGossipSecret(); err != nil {
		return err
	}
	return startSpeakers()
}

// installWebhookConfig installs the repository's ValidatingWebhookConfiguration,
// pointed at the controller process on this machine: the API server calls
// https://localhost:<port><path> (the name is in the controller's certificate)
// instead of the in-cluster Service.
func installWebhookConfig(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var cfg admissionregistrationv1.ValidatingWebhookConfiguration
	for _, doc := range strings.Split(string(b), "\n---") {
		if strings.Contains(doc, "kind: ValidatingWebhookConfiguration") {
			if err := yaml.Unmarshal([]byte(doc), &cfg); err != nil {
				return err
			}
		}
	}
	if len(cfg.Webhooks) == 0 {
		return fmt.Errorf("%s: no webhooks", path)
	}
	for i := range cfg.Webhooks {
		cc := &cfg.Webhooks[i].ClientConfig
		url := fmt.Sprintf("https://localhost:%d%s", webhookPort, *cc.Service.Path)
		cc.Service, cc.URL = nil, &url
	}
	return crClient.Create(context.Background(), &cfg)
}

// kubectl runs the lab's real kubectl as the admin.
func kubectl(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(theLab.BinDir, "kubectl"), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+theLab.Kubeconfig)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// process is one of Herald's components running as a process.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startController starts the controller and waits until it reports ready.
func startController(extra ...string) (*process, error) {
	args := append([]string{
		"--kubeconfig", theLab.Kubeconfig,
		"--namespace", heraldNamespace,
		"--metrics-bind-address", controllerMetrics,
		"--health-probe-bind-address", controllerProbes,
		"--leader-elect-lease-duration", "4s",
		"--webhook-host", "127.0.0.1",
		"--webhook-port", fmt.Sprint(webhookPort),
		"--webhook-extra-dns-names", "localhost",
		"--webhook-cert-dir", filepath.Join(theLab.Dir, "webhook-certs"),
	}, extra...)
	logf, err := os.OpenFile(filepath.Join(theLab.Dir, "logs", "herald-controller.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(binDir, "controller"), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return nil, fmt.Errorf("controller exited at start; see %s", logf.Name())
		default:
		}
		if resp, err := http.Get("http://" + controllerProbes + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.kill()
	return nil, fmt.Errorf("controller not ready after 60s; see %s", logf.Name())
}

// stop sends SIGTERM and waits, as a rolling update would.
func (p *process) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.kill()
	}
}

// kill ends the process abruptly, as a crash would.
func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// restartController replaces the shared controller (killing it when crash
// is set) and makes sure one runs again when the test ends.
func restartController(t *testing.T, crash bool) time.Duration {
	t.Helper()
	if crash {
		ctl.kill()
	} else {
		ctl.stop()
	}
	start := time.Now()
	var err error
	ctl, err = startController()
	if err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

// metric reads one sample from the controller's Prometheus endpoint.
func metric(t *testing.T, name string) string {
	t.Helper()
	resp, err := http.Get("http://" + controllerMetrics + "/metrics")
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
