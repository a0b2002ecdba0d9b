#!/usr/bin/env bash
# Runs a real kubelet (v1.37) and containerd (2.x) in a network namespace
# against a real API server of its own, with pods and then the chart (with
# the images make images builds) on it: the real-node tests of e2etest/lab,
# alone (make test runs them with the rest).
# Needs root, runc and containernetworking-plugins (Debian packages, which
# .ci/run installs) and root; holds the lab lock, as a lab does.
set -euo pipefail
cd "$(dirname "$0")/.."
for p in runc containernetworking-plugins; do
  dpkg -s "$p" >/dev/null 2>&1 || { echo "realnode: missing Debian package $p (apt-get install $p)" >&2; exit 1; }
done
make -s helm
bash e2etest/tools/build.sh          # etcd, kube-apiserver, kube-controller-manager, kube-proxy, kubectl
bash e2etest/tools/build.sh realnode # kubelet, containerd, containerd-shim-runc-v2, ctr
HERALD_REALNODE=1 go test -count=1 -v -timeout 10m -run '^(TestRealKubeletRunsPods|TestChartOnRealNode)$' ./e2etest/lab/
