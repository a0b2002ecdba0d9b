package webhook

import (
	"context"
	"fmt"
	"net/http"
	"slices"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/internal/model"
)

// The webhook configuration Herald ships (config/webhook/manifests.yaml) has one
// webhook per kind, each with its own path, so that kubectl's refusal names the
// kind's webhook ("ipaddresspools.herald.dev denied the request: ...").
// All paths are served by the same handler, which judges by the request's kind.
// manifests_test.go keeps the YAML and this table in step.

// kind is one of the five kinds the webhook judges.
type kind struct {
	name     string // model.Kind*, also the kind in AdmissionRequest.Kind
	resource string // plural resource name in the webhook rules
}

var kinds = []kind{
	{model.KindIPAddressPool, "ipaddresspools"},
	{model.KindL2Advertisement, "l2advertisements"},
	{model.KindBGPPeer, "bgppeers"},
	{model.KindBGPAdvertisement, "bgpadvertisements"},
	{model.KindBFDProfile, "bfdprofiles"},
}

// path is the URL path the API server calls to validate objects of kind k,
// in controller-runtime's naming: /validate-<group with dashes>-<version>-<kind lowercased>.
func (k kind) path() string {
	return "/validate-herald-dev-v1alpha1-" + k.resourceSingular()
}

func (k kind) resourceSingular() string { return k.resource[:len(k.resource)-1] }

// validator is the admission handler: it judges the proposed object together
// with every Herald object the cache holds, with the same model.Build the
// controller and the speaker use, so the webhook cannot accept what the
// controller would refuse.
type validator struct {
	reader  client.Reader
	decoder admission.Decoder
}

// handlers returns the webhook's HTTP handlers by path. Panics in the
// handler are recovered into an error response (the default, made explicit).
func handlers(reader client.Reader, scheme *runtime.Scheme) map[string]http.Handler {
	v := &validator{reader: reader, decoder: admission.NewDecoder(scheme)}
	out := map[string]http.Handler{}
	for _, k := range kinds {
		out[k.path()] = (&admission.Webhook{Handler: v}).WithRecoverPanic(true)
	}
	return out
}

// Handle answers one AdmissionRequest.
func (v *validator) Handle(ctx context.Context, req admission.Request) admission.Response {
	switch req.Operation {
	case admissionv1.Create, admissionv1.Update:
	case admissionv1.Delete, admissionv1.Connect:
		// Deleting never makes the rest invalid in a way the webhook could
		// prevent: what referred to the deleted object is reported in status.
		return admission.Allowed("")
	default:
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("unknown operation %q", req.Operation))
	}
	if req.Kind.Group != v1alpha1.GroupVersion.Group || req.Kind.Version != v1alpha1.GroupVersion.Version ||
		!slices.ContainsFunc(kinds, func(k kind) bool { return k.name == req.Kind.Kind }) {
		// A webhook configuration routing other kinds here is a mistake to
		// surface, not to wave through silently.
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("this webhook judges herald.dev/v1alpha1 IPAddressPool, L2Advertisement, BGPPeer, BGPAdvertisement and BFDProfile, not %s", req.Kind))
	}

	in, err := model.Read(ctx, v.reader)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("reading Herald's configuration: %w", err))
	}
	if req.Kind.Kind == model.KindIPAddressPool {
		// Only pools can collide with the cluster's own addresses.
		if in.Reserved, err = model.ReadReserved(ctx, v.reader); err != nil {
			return admission.Errored(http.StatusInternalServerError, fmt.Errorf("reading the cluster's Service CIDRs and node addresses: %w", err))
		}
	}
	name, unchanged, err := v.propose(&in, req)
	if err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding %s: %w", req.Kind.Kind, err))
	}
	ref := model.Ref{Kind: req.Kind.Kind, Name: name}
	in.Proposed = ref

	verdict, ok := model.Build(in).Verdicts[ref]
	switch {
	case !ok:
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("%s: the configuration model gave no verdict", ref))
	case verdict.Accepted:
		return admission.Allowed("").WithWarnings(verdict.Warnings...)
	case unchanged:
		// The spec is what is already stored, so this update cannot make the
		// configuration worse; refusing it would block editing labels or
		// removing a finalizer of an object that another change made invalid.
		return admission.Allowed("").WithWarnings(append([]string{ref.String() + " is not in force: " + verdict.Message}, verdict.Warnings...)...)
	default:
		return admission.Denied(verdict.Message)
	}
}

// propose decodes the request's object into in, in place of the stored object
// of the same name, and reports the object's name and whether an update
// leaves the spec as it was.
func (v *validator) propose(in *model.Input, req admission.Request) (string, bool, error) {
	switch req.Kind.Kind {
	case model.KindIPAddressPool:
		return proposeInto(v.decoder, req, &in.Pools, func(o *v1alpha1.IPAddressPool) any { return o.Spec })
	case model.KindL2Advertisement:
		return proposeInto(v.decoder, req, &in.L2Advertisements, func(o *v1alpha1.L2Advertisement) any { return o.Spec })
	case model.KindBGPPeer:
		return proposeInto(v.decoder, req, &in.BGPPeers, func(o *v1alpha1.BGPPeer) any { return o.Spec })
	case model.KindBGPAdvertisement:
		return proposeInto(v.decoder, req, &in.BGPAdvertisements, func(o *v1alpha1.BGPAdvertisement) any { return o.Spec })
	case model.KindBFDProfile:
		return proposeInto(v.decoder, req, &in.BFDProfiles, func(o *v1alpha1.BFDProfile) any { return o.Spec })
	}
	return "", false, fmt.Errorf("unknown kind %q", req.Kind.Kind)
}

// proposeInto is propose for one kind. T is the object type, PT its pointer.
func proposeInto[T any, PT interface {
	*T
	client.Object
}](d admission.Decoder, req admission.Request, items *[]T, spec func(PT) any) (string, bool, error) {
	obj := PT(new(T))
	if err := d.Decode(req, obj); err != nil {
		return "", false, err
	}
	name := obj.GetName()
	if name == "" {
		name = req.Name
	}
	if name == "" {
		return "", false, fmt.Errorf("the object has no name")
	}
	obj.SetName(name)

	unchanged := false
	if req.Operation == admissionv1.Update && len(req.OldObject.Raw) > 0 {
		old := PT(new(T))
		if err := d.DecodeRaw(req.OldObject, old); err != nil {
			return "", false, fmt.Errorf("old object: %w", err)
		}
		unchanged = equality.Semantic.DeepEqual(spec(old), spec(obj))
	}

	for i := range *items {
		if PT(&(*items)[i]).GetName() == name {
			(*items)[i] = *obj
			return name, unchanged, nil
		}
	}
	*items = append(*items, *obj)
	return name, unchanged, nil
}
