#!/bin/sh
# The tiny Sprites zoo the sweep tests and results/bench_groups.sh share: three
# models (colour and scale: VGG-11, shape: ResNet-8; widths 8,16) on one 16x16
# Sprites set, trained in a few seconds. Writes DIR/sprites.h5 and
# DIR/{colour,scale,shape}.h5. Usage: tiny-zoo.sh GMORPH DIR
set -eu
gm=$1
dir=$2
"$gm" data sprites --out "$dir/sprites.h5" --size 16 --train 2048 --val 512 --test 512 >/dev/null
for spec in "colour vgg11 1" "scale vgg11 2" "shape resnet8 3"; do
    set -- $spec
    "$gm" train --data "$dir/sprites.h5" --task "$1" --arch "$2" --widths 8,16 --epochs 4 --batch 32 --lr 0.003 \
        --seed "$3" --threads 1 --out "$dir/$1.h5" --quiet >/dev/null 2>&1 || { echo "training $1 failed" >&2; exit 1; }
done
