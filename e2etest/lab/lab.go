// Package lab runs Herald's proving ground on one machine: a real etcd,
// kube-apiserver and kube-controller-manager as processes; lab nodes as
// network namespaces on a LAN, each with a real kube-proxy; a client host on
// the LAN; an agent that plays kubelet so Deployments get running pods; and,
// on request, BGP routers (FRR, BIRD) on the LAN with a client behind FRR.
//
// It must run as root. It only uses documentation address ranges, only inside
// its own namespaces, and removes everything it made on Down, or on the next
// Up after a crash.
package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/heraldlb/herald/internal/bgprouter"
)

// Config says what lab to build.
type Config struct {
	Dir    string // state, logs, kubeconfigs; binaries in Dir/bin unless BinDir is set
	BinDir string // where kube-apiserver, etcd, ... are
	Nodes  int    // pod nodes (kube-proxy, pods), 0..MaxPodNodes; default 3 when SpeakerNodes is 0 too
	// SpeakerNodes are speaker-only nodes after the pod nodes: a namespace on
	// the LAN and a Node object, no kube-proxy and no pods. Nodes+SpeakerNodes
	// is at most MaxNodes.
	SpeakerNodes int
	ProxyMode    string    // kube-proxy mode: "iptables" (default), "nftables", or "none"
	Log          io.Writer // progress lines; default io.Discard
	// AuditWrites makes the API server log every write with its user
	// (Lab.Writes), for benchmarks that count one component's writes.
	AuditWrites bool
	// Routers adds BGP routers to the LAN: FRR and BIRD, each in its own
	// namespace with its default configuration, and a client behind FRR
	// (see routers.go). Off by default.
	Routers bool
	// NodePortRange is the API server's --service-node-port-range; default
	// 30000-32767, which holds only 2,767 Services with NodePorts: benches
	// at 10,000 widen it (e.g. 20000-32767).
	NodePortRange string
}

// Lab is a running lab.
type Lab struct {
	Config
	Nodes []Node
	// Kubeconfig is the admin kubeconfig, reachable from the machine's namespace.
	Kubeconfig string
	RESTConfig *rest.Config
	Client     kubernetes.Interface
	// FRR and BIRD are the lab's BGP routers, with Config.Routers; nil
	// otherwise.
	FRR  *bgprouter.FRR
	BIRD *bgprouter.BIRD

	pki        *pki
	procs      []*process
	forwarders []*forwarder
	// nodeForwarder is each node's way to the API server (SetNodeAPI).
	nodeForwarder map[string]*forwarder
	agent         *agent
	cancel        context.CancelFunc
	agentDone     chan struct{}
	downOnce      sync.Once
	lock          *os.File // the machine-wide lab lock, held until Down
}

