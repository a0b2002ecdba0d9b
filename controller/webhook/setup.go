package webhook

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/heraldlb/herald/api/v1alpha1"
)

// RBAC the webhook needs (Secrets only in Herald's namespace):
// +kubebuilder:rbac:groups=herald.dev,resources=ipaddresspools;l2advertisements;bgppeers;bgpadvertisements;bfdprofiles,verbs=get;list;watch
// +kubebuilder:rbac:groups=networking.k8s.io,resources=servicecidrs,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations,verbs=get;list;watch;update
// +kubebuilder:rbac:groups="",namespace=herald-system,resources=secrets,verbs=get;list;watch;create;update

// Options configures the webhook. The zero value of a string or of Port means
// the default named on the field; pass the same Options to ServerOptions and
// to Setup.
type Options struct {
	// Namespace holds the cert Secret and the Service. Default herald-system.
	Namespace string
	// SecretName is the Secret the rotator keeps the CA and the serving cert
	// in. Default herald-webhook-cert.
	SecretName string
	// WebhookConfigName is the ValidatingWebhookConfiguration whose caBundle
	// the rotator fills in. Default herald-validating-webhook.
	WebhookConfigName string
	// ServiceName is the Service in front of the webhook; the serving cert is
	// for <ServiceName>.<Namespace>.svc. Default herald-webhook.
	ServiceName string
	// ExtraDNSNames are more names in the serving cert, such as "localhost"
	// when the API server calls the webhook by a URL (the lab).
	ExtraDNSNames []string
	// CertDir is where the serving cert is read from. With rotation on, the
	// controller writes it there itself, so it must be writable (an emptyDir
	// under a read-only root file system). Default
	// $TMPDIR/k8s-webhook-server/serving-certs (controller-runtime's).
	CertDir string
	// Host is the address the webhook server binds; empty means every
	// interface.
	Host string
	// Port the webhook server listens on. Default 9443.
	Port int
	// EnableCertRotation makes the controller create and rotate the CA and the
	// serving cert and inject the CA into the webhook configuration. Off, the
	// cert must be put into CertDir by something else (cert-manager, the
	// chart), as tls.crt and tls.key, and ca.crt if readiness should verify it.
	EnableCertRotation bool
}

func (o Options) withDefaults() Options {
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&o.Namespace, "herald-system")
	def(&o.SecretName, "herald-webhook-cert")
	def(&o.WebhookConfigName, "herald-validating-webhook")
	def(&o.ServiceName, "herald-webhook")
	def(&o.CertDir, filepath.Join(os.TempDir(), "k8s-webhook-server", "serving-certs"))
	if o.Port == 0 {
		o.Port = 9443
	}
	return o
}

// serviceDNSName is the name the API server checks the cert against when it
// calls the webhook through the Service.
func (o Options) serviceDNSName() string { return o.ServiceName + "." + o.Namespace + ".svc" }

func (o Options) dnsNames() []string { return append([]string{o.serviceDNSName()}, o.ExtraDNSNames...) }

// ServerOptions are the options of the manager's webhook server:
//
//	manager.Options{WebhookServer: webhook.NewServer(herald.ServerOptions(opts))}
//
// The server reads its cert from CertDir on each new connection, and starts
// even before the cert exists (failing handshakes, and so readiness, until
// then): controller-runtime's default would stop the manager instead.
func ServerOptions(opts Options) crwebhook.Options {
	o := opts.withDefaults()
	cert := newServingCert(o.CertDir)
	return crwebhook.Options{
		Host:    o.Host,
		Port:    o.Port,
		CertDir: o.CertDir,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) {
			c.MinVersion = tls.VersionTLS12
			c.GetCertificate = cert.GetCertificate
			// HTTP/1.1 only: HTTP/2 stream resets could exhaust the server
			// (CVE-2023-44487); the API server calls webhooks fine without it.
			c.NextProtos = []string{"http/1.1"}
		}},
	}
}

