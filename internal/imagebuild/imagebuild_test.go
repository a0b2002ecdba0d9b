package imagebuild

import (
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

var (
	amd64 = v1.Platform{OS: "linux", Architecture: "amd64"}
	arm64 = v1.Platform{OS: "linux", Architecture: "arm64"}
)

func spec() Spec {
	return Spec{
		Name: "herald-controller", Path: "/controller", User: NonRootUser,
		Source: "https://github.com/heraldlb/herald", Version: "1.2.3", Revision: "abc",
		Created: time.Unix(1700000000, 0).UTC(),
	}
}

func indexDigest(t *testing.T, s Spec, binary string) v1.Hash {
	t.Helper()
	var images []PlatformImage
	for _, p := range []v1.Platform{amd64, arm64} {
		img, err := Image(s, p, []byte(binary+p.Architecture))
		if err != nil {
			t.Fatal(err)
		}
		images = append(images, PlatformImage{Platform: p, Image: img})
	}
	d, err := Index(s, images).Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// The digest is a function of the binaries, the spec and nothing else: not
// of the hour the image is assembled, nor of the machine.
func TestSameInputsSameDigest(t *testing.T) {
	first := indexDigest(t, spec(), "binary")
	time.Sleep(1100 * time.Millisecond) // a second later, as a wall clock would stamp it
	if again := indexDigest(t, spec(), "binary"); again != first {
		t.Errorf("the same inputs assembled twice: %s, then %s", first, again)
	}
	later := spec()
	later.Created = later.Created.Add(time.Second)
	for name, d := range map[string]v1.Hash{
		"another binary":    indexDigest(t, spec(), "other"),
		"another timestamp": indexDigest(t, later, "binary"),
	} {
		if d == first {
			t.Errorf("%s gave the same digest %s", name, d)
		}
	}
}

func TestIndexListsEachPlatformWithTheSpecsLabels(t *testing.T) {
	s := spec()
	img, err := Image(s, arm64, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := Index(s, []PlatformImage{{Platform: arm64, Image: img}}).IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 || m.Manifests[0].Platform == nil || !m.Manifests[0].Platform.Equals(arm64) {
		t.Fatalf("manifests %+v, want one for linux/arm64", m.Manifests)
	}
	if m.MediaType != "application/vnd.oci.image.index.v1+json" || m.Annotations[LabelVersion] != "1.2.3" {
		t.Errorf("index %s with annotations %v", m.MediaType, m.Annotations)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Architecture != "arm64" || cf.Config.User != NonRootUser || cf.Config.Labels[LabelRevision] != "abc" || !cf.Created.Time.Equal(s.Created) {
		t.Errorf("config %+v", cf)
	}
}

func TestBinaryMustSitAtTheRoot(t *testing.T) {
	s := spec()
	s.Path = "/usr/bin/controller"
	if _, err := Image(s, amd64, []byte("x")); err == nil || !strings.Contains(err.Error(), "/usr/bin/controller") {
		t.Errorf("err = %v, want one naming the path", err)
	}
}
