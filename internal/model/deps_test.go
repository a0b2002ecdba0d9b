package model_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestTheSpeakerDoesNotLinkTheAllocator keeps one address model: ranges,
// overlap and the pool lookup live in internal/iprange, which the model,
// the speaker and the allocator share, so neither the model nor the speaker
// needs the allocator (controller/ipam) and the speaker's binary does not
// carry it.
func TestTheSpeakerDoesNotLinkTheAllocator(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list dependencies:", err)
	}
	const allocator = "github.com/heraldlb/herald/controller/ipam"
	for _, pkg := range []string{"github.com/heraldlb/herald/internal/model", "github.com/heraldlb/herald/speaker"} {
		out, err := exec.Command(goBin, "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			if dep == allocator || strings.HasPrefix(dep, allocator+"/") {
				t.Errorf("%s depends on %s; take what it needs from internal/iprange", pkg, dep)
			}
		}
	}
}
