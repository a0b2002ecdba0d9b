package main

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
	"sync/atomic"
	"syscall"
	"time"
)

// The controller's endpoints on the machine's loopback (the e2e suite uses
// 1747x; only one lab runs at a time, but keep them apart anyway).
const (
	ctlMetrics = "127.0.0.1:17572"
	ctlProbes  = "127.0.0.1:17573"
	ctlPprof   = "127.0.0.1:17574"
	// ctlWebhookPort is where the controller serves the validating webhook;
	// the API server calls https://localhost:<port>.
	ctlWebhookPort = 19543
)

// controllerProc is the controller under test, running as a process with
// the lab's admin kubeconfig, as the e2e suite runs it.
type controllerProc struct {
	cmd     *exec.Cmd
	started time.Time
	done    chan struct{}
	peak    atomic.Int64 // highest VmHWM seen, KiB
}

func (b *bench) startController() (*controllerProc, error) {
	logPath := filepath.Join(b.lab.Dir, "logs", "bench-controller.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(b.ctlBin,
		"--kubeconfig", b.lab.Kubeconfig,
		"--namespace", heraldNamespace,
		"--metrics-bind-address", ctlMetrics,
		"--health-probe-bind-address", ctlProbes,
		"--pprof-bind-address", ctlPprof,
		"--webhook-host", "127.0.0.1",
		"--webhook-port", fmt.Sprint(ctlWebhookPort),
		"--webhook-extra-dns-names", "localhost",
		"--webhook-cert-dir", filepath.Join(b.dir, "webhook-certs"),
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	if b.opts.memoryLimit > 0 {
		cmd.Env = append(os.Environ(), fmt.Sprintf("HERALD_MEMORY_LIMIT=%d", b.opts.memoryLimit))
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &controllerProc{cmd: cmd, done: make(chan struct{}), started: time.Now()}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start the controller: %w", err)
	}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	// VmHWM only grows; sampling keeps the last value once the process is gone.
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			p.samplePeak()
			select {
			case <-p.done:
				return
			case <-t.C:
			}
		}
	}()
	b.ctl = p
	return p, nil
}

func (p *controllerProc) pid() int { return p.cmd.Process.Pid }

func (p *controllerProc) samplePeak() {
	if kib := procStatusKiB(p.pid(), "VmHWM"); kib > p.peak.Load() {
		p.peak.Store(kib)
	}
}

func (p *controllerProc) peakKiB() int64 {
	p.samplePeak()
	return p.peak.Load()
}

func (p *controllerProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, as a rolling update does, and kills the process if it
// has not exited within grace. It returns how long the exit took.
func (p *controllerProc) stop(grace time.Duration) time.Duration {
	p.samplePeak()
	start := time.Now()
	if p.exited() {
		return 0
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return time.Since(start)
}

// waitReady polls /readyz until it answers 200 and returns the time since
// the process started.
func (p *controllerProc) waitReady(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p.exited() {
			return 0, fmt.Errorf("the controller exited before it was ready (log: .lab/logs/bench-controller.log)")
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if resp, err := c.Get("http://" + ctlProbes + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(p.started), nil
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 0, fmt.Errorf("the controller not ready after %s", timeout)
}

// waitLeading waits until the controller leads (it took the lease) and is
// ready, which it is only once it rebuilt its state from Service status,
// and returns the times since the process started until then and until it
// was elected. (Before the election, /readyz answers 200 as soon as the
// webhook serves: a standby serves the webhook.)
func (p *controllerProc) waitLeading(ctx context.Context, timeout time.Duration) (ready, elected time.Duration, err error) {
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p.exited() {
			return 0, 0, fmt.Errorf("the controller exited before it was ready (log: .lab/logs/bench-controller.log)")
		}
		if ctx.Err() != nil {
			return 0, 0, ctx.Err()
		}
		if elected == 0 {
			if leading, err := p.metric(ctx, "leader_election_master_status", map[string]string{"name": "herald-controller"}); err == nil && leading == 1 {
				elected = time.Since(p.started)
			}
		}
		if elected != 0 {
			if resp, err := c.Get("http://" + ctlProbes + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return time.Since(p.started), elected, nil
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 0, elected, fmt.Errorf("the controller did not lead and get ready within %s", timeout)
}

// scrapeClient reads metrics uncompressed: the bench polls often, and
// gzip would cost the controller CPU it is being measured on.
var scrapeClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableCompression: true}}

// scrape reads the controller's metrics endpoint.
func (p *controllerProc) scrape(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+ctlMetrics+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := scrapeClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("controller metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

// metric sums the samples of a metric on the controller's endpoint whose
// labels include want.
func (p *controllerProc) metric(ctx context.Context, name string, want map[string]string) (float64, error) {
	text, err := p.scrape(ctx)
	if err != nil {
		return 0, err
	}
	return sum(parseMetrics(text, name), want), nil
}

// sum adds the samples whose labels include want.
func sum(samples []sample, want map[string]string) float64 {
	total := 0.0
	for _, s := range samples {
		if s.matches(want) {
			total += s.value
		}
	}
	return total
}

// procStatusKiB reads a "Name:   123 kB" line of /proc/PID/status.
func procStatusKiB(pid int, field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// sample is one line of the Prometheus text format.
type sample struct {
	labels map[string]string
	value  float64
}

func (s sample) matches(want map[string]string) bool {
	for k, v := range want {
		if s.labels[k] != v {
			return false
		}
	}
	return true
}

// parseMetrics returns the samples of one metric from the Prometheus text
// format. Label values here never hold a comma or an escaped quote.
func parseMetrics(text, name string) []sample {
	var out []sample
	for _, line := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		s := sample{labels: map[string]string{}}
		if rest[0] == '{' {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			for _, kv := range strings.Split(rest[1:end], ",") {
				k, v, ok := strings.Cut(kv, "=")
				if ok {
					s.labels[strings.TrimSpace(k)] = strings.Trim(v, `"`)
				}
			}
			rest = rest[end+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		s.value = v
		out = append(out, s)
	}
	return out
}

// apiCounts are the API server's request counters the bench reads.
type apiCounts struct {
	statusWrites    float64 // Service status updates and patches, any response code
	statusConflicts float64 // of those, refused with 409
	eventWrites     float64 // Events created or patched
}

// apiCounts reads the API server's own request counters from its /metrics.
func (b *bench) apiCounts(ctx context.Context) (apiCounts, error) {
	body, err := b.client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return apiCounts{}, fmt.Errorf("API server metrics: %w", err)
	}
	var c apiCounts
	for _, s := range parseMetrics(string(body), "apiserver_request_total") {
		verb := s.labels["verb"]
		switch {
		case s.labels["resource"] == "services" && s.labels["subresource"] == "status" &&
			(verb == "UPDATE" || verb == "PUT" || verb == "PATCH" || verb == "APPLY"):
			c.statusWrites += s.value
			if s.labels["code"] == "409" {
				c.statusConflicts += s.value
			}
		case s.labels["resource"] == "events" && (verb == "POST" || verb == "CREATE" || verb == "PATCH" || verb == "UPDATE" || verb == "PUT"):
			c.eventWrites += s.value
		}
	}
	return c, nil
}
