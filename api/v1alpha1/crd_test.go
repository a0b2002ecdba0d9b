package v1alpha1_test

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/heraldlb/herald/api/v1alpha1"
)

// These tests read the CRDs controller-gen wrote to config/crd/bases and the
// sample objects in testdata. They need no API server: the e2e suite applies the
// samples to a real one, where the CEL rules run.

const crdDir = "../../config/crd/bases"

var kinds = []string{"IPAddressPool", "L2Advertisement", "BGPPeer", "BGPAdvertisement", "BFDProfile"}

// reportKinds are written by Herald, not by users: no conditions.
var reportKinds = []string{"Announcement", "BGPSession"}

// crd is the part of apiextensions.k8s.io/v1 CustomResourceDefinition the tests
// look at.
type crd struct {
	Spec struct {
		Group string `json:"group"`
		Names struct {
			Kind       string   `json:"kind"`
			Categories []string `json:"categories"`
		} `json:"names"`
		Scope    string `json:"scope"`
		Versions []struct {
			Name         string `json:"name"`
			Served       bool   `json:"served"`
			Storage      bool   `json:"storage"`
			Subresources struct {
				Status *struct{} `json:"status"`
			} `json:"subresources"`
			AdditionalPrinterColumns []printerColumn `json:"additionalPrinterColumns"`
			Schema                   struct {
				OpenAPIV3Schema schema `json:"openAPIV3Schema"`
			} `json:"schema"`
		} `json:"versions"`
	} `json:"spec"`
}

type printerColumn struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	JSONPath string `json:"jsonPath"`
	Priority int32  `json:"priority"`
}

type schema struct {
	Type         string            `json:"type"`
	Format       string            `json:"format"`
	Properties   map[string]schema `json:"properties"`
	Items        *schema           `json:"items"`
	Required     []string          `json:"required"`
	ListType     string            `json:"x-kubernetes-list-type"`
	ListMapKeys  []string          `json:"x-kubernetes-list-map-keys"`
	XValidations []struct {
		Rule              string `json:"rule"`
		Message           string `json:"message"`
		MessageExpression string `json:"messageExpression"`
	} `json:"x-kubernetes-validations"`
}

