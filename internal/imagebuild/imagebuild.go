// Package imagebuild assembles Herald's container images without a container
// engine: one static binary on an empty base, as an OCI image per platform,
// and one OCI index over the platforms of a component.
//
// The images are reproducible: every timestamp is the one given (the commit's
// time), files are listed in a fixed order with fixed owners and modes, so the
// same binaries give the same digests.
package imagebuild

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The users the images know by name. Kubernetes' runAsUser takes numbers, so
// /etc/passwd only spares tools (and people) the question of who 65532 is;
// it is the "nonroot" of distroless images.
const (
	RootUser    = "0:0"
	NonRootUser = "65532:65532"
)

const (
	passwd = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	group  = "root:x:0:\nnonroot:x:65532:\n"
)

// OCI annotation and label keys
// (https://github.com/opencontainers/image-spec/blob/main/annotations.md).
const (
	LabelSource   = "org.opencontainers.image.source"
	LabelVersion  = "org.opencontainers.image.version"
	LabelRevision = "org.opencontainers.image.revision"
	LabelTitle    = "org.opencontainers.image.title"
	LabelCreated  = "org.opencontainers.image.created"
)

// Spec is one component's image, the same on every platform.
type Spec struct {
	// Name is the image's name, e.g. herald-controller (its title label).
	Name string
	// Path is where the binary lies in the image, at its root (/controller),
	// and the entrypoint.
	Path string
	// Args are the entrypoint's default arguments (the config's Cmd).
	Args []string
	// User runs the entrypoint, "uid:gid".
	User string
	// Source, Version and Revision are the OCI labels of the same names.
	Source, Version, Revision string
	// Created is every timestamp in the image: the files' and the config's.
	Created time.Time
}

// Labels are the image config's labels, and the index's annotations.
func (s Spec) Labels() map[string]string {
	return map[string]string{
		LabelSource:   s.Source,
		LabelVersion:  s.Version,
		LabelRevision: s.Revision,
		LabelTitle:    s.Name,
		LabelCreated:  s.Created.UTC().Format(time.RFC3339),
	}
}

// Layer is a layer's tar and what made it (its history entry).
type Layer struct {
	Tar       []byte
	CreatedBy string
}

// Path is the image's PATH: where tools a base layer adds (nft) are found.
const Path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Image is the image of binary (an executable for platform) on an empty base,
// or on base's layers in their order: a last layer with the binary,
// /etc/passwd, /etc/group and an empty /tmp.
func Image(s Spec, platform v1.Platform, binary []byte, base ...Layer) (v1.Image, error) {
	layerTar, err := rootfs(s, binary)
	if err != nil {
		return nil, fmt.Errorf("image %s %s: %w", s.Name, platform, err)
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for _, l := range append(slices.Clip(base), Layer{Tar: layerTar, CreatedBy: "hack/images: " + s.Path}) {
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(l.Tar)), nil
		}, tarball.WithMediaType(types.OCILayer))
		if err != nil {
			return nil, fmt.Errorf("image %s %s: layer: %w", s.Name, platform, err)
		}
		img, err = mutate.Append(img, mutate.Addendum{
			Layer: layer,
			History: v1.History{
				Created:   v1.Time{Time: s.Created},
				CreatedBy: l.CreatedBy,
				Comment:   s.Name + " " + s.Version,
			},
			MediaType: types.OCILayer,
		})
		if err != nil {
			return nil, fmt.Errorf("image %s %s: %w", s.Name, platform, err)
		}
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image %s %s: %w", s.Name, platform, err)
	}
	cfg = cfg.DeepCopy()
	cfg.Created = v1.Time{Time: s.Created}
	cfg.OS, cfg.Architecture, cfg.Variant = platform.OS, platform.Architecture, platform.Variant
	cfg.Config = v1.Config{
		User:       s.User,
		Entrypoint: []string{s.Path},
		Cmd:        s.Args,
		Env:        []string{Path},
		WorkingDir: "/",
		Labels:     s.Labels(),
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("image %s %s: %w", s.Name, platform, err)
	}
	return img, nil
}

// PlatformImage is one platform's image of an index.
type PlatformImage struct {
	Platform v1.Platform
	Image    v1.Image
}

// Index is the multi-platform index over images, in their order.
func Index(s Spec, images []PlatformImage) v1.ImageIndex {
	adds := make([]mutate.IndexAddendum, 0, len(images))
	for _, pi := range images {
		p := pi.Platform
		adds = append(adds, mutate.IndexAddendum{
			Add:        pi.Image,
			Descriptor: v1.Descriptor{Platform: &p},
		})
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
	return mutate.Annotations(idx, s.Labels()).(v1.ImageIndex)
}

// rootfs is the layer's tar: directories before their files, each entry owned
// by root, stamped s.Created.
func rootfs(s Spec, binary []byte) ([]byte, error) {
	type entry struct {
		name string
		mode int64
		dir  bool
		data []byte
	}
	entries := []entry{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/group", mode: 0o644, data: []byte(group)},
		{name: "etc/passwd", mode: 0o644, data: []byte(passwd)},
		// Sticky and world-writable, as /tmp is everywhere; the chart mounts
		// an emptyDir below it for the webhook's certificate.
		{name: "tmp/", mode: 0o1777, dir: true},
	}
	name := strings.TrimPrefix(s.Path, "/")
	if name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("binary path %q: want a file at the root, like /controller", s.Path)
	}
	entries = append(entries, entry{name: name, mode: 0o755, data: binary})

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name:    e.name,
			Mode:    e.mode,
			ModTime: s.Created,
			Format:  tar.FormatPAX,
		}
		if e.dir {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("%s: %w", e.name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("%s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
