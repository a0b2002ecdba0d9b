// Command controller is Herald's controller: it allocates addresses from
// IPAddressPools to Services of type LoadBalancer and reports the state of
// Herald's configuration. See package allocation.
package main

import (
	"errors"
	"flag"
	"net/http"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/controller/allocation"
)

func main() {
	var (
		namespace     = flag.String("namespace", envOr("HERALD_NAMESPACE", "herald-system"), "namespace of Herald's own objects (leader-election lease)")
		lbClass       = flag.String("load-balancer-class", "", "the spec.loadBalancerClass to handle; empty: Services without a class")
		ipMode        = flag.String("ip-mode", string(corev1.LoadBalancerIPModeVIP), "ipMode written on ingress entries: VIP (kube-proxy handles the address) or Proxy (Herald's dataplane does)")
		metricsAddr   = flag.String("metrics-bind-address", ":7472", "address of the Prometheus metrics endpoint; 0 disables it")
		probeAddr     = flag.String("health-probe-bind-address", ":7473", "address of /healthz and /readyz")
		leaderElect   = flag.Bool("leader-elect", true, "elect a leader so one replica allocates at a time")
		leaseDuration = flag.Duration("leader-elect-lease-duration", 15*time.Second, "how long a crashed leader's lease blocks a new leader")
		workers       = flag.Int("workers", 16, "Services reconciled (and status writes made) in parallel; decisions stay serial")
	)
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	if err := run(*namespace, *lbClass, corev1.LoadBalancerIPMode(*ipMode), *metricsAddr, *probeAddr, *leaderElect, *leaseDuration, *workers); err != nil {
		ctrl.Log.Error(err, "controller stopped")
		os.Exit(1)
	}
}

func run(namespace, lbClass string, ipMode corev1.LoadBalancerIPMode, metricsAddr, probeAddr string, leaderElect bool, lease time.Duration, workers int) error {
	if ipMode != corev1.LoadBalancerIPModeVIP && ipMode != corev1.LoadBalancerIPModeProxy {
		return errors.New("--ip-mode: want VIP or Proxy")
	}
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
	// Allocation writes one status per Service; the client's default of 5 QPS
	// would throttle a backlog to 5 Services a second.
	cfg.QPS, cfg.Burst = 500, 1000
	renew := lease * 2 / 3
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:        probeAddr,
		LeaderElection:                leaderElect,
		LeaderElectionID:              "herald-controller",
		LeaderElectionNamespace:       namespace,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &lease,
		RenewDeadline:                 &renew,
	})
	if err != nil {
		return err
	}
	c, err := allocation.New(mgr, allocation.Options{LoadBalancerClass: lbClass, IPMode: ipMode, Workers: workers})
	if err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	// Ready once the leader has rebuilt its state; a standby replica is ready
	// as soon as it runs (it serves the webhook).
	if err := mgr.AddReadyzCheck("state", func(*http.Request) error {
		select {
		case <-mgr.Elected():
		default:
			return nil
		}
		select {
		case <-c.Ready():
			return nil
		default:
			return errors.New("rebuilding allocations from Service status")
		}
	}); err != nil {
		return err
	}
	return mgr.Start(ctrl.SetupSignalHandler())
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
