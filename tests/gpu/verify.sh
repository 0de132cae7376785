#!/bin/bash
# The GPU checks of gmorph, for a session that has a GPU machine (the device
# tool): one script, two steps.
#
#   tests/gpu/verify.sh prepare [GMORPH]     here, on the Debian 12 build machine
#
#     fills runs/gpu-carry/ (ignored by git: runs/ is in .gitignore) with what the
#     GPU machine lacks: Debian 12 .debs of the build dependencies (Open MPI,
#     parallel HDF5, OpenBLAS, cmocka, cJSON, protobuf-c, onnx.proto; about
#     27 MB), B1's three models (zoo/b1/{left,right,item}.h5, made by `gmorph zoo
#     datasets/zoo/b1.json --out zoo/b1`) and small B1 datasets (4000 train,
#     1000 val and 1000 test samples; Fashion-MNIST is not on the GPU machine).
#     GMORPH (default build/gmorph) makes the datasets.
#
#   tests/gpu/verify.sh run                  there, in one device call:
#
#     run(command="tests/gpu/verify.sh run", carry=["runs/gpu-carry"], timeout_s=560)
#
#     1. records the GPU and the tools (gpu.txt);
#     2. where the image lacks a build dependency, unpacks the carried .debs
#        with dpkg -x into $GM_DEPS_PREFIX (default /tmp/gmdeps; a prefix
#        already filled is used as it is) and points CMake, pkg-config, Open
#        MPI and the loader at it; cuDNN and NCCL come from the CUDA toolkit
#        or, failing that, from PyTorch's nvidia-* wheels;
#     3. builds with -DGMORPH_CUDA=ON (sm_90 only, warnings not fatal: another
#        compiler than CI's) into build-gpu (build.log);
#     4. ctest: test_cuda, test_cuda_backend (CPU/GPU parity), test_nccl_dp_np2
#        (2 ranks sharing the GPU through NCCL over loopback), test_device_cli
#        (train and eval on cuda, accuracy as on the CPU) (ctest.log);
#     5. a B1 candidate fine-tune on the CPU and on the GPU: gmorph-search in
#        deterministic mode proposes the same 2 candidates for both; per
#        candidate: status, epochs, worst drop, fine-tune seconds, batch-1
#        latency and speed-up, side by side (b1.log);
#     6. the training throughput against PyTorch, tests/bench/gpu_vs_torch.sh
#        (bench.log);
#     and writes summary.txt: one line per step with its result and seconds.
#     Everything goes under $OUT (/tmp/gmorph-verify-out when OUT is unset), 6 files.
#     Each step has a time limit (configure 60 s, build 200, ctest 90, each B1
#     run 60, bench 100: 530 s with set-up at worst), so the run ends within 9
#     minutes; a step that times out reads TIMEOUT in summary.txt.
#
# Environment: GM_DEPS_PREFIX (above), GM_CARRY (default runs/gpu-carry),
# GM_BUILD (default build-gpu), GM_JOBS (default: all cores).
set -u
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here" || exit 1
carry=${GM_CARRY:-runs/gpu-carry}

# Debian 12 packages: the build's -dev packages and the libraries they bring
# that an Ubuntu CUDA image usually lacks. At unpack time a library package
# whose library the image already has is skipped.
DEBS="libopenmpi-dev openmpi-bin openmpi-common libopenmpi3 libpmix2 libhwloc15 libevent-core-2.1-7
libevent-pthreads-2.1-7 libfabric1 libucx0 libpsm-infinipath1 libpsm2-2 librdmacm1 libibverbs1 ibverbs-providers
libnl-3-200 libnl-route-3-200 libnuma1 libmunge2 libhdf5-openmpi-dev libhdf5-openmpi-103-1 libaec0 libsz2
libopenblas-dev libopenblas-pthread-dev libopenblas0-pthread libgfortran5 libcmocka-dev libcmocka0 libcjson-dev
libcjson1 libprotobuf-c-dev libprotobuf-c1 protobuf-c-compiler libprotoc32 libprotobuf32 libonnx-dev libcurl4
libnghttp2-14 librtmp1 libssh2-1 libpsl5 libldap-2.5-0 libsasl2-2 libbrotli1 pkgconf pkgconf-bin libpkgconf3"

