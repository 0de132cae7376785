#!/bin/sh
# The whole test suite, as CI runs it: a warnings-as-errors build, then ctest.
# Usage: tests/run-all.sh [BUILD_DIR]   (default build-test)
set -eu
cd "$(dirname "$0")/.."
build=${1:-build-test}
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DGMORPH_WERROR=ON
cmake --build "$build" -j "$jobs"
ctest --test-dir "$build" --output-on-failure -j "$jobs"
