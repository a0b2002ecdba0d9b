package ipvsvm

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldlb/herald/internal/qemutest"
)

// guestEnv is set by the VM's /init: the guest tests run only there.
const guestEnv = "HERALD_IPVS_GUEST"

// guestModules are the kernel modules the guest case needs, besides their
// dependencies (qemutest resolves those): IPVS with every scheduler
// Herald offers, veth and dummy links, and nftables' NAT pieces for the
// masquerade rule. crc32c_generic first: libcrc32c needs the algorithm at
// load time, which no module dependency says.
var guestModules = []string{
	"crc32c_generic",
	"ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_lc", "ip_vs_dh", "ip_vs_sh", "ip_vs_sed", "ip_vs_nq",
	"veth", "dummy",
	"nf_tables", "nf_nat", "nft_chain_nat", "nft_masq", "nft_ct",
}

// TestIPVSBackendInVM runs TestGuest* below inside a VM and fails with the
// guest's output if they fail there.
func TestIPVSBackendInVM(t *testing.T) {
	if os.Getenv(guestEnv) != "" {
		t.Skip("inside the VM already")
	}
	k := qemutest.FindKernel(t)
	start := time.Now()
	dir := t.TempDir()
	bin := filepath.Join(dir, "ipvsvm.test")
	// Static: the guest has no libc.
	build := exec.Command("go", "test", "-c", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the guest binary: %v\n%s", err, out)
	}
	built := time.Since(start)
	mods, err := k.ModuleOrder(guestModules...)
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(dir, "initrd.cpio")
	r := qemutest.Initrd{
		Modules: mods, Binary: bin, Env: []string{guestEnv + "=1"},
		Args: []string{"-test.v", "-test.run", "^TestGuest", "-test.timeout", "5m"},
	}
	if err := r.Write(initrd); err != nil {
		t.Fatal(err)
	}
	packed := time.Since(start) - built
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	res, err := k.Boot(ctx, initrd)
	t.Logf("wall time: build %s, initrd %s, VM %s (boot to power-off), total %s",
		built.Round(time.Millisecond), packed.Round(time.Millisecond), res.Wall.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("the guest failed (exit %d, qemu: %v); its console:\n%s", res.ExitCode, err, res.Console)
	}
	for _, l := range strings.Split(res.Output, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "---") || strings.Contains(l, "guest:") {
			t.Log(strings.TrimSpace(l))
		}
	}
}