prepare() {
    local gm=${1:-build/gmorph}
    [ -x "$gm" ] || { echo "verify.sh prepare: $gm is not built" >&2; exit 2; }
    for m in left right item; do
        [ -f "zoo/b1/$m.h5" ] || { echo "verify.sh prepare: zoo/b1/$m.h5 is missing: run $gm zoo datasets/zoo/b1.json --out zoo/b1" >&2; exit 2; }
    done
    mkdir -p "$carry/debs" "$carry/b1"
    # shellcheck disable=SC2086
    (cd "$carry/debs" && apt-get download $DEBS >/dev/null) || { echo "verify.sh prepare: apt-get download failed" >&2; exit 1; }
    cp zoo/b1/left.h5 zoo/b1/right.h5 zoo/b1/item.h5 "$carry/b1/"
    "$gm" data multi-fashion --size 36 --seed 1 --train 4000 --val 1000 --test 1000 --out "$carry/b1/mf.h5" >/dev/null &&
        "$gm" data fashion --size 36 --seed 1 --train 4000 --val 1000 --test 1000 --out "$carry/b1/f36.h5" >/dev/null ||
        { echo "verify.sh prepare: making the B1 datasets failed" >&2; exit 1; }
    echo "verify.sh prepare: $(du -sh "$carry" | cut -f1) in $carry (the call carries at most 64 MiB with the tree)"
}

# ---- run -------------------------------------------------------------------

OUT=${OUT:-/tmp/gmorph-verify-out}
summary() { echo "$*" | tee -a "$OUT/summary.txt"; }
# step NAME LIMIT_S LOG command...: runs it with a time limit, appends to LOG, records the result.
step() {
    local name=$1 limit=$2 log=$3 t0 rc
    shift 3
    t0=$(date +%s)
    echo "==== $name: $*" >>"$log"
    timeout -k 5 "$limit" "$@" >>"$log" 2>&1
    rc=$?
    local verdict=ok
    if [ $rc -eq 124 ]; then verdict=TIMEOUT; elif [ $rc -ne 0 ]; then verdict="FAIL:$rc"; fi
    summary "$(printf '%-22s %-8s %4ss  (%s)' "$name" "$verdict" "$(($(date +%s) - t0))" "$(basename "$log")")"
    return $rc
}

have_lib() { ldconfig -p 2>/dev/null | grep -q "[[:space:]]$1 "; }

# 0 when the image has every build dependency itself.
image_has_deps() {
    command -v mpicc >/dev/null && command -v mpirun >/dev/null && command -v protoc-c >/dev/null &&
        command -v pkg-config >/dev/null &&
        [ -f /usr/include/onnx/onnx.proto ] && [ -f /usr/include/hdf5/openmpi/hdf5.h ] &&
        pkg-config --exists cmocka libcjson libprotobuf-c 2>/dev/null && have_lib libopenblas.so.0
}

