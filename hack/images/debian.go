package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ulikunitz/xz"
)

// The speaker's nftables dataplane (the chart's default) runs nft, which is
// dynamically linked: its image carries nft and the libraries it loads, with
// their copyright files, taken from Debian bookworm's packages as pinned in
// debian.lock. Nothing else of those packages goes in: no shell, no
// package database.

//go:embed debian.lock
var debianLock string

// mirror serves the pinned packages' paths.
const mirror = "https://deb.debian.org/debian/"

// deb is one pinned package file.
type deb struct {
	arch, pkg, version string
	size               int64
	sha256, path       string
}

func parseDebianLock(s string) ([]deb, error) {
	var out []deb
	for i, line := range strings.Split(s, "\n") {
		if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 6 {
			return nil, fmt.Errorf("debian.lock line %d: %d fields, want arch package version size sha256 path", i+1, len(f))
		}
		size, err := strconv.ParseInt(f[3], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("debian.lock line %d: size: %w", i+1, err)
		}
		if _, err := hex.DecodeString(f[4]); err != nil || len(f[4]) != 64 {
			return nil, fmt.Errorf("debian.lock line %d: %q is not a SHA-256", i+1, f[4])
		}
		out = append(out, deb{arch: f[0], pkg: f[1], version: f[2], size: size, sha256: f[4], path: f[5]})
	}
	return out, nil
}

// triplets are Debian's multiarch library directories, by Go architecture.
var triplets = map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}

// keepFile reports whether a package's file may go into the image: nft, the
// shared libraries at the top of the multiarch library directories (not
// their plugin subdirectories), the dynamic loader's link, and each
// package's copyright. Of the libraries, only those nft loads stay
// (loaded).
func keepFile(name, arch, pkg string) bool {
	t := triplets[arch]
	switch dir, base := path.Split(name); {
	case name == "usr/sbin/nft":
		return true
	case name == "usr/share/doc/"+pkg+"/copyright":
		return true
	case dir == "lib/"+t+"/" || dir == "usr/lib/"+t+"/":
		return strings.Contains(base, ".so")
	case dir == "lib64/" || dir == "lib/":
		return strings.HasPrefix(base, "ld-linux")
	}
	return false
}

// toolsLayer is the tar of the files keepFile picks from arch's pinned
// packages: parents before children, owned by root, stamped created.
// Packages are downloaded into cache once and checked against the pin.
func toolsLayer(cache, arch string, created time.Time) ([]byte, error) {
	debs, err := parseDebianLock(debianLock)
	if err != nil {
		return nil, err
	}
	type file struct {
		hdr  tar.Header
		data []byte
	}
	files := map[string]file{}
	n := 0
	for _, d := range debs {
		if d.arch != arch {
			continue
		}
		n++
		b, err := fetchDeb(cache, d)
		if err != nil {
			return nil, err
		}
		tr, err := debData(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.path, err)
		}
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", d.path, err)
			}
			name := strings.TrimPrefix(h.Name, "./")
			if (h.Typeflag != tar.TypeReg && h.Typeflag != tar.TypeSymlink) || !keepFile(name, arch, d.pkg) {
				continue
			}
			data, err := io.ReadAll(tr)
			if err != nil {
				return nil, fmt.Errorf("%s: %s: %w", d.path, name, err)
			}
			files[name] = file{hdr: tar.Header{Name: name, Typeflag: h.Typeflag, Linkname: h.Linkname, Mode: h.Mode & 0o755}, data: data}
		}
	}
	if n == 0 {
		return nil, fmt.Errorf("debian.lock pins no package for %s", arch)
	}
	loads, err := loaded(arch, "usr/sbin/nft", func(name string) (tar.Header, []byte, bool) {
		f, ok := files[name]
		return f.hdr, f.data, ok
	})
	if err != nil {
		return nil, fmt.Errorf("%s packages of debian.lock: %w", arch, err)
	}
	for name := range files {
		if !loads[name] && !strings.HasPrefix(name, "usr/share/doc/") {
			delete(files, name)
		}
	}
	for name := range files {
		for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
			if _, ok := files[dir+"/"]; !ok {
				files[dir+"/"] = file{hdr: tar.Header{Name: dir + "/", Typeflag: tar.TypeDir, Mode: 0o755}}
			}
		}
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range names {
		f := files[name]
		h := f.hdr
		h.ModTime, h.Format = created, tar.FormatPAX
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(f.data))
		}
		if err := tw.WriteHeader(&h); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// loaded lists the files program needs to run: itself, its ELF interpreter
