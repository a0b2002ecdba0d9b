package lab

import (
	"fmt"
	"io"
	"runtime"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/heraldlb/herald/internal/imagebuild"
)

// WriteImage writes the image of one static binary (imagebuild.Image, for
// this machine's architecture) named ref (a full reference with a tag, e.g.
// "lab.invalid/labpod:1") as an image archive that `ctr images import`
// reads: a lab node with a real kubelet gets its images without a registry.
func WriteImage(w io.Writer, ref string, s imagebuild.Spec, binary []byte) error {
	tag, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		return fmt.Errorf("image %q: want a reference with a tag: %w", ref, err)
	}
	img, err := imagebuild.Image(s, v1.Platform{OS: "linux", Architecture: runtime.GOARCH}, binary)
	if err != nil {
		return err
	}
	return tarball.Write(tag, img, w)
}
