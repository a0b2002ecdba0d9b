// Command images builds Herald's container images without a container
// engine (make images): the controller and the speaker, each for linux/amd64
// and linux/arm64, as static binaries on an empty base (internal/imagebuild),
// the speaker's with a layer of nft and the libraries it loads from pinned
// Debian packages below the binary's (debian.go), written as one OCI image
// layout per image with one multi-platform index.
//
//	go run ./hack/images [-out bin/images] [-platforms linux/amd64,linux/arm64] [-debs bin/debs]
//
// The version is the chart's appVersion (charts/herald/Chart.yaml), the one
// place it is written; the revision is the git commit (with -dirty when the
// tree has changes); every timestamp is the commit's time, or
// SOURCE_DATE_EPOCH, so that the same tree builds the same digests.
//
// It ends with one line per image built:
//
//	image: NAME PLATFORM SIZE_BYTES DIGEST
//
// SIZE_BYTES is what a pull downloads: the manifest, the config and the
// compressed layer.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"sigs.k8s.io/yaml"

	"github.com/heraldlb/herald/internal/imagebuild"
)

// source is the images' org.opencontainers.image.source label: the
// repository, which registries such as ghcr.io link the image to.
const source = "https://github.com/heraldlb/herald"

// component is one binary and its image.
type component struct {
	pkg  string // the Go package, relative to the repository root
	name string // the image's name, as in the chart's image.repository
	path string // where the binary lies in the image
	user string
	nft  bool // the image carries nft and its libraries (debian.go)
}

// components: the chart (charts/herald/templates) runs the controller as
// 65532 with no capabilities, and the speaker as root with NET_ADMIN and
// NET_RAW only, because Kubernetes grants added capabilities to root alone.
// TestImagesRunAsTheChartSays holds the two together.
var components = []component{
	{pkg: "./controller", name: "herald-controller", path: "/controller", user: imagebuild.NonRootUser},
	{pkg: "./speaker", name: "herald-speaker", path: "/speaker", user: imagebuild.RootUser, nft: true},
}

// options of one build.
type options struct {
	root      string // the repository
	out       string // one OCI layout per image below it
	debs      string // where the pinned Debian packages are kept once downloaded
	platforms []v1.Platform
	goCmd     string
}

// built is one platform's image of one component.
type built struct {
	name     string
	platform v1.Platform
	size     int64
	digest   v1.Hash
}

func main() {
	var o options
	var platforms string
	flag.StringVar(&o.out, "out", "bin/images", "directory of the OCI layouts, one per image (replaced)")
	flag.StringVar(&platforms, "platforms", "linux/amd64,linux/arm64", "platforms to build, comma-separated")
	flag.StringVar(&o.goCmd, "go", "go", "the go command")
	flag.StringVar(&o.debs, "debs", "bin/debs", "where the Debian packages pinned in hack/images/debian.lock are kept once downloaded")
	flag.Parse()
	var err error
	if o.platforms, err = parsePlatforms(platforms); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(2)
	}
	if o.root, err = os.Getwd(); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
	images, err := build(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
	for _, b := range images {
		fmt.Println(b)
	}
}

// String is the line make images ends with: image: NAME PLATFORM SIZE_BYTES DIGEST.
func (b built) String() string {
	return fmt.Sprintf("image: %s %s %d %s", b.name, b.platform, b.size, b.digest)
}

func parsePlatforms(s string) ([]v1.Platform, error) {
	var ps []v1.Platform
	for _, f := range strings.Split(s, ",") {
		p, err := v1.ParsePlatform(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("-platforms %q: %w", f, err)
		}
		if p.OS != "linux" {
			return nil, fmt.Errorf("-platforms %q: Herald runs on linux only", f)
		}
		ps = append(ps, *p)
	}
	return ps, nil
}

