package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/e2etest/herald"
	"github.com/heraldlb/herald/e2etest/lab"
	heraldscheme "github.com/heraldlb/herald/internal/scheme"
)

const (
	heraldNamespace = "herald-system"
	benchNamespace  = "bench"
	// benchPool is IPv6: the lab's IPv4 ranges are far too small for
	// 12,000 Services (the IPv4 ClusterIP range alone has 126 addresses).
	benchPool = "2001:db8:4::/112"
)

// bench is one run: the lab, the controller under test, and the figures.
type bench struct {
	opts  options
	start time.Time

	lab    *lab.Lab
	client kubernetes.Interface // without client-side rate limiting
	dir    string               // the controller's binary, profiles
	ctlBin string
	ctl    *controllerProc
	track  *tracker

	figs       []figure
	profile    *profileReport
	cpu        *cpuWindow
	conclusion string
	heap       string // what the controller's heap holds after cold

	writesBase  *apiCounts // API server counters before the first controller started
	writesDone  bool
	rssPeakKiB  int64 // highest VmHWM of any controller process
	stopTracker context.CancelFunc
}

// figure is one measured number.
type figure struct {
	scenario string
	name     string // for the `bench:` line
	what     string // for the table
	value    float64
	unit     string
	prec     int
	goal     string // goal or reference, for the table
	met      *bool  // nil when there is no goal to meet
	hard     bool   // a correctness figure: missing it fails the run
}

func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(b.start).Seconds(), fmt.Sprintf(format, args...))
}

// record adds a figure and prints its `bench:` line at once, when its
// scenario is one being reported.
func (b *bench) record(f figure) {
	if !b.opts.reports(f.scenario) {
		return
	}
	b.figs = append(b.figs, f)
	fmt.Printf("bench: %s %s %s\n", f.name, strconv.FormatFloat(f.value, 'f', f.prec, 64), f.unit)
}

func met(ok bool) *bool { return &ok }

func (b *bench) broken() bool {
	for _, f := range b.figs {
		if f.hard && f.met != nil && !*f.met {
			return true
		}
	}
	return false
}

func (b *bench) run(ctx context.Context) error {
	cfg, err := lab.DefaultConfig()
	if err != nil {
		return err
	}
	cfg.Nodes, cfg.ProxyMode, cfg.Log = 1, "none", os.Stderr
	b.dir = filepath.Join(cfg.Dir, "bench")
	_ = os.RemoveAll(filepath.Join(b.dir, "webhook-certs")) // a previous run's, for another CA
	if err := os.MkdirAll(b.dir, 0o755); err != nil {
		return err
	}
	repo, err := lab.RepoDir()
	if err != nil {
		return err
	}
	b.warnIfBusy()
	built := make(chan error, 1)
	go func() { built <- b.buildController(ctx, repo) }()

	b.progress("lab: 1 node, kube-proxy off (ProxyMode none) so it takes no CPU from the controller, API server and etcd on this machine's %d cores", runtime.NumCPU())
	defer b.teardown() // also of a lab that came up but failed after
	if err := b.labUp(ctx, cfg); err != nil {
		<-built
		return err
	}
	if err := <-built; err != nil {
		return err
	}
	if err := b.setup(ctx, repo); err != nil {
		return err
	}
	for _, step := range b.opts.steps() {
		var err error
		switch step {
		case "cold":
			err = b.cold(ctx)
		case "warm":
			err = b.warm(ctx)
		case "single":
			err = b.single(ctx)
		case "restart":
			err = b.restart(ctx)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", step, err)
		}
	}
	if err := b.finishWrites(ctx); err != nil {
		return err
	}
	b.recordRSS()
	return nil
}

