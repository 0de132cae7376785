#!/bin/sh
# Builds gmorph and runs the main job on the default data. Until the fusion
# search lands, the main job builds the task zoo the search starts from:
# benchmark B1 (Multi-Fashion left/right and Fashion-MNIST on a 36x36 canvas,
# three VGG-13-style models) into zoo/b1/, with a summary in zoo/b1/zoo.md.
# Extra arguments go to 'gmorph zoo' (for example --scale 0.1 --epochs 1 for a
# quick look). Rerunning it keeps what exists and resumes an interrupted model.
set -eu
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc 2>/dev/null || echo 2)"
# Passive OpenMP waiting: on a shared node, spinning threads that lose their core
# to another process slow training down many times over.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
exec build/gmorph zoo datasets/zoo/b1.json --out zoo/b1 "$@"
