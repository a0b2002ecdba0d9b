#!/usr/bin/env bash
# Applies api/v1alpha1/testdata to an API server that has config/crd/bases
# installed: every valid sample must be accepted, every invalid one refused with
# the substring of its "# expect:" line. Valid samples are deleted again.
#
#   KUBECTL=.lab/bin/kubectl KUBECONFIG=... hack/check-crd-samples.sh
set -u
cd "$(dirname "$0")/.."
kubectl=${KUBECTL:-kubectl}
samples=api/v1alpha1/testdata
pass=0 fail=0
for f in "$samples"/valid/*.yaml; do
	if out=$("$kubectl" apply -f "$f" 2>&1); then
		pass=$((pass + 1))
	else
		fail=$((fail + 1))
		echo "FAIL $f: refused: $out"
	fi
	"$kubectl" delete --ignore-not-found -f "$f" >/dev/null 2>&1
done
for f in "$samples"/invalid/*.yaml; do
	want=$(sed -n 's/^# expect: //p' "$f")
	if out=$("$kubectl" apply -f "$f" 2>&1); then
		fail=$((fail + 1))
		echo "FAIL $f: accepted, want refusal with: $want"
		"$kubectl" delete --ignore-not-found -f "$f" >/dev/null 2>&1
	elif [[ $out == *"$want"* ]]; then
		pass=$((pass + 1))
	else
		fail=$((fail + 1))
		echo "FAIL $f: want refusal with: $want; got: $out"
	fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
