package lab

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Ports on the machine's loopback used by the lab's control plane.
const (
	APIServerPort = 16443
	etcdPort      = 12379
	etcdPeerPort  = 12380
	// nodeAPIPort is where, inside each node namespace, 127.0.0.1 forwards
	// to the API server, as a kubelet's local proxy would.
	nodeAPIPort = 6443
)

// DefaultNodePortRange is the API server's --service-node-port-range unless
// Config.NodePortRange says otherwise: Kubernetes' own default.
const DefaultNodePortRange = "30000-32767"

// Identities with static tokens. admin is a cluster admin; unprivileged has
// no bindings, so RBAC must refuse it; the others are the users Kubernetes'
// bootstrap RBAC policy already grants their components' permissions.
var tokenUsers = []struct{ token, user, uid, groups string }{
	{"admin-token", "admin", "1", "system:masters"},
	{"unprivileged-token", "unprivileged", "2", ""},
	{"kube-proxy-token", "system:kube-proxy", "3", ""},
	{"kcm-token", "system:kube-controller-manager", "4", ""},
}

// Tokens the tests use.
const (
	AdminToken        = "admin-token"
	UnprivilegedToken = "unprivileged-token"
)

func (l *Lab) startControlPlane(ctx context.Context) error {
	var lines []string
	for _, t := range tokenUsers {
		line := fmt.Sprintf("%s,%s,%s", t.token, t.user, t.uid)
		if t.groups != "" {
			line += fmt.Sprintf(",%q", t.groups)
		}
		lines = append(lines, line)
	}
	tokens := filepath.Join(l.Dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return err
	}
	var audit []string
	if l.AuditWrites {
		policy := filepath.Join(l.Dir, "audit-policy.yaml")
		if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
			return err
		}
		_ = os.Remove(l.AuditLog())
		audit = []string{"--audit-policy-file", policy, "--audit-log-path", l.AuditLog(), "--audit-log-format", "json", "--audit-log-maxsize", "0"}
	}
	etcdData := filepath.Join(l.Dir, "etcd")
	_ = os.RemoveAll(etcdData)
	etcd, err := l.spawn(ctx, "etcd", "",
		l.bin("etcd"),
		"--data-dir", etcdData,
		"--listen-client-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPort),
		"--advertise-client-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPort),
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPeerPort),
		"--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPeerPort),
		"--initial-cluster", fmt.Sprintf("default=http://127.0.0.1:%d", etcdPeerPort),
		// The lab's etcd lives for one run: trade durability for speed.
		"--unsafe-no-fsync", "--quota-backend-bytes", "4294967296",
	)
	if err != nil {
		return err
	}
	_ = etcd
	_, err = l.spawn(ctx, "kube-apiserver", "", append([]string{
		l.bin("kube-apiserver"),
		"--etcd-servers", fmt.Sprintf("http://127.0.0.1:%d", etcdPort),
		"--bind-address", "127.0.0.1",
		"--secure-port", fmt.Sprint(APIServerPort),
		// The kubernetes Service's endpoint; the lab's components reach the API
		// server through their kubeconfig, not through this address.
		"--advertise-address", "198.51.100.1",
		"--tls-cert-file", l.pki.ServingCert,
		"--tls-private-key-file", l.pki.ServingKey,
		"--client-ca-file", l.pki.CACert,
		"--token-auth-file", tokens,
		"--authorization-mode", "Node,RBAC",
		"--service-account-key-file", l.pki.SAPub,
		"--service-account-signing-key-file", l.pki.SAKey,
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range", ServiceCIDRv4 + "," + ServiceCIDRv6,
		"--service-node-port-range", l.NodePortRange,
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--v=1",
	}, audit...)...)
	if err != nil {
		return err
	}
	if err := l.waitAPIServer(ctx, 60*time.Second); err != nil {
		return err
	}
	kcmKubeconfig, err := l.writeKubeconfig("kube-controller-manager", fmt.Sprintf("https://127.0.0.1:%d", APIServerPort), "kcm-token")
	if err != nil {
		return err
	}
	_, err = l.spawn(ctx, "kube-controller-manager", "",
		l.bin("kube-controller-manager"),
		"--kubeconfig", kcmKubeconfig,
		"--authentication-kubeconfig", kcmKubeconfig,
		"--authorization-kubeconfig", kcmKubeconfig,
		"--bind-address", "127.0.0.1",
		"--secure-port", "0",
		"--controllers", "*,-nodeipam",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file", l.pki.SAKey,
		"--root-ca-file", l.pki.CACert,
		"--cluster-signing-cert-file", l.pki.CACert,
		"--cluster-signing-key-file", l.pki.CAKey,
		"--service-cluster-ip-range", ServiceCIDRv4+","+ServiceCIDRv6,
		"--leader-elect=false",
		// Pods must not linger on deleted nodes, nor be evicted while a test
		// deliberately stops a node's heartbeat.
		"--terminated-pod-gc-threshold", "100",
		"--v=1",
	)
	return err
}

