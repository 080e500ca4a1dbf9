#!/usr/bin/env bash
# The whole test suite: set up, build, run every C++ test with ctest, then
# the Python package's tests with pytest in a virtual environment
# (tools/python_env.sh installs PyTorch, NumPy, pytest and the package).
# GPU tests (ctest label gpu, tests/python/test_cuda.py) skip with "no CUDA
# device" where no GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
ctest --test-dir build --output-on-failure -j "$(nproc)" --timeout 600 "$@"
echo "== Python package: building and installing into .venv"
py=$(bash tools/python_env.sh | tail -n 1)
echo "== pytest tests/python"
"$py" -m pytest tests/python -q -rs --timeout 900