// Setup registers the validating webhook on the manager's webhook server and,
// with EnableCertRotation, the cert rotator. It returns the readiness check to
// add with mgr.AddReadyzCheck. The manager must have been created with
// ServerOptions(opts), with client-go's kinds and Herald's in its scheme.
// With rotation on, Setup creates the (empty) cert Secret if it is missing,
// which needs the API server.
func Setup(mgr manager.Manager, opts Options) (healthz.Checker, error) {
	o := opts.withDefaults()
	log := mgr.GetLogger().WithName("webhook")
	scheme := mgr.GetScheme()
	for _, obj := range []client.Object{&corev1.Secret{}, &v1alpha1.IPAddressPool{}} {
		if _, _, err := scheme.ObjectKinds(obj); err != nil {
			return nil, fmt.Errorf("webhook: the manager's scheme lacks a kind the webhook needs: %w", err)
		}
	}
	srv := mgr.GetWebhookServer()
	if ds, ok := srv.(*crwebhook.DefaultServer); ok && (ds.Options.Port != o.Port || ds.Options.CertDir != o.CertDir || len(ds.Options.TLSOpts) == 0) {
		return nil, errors.New("webhook: create the manager with WebhookServer: webhook.NewServer(ServerOptions(opts)), with the Options given to Setup")
	}
	for path, h := range handlers(mgr.GetClient(), scheme) {
		srv.Register(path, h)
	}
	// Start the informers of the kinds it reads with the manager, also on replicas
	// that are not the leader (whose controllers do not run), so the first
	// admission request does not wait for a cache to fill.
	for _, obj := range []client.Object{&v1alpha1.IPAddressPool{}, &v1alpha1.L2Advertisement{}, &v1alpha1.BGPPeer{}, &v1alpha1.BGPAdvertisement{}, &v1alpha1.BFDProfile{},
		&networkingv1.ServiceCIDR{}, &corev1.Node{}} {
		_, err := mgr.GetCache().GetInformer(context.Background(), obj, cache.BlockUntilSynced(false))
		if _, cidr := obj.(*networkingv1.ServiceCIDR); cidr && apimeta.IsNoMatchError(err) {
			continue // served from Kubernetes 1.33; older clusters have none to check
		}
		if err != nil {
			return nil, fmt.Errorf("webhook: informer for %T: %w", obj, err)
		}
	}

	r := &readiness{
		cacheSynced: mgr.GetCache().WaitForCacheSync,
		addr:        dialAddr(o),
		names:       o.dnsNames(),
		caPath:      filepath.Join(o.CertDir, caFile),
		needCA:      o.EnableCertRotation,
	}
	if !o.EnableCertRotation {
		return r.check, nil
	}

	key := types.NamespacedName{Namespace: o.Namespace, Name: o.SecretName}
	if err := ensureSecret(mgr, key); err != nil {
		return nil, err
	}
	rotated := make(chan struct{})
	if err := rotator.AddRotator(mgr, &rotator.CertRotator{
		SecretKey:      key,
		CertDir:        o.CertDir,
		CAName:         "herald-webhook-ca",
		CAOrganization: "herald",
		DNSName:        o.serviceDNSName(),
		ExtraDNSNames:  o.ExtraDNSNames,
		IsReady:        rotated,
		Webhooks:       []rotator.WebhookInfo{{Name: o.WebhookConfigName, Type: rotator.Validating}},
		FieldOwner:     "herald-controller",
		// Every replica serves the webhook, so every replica needs the cert:
		// with leader election the standbys would never get one.
		RequireLeaderElection: false,
		// Inject the CA only once the cert is in CertDir, so the API server
		// is not told to trust a server that cannot serve yet.
		EnableReadinessCheck: true,
	}); err != nil {
		return nil, fmt.Errorf("webhook: cert rotator: %w", err)
	}
	secretCache, err := cache.New(mgr.GetConfig(), cache.Options{
		Scheme:            scheme,
		Mapper:            mgr.GetRESTMapper(),
		DefaultNamespaces: map[string]cache.Config{o.Namespace: {}},
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Field: fields.OneTermEqualSelector("metadata.name", o.SecretName)},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("webhook: cache for the cert Secret: %w", err)
	}
	if err := mgr.Add(&certFileSync{cache: secretCache, reader: secretCache, writer: mgr.GetClient(), key: key, dir: o.CertDir, names: o.dnsNames(), log: log}); err != nil {
		return nil, err
	}
	r.rotated = rotated
	return r.check, nil
}

