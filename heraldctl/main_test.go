package main

import (
	"bytes"
	"strings"
	"testing"
)

const tutorial = "migrate/testdata/corpus/configmap-l2-tutorial.yaml"

func runCmd(stdin string, args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// The tutorial's ConfigMap translates to its pool and L2Advertisement on
// stdout, the report on stderr, and passes --check.
func TestMigrateWritesHeraldObjectsAndPassesCheck(t *testing.T) {
	code, out, errs := runCmd("", "heraldctl", "migrate", "-f", tutorial, "--check")
	if code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, errs)
	}
	for _, want := range []string{"kind: IPAddressPool", "name: default", "- 192.168.1.240-192.168.1.250", "kind: L2Advertisement"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errs, "2 objects written; 0 not translated") {
		t.Errorf("stderr: %s", errs)
	}
}

// --check exits 3 when something is LOST or left to do by hand; without
// --check the translation of what can be translated is still written.
func TestCheckFailsOnWhatDoesNotTranslate(t *testing.T) {
	lossy := "migrate/testdata/corpus/lossy.yaml"
	code, out, errs := runCmd("", "heraldctl", "migrate", "--check", "-f", lossy)
	if code != exitIncomplete {
		t.Errorf("--check: exit %d, want %d", code, exitIncomplete)
	}
	if !strings.Contains(errs, "LOST   L2Advertisement metallb-system/preferring: spec.preferredNodeSelectors") {
		t.Errorf("the report does not list preferredNodeSelectors:\n%s", errs)
	}
	if !strings.Contains(out, "name: backwards") {
		t.Errorf("the translatable part is not written:\n%s", out)
	}
	if code, _, _ := runCmd("", "heraldctl", "migrate", "-f", lossy); code != 0 {
		t.Errorf("without --check: exit %d, want 0", code)
	}
}

// Several -f, and - for stdin, are read together.
func TestMigrateReadsSeveralFilesAndStdin(t *testing.T) {
	stdin := "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: extra\n  namespace: metallb-system\nspec:\n  addresses: [198.51.100.0/28]\n"
	code, out, errs := runCmd(stdin, "heraldctl", "migrate", "-f", tutorial, "-f", "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "name: default") || !strings.Contains(out, "name: extra") {
		t.Errorf("stdout:\n%s", out)
	}
}

// Installed as kubectl-herald, kubectl runs it as "kubectl herald migrate":
// the same arguments follow, and its usage names it so.
func TestRunsAsAKubectlPlugin(t *testing.T) {
	code, out, errs := runCmd("", "/usr/local/bin/kubectl-herald", "migrate", "-f", tutorial)
	if code != 0 || !strings.Contains(out, "kind: IPAddressPool") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
	}
	code, _, errs = runCmd("", "/usr/local/bin/kubectl-herald")
	if code != exitUsage || !strings.Contains(errs, "usage: kubectl herald migrate") {
		t.Errorf("exit %d, usage %q", code, errs)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"heraldctl"}, {"heraldctl", "frobnicate"}, {"heraldctl", "migrate", "extra-arg"}, {"heraldctl", "migrate", "--no-such-flag"}} {
		if code, _, _ := runCmd("", args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
	if code, _, errs := runCmd("", "heraldctl", "migrate", "-f", "does-not-exist.yaml"); code != exitError || !strings.Contains(errs, "does-not-exist.yaml") {
		t.Errorf("a missing file: exit %d, %q", code, errs)
	}
}

func TestFieldsPrintsTheMappingTable(t *testing.T) {
	code, out, _ := runCmd("", "heraldctl", "migrate", "--fields")
	if code != 0 || !strings.HasPrefix(out, "| MetalLB | Herald | how |") || !strings.Contains(out, "| `BGPPeer spec.password` | `BGPPeer spec.passwordSecret` |") {
		t.Errorf("exit %d:\n%s", code, out)
	}
}

func TestVersionNamesTheReleaseAndRevision(t *testing.T) {
	for _, arg := range []string{"version", "--version"} {
		code, out, _ := runCmd("", "heraldctl", arg)
		if code != 0 || !strings.HasPrefix(out, "heraldctl (devel) (revision ") {
			t.Errorf("%s: exit %d, %q, want heraldctl, the version and the revision", arg, code, out)
		}
	}
}
