package version

import (
	"strings"
	"testing"
)

func TestUnstampedBuildSaysDevel(t *testing.T) {
	if got := Version(); got != "(devel)" {
		t.Errorf("Version() = %q in an unstamped test binary, want (devel)", got)
	}
}

func TestStampedVersionAndRevisionAreWhatStringPrints(t *testing.T) {
	defer func(v, r string) { version, revision = v, r }(version, revision)
	version, revision = "1.2.3", "0123abcd"
	got := String("herald-controller")
	if !strings.HasPrefix(got, "herald-controller 1.2.3 (revision 0123abcd, go") {
		t.Errorf("String() = %q, want it to start with the program, 1.2.3 and revision 0123abcd", got)
	}
}
