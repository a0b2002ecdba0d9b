package migrate

import (
	"reflect"
	"strings"
	"testing"
)

// fieldPaths lists the JSON paths of t's fields, depth first ("spec.x.y");
// a field whose type is a metav1 type (a selector, a duration, object
// metadata) is one path.
func fieldPaths(t reflect.Type, prefix string) []string {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || strings.HasPrefix(t.PkgPath(), "k8s.io/") {
		return nil
	}
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" {
			continue
		}
		p := name
		if prefix != "" {
			p = prefix + "." + name
		}
		out = append(out, p)
		out = append(out, fieldPaths(f.Type, p)...)
	}
	return out
}

// Every field of the MetalLB types heraldctl reads has a row in Fields, the
// table heraldctl migrate --fields prints, so no field is mapped or dropped
// without saying so; and every row names a field that exists.
func TestEveryMetalLBFieldIsInTheTable(t *testing.T) {
	want := map[string]bool{}
	add := func(kind string, spec any, legacy bool) {
		prefix := "spec"
		if legacy {
			prefix = ""
		}
		for _, p := range fieldPaths(reflect.TypeOf(spec), prefix) {
			want[kind+" "+p] = true
		}
		if !legacy {
			want[kind+" metadata.name"] = true
			want[kind+" metadata.labels"] = true
		}
	}
	add("IPAddressPool", mlbPoolSpec{}, false)
	add("L2Advertisement", mlbL2AdvertisementSpec{}, false)
	add("BGPAdvertisement", mlbBGPAdvertisementSpec{}, false)
	add("BFDProfile", mlbBFDProfileSpec{}, false)
	add("Community", mlbCommunitySpec{}, false)
	add("BGPPeer", mlbBGPPeerSpec{}, false)
	add("ConfigMap", legacyConfig{}, true)
	want["ConfigMap data.config"] = true

	have := map[string]bool{}
	for _, f := range Fields {
		if have[f.MetalLB] {
			t.Errorf("%s: two rows", f.MetalLB)
		}
		have[f.MetalLB] = true
		if !want[f.MetalLB] {
			t.Errorf("%s: a row for a field the MetalLB types do not have", f.MetalLB)
		}
		if f.Herald == "" || f.Note == "" {
			t.Errorf("%s: say where it goes and how", f.MetalLB)
		}
	}
	for p := range want {
		if !have[p] {
			t.Errorf("%s: no row in Fields", p)
		}
	}
}
