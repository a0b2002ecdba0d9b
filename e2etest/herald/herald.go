// Package herald installs Herald into a lab the way an operator would: the
// Helm chart into the API server, then the controller and one speaker per
// node running under the chart's own ServiceAccounts (tokens from the
// TokenRequest API), so a permission the chart forgot fails for real.
//
// The binaries run as processes because the lab has no container runtime:
// the controller on the machine's loopback, each speaker in its node's
// network namespace as a hostNetwork pod would.
package herald

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"sigs.k8s.io/yaml"

	"github.com/heraldlb/herald/e2etest/lab"
)

// Where Herald lives and listens in the lab.
const (
	Namespace         = "herald-system"
	Release           = "herald"
	ControllerMetrics = "127.0.0.1:17472"
	ControllerProbes  = "127.0.0.1:17473"
	StandbyMetrics    = "127.0.0.1:17482" // a second controller replica's (StartStandbyController)
	StandbyProbes     = "127.0.0.1:17483"
	WebhookPort       = 19443
	webhookConfig     = "herald-validating-webhook"
)

// Options change how Herald runs in the lab; the zero value is what the
// end-to-end suite uses.
type Options struct {
	// ChartTimings runs the speakers with the chart's default timings
	// (charts/herald/values.yaml: speaker.leaseDuration, handoverTimeout)
	// instead of the lab's short Lease, so benchmarks measure what users get.
	ChartTimings bool
	// SpeakerLogLevel is the speakers' --zap-log-level; default 1 (gossip
	// membership changes with exact times, for failover analysis).
	SpeakerLogLevel string
	// Dataplane is the speakers' --dataplane (nftables, iptables, ipvs,
	// off); default nftables, the chart's. The controller runs with
	// --ip-mode auto, as the chart's, and follows it: Proxy unless off, then
	// VIP.
	Dataplane string
}

// Herald is an installed Herald.
type Herald struct {
	lab      *lab.Lab
	repo     string
	binDir   string
	ctlKC    string // kubeconfig with the controller ServiceAccount's token
	spkKC    string // the same for the speaker, through the node forwarder
	ctl      *Process
	speakers map[string]*Process
	log      func(string, ...any)
	// speakerTimings are the speakers' timing flags.
	speakerTimings []string
	opts           Options
}

// Install builds the binaries, installs the chart and starts the controller
// and the speakers. log receives progress lines (may be nil).
func Install(ctx context.Context, l *lab.Lab, log func(string, ...any)) (*Herald, error) {
	return InstallWith(ctx, l, Options{}, log)
}

// InstallWith is Install with options.
func InstallWith(ctx context.Context, l *lab.Lab, opts Options, log func(string, ...any)) (*Herald, error) {
	if log == nil {
		log = func(string, ...any) {}
	}
	repo, err := lab.RepoDir()
	if err != nil {
		return nil, err
	}
	if opts.SpeakerLogLevel == "" {
		opts.SpeakerLogLevel = "1"
	}
	if opts.Dataplane == "" {
		opts.Dataplane = "nftables"
	}
	h := &Herald{lab: l, repo: repo, binDir: filepath.Join(l.Dir, "herald-bin"), speakers: map[string]*Process{}, log: log, opts: opts}
	// The lab's own Lease: short, so tests that wait for a Lease to expire
	// stay short.
	h.speakerTimings = []string{"--lease-duration", "6s"}
	if opts.ChartTimings {
		t, err := ChartSpeakerTimings(repo)
		if err != nil {
			return nil, err
		}
		h.speakerTimings = []string{"--lease-duration", t.LeaseDuration, "--handover-timeout", t.HandoverTimeout}
		log("herald: speakers with the chart's default timings: lease %s, handover %s", t.LeaseDuration, t.HandoverTimeout)
	}
	start := time.Now()
	build := exec.Command("go", "build", "-o", h.binDir+"/", "./controller", "./speaker")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build herald: %w: %s", err, out)
	}
	if out, err := h.helm("install", Release, filepath.Join(repo, "charts/herald"), "-n", Namespace, "--create-namespace",
		"-f", filepath.Join(repo, "e2etest/herald/lab-values.yaml"), "--wait", "--timeout", "60s"); err != nil {
		return nil, fmt.Errorf("helm install: %w: %s", err, out)
	}
	log("herald: chart installed in %.1fs", time.Since(start).Seconds())
	// The API server reaches the webhook on this machine's loopback, not
	// through the chart's Service (the controller is not a pod here).
	if err := PointWebhookAtLoopback(ctx, l.Client, WebhookPort); err != nil {
		return nil, err
	}
	if h.ctlKC, err = h.tokenKubeconfig(ctx, "herald-controller", false); err != nil {
		return nil, err
	}
	if h.spkKC, err = h.tokenKubeconfig(ctx, "herald-speaker", true); err != nil {
		return nil, err
	}
	if err := h.StartController(); err != nil {
		return nil, err
	}
	if err := h.startSpeakers(l.Nodes); err != nil {
		return nil, err
	}
	log("herald: controller and %d speakers ready in %.1fs", len(l.Nodes), time.Since(start).Seconds())
	return h, nil
}