# Unpacks the carried .debs into $P, skipping library packages whose libraries the image has.
unpack_debs() {
    local P=$1 d libs skip l
    for d in "$carry"/debs/*.deb; do
        case $(basename "$d") in pkgconf* | libpkgconf*)
            command -v pkg-config >/dev/null && { echo "image has pkg-config: $(basename "$d") not unpacked"; continue; } ;;
        esac
        libs=$(dpkg-deb -c "$d" | awk '{print $NF}' | grep -E '/lib[^/]*\.so\.[0-9]+$' | xargs -r -n1 basename)
        skip=0
        case $(basename "$d") in *-dev_* | *-bin_* | *-common_* | *compiler_*) libs= ;; esac
        if [ -n "$libs" ]; then
            skip=1
            for l in $libs; do have_lib "$l" || skip=0; done
        fi
        if [ $skip -eq 1 ]; then echo "image has $(basename "$d")'s libraries: not unpacked"
        else dpkg -x "$d" "$P" && echo "unpacked $(basename "$d")"; fi
    done
    # What Debian's postinst scripts would have made: the alternatives' names.
    local b=$P/usr/bin m=$P/usr/lib/x86_64-linux-gnu
    for t in mpicc mpicxx mpirun mpiexec orterun; do [ -e "$b/$t.openmpi" ] && ln -sf "$t.openmpi" "$b/$t"; done
    [ -e "$m/openblas-pthread/libopenblas.so" ] && ln -sf openblas-pthread/libopenblas.so "$m/libopenblas.so"
    [ -e "$m/openblas-pthread/libopenblas.so.0" ] && ln -sf openblas-pthread/libopenblas.so.0 "$m/libopenblas.so.0"
    [ -e "$m/openmpi/lib/libmpi.so" ] && ln -sf openmpi/lib/libmpi.so "$m/libmpi.so"
    # pkg-config files name /usr: prefix=/usr, libdir=/usr/lib/..., or -L/usr/... -I/usr/... outright.
    sed -i -E -e "s#^([A-Za-z_]+)=/usr(/|\$)#\1=$P/usr\2#" -e "s#(-[LI])/usr/#\1$P/usr/#g" \
        "$m"/pkgconfig/*.pc "$P"/usr/share/pkgconfig/*.pc 2>/dev/null
    return 0
}

# Sets the environment and CMAKE_ARGS for the build and the tests.
setup_deps() {
    CMAKE_ARGS=()
    if image_has_deps; then
        echo "the image has every build dependency"
    else
        local P=${GM_DEPS_PREFIX:-/tmp/gmdeps} m
        [ -d "$carry/debs" ] || { echo "no $carry/debs: run 'tests/gpu/verify.sh prepare' here and carry $carry"; return 1; }
        if [ ! -x "$P/usr/bin/mpicc.openmpi" ]; then mkdir -p "$P" && unpack_debs "$P"; fi
        m=$P/usr/lib/x86_64-linux-gnu
        export PATH=$P/usr/bin:$PATH
        export LD_LIBRARY_PATH=$m:$m/openmpi/lib:$m/hdf5/openmpi:$m/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        export OPAL_PREFIX=$P/usr PMIX_INSTALL_PREFIX=$m/pmix2
        export PKG_CONFIG_PATH=$m/pkgconfig:$P/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
        CMAKE_ARGS+=(-DCMAKE_PREFIX_PATH="$P/usr")
        [ -x "$P/usr/bin/mpicc.openmpi" ] && CMAKE_ARGS+=(-DMPI_C_COMPILER="$P/usr/bin/mpicc.openmpi"
            -DMPIEXEC_EXECUTABLE="$P/usr/bin/mpirun.openmpi")
        [ -f "$P/usr/include/hdf5/openmpi/hdf5.h" ] && CMAKE_ARGS+=(
            -DHDF5_C_COMPILER_EXECUTABLE=HDF5_C_COMPILER_EXECUTABLE-NOTFOUND
            -DHDF5_C_INCLUDE_DIR="$P/usr/include/hdf5/openmpi"
            -DHDF5_C_LIBRARY_hdf5="$m/hdf5/openmpi/libhdf5.so")
        [ -f "$m/libopenblas.so" ] && CMAKE_ARGS+=(-DBLAS_LIBRARIES="$m/libopenblas.so")
        [ -f "$P/usr/include/onnx/onnx.proto" ] && CMAKE_ARGS+=(-DONNX_PROTO="$P/usr/include/onnx/onnx.proto")
        [ -x "$P/usr/bin/protoc-c" ] && CMAKE_ARGS+=(-DPROTOC_C="$P/usr/bin/protoc-c")
    fi
    # cuDNN and NCCL: the toolkit's, else PyTorch's wheels (site-packages/nvidia/{cudnn,nccl}).
    local nv
    nv=$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null)
    if [ ! -f /usr/local/cuda/include/cudnn.h ] && [ -n "$nv" ] && [ -f "$nv/cudnn/include/cudnn.h" ]; then
        CMAKE_ARGS+=(-DCUDNN_ROOT="$nv/cudnn")
        export LD_LIBRARY_PATH=$nv/cudnn/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    fi
    if [ ! -f /usr/local/cuda/include/nccl.h ] && [ -n "$nv" ] && [ -f "$nv/nccl/include/nccl.h" ]; then
        CMAKE_ARGS+=(-DNCCL_INCLUDE_DIR="$nv/nccl/include"
            -DNCCL_LIBRARY="$(ls "$nv"/nccl/lib/libnccl.so* | head -1)")
        export LD_LIBRARY_PATH=$nv/nccl/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    fi
    echo "cmake arguments: ${CMAKE_ARGS[*]}"
    echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
}

# Two candidates of B1 on the CPU and on the GPU; the same ones (deterministic mode, same seed).
b1_config() { # DEVICE_OUT_DIR
    cat <<JSON
{"models": ["$carry/b1/left.h5", "$carry/b1/right.h5", "$carry/b1/item.h5"],
 "data": ["$carry/b1/mf.h5", "$carry/b1/mf.h5", "$carry/b1/f36.h5"],
 "out": "$1", "threshold": 0.02, "policy": "random", "iterations": 2, "seed": 1, "threads": $(nproc),
 "mutation": {"merges": 2, "relaxed_below": 4},
 "finetune": {"samples": 3000, "val_samples": 1000, "epochs": 2, "check_every": 1, "batch": 64, "lr": 0.001,
              "bn": "frozen"},
 "filter": {"dominance": false, "curve": false},
 "latency": {"warmup": 10, "runs": 50},
 "run": {"deterministic": true, "round": 2, "checkpoint_every": 0}}
JSON
}

b1_compare() {
    python3 - "$1/candidates.csv" "$2/candidates.csv" <<'PY'
import csv, sys
import os
rows = lambda p: {r["id"]: r for r in csv.DictReader(open(p))} if os.path.exists(p) else {}
cpu, gpu = rows(sys.argv[1]), rows(sys.argv[2])
keys = ["status", "epochs", "worst_drop", "seconds", "latency_ms", "base_latency_ms", "speedup"]
print("candidate  " + "  ".join(f"{k:>22}" for k in keys) + "   (cpu | cuda)")
for i in sorted(set(cpu) | set(gpu), key=int):
    a, b = cpu.get(i, {}), gpu.get(i, {})
    print(f"{i:>9}  " + "  ".join(f"{a.get(k, '-')[:10]:>10} | {b.get(k, '-')[:9]:<9}" for k in keys))
PY
}

run() {
    local build=${GM_BUILD:-build-gpu} t0
    t0=$(date +%s)
    mkdir -p "$OUT"
    : >"$OUT/summary.txt"
    { nvidia-smi; nvcc --version; cmake --version | head -1; gcc --version | head -1; python3 --version
      uname -a; nproc; free -g; } >"$OUT/gpu.txt" 2>&1
    summary "gmorph GPU verification, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nvidia-smi -L 2>/dev/null | head -1)"
    setup_deps >>"$OUT/build.log" 2>&1 || { summary "dependencies: FAIL (build.log)"; return 1; }
    local gen=()
    command -v ninja >/dev/null && gen=(-G Ninja)
    step configure 60 "$OUT/build.log" cmake -S . -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
        -DGMORPH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGMORPH_WERROR=OFF "${CMAKE_ARGS[@]}" || return 1
    step build 200 "$OUT/build.log" cmake --build "$build" -j "${GM_JOBS:-$(nproc)}" --target gmorph \
        gmorph-search test_cuda test_cuda_backend test_nccl_dp bench_cuda_train || return 1
    step ctest 90 "$OUT/ctest.log" ctest --test-dir "$build" --output-on-failure \
        -R '^(test_cuda|test_cuda_backend|test_nccl_dp_np2|test_device_cli)$'
    if [ -f "$carry/b1/left.h5" ]; then
        local d
        for d in cpu cuda; do
            rm -rf "runs/verify-b1-$d"
            mkdir -p "runs/verify-b1-$d"
            b1_config "runs/verify-b1-$d" >"runs/verify-b1-$d.json"
            step "b1 fine-tune $d" 60 "$OUT/b1.log" "$build/gmorph-search" --config "runs/verify-b1-$d.json" \
                --device "$d" --quiet
        done
        b1_compare runs/verify-b1-cpu runs/verify-b1-cuda >>"$OUT/b1.log" 2>&1
        grep -h "speed-up\|val " runs/verify-b1-*/summary.md >>"$OUT/b1.log" 2>/dev/null
    else
        summary "b1 fine-tune           skipped: no $carry/b1 (run 'tests/gpu/verify.sh prepare' here)"
    fi
    if [ -x tests/bench/gpu_vs_torch.sh ]; then
        step "gpu_vs_torch bench" 100 "$OUT/bench.log" tests/bench/gpu_vs_torch.sh "$build" python3
    fi
    summary "total $(($(date +%s) - t0)) s"
}

case ${1:-} in
prepare) shift; prepare "$@" ;;
run) run ;;
*) echo "usage: tests/gpu/verify.sh prepare [GMORPH] | run" >&2; exit 2 ;;
esac
