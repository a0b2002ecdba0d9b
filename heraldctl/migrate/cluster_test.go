package migrate

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
)

// metallbCRD is a stand-in for one of MetalLB's CRDs: the names and
// versions it serves, any content (its schema is not under test here).
func metallbCRD(plural, kind string, versions ...string) *unstructured.Unstructured {
	var vs []any
	for i, v := range versions {
		vs = append(vs, map[string]any{"name": v, "served": true, "storage": i == len(versions)-1,
			"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}}})
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": plural + ".metallb.io"},
		"spec": map[string]any{"group": "metallb.io", "scope": "Namespaced", "versions": vs,
			"names": map[string]any{"plural": plural, "singular": strings.ToLower(kind), "kind": kind, "listKind": kind + "List"}},
	}}
}

// heraldctl migrate without -f reads what MetalLB reads from the cluster
// (its custom resources, BGPPeers in v1beta2, and the legacy ConfigMap, in
// its namespace) and translates it exactly as it translates the same
// objects from files.
func TestReadClusterTranslatesLikeTheFiles(t *testing.T) {
	s := apiServer(t)
	c, err := dynamic.NewForConfig(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	crds := c.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	for _, crd := range []*unstructured.Unstructured{
		metallbCRD("ipaddresspools", "IPAddressPool", "v1beta1"),
		metallbCRD("l2advertisements", "L2Advertisement", "v1beta1"),
		metallbCRD("bgpadvertisements", "BGPAdvertisement", "v1beta1"),
		metallbCRD("bfdprofiles", "BFDProfile", "v1beta1"),
		metallbCRD("communities", "Community", "v1beta1"),
		metallbCRD("bgppeers", "BGPPeer", "v1beta1", "v1beta2"),
	} {
		if _, err := crds.Create(ctx, crd, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "metallb-system"}}}
	if _, err := c.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	files := []string{"testdata/corpus/crds-v1beta1.yaml", "testdata/corpus/crds-bgppeer-v1beta2.yaml", "testdata/corpus/configmap-l2-tutorial.yaml"}
	fromFiles := &Input{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := fromFiles.AddYAML(f, b); err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			u := &unstructured.Unstructured{}
			if err := utilyaml.Unmarshal(doc, &u.Object); err != nil {
				t.Fatal(err)
			}
			gv, _ := schema.ParseGroupVersion(u.GetAPIVersion())
			plural := strings.ToLower(u.GetKind()) + "s"
			if u.GetKind() == "Community" {
				plural = "communities"
			}
			res := c.Resource(gv.WithResource(plural)).Namespace(u.GetNamespace())
			// The CRDs just made may take a moment to be served.
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
				_, err = res.Create(ctx, u, metav1.CreateOptions{})
				if err == nil || time.Now().After(deadline) || !strings.Contains(err.Error(), "could not find the requested resource") {
					break
				}
			}
			if err != nil {
				t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
			}
		}
	}

	fromCluster, err := ReadCluster(ctx, c, "metallb-system")
	if err != nil {
		t.Fatal(err)
	}
	var want, got bytes.Buffer
	if err := Translate(fromFiles, Options{}).WriteYAML(&want); err != nil {
		t.Fatal(err)
	}
	res := Translate(fromCluster, Options{})
	if err := res.WriteYAML(&got); err != nil {
		t.Fatal(err)
	}
	if len(res.Pools) != 4 || len(res.BGPPeers) != 4 {
		t.Errorf("from the cluster: %d pools, %d BGPPeers; want the 4 and 4 the files hold", len(res.Pools), len(res.BGPPeers))
	}
	if got.String() != want.String() {
		t.Errorf("the cluster's translation differs from the files':\n--- cluster\n%s\n--- files\n%s", got.String(), want.String())
	}
}