// and the shared libraries it and they need (DT_NEEDED, looked up in the
// multiarch library directories as the loader does), each with the
// symbolic links that lead to it. file looks a path up.
func loaded(arch, program string, file func(string) (tar.Header, []byte, bool)) (map[string]bool, error) {
	t := triplets[arch]
	out := map[string]bool{}
	// follow keeps name and the links from it; it returns the file's path.
	follow := func(name string) (string, bool) {
		for range 8 {
			h, _, ok := file(name)
			if !ok {
				return "", false
			}
			out[name] = true
			if h.Typeflag != tar.TypeSymlink {
				return name, true
			}
			if strings.HasPrefix(h.Linkname, "/") {
				name = strings.TrimPrefix(h.Linkname, "/")
			} else {
				name = path.Join(path.Dir(name), h.Linkname)
			}
		}
		return "", false
	}
	queue := []string{program}
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		real, ok := follow(name)
		if !ok {
			return nil, fmt.Errorf("%s: not in the packages", name)
		}
		_, data, _ := file(real)
		f, err := elf.NewFile(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", real, err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				interp, err := io.ReadAll(p.Open())
				if err != nil {
					return nil, fmt.Errorf("%s: interpreter: %w", real, err)
				}
				if i := strings.TrimPrefix(strings.TrimRight(string(interp), "\x00"), "/"); !out[i] {
					queue = append(queue, i)
				}
			}
		}
		libs, err := f.ImportedLibraries()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", real, err)
		}
		for _, lib := range libs {
			found := ""
			for _, dir := range []string{"lib/" + t, "usr/lib/" + t} {
				if _, _, ok := file(path.Join(dir, lib)); ok {
					found = path.Join(dir, lib)
					break
				}
			}
			if found == "" {
				return nil, fmt.Errorf("%s needs %s: in none of the packages", real, lib)
			}
			if !out[found] {
				queue = append(queue, found)
			}
		}
	}
	return out, nil
}

// fetchDeb returns the package file d pins, from cache or the mirror
// (saved into cache), refusing one whose size or SHA-256 differs.
func fetchDeb(cache string, d deb) ([]byte, error) {
	file := filepath.Join(cache, d.sha256+".deb")
	if b, err := os.ReadFile(file); err == nil && checkDeb(b, d) == nil {
		return b, nil
	}
	c := &http.Client{Timeout: 5 * time.Minute}
	resp, err := c.Get(mirror + d.path)
	if err != nil {
		return nil, fmt.Errorf("download %s: %w", d.path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("download %s%s: %s (a pin that left the mirror: run hack/images/debian-lock.sh)", mirror, d.path, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, d.size+1))
	if err != nil {
		return nil, fmt.Errorf("download %s: %w", d.path, err)
	}
	if err := checkDeb(b, d); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, err
	}
	return b, os.WriteFile(file, b, 0o644)
}

func checkDeb(b []byte, d deb) error {
	if int64(len(b)) != d.size {
		return fmt.Errorf("%s: %d bytes, the pin says %d", d.path, len(b), d.size)
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != d.sha256 {
		return fmt.Errorf("%s: SHA-256 %x, the pin says %s", d.path, sum, d.sha256)
	}
	return nil
}

// debData opens a .deb's data.tar.xz: a .deb is an ar archive of
// debian-binary, control.tar.* and data.tar.*.
func debData(b []byte) (*tar.Reader, error) {
	const magic = "!<arch>\n"
	if !bytes.HasPrefix(b, []byte(magic)) {
		return nil, errors.New("not an ar archive")
	}
	for off := len(magic); off+60 <= len(b); {
		h := b[off : off+60]
		name := strings.TrimSuffix(strings.TrimSpace(string(h[0:16])), "/")
		size, err := strconv.Atoi(strings.TrimSpace(string(h[48:58])))
		if err != nil || size < 0 || off+60+size > len(b) {
			return nil, fmt.Errorf("ar member %q: bad size", name)
		}
		data := b[off+60 : off+60+size]
		switch {
		case name == "data.tar.xz":
			r, err := xz.NewReader(bytes.NewReader(data))
			if err != nil {
				return nil, fmt.Errorf("data.tar.xz: %w", err)
			}
			return tar.NewReader(r), nil
		case strings.HasPrefix(name, "data.tar"):
			return nil, fmt.Errorf("%s: only data.tar.xz is read", name)
		}
		off += 60 + size + size%2
	}
	return nil, errors.New("no data.tar member")
}