// Up builds a lab and returns once the API server answers, every node is
// Ready, default ServiceAccounts exist and every kube-proxy has synced.
// On error, whatever was built is torn down again.
func Up(ctx context.Context, cfg Config) (*Lab, error) {
	if cfg.Nodes == 0 && cfg.SpeakerNodes == 0 {
		cfg.Nodes = 3
	}
	nodes, err := planNodes(cfg.Nodes, cfg.SpeakerNodes)
	if err != nil {
		return nil, err
	}
	if cfg.ProxyMode == "" {
		cfg.ProxyMode = "iptables"
	}
	switch cfg.ProxyMode {
	case "iptables", "nftables", "none":
	default:
		return nil, fmt.Errorf("lab proxy mode %q: want iptables, nftables or none", cfg.ProxyMode)
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if cfg.NodePortRange == "" {
		cfg.NodePortRange = DefaultNodePortRange
	}
	if cfg.BinDir == "" {
		cfg.BinDir = filepath.Join(cfg.Dir, "bin")
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the lab needs root: it creates network namespaces and runs kube-proxy")
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-proxy"} {
		if _, err := os.Stat(filepath.Join(cfg.BinDir, b)); err != nil {
			return nil, fmt.Errorf("lab binary %s missing in %s: run e2etest/tools/build.sh (make lab-bins)", b, cfg.BinDir)
		}
	}
	if pid := Running(cfg.Dir); pid != 0 {
		return nil, fmt.Errorf("a lab is already running from %s (pid %d); stop it first with `make lab-down`", cfg.Dir, pid)
	}
	if err := checkHostRanges(); err != nil {
		return nil, err
	}
	lock, err := lockMachine(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if err := Clean(cfg.Dir); err != nil {
		lock.Close()
		return nil, fmt.Errorf("remove a previous lab's leftovers: %w", err)
	}
	l := &Lab{Config: cfg, lock: lock, Nodes: nodes}
	if err := l.up(ctx); err != nil {
		l.Down()
		return nil, err
	}
	return l, nil
}

func (l *Lab) up(ctx context.Context) error {
	start := time.Now()
	step := func(what string) { fmt.Fprintf(l.Log, "lab: %-40s %6.1fs\n", what, time.Since(start).Seconds()) }
	for _, d := range []string{l.Dir, l.logDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := recordPID(l.Dir, os.Getpid()); err != nil {
		return err
	}
	var err error
	if l.pki, err = newPKI(filepath.Join(l.Dir, "pki")); err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel

	// The network and the control plane do not depend on each other.
	netErr := make(chan error, 1)
	go func() {
		err := l.buildNetwork()
		if err == nil && l.Routers {
			err = l.startRouters(ctx)
		}
		netErr <- err
	}()
	if err := l.startControlPlane(runCtx); err != nil {
		<-netErr
		return err
	}
	step("control plane answering")
	if err := <-netErr; err != nil {
		return err
	}
	step("network built")

	l.Kubeconfig = filepath.Join(l.Dir, "kubeconfig")
	if err := os.WriteFile(l.Kubeconfig, []byte(kubeconfig(fmt.Sprintf("https://127.0.0.1:%d", APIServerPort), l.pki.CACert, AdminToken)), 0o600); err != nil {
		return err
	}
	if l.RESTConfig, err = clientcmd.BuildConfigFromFlags("", l.Kubeconfig); err != nil {
		return err
	}
	l.RESTConfig.QPS, l.RESTConfig.Burst = 200, 400
	if l.Client, err = kubernetes.NewForConfig(l.RESTConfig); err != nil {
		return err
	}
	l.nodeForwarder = map[string]*forwarder{}
	for _, n := range l.Nodes {
		f, err := startForwarder(n.Netns, fmt.Sprintf("127.0.0.1:%d", nodeAPIPort), fmt.Sprintf("127.0.0.1:%d", APIServerPort))
		if err != nil {
			return err
		}
		l.forwarders = append(l.forwarders, f)
		l.nodeForwarder[n.Name] = f
	}
	l.agent = newAgent(l.Client, l.Nodes)
	if err := l.agent.registerNodes(ctx); err != nil {
		return err
	}
	l.agentDone = make(chan struct{})
	go func() { l.agent.run(runCtx); close(l.agentDone) }()
	step("nodes registered")
	if l.ProxyMode != "none" {
		if err := l.startKubeProxies(runCtx); err != nil {
			return err
		}
	}
	if err := l.waitReady(ctx, 90*time.Second); err != nil {
		return err
	}
	step("ready")
	return nil
}

// HostKubeconfig returns the path of a kubeconfig for token that works in the
// machine's namespace.
func (l *Lab) HostKubeconfig(name, token string) (string, error) {
	return l.writeKubeconfig(name+"-host", fmt.Sprintf("https://127.0.0.1:%d", APIServerPort), token)
}

// NodeKubeconfig returns the path of a kubeconfig for token that works inside
// node namespaces, where 127.0.0.1:6443 forwards to the API server.
func (l *Lab) NodeKubeconfig(name, token string) (string, error) {
	return l.writeKubeconfig(name, fmt.Sprintf("https://127.0.0.1:%d", nodeAPIPort), token)
}

func (l *Lab) startKubeProxies(ctx context.Context) error {
	for _, n := range l.PodNodes() {
		if err := l.startKubeProxy(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) startKubeProxy(ctx context.Context, n Node) error {
	kc, err := l.NodeKubeconfig("kube-proxy", "kube-proxy-token")
	if err != nil {
		return err
	}
	_, err = l.spawn(ctx, "kube-proxy-"+n.Name, n.Netns, kubeProxyArgv(l.bin("kube-proxy"), kc, n.Name, l.ProxyMode, PodCIDRv4+","+PodCIDRv6)...)
	return err
}

// kubeProxyArgv is how a lab node runs kube-proxy, inside its namespace.
func kubeProxyArgv(bin, kubeconfig, node, mode, clusterCIDR string) []string {
	return []string{bin,
		"--kubeconfig", kubeconfig,
		"--hostname-override", node,
		"--proxy-mode", mode,
		"--cluster-cidr", clusterCIDR,
		// conntrack tables and their timeouts are shared with the machine:
		// leave them alone.
		"--conntrack-max-per-core", "0",
		"--conntrack-tcp-timeout-established", "0",
		"--conntrack-tcp-timeout-close-wait", "0",
		"--metrics-bind-address", KubeProxyMetrics,
		"--healthz-bind-address", "127.0.0.1:10256",
		"--v=1",
	}
}

// KubeProxyMetrics is where each node's kube-proxy serves its metrics,
// inside the node's namespace.
const KubeProxyMetrics = "127.0.0.1:10249"

// RestartKubeProxy stops node's kube-proxy (SIGTERM) and starts it again,
// which makes it program every Service anew (a full sync), and waits until
// its healthz answers. Its log starts over.
func (l *Lab) RestartKubeProxy(ctx context.Context, node string) error {
	n, ok := l.Node(node)
	if !ok || n.SpeakerOnly || l.ProxyMode == "none" {
		return fmt.Errorf("lab node %s runs no kube-proxy", node)
	}
	name := "kube-proxy-" + n.Name
	for i, p := range l.procs {
		if p.name == name {
			p.stop(10 * time.Second)
			l.procs = append(l.procs[:i:i], l.procs[i+1:]...)
			break
		}
	}
	if err := l.startKubeProxy(context.Background(), n); err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		return l.kubeProxyHealthy(ctx, n), nil
	})
}

// waitReady waits for what tests need before they start: Ready nodes, the
// default ServiceAccount (made by KCM; pods cannot be created without it) and
// a first sync of every kube-proxy.
func (l *Lab) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var what string
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		for _, p := range l.procs {
			if p.exited() {
				return false, fmt.Errorf("%s exited: %v (log: %s)", p.name, p.err, l.logPath(p.name))
			}
		}
		what = "default ServiceAccount"
		if _, err := l.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
			return false, nil
		}
		what = "nodes Ready and untainted"
		nodes, err := l.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil || len(nodes.Items) != len(l.Nodes) {
			return false, nil
		}
		for _, n := range nodes.Items {
			// The API server taints new nodes not-ready until KCM sees them Ready.
			if !NodeReady(&n) || len(n.Spec.Taints) > 0 {
				return false, nil
			}
		}
		if l.ProxyMode == "none" {
			return true, nil
		}
		for _, n := range l.PodNodes() {
			what = "kube-proxy healthz on " + n.Name
			if !l.kubeProxyHealthy(ctx, n) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("lab not ready after %s, waiting for %s: %w", timeout, what, err)
	}
	return nil
}

func (l *Lab) kubeProxyHealthy(ctx context.Context, n Node) bool {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: DialContextIn(n.Netns)}}
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://127.0.0.1:10256/healthz", nil)
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// PodNodes are the nodes that run kube-proxy and pods.
func (l *Lab) PodNodes() []Node {
	var out []Node
	for _, n := range l.Nodes {
		if !n.SpeakerOnly {
			out = append(out, n)
		}
	}
	return out
}

