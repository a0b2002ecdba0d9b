package migrate

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/internal/apiservertest"
	"github.com/heraldlb/herald/internal/model"
	"github.com/heraldlb/herald/internal/scheme"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from the translation of testdata/corpus")

// One API server for the package's tests, started by the first that needs
// it and stopped by TestMain.
var (
	apiOnce sync.Once
	api     *apiservertest.Server
	apiErr  error
)

func apiServer(t *testing.T) *apiservertest.Server {
	t.Helper()
	apiOnce.Do(func() { api, apiErr = apiservertest.Start() })
	if errors.Is(apiErr, apiservertest.ErrNoBinaries) {
		t.Skip(apiErr)
	}
	if apiErr != nil {
		t.Fatal(apiErr)
	}
	return api
}

func TestMain(m *testing.M) {
	code := m.Run()
	if api != nil {
		api.Stop()
	}
	os.Exit(code)
}

func corpus(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("testdata/corpus/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus: %v", err)
	}
	return files
}

func translateFile(t *testing.T, file string) *Result {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	in := &Input{}
	if err := in.AddYAML(filepath.Base(file), b); err != nil {
		t.Fatal(err)
	}
	return Translate(in, Options{})
}

func golden(file, ext string) string {
	return filepath.Join("testdata", "golden", strings.TrimSuffix(filepath.Base(file), ".yaml")+ext)
}

// The translation of every configuration of the corpus (written from
// MetalLB's documented API: every field of every kind, both versions of
// BGPPeer, the legacy ConfigMap's shapes) is the reviewed one in
// testdata/golden: the Herald objects and the report. go test -update
// rewrites the golden files; review the diff.
func TestTranslationMatchesGolden(t *testing.T) {
	for _, f := range corpus(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			res := translateFile(t, f)
			var out, rep bytes.Buffer
			if err := res.WriteYAML(&out); err != nil {
				t.Fatal(err)
			}
			if err := res.WriteReport(&rep); err != nil {
				t.Fatal(err)
			}
			for ext, got := range map[string][]byte{".herald.yaml": out.Bytes(), ".report": rep.Bytes()} {
				path := golden(f, ext)
				if *update {
					if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(path, got, 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("%v (go test -update writes it)", err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s differs from the translation:\n--- got\n%s\n--- want\n%s", path, got, want)
				}
			}
		})
	}
}

// No password of the corpus, plain or in a Secret, reaches the output or
// the report: BGPPeers refer to Secrets by name.
func TestPasswordsNeverReachTheOutput(t *testing.T) {
	passwords := []string{"not-in-the-output", "hunter2-never-printed", "s3cr3t-value", "c2VjcmV0"}
	seen := 0
	for _, f := range corpus(t) {
		b, _ := os.ReadFile(f)
		res := translateFile(t, f)
		var out bytes.Buffer
		_ = res.WriteYAML(&out)
		_ = res.WriteReport(&out)
		for _, p := range passwords {
			if bytes.Contains(b, []byte(p)) {
				seen++
			}
			if strings.Contains(out.String(), p) {
				t.Errorf("%s: the password %q is in the output", f, p)
			}
		}
	}
	if seen != len(passwords) {
		t.Fatalf("the corpus holds %d of the %d passwords this test looks for", seen, len(passwords))
	}
}

// decodeGolden reads a golden output the way kubectl apply would, refusing
// unknown fields.
func decodeGolden(t *testing.T, path string) (model.Input, []client.Object) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var in model.Input
	var objs []client.Object
	for _, doc := range bytes.Split(b, []byte("---\n")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var tm runtime.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatal(err)
		}
		if tm.APIVersion != v1alpha1.GroupVersion.String() {
			t.Fatalf("%s: %s is not Herald's", path, tm.APIVersion)
		}
		switch tm.Kind {
		case model.KindIPAddressPool:
			objs = append(objs, decodeStrict(t, doc, &in.Pools))
		case model.KindL2Advertisement:
			objs = append(objs, decodeStrict(t, doc, &in.L2Advertisements))
		case model.KindBGPPeer:
			objs = append(objs, decodeStrict(t, doc, &in.BGPPeers))
		case model.KindBGPAdvertisement:
			objs = append(objs, decodeStrict(t, doc, &in.BGPAdvertisements))
		case model.KindBFDProfile:
			objs = append(objs, decodeStrict(t, doc, &in.BFDProfiles))
		default:
			t.Fatalf("%s: unexpected kind %s", path, tm.Kind)
		}
	}
	return in, objs
}

func decodeStrict[T any, PT interface {
	*T
	client.Object
}](t *testing.T, doc []byte, items *[]T) client.Object {
	t.Helper()
	var o T
	if err := yaml.UnmarshalStrict(doc, &o); err != nil {
		t.Fatal(err)
	}
	*items = append(*items, o)
	return PT(&o)
}

// Every golden output is what a user applies: the API server accepts every
// object (its CRD schemas and CEL rules), and Herald's configuration model,
// which the webhook judges with, accepts every object together with the
// cluster's own addresses.
func TestGoldenOutputIsAcceptedByTheAPIServerAndTheWebhook(t *testing.T) {
	s := apiServer(t)
	c, err := client.New(s.Config, client.Options{Scheme: scheme.New()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	reserved, err := model.ReadReserved(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	// The dry run judges: what Herald's CRD refuses is refused.
	bad := &v1alpha1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "host-bits"}, Spec: v1alpha1.IPAddressPoolSpec{Addresses: []string{"192.0.2.5/24"}}}
	if err := c.Create(ctx, bad, client.DryRunAll); err == nil || !strings.Contains(err.Error(), "bits set after the prefix length") {
		t.Fatalf("a pool with host bits in a CIDR, dry run: %v, want refused by the CRD's rule", err)
	}
	for _, f := range corpus(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			in, objs := decodeGolden(t, golden(f, ".herald.yaml"))
			if len(objs) == 0 {
				t.Fatal("the golden output has no objects")
			}
			for _, o := range objs {
				// A dry run goes through validation and admission
				// like a create, and leaves the next file a clean
				// cluster.
				if err := c.Create(ctx, o.DeepCopyObject().(client.Object), client.DryRunAll); err != nil {
					t.Errorf("%s %s: the API server refuses it: %v", o.GetObjectKind().GroupVersionKind().Kind, o.GetName(), err)
				}
			}
			in.Reserved = reserved
			cfg := model.Build(in)
			for _, o := range objs {
				ref := model.Ref{Kind: o.GetObjectKind().GroupVersionKind().Kind, Name: o.GetName()}
				if v, ok := cfg.Verdicts[ref]; !ok || !v.Accepted {
					t.Errorf("%s: Herald's model refuses it: %+v", ref, v)
				}
			}
		})
	}
}