// build compiles every component for every platform and writes the layouts.
func build(o options) ([]built, error) {
	version, err := chartAppVersion(o.root)
	if err != nil {
		return nil, err
	}
	revision, created, err := gitState(o.root)
	if err != nil {
		return nil, err
	}
	binDir, err := os.MkdirTemp("", "herald-images-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(binDir)

	// binaries[platform][component]: one go build per platform builds both
	// components, sharing the packages they have in common.
	binaries := make([]map[string][]byte, len(o.platforms))
	nft := make([]imagebuild.Layer, len(o.platforms))
	for i, p := range o.platforms {
		dir := filepath.Join(binDir, p.Architecture)
		if binaries[i], err = goBuild(o, p, version, revision, dir); err != nil {
			return nil, err
		}
		tar, err := toolsLayer(o.debs, p.Architecture, created)
		if err != nil {
			return nil, fmt.Errorf("nft for %s: %w", p, err)
		}
		nft[i] = imagebuild.Layer{Tar: tar, CreatedBy: "hack/images: nft and its libraries from Debian bookworm (hack/images/debian.lock)"}
	}

	var out []built
	for _, c := range components {
		spec := imagebuild.Spec{
			Name: c.name, Path: c.path, User: c.user,
			Source: source, Version: version, Revision: revision, Created: created,
		}
		var images []imagebuild.PlatformImage
		for i, p := range o.platforms {
			var base []imagebuild.Layer
			if c.nft {
				base = append(base, nft[i])
			}
			img, err := imagebuild.Image(spec, p, binaries[i][c.name], base...)
			if err != nil {
				return nil, err
			}
			images = append(images, imagebuild.PlatformImage{Platform: p, Image: img})
			b := built{name: c.name, platform: p}
			if b.size, err = pullSize(img); err != nil {
				return nil, fmt.Errorf("image %s %s: %w", c.name, p, err)
			}
			if b.digest, err = img.Digest(); err != nil {
				return nil, fmt.Errorf("image %s %s: %w", c.name, p, err)
			}
			out = append(out, b)
		}
		if err := writeLayout(filepath.Join(o.out, c.name), imagebuild.Index(spec, images), version); err != nil {
			return nil, fmt.Errorf("image %s: %w", c.name, err)
		}
	}
	return out, nil
}

// goBuild builds every component for platform p into dir and returns the
// binaries by image name: static (CGO_ENABLED=0), without the builder's paths
// (-trimpath) or symbol tables (-s -w: a smaller image; panics still print
// their stacks), stamped with the version and revision.
func goBuild(o options, p v1.Platform, version, revision, dir string) (map[string][]byte, error) {
	ldflags := fmt.Sprintf("-s -w -X github.com/heraldlb/herald/internal/version.version=%s -X github.com/heraldlb/herald/internal/version.revision=%s", version, revision)
	args := []string{"build", "-trimpath", "-ldflags", ldflags, "-o", dir + "/"}
	for _, c := range components {
		args = append(args, c.pkg)
	}
	cmd := exec.Command(o.goCmd, args...)
	cmd.Dir = o.root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go build for %s: %w", p, err)
	}
	binaries := map[string][]byte{}
	for _, c := range components {
		b, err := os.ReadFile(filepath.Join(dir, filepath.Base(c.pkg)))
		if err != nil {
			return nil, fmt.Errorf("go build for %s: %w", p, err)
		}
		binaries[c.name] = b
	}
	return binaries, nil
}

// writeLayout replaces dir with an OCI image layout whose index.json names
// one entry, idx, tagged version: what `crane push DIR REF` pushes as a
// multi-platform image, and skopeo finds as oci:DIR:VERSION.
func writeLayout(dir string, idx v1.ImageIndex, version string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	return p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": version,
	}))
}

// pullSize is what pulling img downloads: manifest, config and layers.
func pullSize(img v1.Image) (int64, error) {
	m, err := img.Manifest()
	if err != nil {
		return 0, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return 0, err
	}
	n := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n, nil
}

// chartAppVersion is the chart's appVersion: Herald's version.
func chartAppVersion(root string) (string, error) {
	path := filepath.Join(root, "charts/herald/Chart.yaml")
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(raw, &chart); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if chart.AppVersion == "" {
		return "", fmt.Errorf("%s: no appVersion", path)
	}
	return chart.AppVersion, nil
}

// gitState is the commit checked out (-dirty when tracked files changed) and
// the time the images are stamped with: SOURCE_DATE_EPOCH
// (https://reproducible-builds.org/specs/source-date-epoch/) or the commit's.
func gitState(root string) (revision string, created time.Time, err error) {
	git := func(args ...string) (string, error) {
		cmd := exec.Command("git", args...)
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out)), nil
	}
	if revision, err = git("rev-parse", "HEAD"); err != nil {
		return "", time.Time{}, err
	}
	changes, err := git("status", "--porcelain", "--untracked-files=no")
	if err != nil {
		return "", time.Time{}, err
	}
	if changes != "" {
		revision += "-dirty"
	}
	epoch := os.Getenv("SOURCE_DATE_EPOCH")
	if epoch == "" {
		if epoch, err = git("log", "-1", "--format=%ct"); err != nil {
			return "", time.Time{}, err
		}
	}
	secs, err := strconv.ParseInt(epoch, 10, 64)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", epoch, err)
	}
	return revision, time.Unix(secs, 0).UTC(), nil
}
