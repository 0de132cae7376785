#!/bin/sh
# The whole test suite, as CI runs it: a warnings-as-errors release build and
# its tests, then the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
# (LeakSanitizer included), optimised (-O2 -g) so the training tests stay quick. Usage: tests/run-all.sh [BUILD_DIR]  (default build-test)
set -eu
cd "$(dirname "$0")/.."
build=${1:-build-test}
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DGMORPH_WERROR=ON
cmake --build "$build" -j "$jobs"
ctest --test-dir "$build" --output-on-failure -j "$jobs"
cmake -S . -B "$build-asan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGMORPH_WERROR=ON -DGMORPH_SANITIZE=ON -DGMORPH_CUDA=OFF
cmake --build "$build-asan" -j "$jobs"
# Open MPI keeps allocations until exit: not our leaks (tests/lsan.supp). Its
# libraries have no frame pointers, so only the slow unwinder sees whose they are.
export ASAN_OPTIONS="fast_unwind_on_malloc=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
# use_tls=0: the leak check's tracer crashes (signal 11) reading the dynamic TLS
# of the libraries Open MPI dlopens, with this gcc 12 sanitizer and glibc 2.36
# (every gmorph-search exit on some machines). gmorph keeps no pointers in
# thread-local storage, so skipping it hides none of ours.
export LSAN_OPTIONS="suppressions=$(pwd)/tests/lsan.supp:print_suppressions=0:use_tls=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
# The sweep scripts (label "sweep": minutes of multi-rank fine-tuning, 15x slower
# instrumented) run in the release pass only; the C code they drive is covered here
# by test_search, test_dp, test_ckpt and test_cli.
ctest --test-dir "$build-asan" --output-on-failure -j "$jobs" -LE sweep
