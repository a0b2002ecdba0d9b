package main

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/heraldlb/herald/e2etest/benchkit"
)

// findProcess returns the pid of the process running the binary at path.
func findProcess(path string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		if argv0, _, _ := bytes.Cut(cmd, []byte{0}); string(argv0) == path {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no process runs %s", path)
}

// machineCPU returns the machine's busy and total CPU time from /proc/stat.
func machineCPU() (busy, total time.Duration, err error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, 0, fmt.Errorf("/proc/stat is empty")
	}
	fields := strings.Fields(sc.Text()) // cpu user nice system idle iowait irq softirq steal ...
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0, 0, fmt.Errorf("/proc/stat: unexpected first line %q", sc.Text())
	}
	var idle, sum int64
	for i, s := range fields[1:9] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, 0, err
		}
		sum += v
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		}
	}
	return time.Duration(sum-idle) * time.Second / benchkit.ClockTicks, time.Duration(sum) * time.Second / benchkit.ClockTicks, nil
}

// cpuWindow is the CPU time of the parts that do the work of a scenario.
type cpuWindow struct {
	wall                    time.Duration
	controller              time.Duration
	apiserver, etcd, kcm    time.Duration
	self                    time.Duration // the bench: its clients and informer
	machineBusy, machineAll time.Duration
}

// cpuMark is a reading of the counters at one moment.
type cpuMark struct {
	at                      time.Time
	apiserver, etcd, kcm    time.Duration
	self                    time.Duration
	machineBusy, machineAll time.Duration
}

func (b *bench) markCPU() (cpuMark, error) {
	m := cpuMark{at: time.Now()}
	for _, p := range []struct {
		bin string
		to  *time.Duration
	}{{"kube-apiserver", &m.apiserver}, {"etcd", &m.etcd}, {"kube-controller-manager", &m.kcm}} {
		pid, err := findProcess(filepath.Join(b.lab.BinDir, p.bin))
		if err != nil {
			return m, err
		}
		if *p.to, err = benchkit.ProcessCPU(pid); err != nil {
			return m, err
		}
	}
	var err error
	if m.self, err = benchkit.ProcessCPU(os.Getpid()); err != nil {
		return m, err
	}
	m.machineBusy, m.machineAll, err = machineCPU()
	return m, err
}

func (m cpuMark) since(o cpuMark, controller time.Duration) *cpuWindow {
	return &cpuWindow{
		wall: m.at.Sub(o.at), controller: controller,
		apiserver: m.apiserver - o.apiserver, etcd: m.etcd - o.etcd, kcm: m.kcm - o.kcm, self: m.self - o.self,
		machineBusy: m.machineBusy - o.machineBusy, machineAll: m.machineAll - o.machineAll,
	}
}

// profiler takes back-to-back one-second CPU profiles of the controller
// until stopped: how long the scenario lasts is not known in advance, and a
// profile request cannot be cut short without losing its data.
type profiler struct {
	dir   string
	stop  chan struct{}
	done  chan struct{}
	files []string
}

func startProfiler(dir string) *profiler {
	p := &profiler{dir: dir, stop: make(chan struct{}), done: make(chan struct{})}
	_ = os.RemoveAll(dir)
	_ = os.MkdirAll(dir, 0o755)
	go p.loop()
	return p
}

func (p *profiler) loop() {
	defer close(p.done)
	c := &http.Client{Timeout: 10 * time.Second}
	for i := 0; ; i++ {
		select {
		case <-p.stop:
			return
		default:
		}
		resp, err := c.Get("http://" + ctlPprof + "/debug/pprof/profile?seconds=1")
		if err != nil {
			// Not listening yet: the manager starts its pprof server first thing.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			continue
		}
		name := filepath.Join(p.dir, fmt.Sprintf("cpu-%03d.pb.gz", i))
		if os.WriteFile(name, body, 0o644) == nil {
			p.files = append(p.files, name)
		}
	}
}

// finish waits for the profile in flight and returns the profiles taken.
func (p *profiler) finish() []string {
	close(p.stop)
	<-p.done
	return p.files
}

// category is a part of the controller's work, recognised by the functions
// on a sampled stack. The first category with a frame on the stack takes
// the sample, so the order matters: the allocator is called from a
// reconcile, a reconcile calls the client.
type category struct {
	name  string
	match func(fn string) bool
}

func prefixes(ps ...string) func(string) bool {
	return func(fn string) bool {
		for _, p := range ps {
			if strings.HasPrefix(fn, p) {
				return true
			}
		}
		return false
	}
}

var categories = []category{
	{"allocator (controller/ipam)", prefixes("github.com/heraldlb/herald/controller/ipam.")},
	{"configuration model (internal/model)", prefixes("github.com/heraldlb/herald/internal/model.")},
	{"client: HTTP/2, TLS, JSON/protobuf, watch decoding", func(fn string) bool {
		return prefixes("net/http.", "golang.org/x/net/http2.", "crypto/", "net.", "encoding/json.",
			"sigs.k8s.io/json", "github.com/json-iterator", "k8s.io/client-go/rest", "k8s.io/apimachinery/pkg/runtime/serializer",
			"k8s.io/apimachinery/pkg/watch.", "k8s.io/apimachinery/pkg/util/net", "google.golang.org/protobuf", "github.com/gogo/protobuf")(fn) ||
			(strings.HasPrefix(fn, "k8s.io/api") && (strings.Contains(fn, ".Unmarshal") || strings.Contains(fn, ".Marshal") || strings.Contains(fn, ".Size")))
	}},
	// A reconcile's own work, with its reads of the cache.
	{"reconcile (controller/allocation)", prefixes("github.com/heraldlb/herald/controller/allocation.")},
	{"informer cache, work queue, controller-runtime", prefixes("k8s.io/client-go/tools/cache.", "sigs.k8s.io/controller-runtime/", "k8s.io/client-go/util/workqueue")},
	{"events, logging, metrics", prefixes("k8s.io/client-go/tools/events", "k8s.io/client-go/tools/record", "go.uber.org/zap", "github.com/go-logr", "github.com/prometheus/")},
	{"garbage collector (background)", prefixes("runtime.gcBgMarkWorker", "runtime.bgsweep", "runtime.bgscavenge")},
	{"Go runtime: scheduler, network poller", prefixes("runtime.")},
}

