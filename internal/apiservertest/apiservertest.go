// Package apiservertest runs a real etcd and kube-apiserver for the
// controller's tests, from the binaries the lab builds (make lab-bins, in
// $LAB_DIR/bin, else .lab/bin of the repository), with Herald's CRDs
// installed. What depends on the API server (field selectors, RBAC, status
// subresources, resourceVersions, events) is then tested as it behaves.
//
// Tests are skipped, with the reason, when the binaries are missing.
package apiservertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/heraldlb/herald/e2etest/lab"
)

// adminToken authenticates as a member of system:masters.
const adminToken = "apiservertest-admin"

// Server is a running etcd and kube-apiserver.
type Server struct {
	// Config reaches the API server as a cluster admin.
	Config *rest.Config
	dir    string
	procs  []*exec.Cmd
}

// Start runs etcd and kube-apiserver on free loopback ports and installs
// the CRDs of config/crd/bases. Stop ends them. It returns an error wrapping
// ErrNoBinaries when the lab's binaries are not built.
func Start() (*Server, error) {
	root, err := lab.RepoDir()
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(root, ".lab", "bin")
	if d := os.Getenv("LAB_DIR"); d != "" {
		bin = filepath.Join(d, "bin")
	}
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return nil, fmt.Errorf("%w: %s (make lab-bins)", ErrNoBinaries, filepath.Join(bin, b))
		}
	}
	dir, err := os.MkdirTemp("", "apiservertest-")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir}
	if err := s.start(bin); err != nil {
		s.Stop()
		return nil, err
	}
	if err := installCRDs(s.Config, filepath.Join(root, "config", "crd", "bases")); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// ErrNoBinaries: etcd or kube-apiserver is not built.
var ErrNoBinaries = errors.New("the lab's etcd and kube-apiserver are not built")

// StartOrSkip is Start for a TestMain-less test: it skips t when the
// binaries are missing, fails it on any other error, and stops the server
// when t ends.
func StartOrSkip(t testing.TB) *Server {
	t.Helper()
	s, err := Start()
	if errors.Is(err, ErrNoBinaries) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) start(bin string) error {
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	if err := s.spawn(filepath.Join(bin, "etcd"),
		"--data-dir", filepath.Join(s.dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL,
		"--unsafe-no-fsync"); err != nil {
		return err
	}
	saKey, err := writeServiceAccountKey(filepath.Join(s.dir, "sa.key"))
	if err != nil {
		return err
	}
	tokens := filepath.Join(s.dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(adminToken+`,admin,1,"system:masters"`+"\n"), 0o600); err != nil {
		return err
	}
	if err := s.spawn(filepath.Join(bin, "kube-apiserver"),
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1",
		"--secure-port", fmt.Sprint(ports[2]),
		// The kubernetes Service's endpoint only: nothing connects to it.
		"--advertise-address", "198.51.100.1",
		// A self-signed serving certificate is made here.
		"--cert-dir", filepath.Join(s.dir, "certs"),
		"--token-auth-file", tokens,
		"--authorization-mode", "RBAC",
		"--service-account-key-file", saKey,
		"--service-account-signing-key-file", saKey,
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range", "10.96.0.0/16",
		"--enable-priority-and-fairness=false",
		"--profiling=false"); err != nil {
		return err
	}
	s.Config = &rest.Config{
		Host:        fmt.Sprintf("https://127.0.0.1:%d", ports[2]),
		BearerToken: adminToken,
		// A throwaway server on loopback, with a certificate made at start.
		TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		QPS:             500, Burst: 1000,
	}
	return s.waitReady(90 * time.Second)
}

// spawn starts a process that logs to a file in s.dir and dies with the test
// binary.
func (s *Server) spawn(argv ...string) error {
	logf, err := os.Create(filepath.Join(s.dir, filepath.Base(argv[0])+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	go func() { _ = cmd.Wait(); logf.Close() }()
	s.procs = append(s.procs, cmd)
	return nil
}

func (s *Server) waitReady(timeout time.Duration) error {
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	var last string
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		req, _ := http.NewRequest("GET", s.Config.Host+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := hc.Do(req)
		if err != nil {
			last = err.Error()
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return nil
		}
		last = resp.Status
	}
	return fmt.Errorf("kube-apiserver not ready after %s: %s (logs in %s)", timeout, last, s.dir)
}

// Stop kills the processes and removes their files.
func (s *Server) Stop() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		_ = s.procs[i].Process.Kill()
	}
	// Give Wait a moment to reap them before the directory goes.
	time.Sleep(100 * time.Millisecond)
	_ = os.RemoveAll(s.dir)
}

func installCRDs(cfg *rest.Config, dir string) error {
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return err
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return err
	}
	ctx := context.Background()
	var names []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		u := &unstructured.Unstructured{}
		if err := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096).Decode(&u.Object); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if err := c.Create(ctx, u); err != nil {
			return fmt.Errorf("create CRD %s: %w", u.GetName(), err)
		}
		names = append(names, u.GetName())
	}
	for _, name := range names {
		if err := waitEstablished(ctx, c, name); err != nil {
			return err
		}
	}
	return nil
}

