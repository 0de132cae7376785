#!/bin/sh
# An install as an HPC module would make it: `cmake --install BUILD --prefix P`
# puts the commands, configs, zoo definitions, Slurm scripts and docs under P;
# the installed commands print their version and build options, refer to
# nothing in the build or source tree (no RUNPATH there), and run the tiny
# sweep from an unrelated folder with only P/bin added to a minimal PATH.
# Usage: test_install.sh BUILD_DIR SOURCE_DIR
set -u
build=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fails=$((fails + 1)); }
p="$tmp/prefix"

cmake --install "$build" --prefix "$p" >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; exit 1; }
missing=""
for f in bin/gmorph bin/gmorph-search share/gmorph/configs/demo.json share/gmorph/zoo/b2.json \
    share/gmorph/slurm/gmorph-search.sbatch share/gmorph/slurm/sweep-array.sbatch share/doc/gmorph/README.md \
    share/doc/gmorph/coordinator.md; do
    [ -e "$p/$f" ] || missing="$missing $f"
done
[ -z "$missing" ] && ok "installed tree complete" || bad "missing:$missing"
[ -x "$p/share/gmorph/slurm/gmorph-search.sbatch" ] && ok "Slurm scripts executable" || bad "Slurm scripts not executable"

for b in gmorph gmorph-search; do
    if readelf -d "$p/bin/$b" | grep -i 'runpath\|rpath' | grep -q -e "$build" -e "$src"; then
        bad "$b: a RUNPATH into the build or source tree"
    else
        ok "$b: no RUNPATH into the build or source tree"
    fi
done

cd "$tmp" || exit 1
export PATH="$p/bin:/usr/bin:/bin" OMP_WAIT_POLICY=passive OPENBLAS_NUM_THREADS=1
gmorph --version >"$tmp/v" 2>&1 && grep -q "^gmorph [0-9]" "$tmp/v" && grep -q "CUDA backend" "$tmp/v" &&
    grep -q "BLAS: " "$tmp/v" && ok "gmorph --version" || { bad "gmorph --version"; cat "$tmp/v"; }
gmorph-search --version >"$tmp/v" 2>&1 && grep -q "^gmorph-search [0-9]" "$tmp/v" && grep -q "MPI: " "$tmp/v" &&
    ok "gmorph-search --version" || { bad "gmorph-search --version"; cat "$tmp/v"; }
mkdir -p "$tmp/zoo"
if "$src/tests/tiny-zoo.sh" "$p/bin/gmorph" "$tmp/zoo" frozen >/dev/null 2>&1; then
    gmorph-search --config "$tmp/zoo/search.json" --out run --iterations 4 >"$tmp/out" 2>"$tmp/err" &&
        grep -q "best fused\|no candidate passed" "$tmp/out" && [ -f run/search.h5 ] &&
        gmorph runs . | grep -q "^\./run  *finished" && ok "the installed commands run a sweep" ||
        { bad "installed sweep"; tail -5 "$tmp/err"; }
else
    bad "tiny zoo with the installed gmorph"
fi
[ $fails -eq 0 ] && echo "all passed" || echo "$fails failed"
[ $fails -eq 0 ]
