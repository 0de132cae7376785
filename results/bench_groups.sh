#!/bin/sh
# Time to reach the final best with 1 worker group against 2 groups (issue 5's
# benchmark), on the tiny Sprites zoo the tests use, in deterministic mode: both
# runs train the same candidates and end with the same best, so the ratio of
# their times to reach it is the scheduler's parallel gain. Each rank gets one
# thread; with 2 groups on this 2-core machine the coordinator shares a core.
# Usage: results/bench_groups.sh [BUILD_DIR] [ITERATIONS]
set -eu
build=${1:-build}
iters=${2:-24}
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader OMP_WAIT_POLICY=passive OPENBLAS_NUM_THREADS=1
mpi="mpirun --allow-run-as-root --oversubscribe"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$(dirname "$0")/../tests/tiny-zoo.sh" "$build/gmorph" "$tmp" frozen
# Teachers' logits once, outside the timing.
"$build/gmorph-search" --config "$tmp/search.json" --out "$tmp/warm" --iterations 1 >/dev/null 2>&1
for np in 2 3; do
    cp "$tmp/warm/teacher.h5" "$tmp/teacher.h5"
    mkdir -p "$tmp/g$np" && cp "$tmp/teacher.h5" "$tmp/g$np/"
    start=$(date +%s)
    $mpi -np $np "$build/gmorph-search" --config "$tmp/search.json" --out "$tmp/g$np" --iterations "$iters" >/dev/null 2>&1
    end=$(date +%s)
    best=$(sed -n 's/.*(candidate \([0-9-]*\)).*/\1/p' "$tmp/g$np/summary.md")
    # finished_s is the 17th column; the best's row says when it was recorded
    at=$(awk -F, -v id="$best" 'NR > 1 && $1 == id {print $17}' "$tmp/g$np/candidates.csv")
    echo "$((np - 1)) group(s): best candidate $best reached at $at s; sweep $((end - start)) s wall"
    eval "at$np=$at"
done
awk -v a="$at2" -v b="$at3" 'BEGIN {printf "time to the final best, 1 group / 2 groups: %.2fx\n", a / b}'