func waitEstablished(ctx context.Context, c client.Client, name string) error {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("apiextensions.k8s.io/v1")
		u.SetKind("CustomResourceDefinition")
		if err := c.Get(ctx, client.ObjectKey{Name: name}, u); err != nil {
			return err
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, cond := range conds {
			m, _ := cond.(map[string]any)
			if m["type"] == "Established" && m["status"] == "True" {
				return nil
			}
		}
	}
	return fmt.Errorf("CRD %s not established after 30s", name)
}

func writeServiceAccountKey(path string) (string, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", err
	}
	der := x509.MarshalPKCS1PrivateKey(key)
	return path, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der}), 0o600)
}

// freePorts finds n free loopback ports (held open together so they
// differ).
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// AsChartController returns a config that acts as the controller's
// ServiceAccount holding exactly the permissions the chart grants it (the
// controller's ClusterRole, Roles and bindings of `helm template`,
// release herald in herald-system), so a permission the chart lacks fails
// the test. It needs helm ($HELM, else bin/helm of the repository): the
// error wraps ErrNoHelm when it is missing. Call it once per Server.
func (s *Server) AsChartController() (*rest.Config, error) {
	root, err := lab.RepoDir()
	if err != nil {
		return nil, err
	}
	helm := os.Getenv("HELM")
	if helm == "" {
		helm = filepath.Join(root, "bin", "helm")
	}
	if _, err := exec.LookPath(helm); err != nil {
		return nil, fmt.Errorf("%w: %s (make helm)", ErrNoHelm, helm)
	}
	const ns, sa = "herald-system", "herald-controller"
	out, err := exec.Command(helm, "template", "herald", filepath.Join(root, "charts", "herald"), "--namespace", ns,
		"--kube-version", "1.31.0", "--set", "speaker.gossip.secret.create=false", "--set", "speaker.gossip.secret.name=unused").Output()
	if err != nil {
		return nil, fmt.Errorf("helm template: %w", err)
	}
	c, err := client.New(s.Config, client.Options{})
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	for _, o := range []map[string]any{
		{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}},
		{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": sa, "namespace": ns}},
	} {
		if err := c.Create(ctx, &unstructured.Unstructured{Object: o}); err != nil {
			return nil, err
		}
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	granted := 0
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("helm template output: %w", err)
		}
		switch u.GetKind() {
		case "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
		default:
			continue
		}
		if !strings.HasPrefix(u.GetName(), sa) {
			continue
		}
		if err := c.Create(ctx, u); err != nil {
			return nil, fmt.Errorf("create %s %s: %w", u.GetKind(), u.GetName(), err)
		}
		granted++
	}
	if granted == 0 {
		return nil, errors.New("helm template rendered no RBAC for " + sa)
	}
	cfg := rest.CopyConfig(s.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":" + sa}
	return cfg, nil
}

// ErrNoHelm: the pinned helm is not installed.
var ErrNoHelm = errors.New("helm is not installed")
