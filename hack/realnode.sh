#!/usr/bin/env bash
# Runs a real kubelet (v1.37) and containerd (2.x) in a network namespace
# against a real API server of its own, and pods on it: the prototype of a
# lab node that is a real node (TestRealKubeletRunsPods in e2etest/lab).
# Needs root, runc and containernetworking-plugins (Debian packages, which
# .ci/run installs); takes no lab lock and uses no lab namespace or port.
set -euo pipefail
cd "$(dirname "$0")/.."
for p in runc containernetworking-plugins; do
  dpkg -s "$p" >/dev/null 2>&1 || { echo "realnode: missing Debian package $p (apt-get install $p)" >&2; exit 1; }
done
bash e2etest/tools/build.sh          # etcd, kube-apiserver, kube-controller-manager
bash e2etest/tools/build.sh realnode # kubelet, containerd, containerd-shim-runc-v2, ctr
HERALD_REALNODE=1 go test -count=1 -v -timeout 10m -run 'TestRealKubeletRunsPods' ./e2etest/lab/