// labUp brings up the bench's own lab, waiting while another one holds the
// machine (there can be only one: fixed ports and namespace names).
func (b *bench) labUp(ctx context.Context, cfg lab.Config) error {
	deadline := time.Now().Add(b.opts.labWait)
	var said time.Time
	for {
		start := time.Now()
		l, err := lab.Up(ctx, cfg)
		if err == nil {
			b.lab = l
			b.progress("lab up in %.1fs", time.Since(start).Seconds())
			// Mark the lab as running, as `lab up` does, so `make lab-down`
			// stops the bench cleanly.
			return os.WriteFile(filepath.Join(cfg.Dir, "ready"), []byte(strconv.Itoa(os.Getpid())), 0o644)
		}
		if !errors.Is(err, lab.ErrBusy) {
			return fmt.Errorf("lab up: %w", err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still waiting after %s: %w", b.opts.labWait, err)
		}
		if time.Since(said) > time.Minute {
			b.progress("waiting: %v", err)
			said = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Second):
		}
	}
}

// warnIfBusy says so when other work already keeps the machine busy: the
// figures would measure the contention.
func (b *bench) warnIfBusy() {
	busy0, all0, err := machineCPU()
	if err != nil {
		return
	}
	time.Sleep(time.Second)
	busy1, all1, err := machineCPU()
	if err != nil || all1 == all0 {
		return
	}
	if share := float64(busy1-busy0) / float64(all1-all0); share > 0.15 {
		b.progress("WARNING: the machine is already %.0f%% busy before the bench starts; other processes will lower the figures", 100*share)
	}
}

func (b *bench) teardown() {
	if b.ctl != nil {
		b.ctl.stop(10 * time.Second)
	}
	if b.stopTracker != nil {
		b.stopTracker()
	}
	if b.lab != nil {
		b.progress("tearing the lab down")
		b.lab.Down()
	}
}

func (b *bench) buildController(ctx context.Context, repo string) error {
	b.ctlBin = filepath.Join(b.dir, "controller")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", b.ctlBin, "./controller")
	cmd.Dir = repo
	if b.opts.controllerSrc != "" {
		cmd.Dir = b.opts.controllerSrc
		b.progress("building the controller from %s", cmd.Dir)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build the controller: %w: %s", err, out)
	}
	return nil
}