// startSpeakers starts the nodes' speakers and waits until all are ready;
// a few at a time in big labs (50 nodes would take minutes one by one).
func (h *Herald) startSpeakers(nodes []lab.Node) error {
	type started struct {
		node string
		p    *Process
		err  error
	}
	out := make(chan started)
	// One at a time in labs of pod nodes, as the e2e suite always started them.
	par := 1
	if len(nodes) > lab.MaxPodNodes {
		par = 8
	}
	sem := make(chan struct{}, par)
	for _, n := range nodes {
		go func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			p, err := h.startSpeaker(n)
			out <- started{n.Name, p, err}
		}()
	}
	var first error
	for range nodes {
		s := <-out
		if s.err != nil && first == nil {
			first = s.err
		}
		if s.p != nil {
			h.speakers[s.node] = s.p
		}
	}
	return first
}

// SpeakerTimings are the speaker's timing flags as the chart sets them.
type SpeakerTimings struct{ LeaseDuration, HandoverTimeout string }

// ChartSpeakerTimings reads the speaker's default timings from the chart's
// values.yaml, so the lab follows the chart when its defaults change.
func ChartSpeakerTimings(repo string) (SpeakerTimings, error) {
	path := filepath.Join(repo, "charts/herald/values.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		return SpeakerTimings{}, err
	}
	var v struct {
		Speaker struct {
			LeaseDuration   string `json:"leaseDuration"`
			HandoverTimeout string `json:"handoverTimeout"`
		} `json:"speaker"`
	}
	if err := yaml.Unmarshal(b, &v); err != nil {
		return SpeakerTimings{}, fmt.Errorf("%s: %w", path, err)
	}
	t := SpeakerTimings{LeaseDuration: v.Speaker.LeaseDuration, HandoverTimeout: v.Speaker.HandoverTimeout}
	for _, d := range []string{t.LeaseDuration, t.HandoverTimeout} {
		if _, err := time.ParseDuration(d); err != nil {
			return SpeakerTimings{}, fmt.Errorf("%s: speaker timings %+v: %w", path, t, err)
		}
	}
	return t, nil
}

// Helm runs the pinned helm against the lab.
func (h *Herald) helm(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(h.repo, "bin", "helm"), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+h.lab.Kubeconfig)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// PointWebhookAtLoopback routes the API server's calls to Herald's webhook
// to a controller process on this machine's loopback, at
// https://localhost:<port><path> (the name is in the controller's
// certificate), instead of the in-cluster Service the configuration names.
func PointWebhookAtLoopback(ctx context.Context, c kubernetes.Interface, port int) error {
	wh := c.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	cfg, err := wh.Get(ctx, webhookConfig, metav1.GetOptions{})
	if err != nil {
		return err
	}
	for i := range cfg.Webhooks {
		cc := &cfg.Webhooks[i].ClientConfig
		if cc.Service == nil || cc.Service.Path == nil {
			return fmt.Errorf("webhook %s has no service path", cfg.Webhooks[i].Name)
		}
		url := fmt.Sprintf("https://localhost:%d%s", port, *cc.Service.Path)
		cc.Service, cc.URL = nil, &url
	}
	_, err = wh.Update(ctx, cfg, metav1.UpdateOptions{})
	return err
}

// tokenKubeconfig asks the TokenRequest API for a token of the chart's
// ServiceAccount sa and writes a kubeconfig with it: for the node namespaces
// (through their forwarder) when inNode is set.
func (h *Herald) tokenKubeconfig(ctx context.Context, sa string, inNode bool) (string, error) {
	ttl := int64(24 * 3600)
	tr, err := h.lab.Client.CoreV1().ServiceAccounts(Namespace).CreateToken(ctx, sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &ttl}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for ServiceAccount %s/%s: %w", Namespace, sa, err)
	}
	if inNode {
		return h.lab.NodeKubeconfig(sa, tr.Status.Token)
	}
	return h.lab.HostKubeconfig(sa, tr.Status.Token)
}

