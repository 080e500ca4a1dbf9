#!/usr/bin/env bash
# Installs the build dependencies from Debian (12 "bookworm") by package name
# and builds ringattn into build/ (Release). Used by the README's two
# commands; safe to run again (apt and the build are incremental).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build pkg-config git
  python3 python3-dev python3-venv # test drivers; the Python package (headers, venv)
  libabsl-dev               # Status/StatusOr, flags, strings, synchronization
  libdlpack-dev             # DLTensor: the C ABI's tensors (include/ringattn/ringattn_c.h)
  libgtest-dev libgmock-dev # GoogleTest
  libbenchmark-dev          # Google Benchmark
  nlohmann-json3-dev        # JSON: ringattn-eval's report.json, ringattn-bench --json
  libxsmm-dev               # JIT small-GEMM tiles for the CPU kernels
  libopenblas-dev           # BLAS: the GEMM ceiling in the benchmarks, libxsmm's fallback
  libucx-dev ucx-utils      # UCX communicator (one process per rank); ucx_perftest
  libopenmpi-dev openmpi-bin # MPI bootstrap; mpirun for the multi-process tests
  clang libclang-rt-14-dev  # libFuzzer for the fuzz lane (tools/fuzz.sh)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

jobs=$(nproc)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${RINGATTN_CMAKE_ARGS:-}
cmake --build build -j "$jobs"
