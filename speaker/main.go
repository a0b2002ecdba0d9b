// Command speaker is Herald's speaker: on every node it plans which
// LoadBalancer addresses the node announces and answers ARP/NDP for them.
// See package runner.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/heraldlb/herald/internal/memlimit"
	heraldscheme "github.com/heraldlb/herald/internal/scheme"
	"github.com/heraldlb/herald/internal/version"
	"github.com/heraldlb/herald/speaker/bgp"
	"github.com/heraldlb/herald/speaker/dataplane"
	"github.com/heraldlb/herald/speaker/layer2"
	"github.com/heraldlb/herald/speaker/lease"
	"github.com/heraldlb/herald/speaker/membership"
	"github.com/heraldlb/herald/speaker/runner"
	"github.com/heraldlb/herald/speaker/state"
	"github.com/heraldlb/herald/speaker/status"
)

type flags struct {
	node, namespace, lbClass string
	metricsAddr, probeAddr   string
	pprofAddr                string
	gossipAddr               string
	gossipPort               int
	gossipSecret, gossipKey  string
	leaseDuration, handover  time.Duration
	statusQPS                float64
	bgpStatusInterval        time.Duration
	dataplane, iptables      string
	remoteTargets            string
	replyLimits              layer2.ReplyLimits
}

func main() {
	var f flags
	flag.StringVar(&f.node, "node-name", os.Getenv("NODE_NAME"), "this node's name (downward API spec.nodeName)")
	flag.StringVar(&f.namespace, "namespace", envOr("HERALD_NAMESPACE", "herald-system"), "Herald's namespace: speaker Leases and the gossip Secret")
	flag.StringVar(&f.lbClass, "load-balancer-class", "", "the spec.loadBalancerClass handled; empty: Services without a class")
	flag.StringVar(&f.metricsAddr, "metrics-bind-address", ":7474", "Prometheus metrics address; 0 disables")
	flag.StringVar(&f.probeAddr, "health-probe-bind-address", ":7475", "address of /healthz and /readyz")
	flag.StringVar(&f.pprofAddr, "pprof-bind-address", "", "address of the Go profiler's /debug/pprof endpoints; empty disables them")
	flag.StringVar(&f.gossipAddr, "gossip-address", os.Getenv("HOST_IP"), "this node's address for the speakers' gossip (downward API status.hostIP); empty disables gossip")
	flag.IntVar(&f.gossipPort, "gossip-port", 7947, "gossip port (TCP and UDP); not 7946, so Herald can run beside MetalLB during a migration")
	flag.StringVar(&f.gossipSecret, "gossip-secret", "herald-memberlist", "Secret in --namespace holding the gossip encryption key")
	flag.StringVar(&f.gossipKey, "gossip-secret-key", "secretkey", "key of the Secret's data holding 16, 24 or 32 bytes")
	flag.DurationVar(&f.leaseDuration, "lease-duration", 15*time.Second, "speaker Lease duration: how long the API view keeps a silent speaker alive")
	flag.DurationVar(&f.handover, "handover-timeout", 3*time.Second, "on SIGTERM, how long to keep answering while the new owners announce")
	flag.DurationVar(&f.bgpStatusInterval, "bgp-status-interval", 2*time.Second, "how often BGPSession objects are refreshed (written only when they change); session up/down refreshes them at once")
	flag.Float64Var(&f.statusQPS, "status-qps", 20, "API writes per second for Announcements (burst: twice that); the Lease has a budget of its own")
	zapOpts := zap.Options{}
	flag.StringVar(&f.dataplane, "dataplane", "nftables", "what forwards the traffic this node receives for LoadBalancer addresses: nftables, iptables, ipvs, or off (kube-proxy does, with the Services' ipMode VIP)")
	flag.StringVar(&f.iptables, "iptables", "iptables", "the iptables command of --dataplane=iptables: iptables (whatever the alternative points at), iptables-legacy or iptables-nft")
	flag.StringVar(&f.remoteTargets, "dataplane-remote-targets", "endpoints", "where the dataplane sends the traffic bound for other nodes: endpoints (straight to the pods, masqueraded, as kube-proxy does) or nodeports (the other nodes' NodePorts, which their kube-proxy forwards)")
	def := layer2.DefaultReplyLimits()
	flag.Float64Var(&f.replyLimits.Rate, "layer2-reply-rate", def.Rate, "ARP replies and neighbour advertisements per second to one requester (its MAC, or its IPv6 source address), after --layer2-reply-burst; 0: no per-requester limit")
	flag.IntVar(&f.replyLimits.Burst, "layer2-reply-burst", def.Burst, "replies one requester gets at once before --layer2-reply-rate applies")
	flag.Float64Var(&f.replyLimits.TotalRate, "layer2-reply-total-rate", def.TotalRate, "ARP replies and neighbour advertisements per second to all requesters together, after --layer2-reply-total-burst; 0: no total limit. Unsolicited announcements are never limited")
	flag.IntVar(&f.replyLimits.TotalBurst, "layer2-reply-total-burst", def.TotalBurst, "replies all requesters get at once before --layer2-reply-total-rate applies")
	printVersion := flag.Bool("version", false, "print the version and exit")
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	if *printVersion {
		fmt.Println(version.String("herald-speaker"))
		return
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	ctrl.Log.Info("starting speaker", "version", version.Version(), "revision", version.Revision())
	if limit := memlimit.Set(); limit > 0 {
		ctrl.Log.Info("memory limit set", "GOMEMLIMIT", limit)
	}
	if err := run(f); err != nil {
		ctrl.Log.Error(err, "speaker stopped")
		os.Exit(1)
	}
}

func run(f flags) error {
	if f.node == "" {
		return errors.New("--node-name (or NODE_NAME) is required")
	}
	if err := f.replyLimits.ValidateNamed("--layer2-reply-rate", "--layer2-reply-burst", "--layer2-reply-total-rate", "--layer2-reply-total-burst"); err != nil {
		return err
	}
	log := ctrl.Log.WithName("speaker").WithValues("node", f.node)
	scheme := heraldscheme.New()
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: f.metricsAddr},
		HealthProbeBindAddress:  f.probeAddr,
		PprofBindAddress:        f.pprofAddr,
		GracefulShutdownTimeout: ptr(f.handover + 5*time.Second),
		Cache:                   state.CacheOptions(f.namespace, f.node),
	})
	if err != nil {
		return err
	}
	// The Lease and the status each write through a client of their own, so
	// neither waits on the other's rate budget.
	leaseClient, err := clientWithQPS(cfg, scheme, 5, 5)
	if err != nil {
		return err
	}
	statusClient, err := clientWithQPS(cfg, scheme, f.statusQPS, 2*int(f.statusQPS))
	if err != nil {
		return err
	}
	ann := layer2.New(log.WithName("layer2"), metrics.Registry)
	if err := ann.SetReplyLimits(f.replyLimits); err != nil {
		return err
	}
	var gossip runner.Gossip
	gossipAddr := netip.AddrPort{}
	if addr, err := netip.ParseAddr(f.gossipAddr); err == nil {
		key, err := gossipKey(mgr.GetAPIReader(), f)
		if err != nil {
			// Safe fallback: the API view alone detects dead speakers, slowly.
			log.Error(err, "gossip disabled; dead speakers are detected through their Leases only")
		} else {
			m, err := membership.Start(membership.Config{
				NodeName: f.node, BindAddr: addr, Port: f.gossipPort, SecretKey: key,
				Log: log.WithName("gossip"), Registerer: metrics.Registry,
			})
			if err != nil {
				log.Error(err, "gossip disabled; dead speakers are detected through their Leases only")
			} else {
				gossip, gossipAddr = m, netip.AddrPortFrom(addr, uint16(f.gossipPort))
			}
		}
	}
	leaseErrors := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_speaker_lease_decode_errors_total",
		Help: "Speaker Leases refused because an annotation is malformed (the log names it).",
	})
	metrics.Registry.MustRegister(leaseErrors)
	tracker := state.NewTracker(mgr.GetCache(), f.namespace, f.lbClass, log.WithName("state"), leaseErrors.Inc)
	if err := tracker.Register(context.Background(), mgr.GetCache()); err != nil {
		return err
	}
	keeper := &lease.Keeper{
		Client: leaseClient, Namespace: f.namespace, Node: f.node, Duration: f.leaseDuration,
		Gossip: gossipAddr, Dataplane: f.dataplane, Local: layer2.LocalSubnets, Log: log.WithName("lease"),
	}
	reporter := status.NewReporter(statusClient, mgr.GetCache(), mgr.GetEventRecorder("herald-speaker"), f.node, log.WithName("status"))
	if err := reporter.Register(context.Background(), mgr.GetCache()); err != nil {
		return err
	}
	// GoBGP starts with the first BGPPeer that applies to this node.
	sessionChanged := make(chan struct{}, 1)
	sessions := status.NewSessions(statusClient, mgr.GetCache(), mgr.GetEventRecorder("herald-speaker"), f.node, log.WithName("bgp-status"))
	bgpOut := bgp.New(log.WithName("bgp"), bgp.Options{Registerer: metrics.Registry, OnReset: sessions.Reset, OnStateChange: func() {
		select {
		case sessionChanged <- struct{}{}:
		default:
		}
	}})
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return ctx.Err()
		}
		sessions.Run(ctx, bgpOut.State, sessionChanged, f.bgpStatusInterval)
		return nil
	})); err != nil {
		return err
	}
	dp, err := openDataplane(f.dataplane, f.iptables)
	if err != nil {
		return err
	}
	if f.remoteTargets != "endpoints" && f.remoteTargets != "nodeports" {
		return fmt.Errorf("--dataplane-remote-targets %q: want endpoints or nodeports", f.remoteTargets)
	}
	sp := runner.New(tracker, mgr.GetCache(), ann, bgpOut, gossip, reporter, keeper, runner.Options{
		NodeName: f.node, HandoverTimeout: f.handover, Namespace: f.namespace, Dataplane: dp,
		ViaNodePorts: f.remoteTargets == "nodeports",
	}, metrics.Registry, log)
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return ctx.Err()
		}
		return sp.Run(ctx)
	})); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("reconciled", func(*http.Request) error {
		select {
		case <-sp.Ready():
			return nil
		default:
			return errors.New("first reconcile not done")
		}
	}); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("gossip", func(*http.Request) error { return sp.CutOff() }); err != nil {
		return err
	}
	return mgr.Start(ctrl.SetupSignalHandler())
}