// loadCRDs returns the generated CRDs by kind.
func loadCRDs(t *testing.T) map[string]crd {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(crdDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	byKind := map[string]crd{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var c crd
		if err := yaml.Unmarshal(b, &c); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if _, dup := byKind[c.Spec.Names.Kind]; dup {
			t.Errorf("%s: second CRD for kind %s", f, c.Spec.Names.Kind)
		}
		byKind[c.Spec.Names.Kind] = c
	}
	return byKind
}

func TestEveryKindHasAClusterScopedCRDWithStatusSubresource(t *testing.T) {
	crds := loadCRDs(t)
	if len(crds) != len(kinds)+len(reportKinds) {
		t.Errorf("%s holds CRDs for %d kinds, want %d (%v and %v)", crdDir, len(crds), len(kinds)+len(reportKinds), kinds, reportKinds)
	}
	for _, kind := range kinds {
		c, ok := crds[kind]
		if !ok {
			t.Errorf("no CRD for %s in %s: run make manifests", kind, crdDir)
			continue
		}
		if c.Spec.Group != v1alpha1.GroupVersion.Group {
			t.Errorf("%s: group %q, want %q", kind, c.Spec.Group, v1alpha1.GroupVersion.Group)
		}
		if c.Spec.Scope != "Cluster" {
			t.Errorf("%s: scope %q, want Cluster", kind, c.Spec.Scope)
		}
		if !slices.Contains(c.Spec.Names.Categories, "herald") {
			t.Errorf("%s: not in category herald, so `kubectl get herald` misses it", kind)
		}
		if len(c.Spec.Versions) != 1 {
			t.Fatalf("%s: %d versions, want 1", kind, len(c.Spec.Versions))
		}
		v := c.Spec.Versions[0]
		if v.Name != v1alpha1.GroupVersion.Version || !v.Served || !v.Storage {
			t.Errorf("%s: version %q served=%v storage=%v, want %s served and stored", kind, v.Name, v.Served, v.Storage, v1alpha1.GroupVersion.Version)
		}
		if v.Subresources.Status == nil {
			t.Errorf("%s: no status subresource", kind)
		}
	}
}

func TestEveryKindReportsConditionsAsAMapKeyedByType(t *testing.T) {
	crds := loadCRDs(t)
	for _, kind := range kinds {
		c, ok := crds[kind]
		if !ok {
			t.Errorf("no CRD for %s", kind)
			continue
		}
		root := c.Spec.Versions[0].Schema.OpenAPIV3Schema
		conds, ok := root.Properties["status"].Properties["conditions"]
		if !ok {
			t.Errorf("%s: no status.conditions", kind)
			continue
		}
		if conds.Type != "array" || conds.ListType != "map" || !slices.Equal(conds.ListMapKeys, []string{"type"}) {
			t.Errorf("%s: status.conditions is %s list-type %q keys %v, want array list-type map keyed by type",
				kind, conds.Type, conds.ListType, conds.ListMapKeys)
		}
		if conds.Items == nil {
			t.Errorf("%s: status.conditions has no item schema", kind)
			continue
		}
		for _, f := range []string{"type", "status", "reason", "message", "lastTransitionTime"} {
			if _, ok := conds.Items.Properties[f]; !ok {
				t.Errorf("%s: status.conditions items lack %s; want metav1.Condition", kind, f)
			}
		}
	}
}

func TestIPAddressPoolPrintsAddressesAndUsage(t *testing.T) {
	c, ok := loadCRDs(t)["IPAddressPool"]
	if !ok {
		t.Fatal("no CRD for IPAddressPool")
	}
	cols := c.Spec.Versions[0].AdditionalPrinterColumns
	var shown []string
	for _, col := range cols {
		if col.Priority == 0 {
			shown = append(shown, col.Name)
		}
	}
	for _, want := range []string{"Addresses", "Assigned", "Available", "Age"} {
		if !slices.Contains(shown, want) {
			t.Errorf("kubectl get ipaddresspools shows columns %v, want %s among them", shown, want)
		}
	}
	for _, want := range []string{"Assigned IPv4", "Available IPv4", "Assigned IPv6", "Available IPv6"} {
		if !slices.ContainsFunc(cols, func(c printerColumn) bool { return c.Name == want }) {
			t.Errorf("no %s column for kubectl get -o wide", want)
		}
	}
}

var filterExpr = regexp.MustCompile(`\[[^]]*\]`)

// TestPrinterColumnsPointAtFields catches a column whose JSONPath names no field
// of the schema: kubectl would print it empty forever.
func TestPrinterColumnsPointAtFields(t *testing.T) {
	for kind, c := range loadCRDs(t) {
		root := c.Spec.Versions[0].Schema.OpenAPIV3Schema
		for _, col := range c.Spec.Versions[0].AdditionalPrinterColumns {
			if strings.HasPrefix(col.JSONPath, ".metadata.") {
				continue // ObjectMeta is not spelled out in CRD schemas.
			}
			s, ok := root, true
			for _, seg := range strings.Split(strings.TrimPrefix(filterExpr.ReplaceAllString(col.JSONPath, "[]"), "."), ".") {
				name, isList := strings.CutSuffix(seg, "[]")
				if s, ok = s.Properties[name]; !ok {
					break
				}
				if isList {
					if s.Items == nil {
						ok = false
						break
					}
					s = *s.Items
				}
			}
			if !ok {
				t.Errorf("%s: column %q: %s names no field", kind, col.Name, col.JSONPath)
				continue
			}
			compatible := s.Type == col.Type || (col.Type == "string" && s.Type == "array") || (col.Type == "date" && s.Type == "string" && s.Format == "date-time")
			if !compatible {
				t.Errorf("%s: column %q of type %s shows %s, a %s", kind, col.Name, col.Type, col.JSONPath, s.Type)
			}
		}
	}
}

// TestEveryRuleSaysWhatIsWrong: a CEL rule without message or messageExpression
// shows the user the raw expression.
func TestEveryRuleSaysWhatIsWrong(t *testing.T) {
	var walk func(kind, path string, s schema)
	walk = func(kind, path string, s schema) {
		for _, r := range s.XValidations {
			if r.Message == "" && r.MessageExpression == "" {
				t.Errorf("%s %s: rule %q has no message", kind, path, r.Rule)
			}
		}
		for name, p := range s.Properties {
			walk(kind, path+"."+name, p)
		}
		if s.Items != nil {
			walk(kind, path+"[]", *s.Items)
		}
	}
	for kind, c := range loadCRDs(t) {
		walk(kind, "", c.Spec.Versions[0].Schema.OpenAPIV3Schema)
	}
}

func newScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSchemeRegistersEveryKindAndItsList(t *testing.T) {
	s := newScheme(t)
	for _, kind := range kinds {
		for _, k := range []string{kind, kind + "List"} {
			if _, err := s.New(v1alpha1.GroupVersion.WithKind(k)); err != nil {
				t.Errorf("scheme: %v", err)
			}
		}
	}
}

// sample is one object of a testdata file.
type sample struct {
	file, expect string
	doc          []byte
}

func readSamples(t *testing.T, dir string) []sample {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no samples in testdata/%s", dir)
	}
	var out []sample
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var expects []string
		for _, line := range strings.Split(string(b), "\n") {
			if e, ok := strings.CutPrefix(line, "# expect:"); ok {
				expects = append(expects, strings.TrimSpace(e))
			}
		}
		docs := bytes.Split(b, []byte("\n---\n"))
		for _, d := range docs {
			s := sample{file: f, doc: d}
			if len(expects) > 0 {
				s.expect = expects[0]
			}
			out = append(out, s)
		}
		if dir == "invalid" && (len(expects) != 1 || expects[0] == "" || len(docs) != 1) {
			t.Errorf("%s: want one object and one non-empty '# expect:' line, found %d objects and expects %q", f, len(docs), expects)
		}
		if dir == "valid" && len(expects) != 0 {
			t.Errorf("%s: a valid sample expects no error", f)
		}
	}
	return out
}

