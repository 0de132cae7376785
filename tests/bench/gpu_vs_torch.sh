#!/bin/sh
# The CUDA backend's training throughput against PyTorch's on the same GPU, for
# B1's VGG-13 and B2's ResNet-18 (batch 256, Adam), in strict float32 and in TF32.
#
#   tests/bench/gpu_vs_torch.sh [BUILD_DIR] [PYTHON]      (defaults: build, python3)
#
# For each network and mode it prints PyTorch's JSON line (torch_train_step.py),
# then gmorph's (bench_cuda_train, given PyTorch's images/s, adds the ratio).
# Both sides build the same layers; the parameter counts are checked to agree.
set -eu
build=${1:-build}
py=${2:-python3}
here=$(dirname "$0")
field() { "$py" -c "import json, sys; print(json.loads(sys.stdin.read())['$1'])"; }

for net in "vgg13 16,32,64,64 1,36,36 10" "resnet18 16,32,64,64 3,32,32 10"; do
  # shellcheck disable=SC2086
  set -- $net
  for tf32 in 0 1; do
    args="--arch $1 --widths $2 --input $3 --classes $4 --batch 256 --tf32 $tf32"
    # shellcheck disable=SC2086
    torch=$("$py" "$here/torch_train_step.py" $args)
    echo "$torch"
    # shellcheck disable=SC2086
    ours=$("$build/bench_cuda_train" $args --torch "$(echo "$torch" | field images_per_s)")
    echo "$ours"
    if [ "$(echo "$torch" | field params)" != "$(echo "$ours" | field params)" ]; then
      echo "gpu_vs_torch: $1: parameter counts differ" >&2
      exit 1
    fi
  done
done
