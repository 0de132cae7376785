#!/bin/sh
# Full and read-only disks (run as root: each case mounts a small tmpfs in a private
# mount namespace, unshare -m; skipped where that is not allowed):
# - a sweep whose run folder fills up stops with a message naming the file and the
#   errno (no crash), its last checkpoint intact; moved to a larger disk, the same
#   command resumes it and ends with the uninterrupted run's table;
# - gmorph train on a full disk says which file it could not write, and does not crash;
# - a sweep into a read-only folder is refused, named.
# Usage: test_full_disk.sh GMORPH GMORPH_SEARCH
set -u
gm=$1
gs=$2
export OMP_WAIT_POLICY=passive OPENBLAS_NUM_THREADS=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ "$(id -u)" != 0 ] || ! unshare -m sh -c "mount -t tmpfs -o size=64k tmpfs '$tmp'" 2>/dev/null; then
    echo "skipped: needs root and unshare -m to mount a small tmpfs"
    exit 77
fi
fails=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fails=$((fails + 1)); }
"$(dirname "$0")/tiny-zoo.sh" "$gm" "$tmp" || exit 1
table() { cut -d, -f1-4,6-10,14,15,18- "$1/candidates.csv" | sort -t, -k1,1n; }

# ---- a sweep that fills its disk --------------------------------------------------------
"$gs" --config "$tmp/search.json" --out "$tmp/r1" >/dev/null 2>"$tmp/r1.err" || { bad "uninterrupted sweep"; cat "$tmp/r1.err"; }
mkdir "$tmp/small"
# 5 MB: the first checkpoints fit, a later one (beside its .prev) does not.
unshare -m sh -c "mount -t tmpfs -o size=5m tmpfs '$tmp/small' &&
    '$gs' --config '$tmp/search.json' --out '$tmp/small/run' >/dev/null 2>'$tmp/full.err'; echo \$? >'$tmp/full.rc';
    '$gm' runs '$tmp/small/run' >'$tmp/full.runs' 2>&1; cp -r '$tmp/small/run' '$tmp/moved'"
rc=$(cat "$tmp/full.rc")
[ "$rc" -ne 0 ] && [ "$rc" -lt 128 ] && grep -q 'search.h5.tmp: writing [0-9]* bytes failed: No space left on device' "$tmp/full.err" &&
    ok "full disk: the sweep stops (exit $rc), naming the file and the errno" || { bad "full disk (exit $rc)"; cat "$tmp/full.err"; }
grep -q 'interrupted' "$tmp/full.runs" && ! grep -q unreadable "$tmp/full.runs" &&
    ok "full disk: its last checkpoint is whole" || { bad "checkpoint after a full disk"; cat "$tmp/full.runs"; }
"$gs" --config "$tmp/search.json" --out "$tmp/moved" >/dev/null 2>"$tmp/moved.err" &&
    table "$tmp/moved" >"$tmp/a" && table "$tmp/r1" >"$tmp/b" && cmp -s "$tmp/a" "$tmp/b" &&
    ok "moved to a larger disk, the same command resumes it to the uninterrupted table" ||
    { bad "resume after a full disk"; cat "$tmp/moved.err"; diff "$tmp/a" "$tmp/b"; }

# ---- gmorph train on a full disk ----------------------------------------------------------
unshare -m sh -c "mount -t tmpfs -o size=64k tmpfs '$tmp/small' &&
    '$gm' train --data '$tmp/sprites.h5' --task colour --arch vgg11 --widths 8,16 --epochs 1 --batch 32 \
        --threads 1 --out '$tmp/small/m.h5' --quiet >/dev/null 2>'$tmp/train.err'; echo \$? >'$tmp/train.rc'"
rc=$(cat "$tmp/train.rc")
[ "$rc" -ne 0 ] && [ "$rc" -lt 128 ] && grep -q 'No space left on device' "$tmp/train.err" &&
    ok "full disk: gmorph train stops (exit $rc), naming what it could not write" || { bad "train on a full disk (exit $rc)"; cat "$tmp/train.err"; }

# ---- a read-only run folder ---------------------------------------------------------------
unshare -m sh -c "mount -t tmpfs -o size=5m tmpfs '$tmp/small' && mkdir '$tmp/small/ro' && mount -o remount,ro '$tmp/small' &&
    '$gs' --config '$tmp/search.json' --out '$tmp/small/ro' >/dev/null 2>'$tmp/ro.err'; echo \$? >'$tmp/ro.rc'"
rc=$(cat "$tmp/ro.rc")
[ "$rc" -eq 2 ] && grep -q "$tmp/small/ro" "$tmp/ro.err" && grep -qi 'read-only\|cannot' "$tmp/ro.err" &&
    ok "read-only run folder refused, named (exit 2)" || { bad "read-only folder (exit $rc)"; cat "$tmp/ro.err"; }

[ $fails -eq 0 ] && echo "all passed" || echo "$fails failed"
[ $fails -eq 0 ]
