#!/bin/sh
# Builds gmorph and runs the main job on the default data: the task zoo of
# benchmark B2 (four Sprites models: VGG-11, VGG-13, ResNet-10, ResNet-18 reading
# one 3x32x32 image) into zoo/b2/, then a demo fusion search over it (at most
# 8 minutes of proposing: coordinator/configs/demo.json) into runs/demo/, and its
# report (runs/demo/report.html, report.md). Rerunning keeps the zoo and models
# that exist; the search starts over (build/gmorph-search --config
# coordinator/configs/demo.json alone continues it). Under mpirun the same search spreads over
# worker ranks: see coordinator/README.md.
set -eu
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc 2>/dev/null || echo 2)"
# Passive OpenMP waiting: on a shared node, spinning threads that lose their core
# to another process slow training down many times over.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
build/gmorph zoo datasets/zoo/b2.json --out zoo/b2 "$@"
rm -rf runs/demo
build/gmorph-search --config coordinator/configs/demo.json
build/gmorph report runs/demo