// Node returns the lab node named name.
func (l *Lab) Node(name string) (Node, bool) {
	for _, n := range l.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

// NodeReady reports whether the node's Ready condition is True.
func NodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// SetNodeHeartbeat stops or resumes the agent's heartbeats for a node, so a
// test can make Kubernetes see the node die.
func (l *Lab) SetNodeHeartbeat(node string, on bool) {
	if n, ok := l.agent.nodes[node]; ok {
		n.heartbeat.Store(on)
	}
}

// Down stops everything the lab started and removes its namespaces. It is
// safe to call more than once and on a partly built lab.
func (l *Lab) Down() {
	l.downOnce.Do(func() {
		if l.cancel != nil {
			l.cancel()
		}
		if l.agentDone != nil {
			<-l.agentDone
		}
		if l.agent != nil {
			l.agent.stopAll()
		}
		l.stopRouters()
		// Node-side processes first, then the control plane in reverse start order.
		for i := len(l.procs) - 1; i >= 0; i-- {
			l.procs[i].stop(5 * time.Second)
		}
		for _, f := range l.forwarders {
			f.close()
		}
		if err := Clean(l.Dir); err != nil {
			fmt.Fprintf(l.Log, "lab: tear-down: %v\n", err)
		}
		l.lock.Close()
	})
}

func (l *Lab) spawn(ctx context.Context, name, ns string, argv ...string) (*process, error) {
	p, err := startProcess(ctx, name, ns, l.logPath(name), argv...)
	if err != nil {
		return nil, err
	}
	l.procs = append(l.procs, p)
	if ns == "" {
		// Processes inside lab namespaces are found through their namespace.
		if err := recordPID(l.Dir, p.cmd.Process.Pid); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (l *Lab) bin(name string) string { return filepath.Join(l.BinDir, name) }

func (l *Lab) logDir() string { return filepath.Join(l.Dir, "logs") }

func (l *Lab) logPath(name string) string { return filepath.Join(l.logDir(), name+".log") }
