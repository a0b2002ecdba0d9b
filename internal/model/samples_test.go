package model

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/heraldlb/herald/api/v1alpha1"
)

// The samples a user applies first (config/samples) must be in force as
// written: each file, applied alone, gets no refusal and no warning from the
// webhook or in status. The CRDs' own rules are checked by
// hack/check-crd-samples.sh against an API server.
func TestConfigSamplesAreAcceptedWithoutWarnings(t *testing.T) {
	files, err := filepath.Glob("../../config/samples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var in Input
			var refs []Ref
			for _, doc := range bytes.Split(b, []byte("\n---\n")) {
				var tm runtime.TypeMeta
				if err := yaml.Unmarshal(doc, &tm); err != nil {
					t.Fatal(err)
				}
				if tm.GroupVersionKind().GroupVersion() != v1alpha1.GroupVersion {
					continue // a Service or a Deployment
				}
				var name string
				switch tm.Kind {
				case KindIPAddressPool:
					name = decodeInto(t, doc, &in.Pools)
				case KindL2Advertisement:
					name = decodeInto(t, doc, &in.L2Advertisements)
				case KindBGPPeer:
					name = decodeInto(t, doc, &in.BGPPeers)
				case KindBGPAdvertisement:
					name = decodeInto(t, doc, &in.BGPAdvertisements)
				case KindBFDProfile:
					name = decodeInto(t, doc, &in.BFDProfiles)
				default:
					t.Fatalf("unknown kind %s", tm.Kind)
				}
				refs = append(refs, Ref{tm.Kind, name})
			}
			c := Build(in)
			for _, r := range refs {
				if v := c.Verdicts[r]; !v.Accepted || len(v.Warnings) > 0 {
					t.Errorf("%s: %+v, want accepted without warnings", r, v)
				}
			}
		})
	}
}

// decodeInto appends the object in doc to items, refusing unknown fields,
// and returns its name.
func decodeInto[T any, PT interface {
	*T
	GetName() string
}](t *testing.T, doc []byte, items *[]T) string {
	t.Helper()
	var o T
	if err := yaml.UnmarshalStrict(doc, &o); err != nil {
		t.Fatal(err)
	}
	*items = append(*items, o)
	return PT(&o).GetName()
}
