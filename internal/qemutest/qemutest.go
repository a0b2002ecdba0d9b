// Package qemutest runs a test binary inside a Debian kernel booted under
// QEMU, for the cases this machine's own kernel cannot run (it has no
// IPVS). The guest is a busybox initrd whose /init loads the kernel modules
// the case needs, runs the binary, prints its exit status on the serial
// console and powers off; the host reads the console.
//
// A host test uses it in three steps: FindKernel (the unpacked kernel
// package, fetched with hack/ipvs-kernel.sh when apt-get can), Initrd.Write
// (busybox, the modules with their dependencies, and the binary), Boot.
package qemutest

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Kernel is an unpacked Debian linux-image package.
type Kernel struct {
	// Vmlinuz is the kernel image.
	Vmlinuz string
	// Modules is lib/modules/<version>.
	Modules string
}

// FindKernel returns the kernel the VM tests boot: $HERALD_QEMU_KERNEL, else
// $LAB_DIR/ipvs-kernel, else .lab/ipvs-kernel at the module's root. When
// none is there, hack/ipvs-kernel.sh fetches it, as root with apt-get. The
// test is skipped, saying why, when qemu or busybox is missing or the
// kernel can be neither found nor fetched. Booting itself needs no root.
func FindKernel(t testing.TB) *Kernel {
	t.Helper()
	for _, bin := range []string{"qemu-system-x86_64", Busybox} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("qemutest: %s missing (apt-get install qemu-system-x86 busybox-static)", bin)
		}
	}
	root, err := moduleRoot()
	if err != nil {
		t.Skipf("qemutest: %v", err)
	}
	dir := os.Getenv("HERALD_QEMU_KERNEL")
	if dir == "" {
		lab := os.Getenv("LAB_DIR")
		if lab == "" {
			lab = filepath.Join(root, ".lab")
		}
		dir = filepath.Join(lab, "ipvs-kernel")
	}
	if k, err := kernelAt(dir); err == nil {
		return k
	}
	if _, err := exec.LookPath("apt-get"); err != nil || os.Geteuid() != 0 {
		t.Skipf("qemutest: no kernel in %s, and no apt-get or not root to fetch one (run hack/ipvs-kernel.sh as root)", dir)
	}
	start := time.Now()
	cmd := exec.Command("bash", filepath.Join(root, "hack/ipvs-kernel.sh"), dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("qemutest: hack/ipvs-kernel.sh could not fetch the kernel: %v\n%s", err, out)
	}
	t.Logf("qemutest: fetched the kernel into %s in %s", dir, time.Since(start).Round(time.Millisecond))
	k, err := kernelAt(dir)
	if err != nil {
		t.Fatalf("qemutest: %v", err)
	}
	return k
}

// Busybox is the static busybox the guest runs (Debian's busybox-static).
const Busybox = "/bin/busybox"

