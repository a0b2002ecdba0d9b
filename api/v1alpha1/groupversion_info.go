// Package v1alpha1 holds Herald's configuration API, herald.dev/v1alpha1: the
// address pools Services draw from and how their addresses are announced (layer 2
// or BGP, with BFD).
//
// Every kind is cluster-scoped. Rules about a single object are enforced by the API
// server through the OpenAPI and CEL validation generated from the markers here, so
// a bad object is refused at `kubectl apply` with a message naming the field. Rules
// that need other objects (overlapping pools, a BGPAdvertisement naming a missing
// peer) belong to the shared model in internal/model and the webhook that calls it.
//
// +kubebuilder:object:generate=true
// +groupName=herald.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "herald.dev", Version: "v1alpha1"}

	// SchemeBuilder registers this package's kinds with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds this package's kinds to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
