#!/bin/sh
# The path README.md documents, end to end: PyTorch models -> torch.onnx ->
# gmorph import -> gmorph-search -> gmorph export -> ONNX Runtime.
#   1. three small PyTorch classifiers (two VGG-style, one ResNet-style) are trained on
#      three tasks of one Sprites file (tests/torch_tasks.py) and exported with torch.onnx;
#   2. `gmorph import --data` reads each, with the input normalisation they were trained
#      with, and records and scores the data; `gmorph eval` agrees (they must still classify);
#   3. a short deterministic search fuses them; its best model is fused (fewer FLOPs
#      than the three together, every task within the threshold);
#   4. `gmorph export --reference` writes it as one ONNX graph, and onnx.checker and
#      ONNX Runtime give gmorph's outputs for every task (tests/onnx_check.py).
# Usage: test_onnx_e2e.sh GMORPH GMORPH-SEARCH PYTHON-WITH-ONNXRUNTIME
set -u
gm=$1
gs=$2
py=$3
torchpy=/usr/bin/python3
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$torchpy" -c 'import torch, h5py' 2>/dev/null || fail "$torchpy lacks torch or h5py: run tests/install-deps.sh (python3-torch python3-h5py)"
"$py" -c 'import onnx, onnxruntime' 2>/dev/null || fail "$py lacks onnx or onnxruntime: run tests/install-deps.sh"

# ---- 1. PyTorch models ------------------------------------------------------------------
"$gm" data sprites --out "$tmp/sprites.h5" --size 16 --train 2048 --val 512 --test 512 >/dev/null 2>&1 ||
    fail "gmorph data sprites"
models=""
for spec in "colour vgg 1" "scale vgg 2" "shape resnet 3"; do
    set -- $spec
    norm=$("$torchpy" "$here/torch_tasks.py" "$tmp/sprites.h5" "$1" "$2" "$tmp/$1.onnx" --epochs 4 --seed "$3" 2>"$tmp/$1.log") ||
        { cat "$tmp/$1.log"; fail "training $1 in PyTorch"; }
    # ---- 2. import, then score on the data it was trained on ---------------------------------
    # shellcheck disable=SC2086 # norm is "--mean a,b,c --std d,e,f"
    "$gm" import "$tmp/$1.onnx" --task "$1" $norm --data "$tmp/sprites.h5" --out "$tmp/$1.h5" >"$tmp/$1.imp" 2>&1 ||
        { cat "$tmp/$1.imp"; fail "gmorph import $1.onnx"; }
    # the model file now names its dataset: eval needs no --data
    "$gm" eval "$tmp/$1.h5" --split val >"$tmp/$1.eval" 2>&1 ||
        { cat "$tmp/$1.eval"; fail "gmorph eval $1.h5"; }
    acc=$(awk -v t="$1" '$1 == t { for (i = 2; i <= NF; i++) if ($i ~ /%$/) { sub(/%/, "", $i); print $i; exit } }' "$tmp/$1.eval")
    [ -n "$acc" ] || { cat "$tmp/$1.eval"; fail "no accuracy for $1 in gmorph eval's output"; }
    awk -v a="$acc" 'BEGIN { exit !(a >= 80) }' || { cat "$tmp/$1.log" "$tmp/$1.eval"; fail "imported $1 scores $acc% on val"; }
    grep -q "validation accuracy $acc%" "$tmp/$1.imp" || { cat "$tmp/$1.imp"; fail "import --data and eval disagree ($acc%)"; }
    echo "ok: $1 trained in PyTorch, imported, $acc% on val in gmorph"
    models="$models${models:+, }\"$tmp/$1.h5\""
done
mflop() { sed -n 's/.* \([0-9.]*\) MFLOP per image.*/\1/p' "$1" | head -1; }
orig=$(for t in colour scale shape; do mflop "$tmp/$t.eval"; done | awk '{ s += $1 } END { print s }')

# ---- 3. search --------------------------------------------------------------------------
cat >"$tmp/search.json" <<EOF
{
  "models": [$models],
  "threshold": 0.05, "iterations": 8, "seed": 3, "threads": 1,
  "finetune": {"samples": 2048, "val_samples": 256, "epochs": 6, "batch": 32, "lr": 0.003},
  "filter": {"curve": false}, "latency": {"warmup": 2, "runs": 10},
  "run": {"deterministic": true, "round": 4, "checkpoint_every": 1}
}
EOF
"$gs" --config "$tmp/search.json" --out "$tmp/run" >"$tmp/search.out" 2>&1 || { tail -20 "$tmp/search.out"; fail "gmorph-search"; }
[ -f "$tmp/run/best.h5" ] || { tail -20 "$tmp/search.out"; fail "the search kept no best model"; }
"$gm" eval "$tmp/run/best.h5" --split val --no-latency >"$tmp/best.eval" 2>&1 || { cat "$tmp/best.eval"; fail "gmorph eval best.h5"; }
best=$(mflop "$tmp/best.eval")
awk -v b="$best" -v o="$orig" 'BEGIN { exit !(b > 0 && b < o) }' ||
    { cat "$tmp/best.eval"; fail "the best model costs $best MFLOP, the three originals $orig: nothing was fused"; }
echo "ok: the search fused the imported models: $best MFLOP per image against $orig for the three"

# ---- 4. export and ONNX Runtime -----------------------------------------------------------
"$gm" export "$tmp/run/best.h5" "$tmp/fused.onnx" --reference "$tmp/io.h5" >"$tmp/export.out" 2>&1 ||
    { cat "$tmp/export.out"; fail "gmorph export"; }
"$py" "$here/onnx_check.py" "$tmp/fused.onnx" "$tmp/io.h5" >"$tmp/check.out" 2>&1 ||
    { cat "$tmp/check.out"; fail "onnx.checker or ONNX Runtime disagrees with gmorph"; }
"$py" - "$tmp/fused.onnx" <<'EOF' || fail "the fused ONNX graph lacks a task output"
import sys, onnx
outs = sorted(o.name for o in onnx.load(sys.argv[1]).graph.output)
print("fused ONNX outputs:", outs)
sys.exit(0 if outs == ["colour", "scale", "shape"] else 1)
EOF
cat "$tmp/check.out"
echo "ok: PyTorch -> gmorph import -> search -> export -> ONNX Runtime"