// ensureSecret creates the rotator's Secret when it is missing: the rotator
// stops the manager without it.
func ensureSecret(mgr manager.Manager, key types.NamespacedName) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := mgr.GetAPIReader().Get(ctx, key, &corev1.Secret{})
	if !apierrors.IsNotFound(err) {
		if err != nil {
			return fmt.Errorf("webhook: reading cert Secret %s: %w", key, err)
		}
		return nil
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Labels: map[string]string{
			"app.kubernetes.io/part-of":   "herald",
			"app.kubernetes.io/component": "webhook",
		}},
		Type: corev1.SecretTypeOpaque,
	}
	if err := mgr.GetClient().Create(ctx, s); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("webhook: creating cert Secret %s: %w", key, err)
	}
	return nil
}

// missingNames lists the names the PEM certificate is not valid for (all of
// them if it does not parse).
func missingNames(certPEM []byte, names []string) []string {
	var cert *x509.Certificate
	if b, _ := pem.Decode(certPEM); b != nil {
		cert, _ = x509.ParseCertificate(b.Bytes)
	}
	var missing []string
	for _, n := range names {
		if cert == nil || cert.VerifyHostname(n) != nil {
			missing = append(missing, n)
		}
	}
	return missing
}

func dialAddr(o Options) string {
	host := o.Host
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return net.JoinHostPort(host, strconv.Itoa(o.Port))
}

// readiness reports the webhook ready when the API server can call it: the
// rotator has the cert in place and the CA injected, the cache the handler
// reads from has synced, and the server answers TLS with a cert that the
// injected CA verifies for every name the API server may use.
type readiness struct {
	rotated     <-chan struct{} // closed by the rotator; nil without rotation
	cacheSynced func(context.Context) bool
	addr        string
	names       []string
	caPath      string
	needCA      bool // with rotation the CA file must be there
}

// probeTimeout stays under kubelet's default probe timeout of one second.
const probeTimeout = 800 * time.Millisecond

func (r *readiness) check(req *http.Request) error {
	if r.rotated != nil {
		select {
		case <-r.rotated:
		default:
			return errors.New("the webhook's serving cert is not in place or its CA is not injected into the webhook configuration yet")
		}
	}
	ctx, cancel := context.WithTimeout(req.Context(), probeTimeout)
	defer cancel()
	if !r.cacheSynced(ctx) {
		return errors.New("the cache of Herald's objects has not synced yet")
	}
	return r.serving(ctx)
}

func (r *readiness) serving(ctx context.Context) error {
	// Verified below, against the CA file, for every name.
	d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true}}
	conn, err := d.DialContext(ctx, "tcp", r.addr)
	if err != nil {
		return fmt.Errorf("the webhook server does not serve TLS on %s: %w", r.addr, err)
	}
	chain := conn.(*tls.Conn).ConnectionState().PeerCertificates
	_ = conn.Close()

	caPEM, err := os.ReadFile(r.caPath)
	if errors.Is(err, fs.ErrNotExist) && !r.needCA {
		return nil // a cert from elsewhere without its CA: serving is all we can check
	}
	if err != nil {
		return fmt.Errorf("reading the webhook's CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("%s holds no PEM certificate", r.caPath)
	}
	if len(chain) == 0 {
		return errors.New("the webhook server presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	for _, name := range r.names {
		if _, err := chain[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter}); err != nil {
			return fmt.Errorf("the webhook server's certificate is not valid for %s under the CA in %s: %w", name, r.caPath, err)
		}
	}
	return nil
}