// Process is one of Herald's components running as a process.
type Process struct {
	Name string
	cmd  *exec.Cmd
	done chan struct{}
}

func (h *Herald) start(name, ns string, argv []string, ready func() bool) (*Process, error) {
	logPath := filepath.Join(h.lab.Dir, "logs", name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	if ns != "" {
		argv = append([]string{"ip", "netns", "exec", ns}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &Process{Name: name, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case <-p.done:
			return nil, fmt.Errorf("%s exited at start; see %s", name, logPath)
		default:
		}
		if ready() {
			return p, nil
		}
	}
	p.Kill()
	return nil, fmt.Errorf("%s not ready after 60s; see %s", name, logPath)
}

// Stop sends SIGTERM and waits, as a rolling update would.
func (p *Process) Stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.Kill()
	}
}

// Kill ends the process abruptly, as a crash would.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Running reports whether the process has not exited.
func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// PID of the running process.
func (p *Process) PID() int { return p.cmd.Process.Pid }

func httpReady(c *http.Client, url string) func() bool {
	return func() bool {
		resp, err := c.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}
}

// StartController runs the controller under the chart's ServiceAccount and
// waits until it is ready (state rebuilt, webhook serving with its CA).
func (h *Herald) StartController(extra ...string) error {
	p, err := h.startController("herald-controller", ControllerMetrics, ControllerProbes, WebhookPort, "webhook-certs", extra)
	if err != nil {
		return err
	}
	h.ctl = p
	return nil
}

// ControllerLeaseDuration is the lab controller's leader Lease: how long a
// crashed leader blocks its standby.
const ControllerLeaseDuration = 4 * time.Second

// ControllerRetryPeriod is how often the lab's leader renews and its
// standby tries: a standby sees an expired Lease up to two of these late.
const ControllerRetryPeriod = 500 * time.Millisecond

// StartStandbyController runs a second controller replica, as a Deployment
// with two replicas would: the same identity, its own ports; it serves its
// webhook and waits for the leader Lease. The caller stops it.
func (h *Herald) StartStandbyController() (*Process, error) {
	return h.startController("herald-controller-standby", StandbyMetrics, StandbyProbes, WebhookPort+1, "webhook-certs-standby", nil)
}

func (h *Herald) startController(name, metrics, probes string, webhookPort int, certDir string, extra []string) (*Process, error) {
	argv := append([]string{filepath.Join(h.binDir, "controller"),
		"--kubeconfig", h.ctlKC,
		"--namespace", Namespace,
		"--metrics-bind-address", metrics,
		"--health-probe-bind-address", probes,
		"--leader-elect-lease-duration", ControllerLeaseDuration.String(),
		"--leader-elect-retry-period", ControllerRetryPeriod.String(),
		"--webhook-host", "127.0.0.1",
		"--webhook-port", fmt.Sprint(webhookPort),
		"--webhook-extra-dns-names", "localhost",
		"--webhook-cert-dir", filepath.Join(h.lab.Dir, certDir),
		// No --ip-mode: auto, as the chart runs it; ipMode follows the
		// dataplane the speakers' Leases announce.
	}, extra...)
	return h.start(name, "", argv, httpReady(http.DefaultClient, "http://"+probes+"/readyz"))
}

// KeepControllerRunning starts the controller again within a second of
// its exit, as its Deployment would (a bench's load can cost it its short
// leader Lease, and then it exits), until the returned stop is called.
// Each restart is a line on log.
func (h *Herald) KeepControllerRunning(log io.Writer) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-quit:
				return
			case <-time.After(time.Second):
			}
			if p := h.Controller(); p != nil && !p.Running() {
				fmt.Fprintln(log, "the controller exited; starting it again")
				if err := h.StartController(); err != nil {
					fmt.Fprintln(log, "restarting the controller:", err)
				}
			}
		}
	}()
	return func() {
		close(quit)
		<-done
	}
}

// Controller is the running controller.
func (h *Herald) Controller() *Process { return h.ctl }

// StartSpeaker runs node n's speaker in its namespace under the chart's
// ServiceAccount and waits until it has reconciled once.
func (h *Herald) StartSpeaker(n lab.Node) error {
	p, err := h.startSpeaker(n)
	if err != nil {
		return err
	}
	h.speakers[n.Name] = p
	return nil
}