// setup installs what the controller needs, as a user would: CRDs with
// kubectl, Herald's namespace, one IPv6 pool; and starts watching Services.
func (b *bench) setup(ctx context.Context, repo string) error {
	cfg := rest.CopyConfig(b.lab.RESTConfig)
	// The bench measures the API server and the controller, not a client-side
	// rate limiter: a negative QPS turns it off.
	cfg.QPS, cfg.Burst = -1, 0
	var err error
	if b.client, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	if out, err := b.kubectl(ctx, "apply", "--server-side", "-f", filepath.Join(repo, "config/crd/bases")); err != nil {
		return fmt.Errorf("install CRDs: %w: %s", err, out)
	}
	if out, err := b.kubectl(ctx, "wait", "--for=condition=Established", "--timeout=30s", "crd", "--all"); err != nil {
		return fmt.Errorf("CRDs not established: %w: %s", err, out)
	}
	for _, ns := range []string{heraldNamespace, benchNamespace} {
		if _, err := b.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	scheme := heraldscheme.New()
	ctrllog.SetLogger(logr.Discard()) // the client's own logs are of no use here
	crc, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	pool := &v1alpha1.IPAddressPool{
		ObjectMeta: metav1.ObjectMeta{Name: "bench"},
		Spec:       v1alpha1.IPAddressPoolSpec{Addresses: []string{benchPool}},
	}
	if err := crc.Create(ctx, pool); err != nil {
		return fmt.Errorf("create pool %s: %w", benchPool, err)
	}
	// After the pool: with failurePolicy Fail, nothing of Herald's can be
	// created until a controller serves the webhook.
	if err := b.installWebhookConfig(ctx, filepath.Join(repo, "config/webhook/manifests.yaml")); err != nil {
		return err
	}
	b.progress("installed CRDs, the validating webhook's configuration, namespaces %s and %s, pool bench (%s)", heraldNamespace, benchNamespace, benchPool)
	tctx, cancel := context.WithCancel(context.Background())
	b.stopTracker = cancel
	b.track, err = startTracker(tctx, b.client, benchNamespace)
	return err
}

// installWebhookConfig installs the repository's ValidatingWebhookConfiguration
// pointed at the controller process on this machine, as the e2e suite does,
// so the controller's readiness includes what it includes in a cluster: the
// webhook serving with its CA injected.
func (b *bench) installWebhookConfig(ctx context.Context, path string) error {
	if out, err := b.kubectl(ctx, "apply", "-f", path); err != nil {
		return fmt.Errorf("%s: %w: %s", path, err, out)
	}
	return herald.PointWebhookAtLoopback(ctx, b.lab.Client, ctlWebhookPort)
}

func (b *bench) kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(b.lab.BinDir, "kubectl"), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+b.lab.Kubeconfig)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// finishWrites closes the window of the writes figures: every assignment so
// far was made by the first controller, from a cluster with no addresses.
func (b *bench) finishWrites(ctx context.Context) error {
	if b.writesDone || b.writesBase == nil || b.ctl == nil {
		return nil
	}
	b.writesDone = true
	now, err := b.apiCounts(ctx)
	if err != nil {
		return err
	}
	ctlWrites, err := b.ctl.metric(ctx, "herald_controller_service_status_writes_total", nil)
	if err != nil {
		return err
	}
	assigned := b.track.assignedTotal()
	if assigned == 0 {
		return errors.New("writes: no Service was assigned")
	}
	perSvc := (now.statusWrites - b.writesBase.statusWrites) / float64(assigned)
	b.record(figure{scenario: "writes", name: "writes_per_service", unit: "writes/service", prec: 3, value: perSvc,
		what: fmt.Sprintf("status writes per assigned Service (API server's count, %d Services)", assigned),
		goal: "exactly 1 (MetalLB: 1)", met: met(perSvc == 1)})
	ctlPer := ctlWrites / float64(assigned)
	b.record(figure{scenario: "writes", name: "writes_per_service_controller", unit: "writes/service", prec: 3, value: ctlPer,
		what: "status writes per assigned Service (controller's own counter)", goal: "exactly 1", met: met(ctlPer == 1)})
	b.record(figure{scenario: "writes", name: "status_write_conflicts", unit: "writes", prec: 0, value: now.statusConflicts - b.writesBase.statusConflicts,
		what: "status writes refused with 409 Conflict (included above)"})
	b.record(figure{scenario: "writes", name: "event_writes_per_service", unit: "writes/service", prec: 3, value: (now.eventWrites - b.writesBase.eventWrites) / float64(assigned),
		what: "Event writes per assigned Service (one IPAllocated event each)"})
	return nil
}

func (b *bench) recordRSS() {
	if b.ctl != nil {
		b.noteRSS(b.ctl)
	}
	if b.rssPeakKiB == 0 {
		return
	}
	mib := float64(b.rssPeakKiB) / 1024
	b.record(figure{scenario: "rss", name: "rss_peak_run", unit: "MiB", prec: 1, value: mib,
		what: fmt.Sprintf("controller peak RSS over the run (VmHWM, up to %d Services)", b.track.total())})
}

func (b *bench) noteRSS(p *controllerProc) {
	if kib := p.peakKiB(); kib > b.rssPeakKiB {
		b.rssPeakKiB = kib
	}
}

// printResults prints the profile of the cold start and the table; the table
// comes last.
func (b *bench) printResults(w io.Writer) {
	if len(b.figs) == 0 {
		return
	}
	if b.profile != nil {
		fmt.Fprintln(w)
		b.profile.print(w, b.cpu)
		fmt.Fprintf(w, "\nconclusion: %s\n", b.conclusion)
	}
	if b.heap != "" {
		fmt.Fprintf(w, "\n%s", b.heap)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tFIGURE\tVALUE\tUNIT\tGOAL / REFERENCE\t")
	order := func(f figure) int {
		return slices.IndexFunc(scenarios, func(s scenario) bool { return s.name == f.scenario })
	}
	figs := slices.Clone(b.figs)
	slices.SortStableFunc(figs, func(x, y figure) int { return cmp.Compare(order(x), order(y)) })
	for _, f := range figs {
		status := ""
		if f.met != nil {
			status = "  ok"
			if !*f.met {
				status = "  MISSED"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s%s\t\n", f.scenario, f.what, strconv.FormatFloat(f.value, 'f', f.prec, 64), f.unit, f.goal, status)
	}
	tw.Flush()
}