// clientWithQPS is a client with a rate budget of its own.
func clientWithQPS(cfg *rest.Config, scheme *runtime.Scheme, qps float64, burst int) (client.Client, error) {
	c := rest.CopyConfig(cfg)
	c.QPS, c.Burst = float32(qps), burst
	return client.New(c, client.Options{Scheme: scheme})
}

// gossipKey reads the gossip encryption key from its Secret, directly from
// the API (the cache is not started yet).
func gossipKey(r client.Reader, f flags) ([]byte, error) {
	var s corev1.Secret
	if err := r.Get(context.Background(), types.NamespacedName{Namespace: f.namespace, Name: f.gossipSecret}, &s); err != nil {
		return nil, fmt.Errorf("gossip Secret %s/%s: %w", f.namespace, f.gossipSecret, err)
	}
	key := s.Data[f.gossipKey]
	if n := len(key); n != 16 && n != 24 && n != 32 {
		return nil, fmt.Errorf("gossip Secret %s/%s key %q: %d bytes, want 16, 24 or 32", f.namespace, f.gossipSecret, f.gossipKey, n)
	}
	return key, nil
}

func ptr[T any](v T) *T { return &v }

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// openDataplane returns the backend --dataplane names; nil for off.
func openDataplane(name, iptables string) (dataplane.Backend, error) {
	var b dataplane.Backend
	var err error
	switch name {
	case "off":
		return nil, nil
	case "nftables":
		b, err = dataplane.NewNFTables(dataplane.NFTablesOptions{})
	case "iptables":
		b, err = dataplane.NewIPTables(dataplane.IPTablesOptions{Binary: iptables})
	case "ipvs":
		b, err = dataplane.NewIPVS(dataplane.IPVSOptions{})
	default:
		return nil, fmt.Errorf("--dataplane %q: want nftables, iptables, ipvs or off", name)
	}
	if err != nil {
		return nil, fmt.Errorf("--dataplane %s: %w", name, err)
	}
	return b, nil
}
