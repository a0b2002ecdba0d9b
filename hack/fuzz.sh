#!/usr/bin/env bash
# Runs every Go fuzz target of the repository in turn, each for FUZZTIME
# (default 20s), gently: nice 19 and one worker, one target at a time, so a
# lab running beside it keeps its timings. Prints per target
#   bench: fuzz_<package>_<target>_execs N count
#   bench: fuzz_<package>_<target>_seconds S s
# and fails if any target fails; a failing input is kept under the
# package's testdata/fuzz/<target>/, where `go test` replays it from then on.
set -uo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-20s}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
failed=()
while IFS=: read -r file target; do
	pkg=./$(dirname "$file")
	name=fuzz_$(basename "$pkg")_$target
	start=$(date +%s%N)
	nice -n 19 "$GO" test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -parallel 1 "$pkg" >"$log" 2>&1
	rc=$?
	ms=$((($(date +%s%N) - start) / 1000000))
	execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
	echo "bench: ${name}_execs ${execs:-0} count"
	printf 'bench: %s_seconds %d.%d s\n' "$name" $((ms / 1000)) $((ms % 1000 / 100))
	if [ $rc -ne 0 ]; then
		cat "$log"
		failed+=("$pkg $target")
	fi
done < <(git grep --untracked -n -E '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' -- '*_test.go' | sed -E 's/^([^:]*):[0-9]+:func (Fuzz[A-Za-z0-9_]*).*/\1:\2/')
if [ ${#failed[@]} -gt 0 ]; then
	printf 'fuzz target failed: %s\n' "${failed[@]}"
	exit 1
fi
