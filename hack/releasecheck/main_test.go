package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/heraldlb/herald/internal/imagebuild"
)

const root = "../.."

func TestThisTreeAgrees(t *testing.T) {
	version, problems, _ := check(root, filepath.Join(t.TempDir(), "no-images"), "")
	if version == "" || len(problems) > 0 {
		t.Errorf("version %q, problems:\n%s", version, strings.Join(problems, "\n"))
	}
}

// Each way a release can name two versions is caught, and named.
func TestEachDisagreementIsFound(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(t *testing.T, dir string)
		tag  string
		want string
	}{
		{
			name: "chart version bumped alone",
			edit: func(t *testing.T, dir string) {
				replace(t, dir, "charts/herald/Chart.yaml", "\nversion: ", "\nversion: 9.9.9\nx: ")
			},
			want: "Chart.yaml: version 9.9.9, appVersion",
		},
		{
			name: "an image tag pinned to another version",
			edit: func(t *testing.T, dir string) {
				replace(t, dir, "charts/herald/values.yaml", "herald-speaker\n    # -- Speaker image tag; empty: the chart's appVersion.\n    tag: \"\"", "herald-speaker\n    tag: \"0.0.9\"")
			},
			want: `speaker.image.tag "0.0.9"`,
		},
		{
			name: "plain manifests not rendered again",
			edit: func(t *testing.T, dir string) {
				replace(t, dir, "config/herald.yaml", "herald-controller:", "herald-controller:0.0.9-")
			},
			want: "config/herald.yaml runs",
		},
		{
			name: "a CRD changed, the chart's copy not",
			edit: func(t *testing.T, dir string) {
				replace(t, dir, "config/crd/bases/herald.dev_ipaddresspools.yaml", "kind: CustomResourceDefinition", "kind: CustomResourceDefinition\n# changed")
			},
			want: "CRD herald.dev_ipaddresspools.yaml: the chart's copy differs",
		},
		{
			name: "another git tag",
			tag:  "v0.0.9",
			want: "git tag v0.0.9",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyTree(t)
			if tc.edit != nil {
				tc.edit(t, dir)
			}
			_, problems, _ := check(dir, filepath.Join(dir, "no-images"), tc.tag)
			joined := strings.Join(problems, "\n")
			if !strings.Contains(joined, tc.want) {
				t.Errorf("problems:\n%s\nwant one saying %q", joined, tc.want)
			}
		})
	}
}

// Images built before the version was bumped are caught: their layout's tag
// and their version label.
func TestImagesOfAnotherVersionAreFound(t *testing.T) {
	dir := copyTree(t)
	imagesDir := filepath.Join(dir, "bin/images")
	for _, name := range images {
		s := imagebuild.Spec{Name: name, Path: "/x", User: imagebuild.RootUser, Version: "0.0.9", Created: time.Unix(0, 0)}
		p := v1.Platform{OS: "linux", Architecture: "amd64"}
		img, err := imagebuild.Image(s, p, []byte("binary"))
		if err != nil {
			t.Fatal(err)
		}
		l, err := layout.Write(filepath.Join(imagesDir, name), empty.Index)
		if err != nil {
			t.Fatal(err)
		}
		idx := imagebuild.Index(s, []imagebuild.PlatformImage{{Platform: p, Image: img}})
		if err := l.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "0.0.9"})); err != nil {
			t.Fatal(err)
		}
	}
	_, problems, _ := check(dir, imagesDir, "")
	joined := strings.Join(problems, "\n")
	for _, want := range []string{"herald-controller: tagged \"0.0.9\"", "herald-speaker: built as version \"0.0.9\""} {
		if !strings.Contains(joined, want) {
			t.Errorf("problems:\n%s\nwant one saying %q", joined, want)
		}
	}
}

// copyTree copies what check reads into a temporary tree.
func copyTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := []string{"charts/herald/Chart.yaml", "charts/herald/values.yaml", "config/herald.yaml"}
	for _, pattern := range []string{"config/crd/bases/*.yaml", "charts/herald/files/crds/*.yaml"} {
		m, err := filepath.Glob(filepath.Join(root, pattern))
		if err != nil || len(m) == 0 {
			t.Fatalf("%s: %v", pattern, err)
		}
		for _, f := range m {
			rel, _ := filepath.Rel(root, f)
			files = append(files, rel)
		}
	}
	for _, f := range files {
		raw, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func replace(t *testing.T, dir, file, old, new string) {
	t.Helper()
	path := filepath.Join(dir, file)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), old) {
		t.Fatalf("%s: no %q to replace", file, old)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(raw), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}