// waitAPIServer polls /readyz until the API server answers ok.
func (l *Lab) waitAPIServer(ctx context.Context, timeout time.Duration) error {
	client := &http.Client{
		Timeout:   time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, // only readiness, on loopback
	}
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		for _, p := range l.procs {
			if p.exited() {
				return fmt.Errorf("%s exited: %v (log: %s)", p.name, p.err, l.logPath(p.name))
			}
		}
		req, _ := http.NewRequest("GET", fmt.Sprintf("https://127.0.0.1:%d/readyz", APIServerPort), nil)
		req.Header.Set("Authorization", "Bearer "+AdminToken)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver not ready after %s: %s (log: %s)", timeout, last, l.logPath("kube-apiserver"))
}

// writeKubeconfig writes a kubeconfig for a token identity and returns its path.
func (l *Lab) writeKubeconfig(name, server, token string) (string, error) {
	path := filepath.Join(l.Dir, "kubeconfigs", name)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	return path, os.WriteFile(path, []byte(kubeconfig(server, l.pki.CACert, token)), 0o600)
}

func kubeconfig(server, caFile, token string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: lab
  user:
    token: %s
contexts:
- name: lab
  context: {cluster: lab, user: lab}
current-context: lab
`, server, caFile, token)
}

// auditPolicy records every write (not reads, not watches) with who made it,
// so a benchmark can count one component's API writes exactly: the API
// server's request metrics carry no user.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
- level: None
`

// AuditLog is the API server's audit log (Config.AuditWrites).
func (l *Lab) AuditLog() string { return filepath.Join(l.Dir, "logs", "audit.log") }

// Write is one API write from the audit log.
type Write struct {
	At                                      time.Time
	User, Verb, Resource, Subresource, Code string
	Namespace                               string
}

// Writes returns the writes the API server completed in [from, to) by users
// for which match is true (all when match is nil). It needs Config.AuditWrites.
func (l *Lab) Writes(from, to time.Time, match func(user string) bool) ([]Write, error) {
	if !l.AuditWrites {
		return nil, errors.New("the lab records no writes: set Config.AuditWrites")
	}
	f, err := os.Open(l.AuditLog())
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Write
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e struct {
			Stage     string                    `json:"stage"`
			Verb      string                    `json:"verb"`
			User      struct{ Username string } `json:"user"`
			ObjectRef *struct {
				Resource, Subresource, Namespace string
			} `json:"objectRef"`
			ResponseStatus *struct{ Code int } `json:"responseStatus"`
			StageTimestamp time.Time           `json:"stageTimestamp"`
		}
		if json.Unmarshal(sc.Bytes(), &e) != nil || e.Stage != "ResponseComplete" {
			continue
		}
		if e.StageTimestamp.Before(from) || !e.StageTimestamp.Before(to) || (match != nil && !match(e.User.Username)) {
			continue
		}
		w := Write{At: e.StageTimestamp, User: e.User.Username, Verb: e.Verb}
		if e.ObjectRef != nil {
			w.Resource, w.Subresource, w.Namespace = e.ObjectRef.Resource, e.ObjectRef.Subresource, e.ObjectRef.Namespace
		}
		if e.ResponseStatus != nil {
			w.Code = fmt.Sprint(e.ResponseStatus.Code)
		}
		out = append(out, w)
	}
	return out, sc.Err()
}
