package webhook

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/heraldlb/herald/api/v1alpha1"
	heraldscheme "github.com/heraldlb/herald/internal/scheme"
)

// newManager builds a manager that is never started, for an API server that
// does not exist: a static REST mapper stands in for discovery.
func newManager(t *testing.T, server crwebhook.Server) manager.Manager {
	t.Helper()
	s := heraldscheme.New()
	mgr, err := manager.New(&rest.Config{Host: "https://127.0.0.1:1"}, manager.Options{
		Scheme:        s,
		WebhookServer: server,
		Metrics:       metricsserver.Options{BindAddress: "0"},
		MapperProvider: func(*rest.Config, *http.Client) (apimeta.RESTMapper, error) {
			m := apimeta.NewDefaultRESTMapper(nil)
			for gvk := range s.AllKnownTypes() {
				if gvk.Group == v1alpha1.GroupVersion.Group || gvk.Kind == "Node" {
					m.Add(gvk, apimeta.RESTScopeRoot)
				}
			}
			return m, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return mgr
}

func TestSetupRefusesAManagerWhoseWebhookServerIsNotConfiguredByServerOptions(t *testing.T) {
	opts := Options{CertDir: t.TempDir(), Port: 19443}
	for name, server := range map[string]crwebhook.Server{
		"controller-runtime's default server": nil,
		"another port":                        crwebhook.NewServer(ServerOptions(Options{CertDir: opts.CertDir, Port: 19444})),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Setup(newManager(t, server), opts); err == nil || !strings.Contains(err.Error(), "ServerOptions") {
				t.Errorf("Setup: %v, want an error pointing at ServerOptions", err)
			}
		})
	}
}

func TestSetupServesEveryKindsPath(t *testing.T) {
	opts := Options{CertDir: t.TempDir(), Port: 19443}
	mgr := newManager(t, crwebhook.NewServer(ServerOptions(opts)))
	ready, err := Setup(mgr, opts)
	if err != nil {
		t.Fatal(err)
	}
	if ready == nil {
		t.Fatal("no readiness check")
	}
	mux := mgr.GetWebhookServer().(*crwebhook.DefaultServer).WebhookMux()
	for _, k := range kinds {
		if _, pattern := mux.Handler(httptest.NewRequest(http.MethodPost, k.path(), nil)); pattern != k.path() {
			t.Errorf("%s: %s is not registered (matched %q)", k.name, k.path(), pattern)
		}
	}
	if err := ready(httptest.NewRequest(http.MethodGet, "/readyz", nil)); err == nil {
		t.Error("ready before the manager started")
	}
}
