#!/bin/sh
# `gmorph data` as a user meets it: help, bad options, a tiny sprites file and
# its info, imports from .npy (written by numpy) and HDF5, import errors, and a
# truncated file. Usage: test_data_cli.sh PATH_TO_GMORPH
set -u
gm=$1
py=/usr/bin/python3
. "$(dirname "$0")/cli-lib.sh"

# ---- help and usage errors
run data --help;                    check "data help" 0 $? "$tmp/out" "usage: gmorph data"
run data;                           check "data alone" 2 $? "$tmp/err" "usage: gmorph data"
run data frobnicate;                check "unknown maker" 2 $? "$tmp/err" 'unknown dataset or action "frobnicate"'
run data multi-fashion --help;      check "multi-fashion help" 0 $? "$tmp/out" "--fashion-dir"
run data fashion --help;            check "fashion help" 0 $? "$tmp/out" "at most 50000"
run data sprites --help;            check "sprites help" 0 $? "$tmp/out" "position (3x3 grid"
run data import --help;             check "import help" 0 $? "$tmp/out" "--layout nchw|nhwc"
run data info --help;               check "info help" 0 $? "$tmp/out" "usage: gmorph data info FILE"
run data sprites --size 8 --out "$tmp/s.h5"
check "size too small" 2 $? "$tmp/err" '--size must be an integer in \[12, 1024\], got "8"'
run data sprites --train -1 --out "$tmp/s.h5"
check "negative split size" 2 $? "$tmp/err" '--train must be an integer'
run data sprites --train 10;        check "no --out" 2 $? "$tmp/err" "--out FILE is required"
run data sprites --out "$tmp/s.h5" --colour red
check "unknown option" 2 $? "$tmp/err" "Try 'gmorph data sprites --help'"
run data sprites --out "$tmp/s.h5" --fashion-dir /x
check "fashion-dir for sprites" 2 $? "$tmp/err" "does not apply to sprites"
run data sprites --out "$tmp/s.h5" --train 0 --val 0 --test 0
check "nothing to write" 2 $? "$tmp/err" "nothing to write"
run data fashion --out "$tmp/f.h5" --train 50001
check "more than the pool" 2 $? "$tmp/err" "its pool has 50000"
run data multi-fashion --out "$tmp/m.h5" --fashion-dir "$tmp/nowhere" --train 10
check "missing Fashion-MNIST" 2 $? "$tmp/err" "$tmp/nowhere does not exist (the Debian package dataset-fashion-mnist"
run data info;                      check "info without file" 2 $? "$tmp/err" "which file?"
run data info "$tmp/none.h5";       check "info on a missing file" 2 $? "$tmp/err" "no such file"

# ---- a tiny sprites file and what info says about it
run data sprites --out "$tmp/s.h5" --size 16 --train 40 --val 8 --test 8 --seed 3
check "tiny sprites" 0 $? "$tmp/out" "wrote $tmp/s.h5: 40/8/8 samples, 4 tasks, 3x16x16 uint8"
run data sprites --out "$tmp/s2.h5" --size 16 --train 40 --val 8 --test 8 --seed 3
if cmp -s "$tmp/s.h5" "$tmp/s2.h5"; then echo "ok   same seed, same bytes"
else echo "FAIL same options and seed gave different files"; fails=$((fails + 1)); fi
run data info "$tmp/s.h5";          check "info" 0 $? "$tmp/out" "task position: 9 classes"
for want in "name    sprites" "--seed 3" "train 40, val 8, test 8" "3x16x16 uint8" "task shape: 4 classes" \
            "task colour: 6 classes" "task scale: 3 classes" "mean "; do
    grep -q -- "$want" "$tmp/out" || { echo "FAIL info lacks \"$want\""; cat "$tmp/out"; fails=$((fails + 1)); }
done