func (h *Herald) startSpeaker(n lab.Node) (*Process, error) {
	return h.startSpeakerWith(n, h.opts.Dataplane)
}

// RestartSpeaker stops node n's speaker (SIGTERM: it hands its addresses
// over and removes its rules) and starts it again with --dataplane backend,
// leaving the other speakers and the controller as they are: for benchmarks
// that time one node's full sync with each backend. A later StartSpeaker or
// SetDataplane goes back to the Options' backend.
func (h *Herald) RestartSpeaker(n lab.Node, backend string) error {
	if p := h.speakers[n.Name]; p != nil {
		p.Stop()
	}
	p, err := h.startSpeakerWith(n, backend)
	if err != nil {
		return err
	}
	h.speakers[n.Name] = p
	return nil
}

func (h *Herald) startSpeakerWith(n lab.Node, backend string) (*Process, error) {
	argv := append([]string{filepath.Join(h.binDir, "speaker"),
		"--kubeconfig", h.spkKC,
		"--node-name", n.Name,
		"--namespace", Namespace,
		"--gossip-address", n.IPv4.String(),
		"--metrics-bind-address", SpeakerMetrics,
		"--health-probe-bind-address", "127.0.0.1:7475",
		"--pprof-bind-address", SpeakerPprof,
		"--zap-log-level", h.opts.SpeakerLogLevel,
		"--zap-time-encoding", "rfc3339nano",
		"--dataplane", backend,
	}, h.speakerTimings...)
	return h.start("herald-speaker-"+n.Name, n.Netns, argv, httpReady(SpeakerHTTPClient(n), "http://127.0.0.1:7475/readyz"))
}

// SpeakerMetrics is where each speaker serves metrics, inside its node.
const SpeakerMetrics = "127.0.0.1:7474"

// SpeakerPprof is where each speaker serves /debug/pprof, inside its node
// (loopback only; the benches profile through SpeakerHTTPClient).
const SpeakerPprof = "127.0.0.1:7476"

// SpeakerHTTPClient is an HTTP client whose connections start inside node
// n, for the speaker's metrics and probes on its loopback.
func SpeakerHTTPClient(n lab.Node) *http.Client {
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: lab.DialContextIn(n.Netns)}}
}

// Speaker is node's running speaker.
func (h *Herald) Speaker(node string) *Process { return h.speakers[node] }

// Dataplane is the speakers' --dataplane.
func (h *Herald) Dataplane() string { return h.opts.Dataplane }

// SetDataplane switches the speakers to another --dataplane, one node at a
// time (each hands its addresses over and removes its rules as it stops).
// The controller is not restarted: with --ip-mode auto it follows the
// dataplane the speakers' Leases announce, as during a helm upgrade.
func (h *Herald) SetDataplane(backend string) error {
	h.opts.Dataplane = backend
	for _, n := range h.lab.Nodes {
		if p := h.speakers[n.Name]; p != nil {
			p.Stop()
		}
		if err := h.StartSpeaker(n); err != nil {
			return err
		}
	}
	return nil
}

// Stop stops every component (SIGTERM), speakers first.
func (h *Herald) Stop() {
	for _, p := range h.speakers {
		p.Stop()
	}
	if h.ctl != nil {
		h.ctl.Stop()
	}
}

// Logs returns the path of a component's log.
func (h *Herald) Logs(name string) string { return filepath.Join(h.lab.Dir, "logs", name+".log") }

// RSSMiB is a process's resident set (VmRSS) in MiB.
func RSSMiB(pid int) (float64, error) {
	v, err := StatusMiB(pid, "VmRSS")
	if err != nil {
		return 0, err
	}
	return v[0], nil
}

// StatusMiB reads kB fields of /proc/PID/status, in MiB, in the order
// asked: VmRSS, or its parts RssAnon (the heap and stacks) and RssFile
// (mapped files, the binary's text and read-only data).
func StatusMiB(pid int, fields ...string) ([]float64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out, found := make([]float64, len(fields)), 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		for i, field := range fields {
			v, ok := strings.CutPrefix(sc.Text(), field+":")
			if !ok {
				continue
			}
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				return nil, fmt.Errorf("/proc/%d/status: %s: %w", pid, field, err)
			}
			out[i] = kb / 1024
			found++
		}
	}
	if found != len(fields) {
		return nil, fmt.Errorf("/proc/%d/status: not all of %v", pid, fields)
	}
	return out, nil
}
