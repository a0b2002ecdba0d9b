package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// These tests build the images as make images does (go build for both
// platforms, then the layouts), once, and look into what was written. They
// run with HERALD_IMAGE_TEST=1 (make test-images) only: with a cold build
// cache, compiling both binaries for two platforms takes minutes, more than
// make test's unit stage can spend on it.

const root = "../.."

// debsDir is make images' cache of the pinned Debian packages.
const debsDir = root + "/bin/debs"

var platforms = []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}

var (
	buildOnce sync.Once
	outDir    string
	results   []built
	buildErr  error
)

// imagesBuilt is the layouts' directory and what build printed.
func imagesBuilt(t *testing.T) (string, []built) {
	t.Helper()
	if os.Getenv("HERALD_IMAGE_TEST") != "1" {
		t.Skip("builds both images for both platforms: make test-images (HERALD_IMAGE_TEST=1)")
	}
	buildOnce.Do(func() {
		if outDir, buildErr = os.MkdirTemp("", "herald-images-test-"); buildErr != nil {
			return
		}
		results, buildErr = build(options{root: root, out: outDir, platforms: platforms, goCmd: "go", debs: debsDir})
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return outDir, results
}

func TestMain(m *testing.M) {
	code := m.Run()
	if outDir != "" {
		os.RemoveAll(outDir)
	}
	os.Exit(code)
}

// wantImage is what the chart and the repository say an image must be.
type wantImage struct {
	name, entrypoint, user string
	nft                    bool // a layer of nft and its libraries below the binary's
}

var wantImages = []wantImage{
	{name: "herald-controller", entrypoint: "/controller", user: "65532:65532"},
	{name: "herald-speaker", entrypoint: "/speaker", user: "0:0", nft: true},
}

func TestEachImageIsOneIndexOverBothPlatforms(t *testing.T) {
	dir, printed := imagesBuilt(t)
	version := appVersion(t)
	for _, want := range wantImages {
		top := readLayout(t, filepath.Join(dir, want.name))
		m, err := top.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Manifests) != 1 || !m.Manifests[0].MediaType.IsIndex() {
			t.Fatalf("%s: index.json lists %v, want one image index (what crane push pushes)", want.name, m.Manifests)
		}
		if tag := m.Manifests[0].Annotations["org.opencontainers.image.ref.name"]; tag != version {
			t.Errorf("%s: tagged %q in the layout, want the chart's appVersion %q", want.name, tag, version)
		}
		idx, err := top.ImageIndex(m.Manifests[0].Digest)
		if err != nil {
			t.Fatal(err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, d := range im.Manifests {
			got = append(got, d.Platform.String())
			// Each platform's image is the one build printed.
			i := slices.IndexFunc(printed, func(b built) bool { return b.name == want.name && b.platform.String() == d.Platform.String() })
			if i < 0 || printed[i].digest != d.Digest {
				t.Errorf("%s %s: digest %s in the index, not among the printed %v", want.name, d.Platform, d.Digest, printed)
			}
		}
		if !slices.Equal(got, []string{"linux/amd64", "linux/arm64"}) {
			t.Errorf("%s: platforms %v, want linux/amd64 and linux/arm64", want.name, got)
		}
	}
	if len(printed) != 4 {
		t.Errorf("build reported %d images, want 2 components x 2 platforms", len(printed))
	}
}

func TestImageConfigNamesUserEntrypointAndLabels(t *testing.T) {
	dir, _ := imagesBuilt(t)
	version, head := appVersion(t), gitHead(t)
	for _, want := range wantImages {
		for _, p := range platforms {
			img := platformImage(t, dir, want.name, p)
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			c := cf.Config
			if c.User != want.user {
				t.Errorf("%s %s: user %q, want %q", want.name, p, c.User, want.user)
			}
			if !slices.Equal(c.Entrypoint, []string{want.entrypoint}) || len(c.Cmd) != 0 {
				t.Errorf("%s %s: entrypoint %q cmd %q, want [%s] alone", want.name, p, c.Entrypoint, c.Cmd, want.entrypoint)
			}
			if cf.OS != p.OS || cf.Architecture != p.Architecture {
				t.Errorf("%s %s: config says %s/%s", want.name, p, cf.OS, cf.Architecture)
			}
			labels := map[string]string{
				"org.opencontainers.image.source":  "https://github.com/heraldlb/herald",
				"org.opencontainers.image.version": version,
			}
			for k, v := range labels {
				if c.Labels[k] != v {
					t.Errorf("%s %s: label %s=%q, want %q", want.name, p, k, c.Labels[k], v)
				}
			}
			if rev := c.Labels["org.opencontainers.image.revision"]; strings.TrimSuffix(rev, "-dirty") != head {
				t.Errorf("%s %s: revision label %q, want HEAD %s", want.name, p, rev, head)
			}
		}
	}
}

// The image's last layer holds the binary and the few files a static binary
// can use, owned by root; the speaker's has one more below it, nft and the
// libraries it loads. Nowhere a shell.
func TestImageHoldsTheBinaryAndNoShell(t *testing.T) {
	dir, _ := imagesBuilt(t)
	for _, want := range wantImages {
		img := platformImage(t, dir, want.name, platforms[0])
		layers, err := img.Layers()
		wantLayers := 1
		if want.nft {
			wantLayers = 2
		}
		if err != nil || len(layers) != wantLayers {
			t.Fatalf("%s: %d layers (%v), want %d", want.name, len(layers), err, wantLayers)
		}
		var got []string
		forEachLayerFile(t, layers[len(layers)-1], func(h *tar.Header, _ io.Reader) {
			got = append(got, fmt.Sprintf("%s %o %d:%d", strings.TrimSuffix(h.Name, "/"), h.Mode, h.Uid, h.Gid))
		})
		wantFiles := []string{"etc 755 0:0", "etc/group 644 0:0", "etc/passwd 644 0:0", "tmp 1777 0:0", strings.TrimPrefix(want.entrypoint, "/") + " 755 0:0"}
		if !slices.Equal(got, wantFiles) {
			t.Errorf("%s: files %q, want %q", want.name, got, wantFiles)
		}
		forEachFile(t, img, func(h *tar.Header, _ io.Reader) {
			if base := filepath.Base(h.Name); base == "sh" || base == "bash" || base == "busybox" {
				t.Errorf("%s: a shell, %s", want.name, h.Name)
			}
			if h.Uid != 0 || h.Gid != 0 {
				t.Errorf("%s: %s owned by %d:%d, want root", want.name, h.Name, h.Uid, h.Gid)
			}
		})
	}
}

// The speaker image's nft runs, on the machine's platform, from the image's
// files alone (chroot): every library it loads is there.
func TestSpeakerImageRunsNft(t *testing.T) {
	dir, _ := imagesBuilt(t)
	if os.Geteuid() != 0 {
		t.Skip("chroot needs root")
	}
	rootfs := t.TempDir()
	img := platformImage(t, dir, "herald-speaker", v1.Platform{OS: "linux", Architecture: runtime.GOARCH})
	forEachFile(t, img, func(h *tar.Header, r io.Reader) {
		p := filepath.Join(rootfs, h.Name)
		var err error
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeSymlink:
			err = os.Symlink(h.Linkname, p)
		case tar.TypeReg:
			var b []byte
			if b, err = io.ReadAll(r); err == nil {
				err = os.WriteFile(p, b, os.FileMode(h.Mode))
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	})
	out, err := exec.Command("chroot", rootfs, "/usr/sbin/nft", "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "nftables v") {
		t.Fatalf("nft --version in the speaker's image: %v: %s", err, out)
	}
	t.Logf("the speaker image's nft: %s", bytes.TrimSpace(out))
}

// The binary of the machine's own platform runs and prints the version the
// chart names; the other platform's is a static ELF for its machine.
func TestBinaryInsideRunsVersion(t *testing.T) {
	dir, _ := imagesBuilt(t)
	version, head := appVersion(t), gitHead(t)
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	for _, want := range wantImages {
		for _, p := range platforms {
			bin := binaryOf(t, platformImage(t, dir, want.name, p), want.entrypoint)
			f, err := elf.NewFile(bytes.NewReader(bin))
			if err != nil {
				t.Fatalf("%s %s: %v", want.name, p, err)
			}
			if f.Machine != machines[p.Architecture] {
				t.Errorf("%s %s: ELF machine %v, want %v", want.name, p, f.Machine, machines[p.Architecture])
			}
			for _, prog := range f.Progs {
				if prog.Type == elf.PT_INTERP {
					t.Errorf("%s %s: dynamically linked (PT_INTERP), want static: the image has no libc", want.name, p)
				}
			}
			if p.Architecture != runtime.GOARCH {
				continue
			}
			path := filepath.Join(t.TempDir(), filepath.Base(want.entrypoint))
			if err := os.WriteFile(path, bin, 0o755); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(path, "--version").CombinedOutput()
			if err != nil {
				t.Fatalf("%s %s --version: %v\n%s", want.name, p, err, out)
			}
			prefix := fmt.Sprintf("%s %s (revision %s", want.name, version, head)
			if !strings.HasPrefix(string(out), prefix) || !strings.Contains(string(out), "linux/"+p.Architecture+")") {
				t.Errorf("%s %s --version printed %q, want it to start with %q and name linux/%s", want.name, p, out, prefix, p.Architecture)
			}
		}
	}
}

// The image's user is the chart's: the controller's runAsUser 65532, the
// speaker's 0 (Kubernetes grants added capabilities to root only). The chart
// as rendered (config/herald.yaml, which make lint keeps current) is read.
func TestImagesRunAsTheChartSays(t *testing.T) {
	dir, _ := imagesBuilt(t)
	version := appVersion(t)
	pods := renderedPods(t)
	for _, want := range wantImages {
		pod, ok := pods[want.name]
		if !ok {
			t.Fatalf("config/herald.yaml: no workload named %s", want.name)
		}
		c := pod.Containers[0]
		if wantRef := "ghcr.io/heraldlb/" + want.name + ":" + version; c.Image != wantRef {
			t.Errorf("%s: the chart runs %s, want %s", want.name, c.Image, wantRef)
		}
		var uid *int64
		if pod.SecurityContext != nil {
			uid = pod.SecurityContext.RunAsUser
		}
		if c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil {
			uid = c.SecurityContext.RunAsUser
		}
		if uid == nil {
			t.Fatalf("%s: the chart sets no runAsUser", want.name)
		}
		cf, err := platformImage(t, dir, want.name, platforms[0]).ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if imageUID, _, _ := strings.Cut(cf.Config.User, ":"); imageUID != strconv.FormatInt(*uid, 10) {
			t.Errorf("%s: image user %q, the chart's runAsUser %d", want.name, cf.Config.User, *uid)
		}
	}
}

// Building the same tree twice gives the same digests, so a release can be
// rebuilt and checked.
func TestBuildsAreReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("links both binaries for both platforms again")
	}
	_, first := imagesBuilt(t)
	again, err := build(options{root: root, out: t.TempDir(), platforms: platforms, goCmd: "go", debs: debsDir})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(lines(first), lines(again)) {
		t.Errorf("two builds of one tree differ:\n%v\n%v", first, again)
	}
}

func lines(bs []built) []string {
	var l []string
	for _, b := range bs {
		l = append(l, b.String())
	}
	return l
}

func readLayout(t *testing.T, dir string) v1.ImageIndex {
	t.Helper()
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

func platformImage(t *testing.T, dir, name string, p v1.Platform) v1.Image {
	t.Helper()
	top := readLayout(t, filepath.Join(dir, name))
	m, err := top.IndexManifest()
	if err != nil || len(m.Manifests) != 1 {
		t.Fatalf("%s: %v, %d entries", name, err, len(m.Manifests))
	}
	idx, err := top.ImageIndex(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range im.Manifests {
		if d.Platform != nil && d.Platform.Equals(p) {
			img, err := idx.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			return img
		}
	}
	t.Fatalf("%s: no image for %s", name, p)
	return nil
}

// forEachFile calls fn on each file of the image's filesystem.
func forEachFile(t *testing.T, img v1.Image, fn func(*tar.Header, io.Reader)) {
	t.Helper()
	forEachEntry(t, mutate.Extract(img), fn)
}

// forEachLayerFile calls fn on each entry of one layer, as the layer has it.
func forEachLayerFile(t *testing.T, l v1.Layer, fn func(*tar.Header, io.Reader)) {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	forEachEntry(t, rc, fn)
}

func forEachEntry(t *testing.T, rc io.ReadCloser, fn func(*tar.Header, io.Reader)) {
	t.Helper()
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		fn(h, tr)
	}
}

func binaryOf(t *testing.T, img v1.Image, path string) []byte {
	t.Helper()
	var bin []byte
	forEachFile(t, img, func(h *tar.Header, r io.Reader) {
		if "/"+h.Name == path {
			var err error
			if bin, err = io.ReadAll(r); err != nil {
				t.Fatal(err)
			}
		}
	})
	if bin == nil {
		t.Fatalf("no %s in the image", path)
	}
	return bin
}

func appVersion(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "charts/herald/Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(raw, &c); err != nil || c.AppVersion == "" {
		t.Fatalf("Chart.yaml: appVersion %q, %v", c.AppVersion, err)
	}
	return c.AppVersion
}

func gitHead(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// renderedPods are the pod templates of config/herald.yaml by workload name.
func renderedPods(t *testing.T) map[string]corev1.PodSpec {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "config/herald.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	pods := map[string]corev1.PodSpec{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return pods
		}
		if err != nil {
			t.Fatal(err)
		}
		var kind struct{ Kind string }
		if err := yaml.Unmarshal(doc, &kind); err != nil {
			t.Fatal(err)
		}
		switch kind.Kind {
		case "Deployment":
			var d appsv1.Deployment
			if err := yaml.Unmarshal(doc, &d); err != nil {
				t.Fatal(err)
			}
			pods[d.Name] = d.Spec.Template.Spec
		case "DaemonSet":
			var d appsv1.DaemonSet
			if err := yaml.Unmarshal(doc, &d); err != nil {
				t.Fatal(err)
			}
			pods[d.Name] = d.Spec.Template.Spec
		}
	}
}