const otherCategory = "other"

// profileReport is the controller's CPU profile of a scenario, by category.
type profileReport struct {
	scenario string
	total    time.Duration
	by       map[string]time.Duration
	merged   string // the merged profile, for `go tool pprof`
	windows  int
}

func (r *profileReport) share(cat string) float64 {
	if r.total == 0 {
		return 0
	}
	return float64(r.by[cat]) / float64(r.total)
}

// analyzeProfiles merges the profiles with `go tool pprof` and sorts each
// sampled stack into a category.
func analyzeProfiles(scenario string, files []string, merged string) (*profileReport, error) {
	if len(files) == 0 {
		return nil, fmt.Errorf("no CPU profile was taken")
	}
	out, err := exec.Command("go", append([]string{"tool", "pprof", "-proto", "-output", merged}, files...)...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("go tool pprof -proto: %w: %s", err, out)
	}
	traces, err := exec.Command("go", "tool", "pprof", "-traces", merged).Output()
	if err != nil {
		return nil, fmt.Errorf("go tool pprof -traces: %w", err)
	}
	r := &profileReport{scenario: scenario, by: map[string]time.Duration{}, merged: merged, windows: len(files)}
	for _, st := range parseTraces(string(traces)) {
		r.total += st.value
		r.by[classify(st.frames)] += st.value
	}
	return r, nil
}

func classify(frames []string) string {
	for _, c := range categories {
		for _, fn := range frames {
			if c.match(fn) {
				return c.name
			}
		}
	}
	return otherCategory
}

type stack struct {
	value  time.Duration
	frames []string
}

// parseTraces reads `go tool pprof -traces`: stacks separated by lines of
// dashes, the first line of each with the sample's value.
func parseTraces(text string) []stack {
	var out []stack
	var cur *stack
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "-----------+") {
			cur = nil
			continue
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if cur == nil {
			if len(fields) < 2 {
				continue
			}
			d, err := time.ParseDuration(fields[0])
			if err != nil {
				continue // the header, or a label line
			}
			out = append(out, stack{value: d})
			cur = &out[len(out)-1]
			fields = fields[1:]
		}
		cur.frames = append(cur.frames, fields[0])
	}
	return out
}

func (r *profileReport) print(w io.Writer, cpu *cpuWindow) {
	fmt.Fprintf(w, "Controller CPU profile during %s: %.2f s sampled in %d one-second windows (merged: go tool pprof -top %s)\n",
		r.scenario, r.total.Seconds(), r.windows, r.merged)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "CPU s\tshare\t  part of the controller")
	names := make([]string, 0, len(r.by))
	for n := range r.by {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int { return cmp.Compare(r.by[b], r.by[a]) })
	for _, n := range names {
		fmt.Fprintf(tw, "%.2f\t%.1f%%\t  %s\n", r.by[n].Seconds(), 100*r.share(n), n)
	}
	tw.Flush()
	if cpu == nil {
		return
	}
	fmt.Fprintf(w, "\nCPU time over the same %.1f s (from /proc/PID/stat; the machine's from /proc/stat):\n", cpu.wall.Seconds())
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "CPU s\tcores busy\t  process")
	for _, p := range []struct {
		name string
		d    time.Duration
	}{
		{"herald controller", cpu.controller},
		{"kube-apiserver", cpu.apiserver},
		{"etcd", cpu.etcd},
		{"kube-controller-manager", cpu.kcm},
		{"the bench (its informer)", cpu.self},
		{"whole machine (all processes)", cpu.machineBusy},
	} {
		fmt.Fprintf(tw, "%.2f\t%.2f\t  %s\n", p.d.Seconds(), p.d.Seconds()/cpu.wall.Seconds(), p.name)
	}
	tw.Flush()
}

// heapProfile takes a heap profile of the controller and returns pprof's
// top entries by memory in use (what the live heap, most of the RSS, is
// made of) and by bytes allocated since the start (the garbage that raises
// the peak between collections: informer events, decoding, status writes).
func heapProfile(dir string, n int) (string, error) {
	name := filepath.Join(dir, "heap-cold.pb.gz")
	if err := benchkit.SaveProfile(http.DefaultClient, "http://"+ctlPprof+"/debug/pprof/heap", name); err != nil {
		return "", err
	}
	var out strings.Builder
	for _, idx := range []struct{ index, what string }{
		{"inuse_space", "Controller heap in use after cold"},
		{"alloc_space", "Controller allocations from its start to the end of cold"},
	} {
		top, err := benchkit.PprofTop(name, idx.index, n)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&out, "%s (go tool pprof -sample_index=%s -top %s):\n%s\n", idx.what, idx.index, name, top)
	}
	return out.String(), nil
}
