// Command speaker is Herald's speaker: on every node it elects which
// LoadBalancer addresses the node announces and answers ARP/NDP for them.
// See package reconcile.
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

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/speaker/layer2"
	"github.com/heraldlb/herald/speaker/membership"
	"github.com/heraldlb/herald/speaker/reconcile"
)

type flags struct {
	node, namespace, lbClass string
	metricsAddr, probeAddr   string
	gossipAddr               string
	gossipPort               int
	gossipSecret, gossipKey  string
	leaseDuration, handover  time.Duration
}

func main() {
	var f flags
	flag.StringVar(&f.node, "node-name", os.Getenv("NODE_NAME"), "this node's name (downward API spec.nodeName)")
	flag.StringVar(&f.namespace, "namespace", envOr("HERALD_NAMESPACE", "herald-system"), "Herald's namespace: speaker Leases and the gossip Secret")
	flag.StringVar(&f.lbClass, "load-balancer-class", "", "the spec.loadBalancerClass handled; empty: Services without a class")
	flag.StringVar(&f.metricsAddr, "metrics-bind-address", ":7474", "Prometheus metrics address; 0 disables")
	flag.StringVar(&f.probeAddr, "health-probe-bind-address", ":7475", "address of /healthz and /readyz")
	flag.StringVar(&f.gossipAddr, "gossip-address", os.Getenv("HOST_IP"), "this node's address for the speakers' gossip (downward API status.hostIP); empty disables gossip")
	flag.IntVar(&f.gossipPort, "gossip-port", 7947, "gossip port (TCP and UDP); not 7946, so Herald can run beside MetalLB during a migration")
	flag.StringVar(&f.gossipSecret, "gossip-secret", "herald-memberlist", "Secret in --namespace holding the gossip encryption key")
	flag.StringVar(&f.gossipKey, "gossip-secret-key", "secretkey", "key of the Secret's data holding 16, 24 or 32 bytes")
	flag.DurationVar(&f.leaseDuration, "lease-duration", 15*time.Second, "speaker Lease duration: how long the API view keeps a silent speaker alive")
	flag.DurationVar(&f.handover, "handover-timeout", 3*time.Second, "on SIGTERM, how long to keep answering while the new owners announce")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	if err := run(f); err != nil {
		ctrl.Log.Error(err, "speaker stopped")
		os.Exit(1)
	}
}

func run(f flags) error {
	if f.node == "" {
		return errors.New("--node-name (or NODE_NAME) is required")
	}
	log := ctrl.Log.WithName("speaker").WithValues("node", f.node)
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	own := map[string]cache.Config{f.namespace: {}}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: f.metricsAddr},
		HealthProbeBindAddress:  f.probeAddr,
		GracefulShutdownTimeout: ptr(f.handover + 5*time.Second),
		Cache: cache.Options{
			// managedFields are a large share of every cached object and never read.
			DefaultTransform: cache.TransformStripManagedFields(),
			ByObject: map[client.Object]cache.ByObject{
				// Secrets and Leases only in Herald's namespace: that is all RBAC grants.
				&corev1.Secret{}:        {Namespaces: own},
				&coordinationv1.Lease{}: {Namespaces: own},
			}},
	})
	if err != nil {
		return err
	}
	ann := layer2.New(log.WithName("layer2"), metrics.Registry)
	var gossip reconcile.Gossip
	if addr, err := netip.ParseAddr(f.gossipAddr); err == nil {
		key, err := gossipKey(mgr.GetAPIReader(), f)
		if err != nil {
			// Safe fallback: the API view alone detects dead speakers, slowly.
			log.Error(err, "gossip disabled; dead speakers are detected through their Leases only")
		} else {
			m, err := membership.Start(membership.Config{NodeName: f.node, BindAddr: addr, Port: f.gossipPort, SecretKey: key, Log: log.WithName("gossip")})
			if err != nil {
				log.Error(err, "gossip disabled; dead speakers are detected through their Leases only")
			} else {
				gossip = m
			}
		}
	}
	gossipIP, _ := netip.ParseAddr(f.gossipAddr)
	if gossip == nil {
		gossipIP = netip.Addr{}
	}
	sp := reconcile.New(mgr.GetClient(), mgr.GetEventRecorder("herald-speaker"), ann, gossip, layer2.LocalSubnets, reconcile.Options{
		NodeName: f.node, Namespace: f.namespace, LoadBalancerClass: f.lbClass,
		LeaseDuration: f.leaseDuration, GossipAddr: gossipIP, GossipPort: f.gossipPort, HandoverTimeout: f.handover,
	}, log)
	// Every change of an input reconciles (folded into one pending run).
	for _, o := range []client.Object{&corev1.Service{}, &corev1.Node{}, &coordinationv1.Lease{}, &v1alpha1.IPAddressPool{}, &v1alpha1.L2Advertisement{}, &discoveryv1.EndpointSlice{}} {
		inf, err := mgr.GetCache().GetInformer(context.Background(), o)
		if err != nil {
			return err
		}
		trigger := func(any) { sp.Trigger() }
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc: trigger, DeleteFunc: trigger, UpdateFunc: func(_, o any) { trigger(o) },
		}); err != nil {
			return err
		}
	}
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
	return mgr.Start(ctrl.SetupSignalHandler())
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
