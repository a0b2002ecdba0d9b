package webhook

import (
	"os"
	"slices"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/yaml"
)

// The shipped ValidatingWebhookConfiguration must route each kind, and only
// create and update of the object itself (not its status), to the path the
// handler serves for that kind, and must fail closed.
func TestShippedWebhookConfigurationRoutesEveryKindToItsHandler(t *testing.T) {
	b, err := os.ReadFile("../../config/webhook/manifests.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var vwc admissionregistrationv1.ValidatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(b, &vwc); err != nil {
		t.Fatal(err)
	}
	def := Options{}.withDefaults()
	if vwc.Kind != "ValidatingWebhookConfiguration" || vwc.Name != def.WebhookConfigName {
		t.Errorf("got %s %q, want ValidatingWebhookConfiguration %q (the rotator injects the CA by that name)", vwc.Kind, vwc.Name, def.WebhookConfigName)
	}
	served := handlers(nil, testScheme(t))
	covered := map[string]bool{}
	for _, wh := range vwc.Webhooks {
		t.Run(wh.Name, func(t *testing.T) {
			if wh.FailurePolicy == nil || *wh.FailurePolicy != admissionregistrationv1.Fail {
				t.Error("failurePolicy must be Fail: invalid configuration must not get in while the webhook is down")
			}
			if wh.SideEffects == nil || *wh.SideEffects != admissionregistrationv1.SideEffectClassNone {
				t.Error("sideEffects must be None")
			}
			if !slices.Equal(wh.AdmissionReviewVersions, []string{"v1"}) {
				t.Errorf("admissionReviewVersions %v, want [v1]", wh.AdmissionReviewVersions)
			}
			if len(wh.ClientConfig.CABundle) > 0 {
				t.Error("a caBundle in the manifest would fight the rotator's")
			}
			svc := wh.ClientConfig.Service
			if svc == nil || svc.Name != def.ServiceName || svc.Namespace != def.Namespace || svc.Port == nil || *svc.Port != 443 || svc.Path == nil {
				t.Fatalf("clientConfig.service %+v, want %s/%s port 443 with a path", svc, def.Namespace, def.ServiceName)
			}
			if _, ok := served[*svc.Path]; !ok {
				t.Errorf("path %s is not served by the handler", *svc.Path)
			}
			if len(wh.Rules) != 1 {
				t.Fatalf("want one rule, got %d", len(wh.Rules))
			}
			r := wh.Rules[0]
			var k *kind
			for i := range kinds {
				if kinds[i].path() == *svc.Path {
					k = &kinds[i]
				}
			}
			if k == nil || !slices.Equal(r.Resources, []string{k.resource}) || wh.Name != k.resource+".herald.dev" {
				t.Errorf("webhook %s at %s has resources %v", wh.Name, *svc.Path, r.Resources)
			} else {
				covered[k.name] = true
			}
			if !slices.Equal(r.APIGroups, []string{"herald.dev"}) || !slices.Equal(r.APIVersions, []string{"v1alpha1"}) {
				t.Errorf("rule for %v/%v, want herald.dev/v1alpha1", r.APIGroups, r.APIVersions)
			}
			if !slices.Equal(r.Operations, []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update}) {
				t.Errorf("operations %v, want [CREATE UPDATE]", r.Operations)
			}
			if r.Scope == nil || *r.Scope != admissionregistrationv1.ClusterScope {
				t.Error("the kinds are cluster-scoped: scope must be Cluster")
			}
		})
	}
	for _, k := range kinds {
		if !covered[k.name] {
			t.Errorf("no webhook for %s", k.name)
		}
	}
}
