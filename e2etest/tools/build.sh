#!/usr/bin/env bash
# Builds the lab's pinned control-plane binaries from source modules into $OUT
# (default: <repo>/.lab/bin). A stamp holds the hash of the pinning go.mod/go.sum
# files; nothing is rebuilt while it matches.
#
# `build.sh realnode` builds instead what a lab node with a real kubelet runs:
# kubelet (this module) and containerd, its runc shim and ctr (./containerd,
# a module of its own: containerd's dependencies would move k8s.io/kubernetes'
# pins here). runc and the CNI plugins come from Debian (.ci/run).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$here/../../.lab/bin}
mkdir -p "$out"
out=$(cd "$out" && pwd)
if [ "${1:-}" = realnode ]; then
  stamp=$(cat "$here"/go.mod "$here"/go.sum "$here"/containerd/go.mod "$here"/containerd/go.sum "$0" | sha256sum | cut -c1-16)
  bins="kubelet containerd containerd-shim-runc-v2 ctr"
  ok=0
  if [ "$(cat "$out/.stamp-realnode" 2>/dev/null)" = "$stamp" ]; then
    ok=1
    for b in $bins; do [ -x "$out/$b" ] || ok=0; done
  fi
  if [ $ok = 1 ]; then echo "real node binaries up to date in $out"; exit 0; fi
  rm -f "$out/.stamp-realnode"
  start=$(date +%s)
  export CGO_ENABLED=0 GOFLAGS=-trimpath
  kv=$(cd "$here" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
  pkg=k8s.io/component-base/version
  (cd "$here" && go build -ldflags="-s -X $pkg.gitVersion=$kv -X $pkg.gitMajor=1 -X $pkg.gitMinor=$(echo "$kv" | cut -d. -f2) -X $pkg.gitTreeState=clean" \
    -o "$out/" k8s.io/kubernetes/cmd/kubelet)
  cv=$(cd "$here/containerd" && go list -m -f '{{.Version}}' github.com/containerd/containerd/v2)
  (cd "$here/containerd" && go build -tags urfave_cli_no_docs -ldflags="-s -X github.com/containerd/containerd/v2/version.Version=$cv" -o "$out/" \
    github.com/containerd/containerd/v2/cmd/containerd \
    github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
    github.com/containerd/containerd/v2/cmd/ctr)
  echo "$stamp" > "$out/.stamp-realnode"
  echo "built real node binaries in $(( $(date +%s) - start ))s into $out"
  exit 0
fi
stamp=$(cat "$here"/go.mod "$here"/go.sum "$here"/etcd/go.mod "$here"/etcd/go.sum "$0" | sha256sum | cut -c1-16)
bins="kube-apiserver kube-controller-manager kube-proxy kubectl etcd"
if [ "$(cat "$out/.stamp" 2>/dev/null)" = "$stamp" ]; then
  ok=1
  for b in $bins; do [ -x "$out/$b" ] || ok=0; done
  if [ $ok = 1 ]; then echo "lab binaries up to date in $out"; exit 0; fi
fi
rm -f "$out/.stamp"
start=$(date +%s)
export CGO_ENABLED=0 GOFLAGS=-trimpath
kv=$(cd "$here" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
minor=$(echo "$kv" | cut -d. -f2)
pkg=k8s.io/component-base/version
ldflags="-s -X $pkg.gitVersion=$kv -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
(cd "$here" && go build -ldflags="$ldflags" -o "$out/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-proxy \
  k8s.io/kubernetes/cmd/kubectl)
(cd "$here/etcd" && go build -ldflags=-s -o "$out/etcd" go.etcd.io/etcd/server/v3)
echo "$stamp" > "$out/.stamp"
echo "built lab binaries in $(( $(date +%s) - start ))s into $out"