// TestValidSamplesDecodeIntoTheGoTypes keeps the samples and the Go types in step:
// a field the Go types do not have fails here before it fails in the e2e suite.
func TestValidSamplesDecodeIntoTheGoTypes(t *testing.T) {
	s := newScheme(t)
	seen := map[string]bool{}
	for _, smp := range readSamples(t, "valid") {
		var tm runtime.TypeMeta
		if err := yaml.Unmarshal(smp.doc, &tm); err != nil {
			t.Fatalf("%s: %v", smp.file, err)
		}
		obj, err := s.New(tm.GroupVersionKind())
		if err != nil {
			t.Errorf("%s: %v", smp.file, err)
			continue
		}
		if err := yaml.UnmarshalStrict(smp.doc, obj); err != nil {
			t.Errorf("%s: %v", smp.file, err)
		}
		seen[tm.Kind] = true
	}
	for _, kind := range kinds {
		if !seen[kind] {
			t.Errorf("no valid sample of %s", kind)
		}
	}
}

func TestInvalidSamplesAreOneObjectOfAKnownKindWithAnExpectedError(t *testing.T) {
	s := newScheme(t)
	seen := map[string]bool{}
	for _, smp := range readSamples(t, "invalid") {
		var tm runtime.TypeMeta
		if err := yaml.Unmarshal(smp.doc, &tm); err != nil {
			t.Fatalf("%s: %v", smp.file, err)
		}
		if !s.Recognizes(tm.GroupVersionKind()) {
			t.Errorf("%s: unknown kind %v", smp.file, tm.GroupVersionKind())
		}
		seen[tm.Kind] = true
	}
	for _, kind := range kinds {
		if !seen[kind] {
			t.Errorf("no invalid sample of %s", kind)
		}
	}
}

func TestAnnouncementsAreNamespacedAndShowTheNodeAndInterfaces(t *testing.T) {
	c, ok := loadCRDs(t)["Announcement"]
	if !ok {
		t.Fatal("no CRD for Announcement: run make manifests")
	}
	if c.Spec.Scope != "Namespaced" {
		t.Errorf("Announcement scope %q, want Namespaced (it lives beside its Service)", c.Spec.Scope)
	}
	var cols []string
	for _, col := range c.Spec.Versions[0].AdditionalPrinterColumns {
		cols = append(cols, col.Name)
	}
	for _, want := range []string{"Service", "IPs", "Mode", "Node", "Interfaces"} {
		if !slices.Contains(cols, want) {
			t.Errorf("kubectl get announcements lacks column %s (has %v)", want, cols)
		}
	}
}
