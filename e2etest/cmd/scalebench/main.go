// Command scalebench measures what Herald's speaker costs as a cluster grows
// (issue 8, item 7), each part in a lab of its own:
//
//   - services: N LoadBalancer Services (default 10,000), each with an
//     EndpointSlice, announced by 3 speaker-only nodes: speaker RSS, CPU at
//     rest, CPU per Service change and per full re-plan, start -> all owned
//     addresses announced, the speakers' API writes per minute at rest and
//     for one node failure that moves a third of the addresses.
//   - nodes: 50 speaker-only nodes: layer-2 failover, gossip bytes/s per
//     node, ownership spread at 1,000 addresses, and double owners through a
//     rolling restart of all 50 speakers.
//
// The speakers run with the chart's default timings. Each figure is printed
// as `bench: NAME VALUE UNIT` and, with how it was measured, in a table.
// Figures that need the speaker's own metrics (herald_speaker_*) are skipped
// with a message when the speaker does not export them.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/heraldlb/herald/e2etest/benchkit"
	"github.com/heraldlb/herald/e2etest/herald"
	"github.com/heraldlb/herald/e2etest/lab"
	heraldscheme "github.com/heraldlb/herald/internal/scheme"
)

type options struct {
	only       string
	services   int // Services in the services part
	changes    int // Service changes timed
	replans    int // full re-plans timed
	idle       time.Duration
	nodes      int // nodes in the nodes part
	spreadIPs  int // Services (IPv6) for the spread in the nodes part
	failovers  int // failover runs in the nodes part
	labWait    time.Duration
	speakerLog string
}

func main() {
	var o options
	flag.StringVar(&o.only, "only", "", "services or nodes (default: both, each in its own lab)")
	flag.IntVar(&o.services, "services", 10000, "LoadBalancer Services (each with an EndpointSlice) in the services part")
	flag.IntVar(&o.changes, "changes", 1000, "Service changes timed")
	flag.IntVar(&o.replans, "replans", 10, "full re-plans timed (pool edits)")
	flag.DurationVar(&o.idle, "idle", 60*time.Second, "window for figures at rest")
	flag.IntVar(&o.nodes, "nodes", lab.MaxNodes, "speaker-only nodes in the nodes part")
	flag.IntVar(&o.spreadIPs, "spread-ips", 1000, "IPv6 Services for the ownership spread in the nodes part")
	flag.IntVar(&o.failovers, "failovers", 20, "failover runs in the nodes part")
	flag.DurationVar(&o.labWait, "lab-wait", 15*time.Minute, "how long to wait for another lab on this machine")
	flag.StringVar(&o.speakerLog, "speaker-log-level", "info", "speakers' --zap-log-level")
	flag.Parse()
	if o.only != "" && o.only != "services" && o.only != "nodes" {
		fmt.Fprintf(os.Stderr, "scalebench: -only %q: want services or nodes\n", o.only)
		os.Exit(2)
	}
	ctrllog.SetLogger(logr.Discard()) // the client's own logs are not figures
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r := &benchkit.Report{Prefix: "scalebench", Title: "speaker at scale"}
	var err error
	if o.only == "" || o.only == "services" {
		err = servicesPart(ctx, o, r)
	}
	if err == nil && (o.only == "" || o.only == "nodes") {
		err = nodesPart(ctx, o, r)
	}
	r.Print(os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "scalebench:", err)
		os.Exit(1)
	}
}

// env is a lab with Herald installed.
type env struct {
	lab *lab.Lab
	h   *herald.Herald
	c   client.Client
	// stopController stops restarting the controller.
	stopController func()
}

// up starts a lab (waiting while another lab holds the machine) and installs
// Herald with the chart's default speaker timings.
func up(ctx context.Context, o options, cfg lab.Config) (*env, error) {
	base, err := lab.DefaultConfig()
	if err != nil {
		return nil, err
	}
	cfg.Dir, cfg.BinDir, cfg.Log = base.Dir, base.BinDir, os.Stderr
	l, err := lab.UpWaiting(ctx, cfg, o.labWait, func(err error) { fmt.Fprintf(os.Stderr, "scalebench: %v; retrying in 3s\n", err) })
	if err != nil {
		return nil, err
	}
	h, err := herald.InstallWith(ctx, l, herald.Options{ChartTimings: true, SpeakerLogLevel: o.speakerLog},
		func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) })
	if err != nil {
		l.Down()
		return nil, err
	}
	scheme := heraldscheme.New()
	cfgREST := *l.RESTConfig
	cfgREST.QPS, cfgREST.Burst = 2000, 4000
	c, err := client.New(&cfgREST, client.Options{Scheme: scheme})
	if err != nil {
		h.Stop()
		l.Down()
		return nil, err
	}
	e := &env{lab: l, h: h, c: c, stopController: h.KeepControllerRunning(os.Stderr)}
	return e, nil
}

func (e *env) down() {
	e.stopController()
	e.h.Stop()
	e.lab.Down()
}

// speakerUser is the user the speakers' writes carry: the chart's
// ServiceAccount, whose token the lab gives them.
const speakerUser = "system:serviceaccount:" + herald.Namespace + ":herald-speaker"

func isSpeaker(user string) bool { return user == speakerUser }

// writesBy sums API writes by resource/subresource and verb.
func writesBy(ws []lab.Write) string {
	n := map[string]int{}
	for _, w := range ws {
		k := w.Resource
		if w.Subresource != "" {
			k += "/" + w.Subresource
		}
		n[k+" "+w.Verb]++
	}
	var parts []string
	for k, v := range n {
		parts = append(parts, fmt.Sprintf("%s %d", k, v))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(sorted(parts), ", ")
}

func httpGet(ctx context.Context, url string) (*http.Request, error) {
	return http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
}
