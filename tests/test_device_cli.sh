#!/bin/sh
# --device on gmorph train, gmorph eval and gmorph-search, as a user meets it:
# an unknown device is refused (exit 2, the message names it); "cuda" where
# this build has no CUDA backend or the machine no GPU fails with exit 2 and a
# message naming the device, before any data is read; with a GPU (and the
# backend), a tiny model trains and scores on cuda, and cuda's accuracy agrees
# with the CPU's.
# Usage: test_device_cli.sh GMORPH GMORPH_SEARCH HAVE_CUDA_BACKEND(ON|OFF) [MPIEXEC]
set -u
gm=$1
search=$2
backend=$3
mpiexec=${4:-}
. "$(dirname "$0")/cli-lib.sh"
run() { "$@" >"$tmp/out" 2>"$tmp/err"; } # any binary here, not only gmorph
num() { sed -n "s/.*$1 *\([0-9.]*\)%.*/\1/p" "$tmp/out" | tail -1; }

gpu=0
if [ "$backend" = ON ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    gpu=1
fi
echo "CUDA backend built: $backend; GPU: $gpu"

run "$gm" train --help;                  check "train help names --device" 0 $? "$tmp/out" "--device D  *cpu, cuda or cuda-tf32"
run "$gm" eval --help;                   check "eval help names --device" 0 $? "$tmp/out" "--device D"
run "$search" --help;                    check "search help names --device" 0 $? "$tmp/out" "--device D  *cpu, cuda or cuda-tf32"
run "$gm" train --data x.h5 --out m.h5 --device foo
check "train --device foo" 2 $? "$tmp/err" 'unknown device "foo"'
run "$gm" eval m.h5 --device gpu;         check "eval --device gpu" 2 $? "$tmp/err" 'unknown device "gpu"'
run "$search" --config x.json --device foo; check "search --device foo" 2 $? "$tmp/err" 'unknown device "foo"'
cat > "$tmp/bad.json" <<'JSON'
{"models": ["a.h5", "b.h5"], "run": {"device": "tpu"}}
JSON
run "$search" --config "$tmp/bad.json"; check "run.device tpu" 2 $? "$tmp/err" 'run.device: expected "cpu", "cuda" or "cuda-tf32", got "tpu"'

if [ $gpu -eq 0 ]; then
    # The device is opened first: no data, model or config file is needed to be refused.
    run "$gm" train --data "$tmp/none.h5" --out "$tmp/m.h5" --device cuda
    check "train --device cuda without a GPU" 2 $? "$tmp/err" "device cuda"
    run "$gm" eval "$tmp/none.h5" --device cuda
    check "eval --device cuda without a GPU" 2 $? "$tmp/err" "device cuda"
    run "$gm" eval "$tmp/none.h5" --device cuda-tf32
    check "eval --device cuda-tf32 without a GPU" 2 $? "$tmp/err" "device cuda"
    cat > "$tmp/s.json" <<JSON
{"models": ["$tmp/a.h5", "$tmp/b.h5"], "out": "$tmp/run", "run": {"device": "cuda"}}
JSON
    run "$search" --config "$tmp/s.json"
    check "search run.device cuda without a GPU" 2 $? "$tmp/err" "device cuda"
    run "$search" --config "$tmp/s.json" --device cpu
    check "search --device cpu overrides run.device" 2 $? "$tmp/err" "a.h5"
    if [ -n "$mpiexec" ]; then
        # Workers open the device; rank 0 coordinates on the CPU; every rank ends with the worst code.
        OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader run "$mpiexec" -np 3 --allow-run-as-root --oversubscribe \
            "$search" --config "$tmp/s.json" --group-size 2
        check "search on 3 ranks, run.device cuda without a GPU" 2 $? "$tmp/err" "device cuda"
    fi
else
    d="$tmp/sprites.h5"
    run "$gm" data sprites --out "$d" --size 16 --train 1024 --val 256 --test 256
    check "tiny sprites" 0 $? "$tmp/out" "wrote"
    run "$gm" train --data "$d" --task colour --widths 8,16 --epochs 2 --batch 32 --lr 3e-3 --threads 2 \
        --device cuda --quiet --out "$tmp/m.h5"
    check "train on cuda" 0 $? "$tmp/out" "cuda GPU"
    run "$gm" eval "$tmp/m.h5" --threads 2 --runs 20; check "eval on cpu" 0 $? "$tmp/out" "test accuracy"
    cpu=$(num "test accuracy")
    run "$gm" eval "$tmp/m.h5" --device cuda --runs 20; check "eval on cuda" 0 $? "$tmp/out" "batch-1 latency"
    cuda=$(num "test accuracy")
    # 256 samples: one flipped prediction is 0.39 points.
    if awk "BEGIN{d = $cpu - $cuda; exit !(d <= 0.4 && d >= -0.4)}"; then echo "ok   cuda $cuda% agrees with cpu $cpu%"
    else echo "FAIL cuda $cuda% vs cpu $cpu%"; fails=$((fails + 1)); fi
fi

if [ $fails -ne 0 ]; then echo "$fails check(s) failed"; exit 1; fi
echo "all device checks passed"