# ---- the Fashion-MNIST makers, small
if [ -r /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    run data multi-fashion --out "$tmp/m.h5" --train 100 --val 20 --test 20 --seed 2
    check "tiny multi-fashion" 0 $? "$tmp/out" "wrote $tmp/m.h5: 100/20/20 samples, 2 tasks, 1x36x36 uint8"
    run data info "$tmp/m.h5";      check "multi-fashion info" 0 $? "$tmp/out" "task right: 10 classes"
    run data fashion --out "$tmp/f.h5" --size 28 --train 100 --val 0 --test 20
    check "tiny fashion" 0 $? "$tmp/out" "wrote $tmp/f.h5: 100/0/20 samples, 1 task, 1x28x28 uint8"
else
    echo "SKIPPED Fashion-MNIST makers: dataset-fashion-mnist is not installed"
fi

# ---- import from an HDF5 source: the sprites file's own arrays
run data import --out "$tmp/h.h5" --name back --split "train=$tmp/s.h5:/train/x" \
    --label "train:shape=$tmp/s.h5:/train/y/shape" --label "train:colour=$tmp/s.h5:/train/y/colour"
check "import from HDF5" 0 $? "$tmp/out" "wrote $tmp/h.h5: 40/0/0 samples, 2 tasks, 3x16x16 uint8"
if h5dump -d /train/x "$tmp/s.h5" | tail -n +2 >"$tmp/a.txt" && h5dump -d /train/x "$tmp/h.h5" | tail -n +2 >"$tmp/b.txt" &&
   cmp -s "$tmp/a.txt" "$tmp/b.txt"; then echo "ok   HDF5 import keeps the images"
else echo "FAIL HDF5 import changed the images (or h5dump is missing)"; fails=$((fails + 1)); fi
run data import --out "$tmp/h.h5" --name back --split "train=$tmp/s.h5:/train/x" --label "train:shape=$tmp/s.h5:/nope"
check "missing HDF5 dataset" 2 $? "$tmp/err" 'has no dataset "/nope"'
run data import --out "$tmp/h.h5" --name back --split "train=$tmp/s.h5:/train/x" --label "train:shape=$tmp/s.h5:/train/x"
check "images as labels" 2 $? "$tmp/err" "labels must have shape (N,)"
run data import --out "$tmp/h.h5" --name back --split "train=$tmp/s.h5:/train/x"
check "import without labels" 2 $? "$tmp/err" "give at least one --label"
run data import --out "$tmp/h.h5" --name back --split "train=$tmp/s.h5:/train/x" --split "val=$tmp/s.h5:/val/x" \
    --label "train:shape=$tmp/s.h5:/train/y/shape"
check "labels missing for a split" 2 $? "$tmp/err" 'task "shape" needs --label val:shape=SOURCE'
run data import --out "$tmp/h.h5" --name back --split "dev=$tmp/s.h5:/train/x" --label "train:shape=x.npy"
check "bad split name" 2 $? "$tmp/err" "--split dev"
run data import --out "$tmp/h.h5" --name back --split "train=$tmp/s.h5:/train/x" \
    --label "train:shape=$tmp/s.h5:/train/y/shape" --layout chw
check "bad layout" 2 $? "$tmp/err" '--layout must be nchw or nhwc, got "chw"'

# ---- import from .npy files numpy writes
if "$py" -c "import numpy" 2>/dev/null; then
    "$py" - "$tmp" <<'EOF'
import sys, numpy as np
d = sys.argv[1]
rng = np.random.default_rng(0)
x = rng.integers(0, 256, size=(30, 5, 6, 3), dtype=np.uint8)        # NHWC
np.save(d + "/x.npy", x)
np.save(d + "/y.npy", rng.integers(0, 7, size=30).astype(np.int64))
np.save(d + "/yshort.npy", np.zeros(29, np.int32))
np.save(d + "/xf64.npy", x.astype(np.float64))
np.save(d + "/xfort.npy", np.asfortranarray(x))
xt = rng.random((12, 1, 4, 4), dtype=np.float32)
np.save(d + "/xt.npy", xt)
np.save(d + "/yt.npy", np.array([0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4], np.uint8))
EOF
    run data import --out "$tmp/i.h5" --name mine --layout nhwc --split "train=$tmp/x.npy" \
        --label "train:kind=$tmp/y.npy" --split "test=$tmp/x.npy" --label "test:kind=$tmp/y.npy" --chunk-mb 1
    check "import .npy (nhwc)" 0 $? "$tmp/out" "wrote $tmp/i.h5: 30/0/30 samples, 1 task, 3x5x6 uint8"
    run data info "$tmp/i.h5";      check "info on the import" 0 $? "$tmp/out" "task kind: 7 classes"
    if "$py" -c "import h5py" 2>/dev/null; then
        "$py" - "$tmp" <<'EOF' && echo "ok   .npy import round trip" || { echo "FAIL .npy import round trip"; fails=$((fails + 1)); }
import sys, numpy as np, h5py
d = sys.argv[1]
x, y = np.load(d + "/x.npy"), np.load(d + "/y.npy")
with h5py.File(d + "/i.h5", "r") as f:
    assert (f["train/x"][()] == x.transpose(0, 3, 1, 2)).all()
    assert (f["test/x"][()] == x.transpose(0, 3, 1, 2)).all()
    assert (f["train/y/kind"][()] == y).all() and f["train/y/kind"].dtype == np.int32
    assert list(f.attrs["classes"]) == [7], f.attrs["classes"]
EOF
    else
        echo "SKIPPED .npy round-trip comparison: h5py is missing"
    fi
    run data import --out "$tmp/i.h5" --name mine --split "train=$tmp/xt.npy" --label "train:k=$tmp/yt.npy" --classes k=9
    check "import float32 (N,1,H,W)" 0 $? "$tmp/out" "12/0/0 samples, 1 task, 1x4x4 float32"
    run data info "$tmp/i.h5";      check "classes from --classes" 0 $? "$tmp/out" "task k: 9 classes"
    run data import --out "$tmp/e.h5" --name mine --layout nhwc --split "train=$tmp/x.npy" --label "train:kind=$tmp/yshort.npy"
    check "length mismatch" 2 $? "$tmp/err" "$tmp/yshort.npy: 29 labels, but $tmp/x.npy has 30 samples"
    run data import --out "$tmp/e.h5" --name mine --layout nhwc --split "train=$tmp/xf64.npy" --label "train:kind=$tmp/y.npy"
    check "bad dtype" 2 $? "$tmp/err" "$tmp/xf64.npy: unsupported dtype '<f8'"
    run data import --out "$tmp/e.h5" --name mine --layout nhwc --split "train=$tmp/xfort.npy" --label "train:kind=$tmp/y.npy"
    check "Fortran order" 2 $? "$tmp/err" "$tmp/xfort.npy: Fortran-order arrays are not supported"
    run data import --out "$tmp/e.h5" --name mine --split "train=$tmp/xt.npy" --label "train:k=$tmp/yt.npy" --classes k=5
    check "label above --classes" 2 $? "$tmp/err" 'label 6 of task "k" is not below its 5 classes'
    [ -e "$tmp/e.h5" ] && { echo "FAIL a failed import left $tmp/e.h5"; fails=$((fails + 1)); }
else
    echo "SKIPPED .npy imports: /usr/bin/python3 has no numpy"
fi

# ---- a truncated dataset file
head -c 3000 "$tmp/s.h5" >"$tmp/t.h5"
run data info "$tmp/t.h5";          check "info on a truncated file" 2 $? "$tmp/err" "$tmp/t.h5"
exit $((fails > 0))
