package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/ulikunitz/xz"
)

// The pins name the same packages, at the same versions, for both
// platforms, nftables among them.
func TestDebianLockPinsOnePackageSetForBothPlatforms(t *testing.T) {
	debs, err := parseDebianLock(debianLock)
	if err != nil {
		t.Fatal(err)
	}
	byArch := map[string][]string{}
	for _, d := range debs {
		if !strings.HasSuffix(d.path, "_"+d.arch+".deb") {
			t.Errorf("%s %s: path %s is not its architecture's", d.arch, d.pkg, d.path)
		}
		byArch[d.arch] = append(byArch[d.arch], d.pkg+" "+d.version)
	}
	if len(byArch) != 2 || !slices.Equal(byArch["amd64"], byArch["arm64"]) {
		t.Errorf("pins differ between platforms: %v", byArch)
	}
	if !slices.ContainsFunc(byArch["amd64"], func(s string) bool { return strings.HasPrefix(s, "nftables ") }) {
		t.Errorf("no nftables pinned: %v", byArch["amd64"])
	}
}

func TestDebianLockRefusesMalformedLines(t *testing.T) {
	for _, bad := range []string{
		"amd64 nftables 1.0 70292 abc pool/x.deb",                                                               // not a SHA-256
		"amd64 nftables 1.0 big " + strings.Repeat("a", 64) + " pool/x.deb",                                     // size
		"amd64 nftables 1.0 70292 " + strings.Repeat("a", 64),                                                   // no path
		"amd64 nftables 1.0 70292 " + strings.Repeat("g", 64) + " pool/x.deb",                                   // not hex
		"amd64 nftables 1.0 70292 " + strings.Repeat("a", 64) + " pool/x.deb extra",                             // a field too many
		"# comment\namd64 nftables 1.0 70292 " + strings.Repeat("a", 63) + " pool/x.deb",                        // short hash
		"amd64 nftables 1.0 -1x " + strings.Repeat("a", 64) + " pool/x.deb",                                     // size again
		"\n\namd64 libc6 2.36 1 " + strings.Repeat("a", 64) + " pool/c.deb\nbroken line\n",                      // second line
		"arm64 libc6 2.36 1 " + strings.Repeat("a", 64) + " pool/c.deb\namd64 x 1 1 " + strings.Repeat("z", 64), // second line's hash
	} {
		if _, err := parseDebianLock(bad); err == nil {
			t.Errorf("%q parsed, want an error", bad)
		}
	}
}

func TestKeepFileTakesNftTopLevelLibrariesTheLoaderAndCopyright(t *testing.T) {
	for _, tc := range []struct {
		name, arch, pkg string
		want            bool
	}{
		{"usr/sbin/nft", "amd64", "nftables", true},
		{"usr/lib/x86_64-linux-gnu/libnftables.so.1.1.0", "amd64", "libnftables1", true},
		{"lib/x86_64-linux-gnu/libc.so.6", "amd64", "libc6", true},
		{"lib64/ld-linux-x86-64.so.2", "amd64", "libc6", true},
		{"lib/ld-linux-aarch64.so.1", "arm64", "libc6", true},
		{"usr/lib/aarch64-linux-gnu/libmnl.so.0", "arm64", "libmnl0", true},
		{"usr/share/doc/libc6/copyright", "amd64", "libc6", true},
		// Another architecture's directory, plugins, tools and docs stay out.
		{"usr/lib/aarch64-linux-gnu/libmnl.so.0", "amd64", "libmnl0", false},
		{"usr/lib/x86_64-linux-gnu/gconv/UTF-16.so", "amd64", "libc6", false},
		{"usr/lib/x86_64-linux-gnu/xtables/libxt_mark.so", "amd64", "libxtables12", false},
		{"usr/sbin/iconvconfig", "amd64", "libc6", false},
		{"usr/share/doc/libc6/changelog.Debian.gz", "amd64", "libc6", false},
		{"usr/share/doc/nftables/copyright", "amd64", "libnftables1", false},
		{"etc/nftables.conf", "amd64", "nftables", false},
		{"bin/sh", "amd64", "dash", false},
	} {
		if got := keepFile(tc.name, tc.arch, tc.pkg); got != tc.want {
			t.Errorf("keepFile(%s, %s, %s) = %v, want %v", tc.name, tc.arch, tc.pkg, got, tc.want)
		}
	}
}

// debData finds data.tar.xz among a .deb's members, past an odd-sized one
// (ar pads members to even offsets).
func TestDebDataReadsTheDataMemberOfAnArArchive(t *testing.T) {
	var data bytes.Buffer
	xw, err := xz.NewWriter(&data)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(xw)
	if err := tw.WriteHeader(&tar.Header{Name: "./usr/sbin/nft", Mode: 0o755, Size: 3, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte("ELF")); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := xw.Close(); err != nil {
		t.Fatal(err)
	}
	ar := func(members ...[2]string) []byte {
		b := []byte("!<arch>\n")
		for _, m := range members {
			b = fmt.Appendf(b, "%-16s%-12s%-6s%-6s%-8s%-10d`\n", m[0], "0", "0", "0", "100644", len(m[1]))
			b = append(b, m[1]...)
			if len(m[1])%2 == 1 {
				b = append(b, '\n')
			}
		}
		return b
	}
	deb := ar([2]string{"debian-binary", "2.0\n"}, [2]string{"control.tar.xz", "odd"}, [2]string{"data.tar.xz", data.String()})
	tr, err := debData(deb)
	if err != nil {
		t.Fatal(err)
	}
	h, err := tr.Next()
	if err != nil || h.Name != "./usr/sbin/nft" {
		t.Fatalf("first entry %v, %v; want ./usr/sbin/nft", h, err)
	}
	if b, _ := io.ReadAll(tr); string(b) != "ELF" {
		t.Errorf("contents %q, want ELF", b)
	}
	for _, bad := range [][]byte{
		[]byte("not an archive"),
		ar([2]string{"debian-binary", "2.0\n"}),                 // no data member
		ar([2]string{"data.tar.zst", "zstd"}),                   // not xz
		append(ar([2]string{"debian-binary", "2.0\n"}), "x"...), // a truncated header
	} {
		if _, err := debData(bad); err == nil {
			t.Errorf("debData(%q) read, want an error", bad)
		}
	}
}
