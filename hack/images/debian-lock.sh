#!/usr/bin/env bash
# Rewrites hack/images/debian.lock: the current bookworm versions, from this
# machine's apt, of nft and the packages of the libraries it loads, for
# amd64 and arm64. Run it when a pinned package has left the mirror (Debian
# drops superseded versions) or to take security updates; needs root (it
# adds the arm64 architecture to dpkg for the listing and removes it again).
set -euo pipefail
cd "$(dirname "$0")"
pkgs="nftables libnftables1 libedit2 libc6 libmnl0 libnftnl11 libxtables12 libjansson4 libgmp10 libtinfo6 libbsd0 libmd0"
added=0
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
  added=1
fi
trap '[ $added = 1 ] && dpkg --remove-architecture arm64 && apt-get update -qq' EXIT
apt-get update -qq
uris=$(apt-get download --print-uris $pkgs $(for p in $pkgs; do echo "$p:arm64"; done))
{
  sed -n '1,/^# arch package/p' debian.lock
  # 'URL' FILE SIZE SHA256:HASH -> arch package version size hash path
  echo "$uris" | sed -E "s|^'http://deb.debian.org/debian/([^']+)' ([^_]+)_([^_]+)_([a-z0-9]+)\.deb ([0-9]+) SHA256:([0-9a-f]+)$|\4 \2 \3 \5 \6 \1|" |
    sed -E 's/%3a/:/' | sort
} > debian.lock.new
mv debian.lock.new debian.lock
echo "wrote $(grep -vc '^#' debian.lock) packages into hack/images/debian.lock"
