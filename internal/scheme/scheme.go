// Package scheme is the one runtime.Scheme Herald's binaries, benches and
// tests use: the Kubernetes built-in kinds and Herald's herald.dev/v1alpha1.
package scheme

import (
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	"github.com/heraldlb/herald/api/v1alpha1"
)

// New returns a scheme with the built-in kinds and Herald's. Registering
// them fails only on a programming error, so it panics then.
func New() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(v1alpha1.AddToScheme(s))
	return s
}
