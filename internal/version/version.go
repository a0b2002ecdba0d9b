// Package version tells which release of Herald a binary is.
//
// The release build stamps both variables with the linker (make images,
// hack/images):
//
//	-ldflags "-X github.com/heraldlb/herald/internal/version.version=0.1.0
//	          -X github.com/heraldlb/herald/internal/version.revision=<commit>"
//
// The version has one source, the chart's appVersion (charts/herald/Chart.yaml);
// make release-check holds the chart, the image tags and the CRDs to it.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set by the linker; a plain `go build` leaves them empty.
var (
	version  string
	revision string
)

// Version is the release, e.g. "0.1.0"; "(devel)" when the build was not
// stamped.
func Version() string {
	if version != "" {
		return version
	}
	return "(devel)"
}

// Revision is the git commit the binary was built from, stamped or, failing
// that, the one the go command recorded (vcs.revision, with "-dirty" when the
// tree had changes); "unknown" when neither is known.
func Revision() string {
	if revision != "" {
		return revision
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	switch {
	case rev == "":
		return "unknown"
	case dirty:
		return rev + "-dirty"
	}
	return rev
}

// String is the line --version prints for program: its name, the version,
// the revision and the Go toolchain, e.g.
// "herald-speaker 0.1.0 (revision 39a4914..., go1.26.8 linux/arm64)".
func String(program string) string {
	return fmt.Sprintf("%s %s (revision %s, %s %s/%s)", program, Version(), Revision(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
