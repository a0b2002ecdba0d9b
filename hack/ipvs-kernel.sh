#!/usr/bin/env bash
# Fetch the Debian kernel the IPVS tests boot under QEMU (this machine's own
# kernel has no IPVS; see /work/shared/LAB.md and internal/qemutest) and
# unpack the parts they use: boot/vmlinuz-* and the modules under
# lib/modules/*/kernel/{net,crypto,lib,drivers/net}.
#
#   hack/ipvs-kernel.sh [DIR]   (default: $HERALD_QEMU_KERNEL, else $LAB_DIR/ipvs-kernel, else .lab/ipvs-kernel; prints DIR)
#
# Idempotent: does nothing when DIR already holds a kernel. Needs apt-get
# (Debian's archive reachable); the package is about 70 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-${HERALD_QEMU_KERNEL:-${LAB_DIR:-.lab}/ipvs-kernel}}
if compgen -G "$dir/boot/vmlinuz-*" >/dev/null; then
  echo "$dir"; exit 0
fi
# linux-image-amd64 is the metapackage; its dependency names the current
# kernel package (linux-image-6.1.0-NN-amd64 on Debian 12).
kernel_pkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
pkg=$(kernel_pkg)
if [ -z "$pkg" ]; then
  apt-get update -qq >&2 && pkg=$(kernel_pkg)
fi
if [ -z "$pkg" ]; then
  echo "ipvs-kernel: apt-cache knows no linux-image-amd64 (apt-get update?)" >&2; exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# apt-get download writes into the current directory; _apt cannot write to
# a root-owned mktemp dir, which only costs a warning.
(cd "$tmp" && apt-get download -q "$pkg" >&2)
mkdir -p "$dir.tmp"
dpkg-deb --fsys-tarfile "$tmp"/*.deb | tar -x -C "$dir.tmp" --wildcards \
  './boot/vmlinuz-*' './lib/modules/*/kernel/net' './lib/modules/*/kernel/crypto' \
  './lib/modules/*/kernel/lib' './lib/modules/*/kernel/drivers/net'
rm -rf "$dir"; mv "$dir.tmp" "$dir"
echo "$dir"
