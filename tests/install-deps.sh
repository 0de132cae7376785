#!/bin/sh
# Installs the Debian 12 packages gmorph builds and tests with (run as root).
# The CUDA toolkit is not a Debian package: put it under /usr/local/cuda to get
# the CUDA backend (GMORPH_CUDA=AUTO finds it; without it the build is CPU-only).
set -eu
if [ "$(id -u)" -ne 0 ]; then
    echo "tests/install-deps.sh: run as root (apt-get install)" >&2
    exit 2
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    build-essential cmake pkg-config ca-certificates \
    libopenmpi-dev openmpi-bin libopenblas-dev libhdf5-openmpi-dev hdf5-tools \
    libcmocka-dev libcjson-dev zlib1g-dev dataset-fashion-mnist chromium slurm-wlm munge \
    libprotobuf-c-dev protobuf-c-compiler libonnx-dev python3-venv python3-numpy python3-h5py python3-torch >/dev/null
# The ONNX tests check exported models with onnx.checker and ONNX Runtime, and the
# live-view test reads event files with TensorBoard's own reader; Debian 12 packages
# none of them: a virtual environment from PyPI, outside the tree.
if [ ! -x /opt/gmorph-py/bin/python ] || ! /opt/gmorph-py/bin/python -c 'import onnx, onnxruntime, tensorboard' 2>/dev/null; then
    python3 -m venv /opt/gmorph-py
    /opt/gmorph-py/bin/pip install -q --disable-pip-version-check onnx onnxruntime numpy h5py tensorboard
fi
echo "tests/install-deps.sh: build dependencies installed"
