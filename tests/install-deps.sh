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
    libcmocka-dev libcjson-dev zlib1g-dev dataset-fashion-mnist chromium slurm-wlm munge >/dev/null
echo "tests/install-deps.sh: build dependencies installed"
