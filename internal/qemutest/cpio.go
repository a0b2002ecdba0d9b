package qemutest

import (
	"bytes"
	"fmt"
	"os"
)

// cpioArchive writes the "newc" cpio format the kernel's initramfs
// unpacker reads (Documentation/driver-api/early-userspace/buffer-format.rst):
// per entry a 110-byte ASCII header, the name, the data, each padded to 4
// bytes; a TRAILER!!! entry ends it. Written here so that the host needs no
// cpio tool.
type cpioArchive struct {
	buf bytes.Buffer
	ino int
}

func newCpio() *cpioArchive { return &cpioArchive{ino: 1} }

const (
	cpioDir  = 0o040000
	cpioFile = 0o100000
)

func (a *cpioArchive) entry(name string, mode int, data []byte) {
	a.ino++
	nlink := 1
	if mode&cpioDir != 0 {
		nlink = 2
	}
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
	// devminor, rdevmajor, rdevminor, namesize, check
	fmt.Fprintf(&a.buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		a.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	a.buf.WriteString(name)
	a.buf.WriteByte(0)
	a.pad()
	a.buf.Write(data)
	a.pad()
}

func (a *cpioArchive) pad() {
	for a.buf.Len()%4 != 0 {
		a.buf.WriteByte(0)
	}
}

func (a *cpioArchive) dir(name string) { a.entry(name, cpioDir|0o755, nil) }

func (a *cpioArchive) bytes(name string, data []byte, perm int) {
	a.entry(name, cpioFile|perm, data)
}

func (a *cpioArchive) file(name, src string, perm int) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("initrd: %w", err)
	}
	a.bytes(name, data, perm)
	return nil
}

// write ends the archive and writes it. Not compressed: the kernel takes
// a plain cpio, gzip under the race detector (`go test -race`, the unit
// phase) took 6 s for the 25 MB, and the guest then saves decompressing it
// under emulation.
func (a *cpioArchive) write(path string) error {
	a.entry("TRAILER!!!", 0, nil)
	return os.WriteFile(path, a.buf.Bytes(), 0o644)
}
