#!/usr/bin/env bash
# The whole test suite: set up, build, run every test with ctest. GPU tests
# (label gpu) skip with "no CUDA device" where no GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
ctest --test-dir build --output-on-failure -j "$(nproc)" --timeout 600 "$@"