func kernelAt(dir string) (*Kernel, error) {
	vmlinuz, _ := filepath.Glob(filepath.Join(dir, "boot/vmlinuz-*"))
	mods, _ := filepath.Glob(filepath.Join(dir, "lib/modules/*"))
	if len(vmlinuz) != 1 || len(mods) != 1 {
		return nil, fmt.Errorf("no kernel in %s (want one boot/vmlinuz-* and one lib/modules/*)", dir)
	}
	return &Kernel{Vmlinuz: vmlinuz[0], Modules: mods[0]}, nil
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// ModuleOrder lists the files of the named modules and of everything they
// depend on, each after its dependencies: the order insmod needs. The
// dependencies come from each module's .modinfo section (the package ships
// no modules.dep; depmod makes that at install). Names are as modprobe
// takes them (ip_vs_rr; - and _ are the same).
func (k *Kernel) ModuleOrder(names ...string) ([]string, error) {
	files := map[string]string{}
	err := filepath.WalkDir(filepath.Join(k.Modules, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".ko") {
			files[modName(strings.TrimSuffix(d.Name(), ".ko"))] = p
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	var order []string
	state := map[string]int{} // 1: visiting, 2: done
	var visit func(name, from string) error
	visit = func(name, from string) error {
		name = modName(name)
		switch state[name] {
		case 1:
			return fmt.Errorf("module %s: dependency cycle", name)
		case 2:
			return nil
		}
		p, ok := files[name]
		if !ok {
			return fmt.Errorf("module %s (needed by %s) is not in %s", name, from, k.Modules)
		}
		state[name] = 1
		deps, err := moduleDepends(p)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, p)
		return nil
	}
	for _, n := range names {
		if err := visit(n, "the test"); err != nil {
			return nil, err
		}
	}
	return order, nil
}

func modName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// moduleDepends reads depends= from a module's .modinfo section.
func moduleDepends(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("%s: no .modinfo section", path)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("%s: .modinfo: %w", path, err)
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok && len(v) > 0 {
			return strings.Split(string(v), ","), nil
		}
	}
	return nil, nil
}

// Initrd describes the guest's initramfs.
type Initrd struct {
	// Modules are loaded with insmod in this order (ModuleOrder's output).
	Modules []string
	// Binary is run as /test with Args and Env; its exit status is the
	// verdict.
	Binary string
	Args   []string
	Env    []string
}

// The console lines /init prints around the binary's run; Boot looks for
// them.
const (
	startMarker = "QEMUTEST-START"
	exitMarker  = "QEMUTEST-EXIT:"
)

// initScript is /init: mount what a Go program expects (/proc for
// sysctls, /sys, a /tmp), load the modules, run the test, power off. panic=-1
// and -no-reboot turn any kernel panic into QEMU exiting.
func (r *Initrd) initScript(modules []string) string {
	var b strings.Builder
	b.WriteString("#!/bin/busybox sh\n/bin/busybox --install -s /bin\n")
	b.WriteString("mount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t tmpfs tmp /tmp\nmkdir -p /run/netns\n")
	b.WriteString("ip link set lo up\n")
	for _, m := range modules {
		fmt.Fprintf(&b, "insmod /%s || echo 'qemutest: insmod %s failed'\n", m, m)
	}
	fmt.Fprintf(&b, "echo %s\n", startMarker)
	fmt.Fprintf(&b, "env %s /test %s\n", shellQuote(r.Env), shellQuote(r.Args))
	fmt.Fprintf(&b, "echo %s $?\n", exitMarker)
	b.WriteString("poweroff -f\n")
	return b.String()
}

func shellQuote(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// Write packs the initrd into path: a newc cpio, which the kernel unpacks
// into its rootfs.
func (r *Initrd) Write(path string) error {
	a := newCpio()
	for _, d := range []string{"bin", "proc", "sys", "tmp", "dev", "run", "lib"} {
		a.dir(d)
	}
	if err := a.file("bin/busybox", Busybox, 0o755); err != nil {
		return err
	}
	if err := a.file("test", r.Binary, 0o755); err != nil {
		return err
	}
	var mods []string
	for i, m := range r.Modules {
		name := fmt.Sprintf("lib/%02d-%s", i, filepath.Base(m))
		if err := a.file(name, m, 0o644); err != nil {
			return err
		}
		mods = append(mods, name)
	}
	a.bytes("init", []byte(r.initScript(mods)), 0o755)
	return a.write(path)
}

// Result is what a boot printed and how the binary ended.
type Result struct {
	// Console is everything the guest printed on its serial console.
	Console string
	// Output is the console from the binary's start to its exit line.
	Output string
	// ExitCode is the binary's exit status; -1 if it never reported one.
	ExitCode int
	Wall     time.Duration
}

var exitLine = regexp.MustCompile(exitMarker + ` (\d+)`)

// Boot runs the kernel with the initrd under software emulation (this
// machine's CPU has no virtualisation flags) until the guest powers off
// or ctx ends.
func (k *Kernel) Boot(ctx context.Context, initrd string) (Result, error) {
	start := time.Now()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64",
		"-m", "512", "-smp", "1", "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
		"-kernel", k.Vmlinuz, "-initrd", initrd,
		"-append", "console=ttyS0 quiet panic=-1 oops=panic")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	res := Result{Console: strings.ReplaceAll(out.String(), "\r\n", "\n"), ExitCode: -1, Wall: time.Since(start)}
	if i := strings.Index(res.Console, startMarker); i >= 0 {
		res.Output = res.Console[i+len(startMarker):]
	}
	if m := exitLine.FindStringSubmatchIndex(res.Output); m != nil {
		fmt.Sscan(res.Output[m[2]:m[3]], &res.ExitCode)
		res.Output = res.Output[:m[0]]
	}
	res.Output = strings.TrimSpace(res.Output)
	if err != nil {
		return res, fmt.Errorf("qemu: %w", err)
	}
	return res, nil
}
