package qemutest

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestInitrdIsNewcCpio: the kernel unpacks only the newc format, with the
// header and the name padded to 4 bytes and a trailer at the end.
func TestInitrdIsNewcCpio(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.WriteFile(bin, []byte("12345"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(Busybox); err != nil {
		t.Skipf("%s missing (busybox-static)", Busybox)
	}
	out := filepath.Join(dir, "initrd.cpio")
	r := Initrd{Binary: bin, Args: []string{"-test.run", "it's"}, Env: []string{"A=1"}}
	if err := r.Write(out); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for off := 0; off < len(data); {
		h := string(data[off : off+110])
		if h[:6] != "070701" {
			t.Fatalf("entry at %d: magic %q", off, h[:6])
		}
		size, nameSize := hex(t, h[54:62]), hex(t, h[94:102])
		name := string(data[off+110 : off+110+nameSize-1])
		names = append(names, name)
		off = align(off+110+nameSize) + size
		off = align(off)
		if name == "test" && !bytes.Equal(data[off-8:off-3], []byte("12345")) {
			t.Errorf("test's content is not the binary's")
		}
		if name == "TRAILER!!!" {
			break
		}
	}
	for _, want := range []string{"bin/busybox", "init", "test", "TRAILER!!!"} {
		if !slices.Contains(names, want) {
			t.Errorf("entries %v: no %s", names, want)
		}
	}
	if init := r.initScript(nil); !strings.Contains(init, `env 'A=1' /test '-test.run' 'it'\''s'`) {
		t.Errorf("/init does not run the binary with its arguments quoted:\n%s", init)
	}
}

func hex(t *testing.T, s string) int {
	var n int
	for _, c := range s {
		n *= 16
		switch {
		case c >= '0' && c <= '9':
			n += int(c - '0')
		case c >= 'A' && c <= 'F':
			n += int(c-'A') + 10
		default:
			t.Fatalf("bad hex %q", s)
		}
	}
	return n
}

func align(n int) int { return (n + 3) &^ 3 }

// TestModuleOrderLoadsDependenciesFirst reads the real kernel package's
// module metadata: ip_vs_rr needs ip_vs, which needs nf_conntrack.
func TestModuleOrderLoadsDependenciesFirst(t *testing.T) {
	k := FindKernel(t)
	order, err := k.ModuleOrder("ip_vs_rr", "nft_masq")
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, p := range order {
		pos[strings.TrimSuffix(filepath.Base(p), ".ko")] = i + 1
	}
	for _, pair := range [][2]string{{"nf_conntrack", "ip_vs"}, {"ip_vs", "ip_vs_rr"}, {"nf_tables", "nft_masq"}, {"nf_nat", "nft_masq"}} {
		if pos[pair[0]] == 0 || pos[pair[1]] == 0 || pos[pair[0]] > pos[pair[1]] {
			t.Errorf("order %v: want %s before %s", order, pair[0], pair[1])
		}
	}
	if _, err := k.ModuleOrder("no_such_module"); err == nil {
		t.Error("an unknown module: no error")
	}
}
