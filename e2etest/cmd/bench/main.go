// Command bench measures Herald's controller against a real API server, in
// a lab of its own (issue 3, "Benchmark"): a backlog of pending Services
// assigned after a cold start, a burst created while it runs, single-Service
// latency, peak memory, API writes per assignment, and a restart that must
// keep every address. It prints each figure as a line
//
//	bench: NAME VALUE UNIT
//
// for tools, and a table at the end for people. -only NAME runs one
// scenario with the setup it needs.
//
// Memory: -only rss prints the peak RSS and what the heap holds and
// allocated (pprof's top by inuse_space and alloc_space; the profile stays
// in the lab directory). -services 50000 measures the slope (the 60 MiB goal
// is judged at 10,000 only); -controller-src DIR builds the controller from
// another checkout, to profile before and after a change with the same
// bench; -memory-limit 256Mi runs it with GOMEMLIMIT as the chart sets it.
//
// The lab has one node and no kube-proxy, so the controller, the API server
// and etcd have the machine's cores to themselves.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

// options size the run; the defaults are the issue's.
type options struct {
	only    string
	cold    int // Services pending before the controller starts
	warm    int // Services created while it runs
	singles int // single create → EXTERNAL-IP measurements
	clients int // concurrent creating clients
	labWait time.Duration
	// controllerSrc is the checkout the controller is built from; empty:
	// this one. Another worktree (an older commit) profiles before and
	// after with the same bench.
	controllerSrc string
	// memoryLimit is passed to the controller as the chart passes the
	// container's limit (HERALD_MEMORY_LIMIT, bytes: GOMEMLIMIT is 90% of
	// it); 0: none, as in the earlier runs.
	memoryLimit int64
}

type scenario struct {
	name  string
	what  string
	steps []string
}

// scenarios, each with the steps -only runs for it: its own and the setup
// it needs. The whole bench runs cold, warm, single, restart.
var scenarios = []scenario{
	{"cold", "pending backlog assigned after a cold start", []string{"cold"}},
	{"warm", "burst created while the controller runs", []string{"cold", "warm"}},
	{"single", "single Service create → EXTERNAL-IP", []string{"cold", "warm", "single"}},
	{"rss", "controller peak RSS", []string{"cold"}},
	{"writes", "API writes per assigned Service", []string{"cold"}},
	{"restart", "restart keeps every address and serves new Services at once", []string{"cold", "restart"}},
}

func main() {
	var o options
	names := make([]string, len(scenarios))
	usage := "run one scenario and the setup it needs:"
	for i, s := range scenarios {
		names[i] = s.name
		usage += fmt.Sprintf("\n  %-8s %s", s.name, s.what)
	}
	flag.StringVar(&o.only, "only", "", usage)
	flag.IntVar(&o.cold, "services", 10000, "Services pending before the controller starts (cold)")
	flag.IntVar(&o.warm, "more", 2000, "Services created while the controller runs (warm)")
	flag.IntVar(&o.singles, "singles", 20, "single create → EXTERNAL-IP measurements")
	flag.IntVar(&o.clients, "clients", 32, "concurrent clients creating Services")
	flag.DurationVar(&o.labWait, "lab-wait", 15*time.Minute, "how long to wait for another lab on this machine to finish")
	flag.StringVar(&o.controllerSrc, "controller-src", "", "build the controller from this checkout (e.g. a worktree of an older commit, to profile before and after); empty: this repository")
	memLimit := flag.String("memory-limit", "", "the controller container's memory limit as the chart gives it (e.g. 256Mi: GOMEMLIMIT 90% of it); empty: no limit")
	flag.Parse()
	if *memLimit != "" {
		q, err := resource.ParseQuantity(*memLimit)
		if err != nil || q.Value() <= 0 {
			fmt.Fprintf(os.Stderr, "bench: -memory-limit %q: want a positive quantity such as 256Mi\n", *memLimit)
			os.Exit(2)
		}
		o.memoryLimit = q.Value()
	}
	if o.only != "" && !slices.Contains(names, o.only) {
		fmt.Fprintf(os.Stderr, "bench: unknown scenario %q: want one of %s\n", o.only, strings.Join(names, ", "))
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		// A second Ctrl-C ends the process at once; the next lab cleans up.
		stop()
	}()
	b := &bench{opts: o, start: time.Now()}
	err := b.run(ctx)
	b.printResults(os.Stdout)
	switch {
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(os.Stderr, "bench interrupted; the lab is torn down")
		os.Exit(130)
	case err != nil:
		fmt.Fprintln(os.Stderr, "bench failed:", err)
		os.Exit(1)
	case b.broken():
		fmt.Fprintln(os.Stderr, "bench failed: a correctness figure is wrong (see the table)")
		os.Exit(1)
	}
}

// steps lists the steps to run for the chosen scenario.
func (o options) steps() []string {
	if o.only == "" {
		return []string{"cold", "warm", "single", "restart"}
	}
	for _, s := range scenarios {
		if s.name == o.only {
			return s.steps
		}
	}
	return nil
}

// reports says whether the figures of a scenario are printed.
func (o options) reports(scenario string) bool { return o.only == "" || o.only == scenario }
