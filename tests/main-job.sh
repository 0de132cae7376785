#!/bin/sh
# Builds gmorph and runs the main job on the default data. Until the fusion
# search lands, the main job is training the default model (a VGG-11-style
# network) on Fashion-MNIST and reporting its test accuracy and latency.
set -eu
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc 2>/dev/null || echo 2)"
exec build/gmorph train --epochs 2 "$@"
