// Command controller is Herald's controller: it allocates addresses from
// IPAddressPools to Services of type LoadBalancer, reports the state of
// Herald's configuration, and serves the validating webhook. See packages
// allocation and webhook.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/heraldlb/herald/controller/allocation"
	"github.com/heraldlb/herald/controller/ipmode"
	"github.com/heraldlb/herald/controller/webhook"
	"github.com/heraldlb/herald/internal/memlimit"
	heraldscheme "github.com/heraldlb/herald/internal/scheme"
	"github.com/heraldlb/herald/internal/version"
)

type options struct {
	namespace, lbClass, ipMode        string
	metricsAddr, probeAddr, pprofAddr string
	leaderElect                       bool
	leaseDuration, retryPeriod        time.Duration
	workers                           int
	enableWebhook                     bool
	webhook                           webhook.Options
	webhookDNSNames                   string
}

func main() {
	var o options
	flag.StringVar(&o.namespace, "namespace", envOr("HERALD_NAMESPACE", "herald-system"), "namespace of Herald's own objects (leader-election lease, webhook Secret, the speakers' Leases read by --ip-mode auto)")
	flag.StringVar(&o.lbClass, "load-balancer-class", "", "the spec.loadBalancerClass to handle; empty: Services without a class")
	flag.StringVar(&o.ipMode, "ip-mode", string(ipmode.Auto), "ipMode written on ingress entries: auto follows the speakers' Leases (Proxy while every live speaker runs its dataplane, so kube-proxy keeps out; VIP otherwise, so kube-proxy forwards); "+
		"VIP or Proxy override it. With VIP, L2Advertisements warn when kube-proxy runs in IPVS mode without strictARP")
	flag.StringVar(&o.metricsAddr, "metrics-bind-address", ":7472", "address of the Prometheus metrics endpoint; 0 disables it")
	flag.StringVar(&o.probeAddr, "health-probe-bind-address", ":7473", "address of /healthz and /readyz")
	flag.StringVar(&o.pprofAddr, "pprof-bind-address", "", "address of the Go profiler's /debug/pprof endpoints; empty disables them")
	flag.BoolVar(&o.leaderElect, "leader-elect", true, "elect a leader so one replica allocates at a time")
	flag.DurationVar(&o.leaseDuration, "leader-elect-lease-duration", 15*time.Second, "how long a crashed leader's lease blocks a new leader")
	flag.DurationVar(&o.retryPeriod, "leader-elect-retry-period", 2*time.Second, "how often the leader renews its lease and a standby tries to take it; a standby notices an expired lease up to two of these late")
	flag.IntVar(&o.workers, "workers", 16, "Services reconciled (and status writes made) in parallel; decisions stay serial")
	flag.BoolVar(&o.enableWebhook, "enable-webhook", true, "serve the validating webhook for Herald's kinds")
	flag.StringVar(&o.webhook.Host, "webhook-host", "", "address the webhook server binds; empty: all")
	flag.IntVar(&o.webhook.Port, "webhook-port", 9443, "port of the webhook server")
	flag.StringVar(&o.webhook.CertDir, "webhook-cert-dir", "/tmp/k8s-webhook-server/serving-certs", "where the serving certificate is written (must be writable)")
	flag.StringVar(&o.webhook.SecretName, "webhook-secret-name", "herald-webhook-cert", "Secret in --namespace keeping the webhook CA and certificate")
	flag.StringVar(&o.webhook.WebhookConfigName, "webhook-config-name", "herald-validating-webhook", "ValidatingWebhookConfiguration whose CA bundle the controller keeps current")
	flag.StringVar(&o.webhook.ServiceName, "webhook-service-name", "herald-webhook", "Service in front of the webhook (the certificate's name)")
	flag.StringVar(&o.webhookDNSNames, "webhook-extra-dns-names", "", "more names for the certificate, comma-separated (e.g. localhost)")
	flag.BoolVar(&o.webhook.EnableCertRotation, "enable-cert-rotation", true, "generate, rotate and inject the webhook certificate; off when another tool manages it")
	zapOpts := zap.Options{}
	printVersion := flag.Bool("version", false, "print the version and exit")
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	if *printVersion {
		fmt.Println(version.String("herald-controller"))
		return
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	ctrl.Log.Info("starting controller", "version", version.Version(), "revision", version.Revision())
	if limit := memlimit.Set(); limit > 0 {
		ctrl.Log.Info("memory limit set", "GOMEMLIMIT", limit)
	}
	if err := run(o); err != nil {
		ctrl.Log.Error(err, "controller stopped")
		os.Exit(1)
	}
}

func run(o options) error {
	setting, err := ipmode.ParseSetting(o.ipMode)
	if err != nil {
		return fmt.Errorf("--ip-mode: %w", err)
	}
	// Empty: auto.
	var ipMode corev1.LoadBalancerIPMode
	if setting != ipmode.Auto {
		ipMode = corev1.LoadBalancerIPMode(setting)
	}
	lease := o.leaseDuration
	renew, err := renewDeadline(lease, o.retryPeriod)
	if err != nil {
		return err
	}
	o.webhook.Namespace = o.namespace
	if o.webhookDNSNames != "" {
		o.webhook.ExtraDNSNames = strings.Split(o.webhookDNSNames, ",")
	}
	scheme := heraldscheme.New()
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	// Allocation writes one status per Service; the client's default of 5 QPS
	// would throttle a backlog to 5 Services a second.
	cfg.QPS, cfg.Burst = 500, 1000
	var whServer crwebhook.Server
	if o.enableWebhook {
		whServer = crwebhook.NewServer(webhook.ServerOptions(o.webhook))
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: scheme,
		// The cache keeps only what the controller reads.
		Cache:                         allocation.CacheOptions(o.namespace),
		Metrics:                       metricsserver.Options{BindAddress: o.metricsAddr},
		HealthProbeBindAddress:        o.probeAddr,
		PprofBindAddress:              o.pprofAddr,
		WebhookServer:                 whServer,
		LeaderElection:                o.leaderElect,
		LeaderElectionID:              "herald-controller",
		LeaderElectionNamespace:       o.namespace,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &lease,
		RenewDeadline:                 &renew,
		RetryPeriod:                   &o.retryPeriod,
	})
	if err != nil {
		return err
	}
	c, err := allocation.New(mgr, allocation.Options{LoadBalancerClass: o.lbClass, IPMode: ipMode, Namespace: o.namespace, Workers: o.workers})
	if err != nil {
		return err
	}
	if o.enableWebhook {
		// Ready only once the webhook serves with the injected CA: `helm
		// install --wait` then never leaves a "failed calling webhook" window.
		ready, err := webhook.Setup(mgr, o.webhook)
		if err != nil {
			return err
		}
		if err := mgr.AddReadyzCheck("webhook", ready); err != nil {
			return err
		}
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

// renewDeadline is how long the leader keeps trying to renew its lease
// before it stands down: 2/3 of the lease. client-go refuses one that is
// not more than 1.2 retry periods (its jitter factor); the error here
// names the flags.
func renewDeadline(lease, retry time.Duration) (time.Duration, error) {
	renew := lease * 2 / 3
	if retry <= 0 || renew*10 <= retry*12 {
		return 0, fmt.Errorf("--leader-elect-retry-period %s does not fit --leader-elect-lease-duration %s: the renew deadline (2/3 of the lease, %s) must exceed 1.2 retry periods, and the period must be positive", retry, lease, renew)
	}
	return renew, nil
}
