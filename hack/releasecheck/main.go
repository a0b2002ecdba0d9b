// Command releasecheck verifies that what a release publishes names one
// version (make release-check): the chart's appVersion, which is where
// Herald's version is written, and
//
//   - the chart's version (chart and app are released together);
//   - the image tags: values.yaml leaves them empty (they follow appVersion)
//     or sets appVersion, and config/herald.yaml runs appVersion;
//   - the images make images wrote (bin/images), when there are any: tagged
//     and labelled appVersion;
//   - the git tag being released (-tag), v<appVersion>;
//
// and that the chart's copy of the CRDs is config/crd/bases, byte for byte.
//
//	go run ./hack/releasecheck [-images bin/images] [-tag v0.1.0]
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"sigs.k8s.io/yaml"
)

// images are the images' names, as in values.yaml's repositories and in
// bin/images.
var images = map[string]string{"controller": "herald-controller", "speaker": "herald-speaker"}

// semver is what an image tag and a chart version must both be
// (https://semver.org; Helm refuses other chart versions).
var semver = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$`)

func main() {
	imagesDir := flag.String("images", "bin/images", "the OCI layouts make images wrote; not checked when absent")
	tag := flag.String("tag", "", "the git tag being released, e.g. v0.1.0; empty: not checked")
	flag.Parse()
	version, problems, notes := check(".", *imagesDir, *tag)
	slices.Sort(problems)
	for _, n := range notes {
		fmt.Println("release-check:", n)
	}
	for _, p := range problems {
		fmt.Fprintln(os.Stderr, "release-check:", p)
	}
	if len(problems) > 0 {
		os.Exit(1)
	}
	fmt.Printf("release-check: version %s: chart, image tags and CRDs agree\n", version)
}

// check returns the version, what disagrees with it, and what was not checked.
func check(root, imagesDir, tag string) (version string, problems, notes []string) {
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	var chart struct {
		Version    string `json:"version"`
		AppVersion string `json:"appVersion"`
	}
	if err := readYAML(filepath.Join(root, "charts/herald/Chart.yaml"), &chart); err != nil {
		bad("%v", err)
		return "", problems, notes
	}
	version = chart.AppVersion
	if !semver.MatchString(version) {
		bad("Chart.yaml: appVersion %q is not a version like 1.2.3", version)
	}
	if chart.Version != version {
		bad("Chart.yaml: version %s, appVersion %s: the chart and the images are released together", chart.Version, version)
	}
	if tag != "" && tag != "v"+version {
		bad("git tag %s, Chart.yaml's appVersion %s: want tag v%s", tag, version, version)
	}

	type image struct {
		Repository string `json:"repository"`
		Tag        string `json:"tag"`
	}
	var values struct {
		Controller struct{ Image image } `json:"controller"`
		Speaker    struct{ Image image } `json:"speaker"`
	}
	if err := readYAML(filepath.Join(root, "charts/herald/values.yaml"), &values); err != nil {
		bad("%v", err)
	}
	var refs []string
	for component, img := range map[string]image{"controller": values.Controller.Image, "speaker": values.Speaker.Image} {
		if path.Base(img.Repository) != images[component] {
			bad("values.yaml: %s.image.repository %q, want one ending in /%s, the image make images builds", component, img.Repository, images[component])
		}
		if img.Tag != "" && img.Tag != version {
			bad("values.yaml: %s.image.tag %q, want empty (appVersion) or %s", component, img.Tag, version)
		}
		refs = append(refs, img.Repository+":"+version)
	}

	rendered, err := os.ReadFile(filepath.Join(root, "config/herald.yaml"))
	if err != nil {
		bad("%v", err)
	}
	var runs []string
	for _, m := range regexp.MustCompile(`(?m)^\s+image:\s*"?([^"\s]+)"?\s*$`).FindAllSubmatch(rendered, -1) {
		runs = append(runs, string(m[1]))
	}
	slices.Sort(runs)
	slices.Sort(refs)
	if !slices.Equal(runs, refs) {
		bad("config/herald.yaml runs %v, want %v (hack/render-manifests.sh)", runs, refs)
	}

	problems = append(problems, compareCRDs(filepath.Join(root, "config/crd/bases"), filepath.Join(root, "charts/herald/files/crds"))...)

	if _, err := os.Stat(imagesDir); err != nil {
		notes = append(notes, fmt.Sprintf("images not checked: no %s (make images)", imagesDir))
		return version, problems, notes
	}
	for _, name := range images {
		problems = append(problems, checkLayout(filepath.Join(imagesDir, name), version)...)
	}
	return version, problems, notes
}

// checkLayout: the layout's one index is tagged version and says so.
func checkLayout(dir, version string) []string {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return []string{fmt.Sprintf("%s: %v (make images)", dir, err)}
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return []string{fmt.Sprintf("%s: %v", dir, err)}
	}
	if len(m.Manifests) != 1 {
		return []string{fmt.Sprintf("%s: %d entries in index.json, want one index", dir, len(m.Manifests))}
	}
	var problems []string
	d := m.Manifests[0]
	if tag := d.Annotations["org.opencontainers.image.ref.name"]; tag != version {
		problems = append(problems, fmt.Sprintf("%s: tagged %q, want %s (make images)", dir, tag, version))
	}
	child, err := idx.ImageIndex(d.Digest)
	if err != nil {
		return append(problems, fmt.Sprintf("%s: %v", dir, err))
	}
	cm, err := child.IndexManifest()
	if err != nil {
		return append(problems, fmt.Sprintf("%s: %v", dir, err))
	}
	if v := cm.Annotations["org.opencontainers.image.version"]; v != version {
		problems = append(problems, fmt.Sprintf("%s: built as version %q, want %s (make images)", dir, v, version))
	}
	return problems
}

// compareCRDs: the chart's copy holds the same files as the CRDs' source.
func compareCRDs(source, chartCopy string) []string {
	list := func(dir string) ([]string, error) {
		m, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
		for i := range m {
			m[i] = filepath.Base(m[i])
		}
		return m, err
	}
	want, err1 := list(source)
	got, err2 := list(chartCopy)
	if err1 != nil || err2 != nil || len(want) == 0 {
		return []string{fmt.Sprintf("CRDs: cannot list %s and %s", source, chartCopy)}
	}
	var problems []string
	for _, name := range want {
		a, err := os.ReadFile(filepath.Join(source, name))
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		b, err := os.ReadFile(filepath.Join(chartCopy, name))
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("CRD %s: not in the chart (hack/render-manifests.sh)", name))
		case !bytes.Equal(a, b):
			problems = append(problems, fmt.Sprintf("CRD %s: the chart's copy differs from %s (hack/render-manifests.sh)", name, source))
		}
	}
	for _, name := range got {
		if !slices.Contains(want, name) {
			problems = append(problems, fmt.Sprintf("CRD %s: in the chart, not in %s", name, source))
		}
	}
	return problems
}

func readYAML(path string, v any) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := yaml.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
