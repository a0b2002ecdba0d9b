package lab

import (
	"bytes"
	"io"
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/heraldlb/herald/internal/imagebuild"
)

// TestWriteImageReadsBackWithItsNameEntrypointAndArgs reads the archive back
// as an importer does: the image is found by its name, its config runs the
// binary with the default arguments, and its layer's digests hold.
func TestWriteImageReadsBackWithItsNameEntrypointAndArgs(t *testing.T) {
	var buf bytes.Buffer
	spec := imagebuild.Spec{Name: "x", Path: "/x", Args: []string{"a"}, User: imagebuild.RootUser}
	if err := WriteImage(&buf, "lab.invalid/x:1", spec, []byte("#!/bin/true\n")); err != nil {
		t.Fatal(err)
	}
	if err := WriteImage(io.Discard, "no tag here!", spec, nil); err == nil {
		t.Error("WriteImage accepted a reference that is not one")
	}
	tag, _ := name.NewTag("lab.invalid/x:1")
	img, err := tarball.Image(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil }, &tag)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Config.Entrypoint, []string{"/x"}) || !slices.Equal(cfg.Config.Cmd, []string{"a"}) {
		t.Errorf("entrypoint %v cmd %v, want [/x] [a]", cfg.Config.Entrypoint, cfg.Config.Cmd)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers %d, %v; want 1", len(layers), err)
	}
	diff, err := layers[0].DiffID()
	if err != nil || cfg.RootFS.DiffIDs[0] != diff {
		t.Errorf("the config's diff ID %v is not the layer's %v (%v)", cfg.RootFS.DiffIDs, diff, err)
	}
}
