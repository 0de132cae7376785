#!/bin/sh
# The tiny Sprites zoo the sweep tests and results/bench_groups.sh share: three
# models (colour and scale: VGG-11, shape: ResNet-8; widths 8,16) on one 16x16
# Sprites set, trained in a few seconds. Writes DIR/sprites.h5,
# DIR/{colour,scale,shape}.h5 and DIR/search.json, the tiny deterministic sweep
# over them (10 iterations, threshold 0.1; finetune.bn BN when given, else the
# default). Usage: tiny-zoo.sh GMORPH DIR [BN]
set -eu
gm=$1
dir=$2
bn=${3:-}
cat >"$dir/search.json" <<EOF
{
  "models": ["$dir/colour.h5", "$dir/scale.h5", "$dir/shape.h5"],
  "threshold": 0.1, "iterations": 10, "seed": 3, "threads": 1,
  "finetune": {"samples": 2048, "val_samples": 256, "epochs": 6, "batch": 32, "lr": 0.003${bn:+, \"bn\": \"$bn\"}},
  "filter": {"curve": false}, "latency": {"warmup": 2, "runs": 10},
  "run": {"deterministic": true, "round": 4, "checkpoint_every": 1}
}
EOF
"$gm" data sprites --out "$dir/sprites.h5" --size 16 --train 2048 --val 512 --test 512 >/dev/null
for spec in "colour vgg11 1" "scale vgg11 2" "shape resnet8 3"; do
    set -- $spec
    "$gm" train --data "$dir/sprites.h5" --task "$1" --arch "$2" --widths 8,16 --epochs 4 --batch 32 --lr 0.003 \
        --seed "$3" --threads 1 --out "$dir/$1.h5" --quiet >/dev/null 2>&1 || { echo "training $1 failed" >&2; exit 1; }
done
